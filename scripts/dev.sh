#!/usr/bin/env bash
# Runs keypool locally: workerd (wrangler dev) with local D1 on
# http://127.0.0.1:${PORT:-8787}. Called by `make dev` after the build.
# First run writes .dev.vars with a random admin password, client token and
# KEYPOOL_SECRET (which encrypts the keys in local D1); later runs reuse
# them, and add KEYPOOL_SECRET to an older .dev.vars that lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${PORT:-8787}
wrangler=(env WRANGLER_SEND_METRICS=false npx --no-install wrangler)

random_secret() { # 32 url-safe characters from the kernel's CSPRNG
	head -c 24 /dev/urandom | base64 | tr '+/' '-_'
}

if [ ! -f .dev.vars ]; then
	umask 077
	cat > .dev.vars <<VARS
# Local secrets for \`make dev\` (git-ignored). Delete this file to get new ones.
ADMIN_PASSWORD=$(random_secret)
AUTH_KEY=kp-$(random_secret)
KEYPOOL_SECRET=$(random_secret)
VARS
	echo "Wrote .dev.vars with a new admin password, client token and KEYPOOL_SECRET." >&2
elif ! grep -q '^KEYPOOL_SECRET=' .dev.vars; then
	echo "KEYPOOL_SECRET=$(random_secret)" >> .dev.vars
	echo "Added KEYPOOL_SECRET to .dev.vars." >&2
fi

# Read the two values without sourcing the file (it is data, not a script).
admin=$(sed -n 's/^ADMIN_PASSWORD=//p' .dev.vars | tail -n 1)
token=$(sed -n 's/^AUTH_KEY=//p' .dev.vars | tail -n 1)

CI=true "${wrangler[@]}" d1 migrations apply DB --local >&2

base="http://127.0.0.1:$port"
cat >&2 <<MSG

keypool is starting on $base
  admin password (ADMIN_PASSWORD): $admin
  client token   (AUTH_KEY):       $token

Admin UI: open $base and log in with the admin password.

Add keys:
  curl -s $base/admin/api/keys -H 'Authorization: Bearer $admin' \\
    -H 'Content-Type: application/json' -d '{"provider":"openai","keys":"sk-...\\nsk-..."}'
Call it like OpenAI:
  curl -s $base/v1/chat/completions -H 'Authorization: Bearer $token' \\
    -H 'Content-Type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
Run the cron by hand:
  curl -s '$base/__scheduled?cron=*/5+*+*+*+*'

MSG
exec "${wrangler[@]}" dev --ip 127.0.0.1 --port "$port" --test-scheduled "$@"
