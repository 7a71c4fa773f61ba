#!/usr/bin/env bash
# Deploys keypool to your Cloudflare account (`make deploy`, after the build):
#   1. creates the D1 database "keypool" if it does not exist and writes its
#      id into wrangler.toml,
#   2. applies the migrations to it,
#   3. asks for the secrets that are not set yet (ADMIN_PASSWORD, AUTH_KEY,
#      KEYPOOL_SECRET — keep a copy of it: the keys in D1 cannot be read
#      without it;
#      an empty answer generates a random one and prints it once),
#   4. unless wrangler.toml already names one, asks whether to send the
#      traffic through a Cloudflare AI Gateway (README "Through AI Gateway"):
#      its name and the account id go into [vars], its token (for an
#      authenticated gateway) is the secret CF_AIG_TOKEN,
#   5. runs wrangler deploy.
# Re-running it is safe: each step skips what is already done. Without a
# terminal nothing is asked: secrets are generated, and the gateway comes
# from AI_GATEWAY, CF_ACCOUNT_ID and CF_AIG_TOKEN in the environment, if set.
set -euo pipefail
cd "$(dirname "$0")/.."

db_name=${KEYPOOL_DB_NAME:-keypool}
wrangler() { WRANGLER_SEND_METRICS=false npx --no-install wrangler "$@"; }
json_get() { # json_get <js expression over `d`>: reads JSON on stdin
	node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const d=JSON.parse(s);const v=('"$1"');if(v!==undefined&&v!==null)console.log(v)})'
}

if ! wrangler whoami >/dev/null 2>&1; then
	echo "Not logged in to Cloudflare: run 'npx wrangler login' (or set CLOUDFLARE_API_TOKEN) and try again." >&2
	exit 1
fi

# 1. The D1 database.
id=$(wrangler d1 list --json | json_get "(d.find(x => x.name === '$db_name') || {}).uuid")
if [ -z "$id" ]; then
	echo "Creating D1 database $db_name…" >&2
	out=$(wrangler d1 create "$db_name")
	id=$(printf '%s\n' "$out" | grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' | head -n 1)
	[ -n "$id" ] || { echo "could not read the new database's id from:" >&2; echo "$out" >&2; exit 1; }
fi
if ! grep -q "database_id = \"$id\"" wrangler.toml; then
	sed -i.bak -E "s/^database_id = \"[^\"]*\"/database_id = \"$id\"/" wrangler.toml && rm -f wrangler.toml.bak
	echo "wrangler.toml now names D1 database $db_name ($id)." >&2
fi

# 2. Migrations.
CI=true wrangler d1 migrations apply DB --remote

# 3. Secrets.
have=$(wrangler secret list --format json 2>/dev/null | json_get "d.map(x => x.name).join(' ')" || true)
for name in ADMIN_PASSWORD AUTH_KEY KEYPOOL_SECRET; do
	case " $have " in *" $name "*) continue ;; esac
	value=""
	if [ -t 0 ]; then
		read -r -s -p "$name (empty: generate one): " value
		echo >&2
	fi
	if [ "$name" = ADMIN_PASSWORD ] && [ -n "$value" ] && [ "${#value}" -lt 16 ]; then
		echo "ADMIN_PASSWORD needs at least 16 characters (the admin API refuses a shorter one); leave it empty to generate one." >&2
		exit 1
	fi
	if [ -z "$value" ]; then
		value=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
		[ "$name" = AUTH_KEY ] && value="kp-$value"
		echo "Generated $name: $value  (shown once; keep it)" >&2
	fi
	printf '%s' "$value" | wrangler secret put "$name"
done

# 4. AI Gateway (optional).
set_var() { # set_var NAME VALUE: NAME = "VALUE" in wrangler.toml's [vars]
	NAME="$1" VALUE="$2" node -e '
const fs = require("fs"), f = "wrangler.toml", {NAME: n, VALUE: v} = process.env;
let s = fs.readFileSync(f, "utf8");
const line = n + " = " + JSON.stringify(v), re = new RegExp("^" + n + " = .*$", "m");
if (re.test(s)) s = s.replace(re, line);
else if (/^\[vars\]$/m.test(s)) s = s.replace(/^\[vars\]$/m, "[vars]\n" + line);
else s = s.replace(/\n*$/, "\n\n[vars]\n" + line + "\n");
fs.writeFileSync(f, s);'
}
if ! grep -q '^AI_GATEWAY = ' wrangler.toml; then
	gateway=${AI_GATEWAY:-} account=${CF_ACCOUNT_ID:-} aig_token=${CF_AIG_TOKEN:-}
	if [ -z "$gateway" ] && [ -t 0 ]; then
		read -r -p "AI Gateway name, to send the traffic through Cloudflare AI Gateway (empty: none): " gateway
	fi
	if [ -n "$gateway" ]; then
		if ! printf '%s' "$gateway" | grep -qE '^[A-Za-z0-9_-]{1,64}$'; then
			echo "AI Gateway name \"$gateway\": want letters, digits, - or _ (at most 64), as the dashboard shows it." >&2
			exit 1
		fi
		if [ -z "$account" ]; then
			# The only account wrangler's login sees, if there is one.
			found=$(wrangler whoami 2>/dev/null | grep -oE '[0-9a-f]{32}' | sort -u || true)
			if [ -n "$found" ] && [ "$(printf '%s\n' "$found" | wc -l | tr -d ' ')" = 1 ]; then
				account=$found
			fi
			if [ -t 0 ]; then
				read -r -p "Cloudflare account id${account:+ [$account]}: " answer
				account=${answer:-$account}
			fi
		fi
		if ! printf '%s' "$account" | grep -qE '^[0-9a-f]{32}$'; then
			echo "Cloudflare account id \"$account\": want the 32 hex digits 'npx wrangler whoami' shows (or set CF_ACCOUNT_ID)." >&2
			exit 1
		fi
		if [ -z "$aig_token" ] && [ -t 0 ]; then
			read -r -s -p "The gateway's authentication token, if it is an authenticated gateway (empty: none): " aig_token
			echo >&2
		fi
		set_var AI_GATEWAY "$gateway"
		set_var CF_ACCOUNT_ID "$account"
		echo "wrangler.toml now sends the traffic through AI Gateway $gateway." >&2
		if [ -n "$aig_token" ]; then
			printf '%s' "$aig_token" | wrangler secret put CF_AIG_TOKEN
		fi
	fi
fi

# 5. Deploy.
wrangler deploy
