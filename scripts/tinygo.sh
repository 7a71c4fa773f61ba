#!/usr/bin/env bash
# Bootstraps TinyGo 0.41.1 from the Go module proxy and Debian packages (no
# release downloads are reachable here) and prints the path of a wrapper
# executable as the last line of stdout; all progress goes to stderr.
#   TINYGO := $(shell scripts/tinygo.sh)
# Idempotent: once built, it only checks the wrapper and exits.
# Recipe and background: shared/docs/platform.md, section "TinyGo".
set -euo pipefail

TINYGO_VERSION=0.41.1
NET_FROM_VERSION=0.30.0 # last TinyGo whose module zip has src/net in-tree
GO_VERSION=1.24.13      # Go that drives TinyGo (the app's go line must be <= 1.24)
LLVM=19                 # Debian 12 has LLVM 19; TinyGo 0.41 defaults to 20
APT_PKGS=(build-essential "llvm-$LLVM-dev" "libclang-$LLVM-dev" "clang-$LLVM" "lld-$LLVM"
  "libclang-rt-$LLVM-dev-wasm32" wasi-libc binaryen)

ROOT="${KEYPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keypool}/tinygo-$TINYGO_VERSION"
SRC="$ROOT/src"      # TINYGOROOT: patched copy of the TinyGo source tree
CACHE="$ROOT/cache"  # XDG_CACHE_HOME for TinyGo, so its cache is $CACHE/tinygo
WRAPPER="$ROOT/bin/tinygo"
MARKER="$ROOT/.complete" # written last: its absence means "(re)build"
PATCHES="canary-after-resume grow-by-quarter" # in the marker: a tree patched otherwise is rebuilt

log() { printf 'tinygo.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# TinyGo does not build wasi-libc / compiler-rt here (their sources are git
# submodules, absent from the module zip); it takes any lib.a already in its
# cache dir (builder/library.go, compileopts.Config.LibraryPath). Point those
# entries at Debian's prebuilt files. Cheap, so done on every run: `tinygo
# clean` wipes the cache dir.
link_libs() {
  local t="$CACHE/tinygo" rt="/usr/lib/llvm-$LLVM/lib/clang/$LLVM/lib/wasi/libclang_rt.builtins-wasm32.a"
  mkdir -p "$t/wasi-libc-wasm32-unknown-wasi-generic" "$t/compiler-rt-wasm32-unknown-wasi-generic"
  ln -sfn /usr/lib/wasm32-wasi/libc.a "$t/wasi-libc-wasm32-unknown-wasi-generic/lib.a"
  ln -sfn /usr/include/wasm32-wasi "$t/wasi-libc-wasm32-unknown-wasi-generic/include"
  ln -sfn "$rt" "$t/compiler-rt-wasm32-unknown-wasi-generic/lib.a"
}

# Fast path: already built and working.
if [[ -f "$MARKER" && -x "$WRAPPER" && $(cat "$MARKER") == "$PATCHES" ]] && "$WRAPPER" version >/dev/null 2>&1; then
  link_libs
  echo "$WRAPPER"
  exit 0
fi

command -v go >/dev/null || die "go not found on PATH (any Go >= 1.21 is enough to bootstrap)"
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9 # serialise concurrent bootstraps (e.g. parallel make)
rm -f "$MARKER"

# 1. Debian packages (skipped when all are installed).
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    SUDO=(sudo)
  fi
  log "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update >&2 || die "apt-get update failed"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install failed: ${missing[*]}"
fi
for f in /usr/lib/wasm32-wasi/libc.a /usr/include/wasm32-wasi \
  "/usr/lib/llvm-$LLVM/lib/clang/$LLVM/lib/wasi/libclang_rt.builtins-wasm32.a" "/usr/bin/wasm-ld-$LLVM"; do
  [[ -e $f ]] || die "$f missing after installing ${APT_PKGS[*]}"
done

# 2./3. Sources from the module proxy and Go $GO_VERSION. Run outside any
# module so the caller's go.mod / GOFLAGS cannot interfere. `go install
# ...@version` does not work: the proxy refuses @v/list.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
moddir() { # module@version -> its directory in the module cache
  (cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1") |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'
}
log "downloading tinygo v$TINYGO_VERSION, v$NET_FROM_VERSION and go$GO_VERSION from the module proxy"
TG_MOD=$(moddir "github.com/tinygo-org/tinygo@v$TINYGO_VERSION") || TG_MOD=
NET_MOD=$(moddir "github.com/tinygo-org/tinygo@v$NET_FROM_VERSION") || NET_MOD=
[[ -d $TG_MOD && -d $NET_MOD ]] || die "go mod download github.com/tinygo-org/tinygo@v$TINYGO_VERSION / @v$NET_FROM_VERSION failed"
# Let the go command fetch the toolchain itself: it also sets the exec bits.
(cd "$tmp" && GOTOOLCHAIN="go$GO_VERSION" GOFLAGS= go version >&2) || die "could not fetch go$GO_VERSION"
GOROOT_TG="$(go env GOMODCACHE)/golang.org/toolchain@v0.0.1-go$GO_VERSION.$(go env GOHOSTOS)-$(go env GOHOSTARCH)"
GO_TG="$GOROOT_TG/bin/go"
[[ -x $GO_TG ]] || die "go$GO_VERSION not found at $GOROOT_TG"

# Writable copy of the source tree (module cache files are read-only).
rm -rf "$SRC" "$ROOT/bin"
cp -r "$TG_MOD" "$SRC"
chmod -R u+w "$SRC"

# 4. src/net is a submodule missing from the zip: use 0.30.0's in-tree copy
# and Go's own net/http. TinyGo's crypto/tls stub needs the newer net
# ("undefined: net.TLSConn"), so take Go's full crypto/tls, as a copy: a
# symlink gives "package crypto is not in std".
mkdir -p "$SRC/src/net"
find "$NET_MOD/src/net" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$SRC/src/net/" \;
chmod u+w "$SRC"/src/net/*.go
ln -sfn "$GOROOT_TG/src/net/http" "$SRC/src/net/http"
rm -rf "$SRC/src/crypto/tls"
cp -r "$GOROOT_TG/src/crypto/tls" "$SRC/src/crypto/tls"
chmod -R u+w "$SRC/src/crypto/tls"

# 5. Drop wasm feature names LLVM 19 does not know (they are LLVM 20's).
grep -l -e '+bulk-memory-opt' -e '+call-indirect-overlong' "$SRC"/targets/*.json |
  xargs -r sed -i -e 's/,+bulk-memory-opt//' -e 's/,+call-indirect-overlong//'

# 6. A goroutine stack is a heap object; TinyGo checks its canary only when
# the goroutine pauses, so an overflow in a goroutine that runs to its end
# (every JS callback is one) would go unseen while it corrupts the object
# below. Check it after every run too: an overflow then traps, and the
# entry drops the instance and answers 500.
task="$SRC/src/internal/task/task_asyncify.go"
perl -0pi -e 's/(\tcurrentTask = prevTask\n\tt\.gcData\.swap\(\)\n)/$1\tif *t.state.canaryPtr != stackCanary { \/\/ keypool patch\n\t\truntimePanic("stack overflow")\n\t}\n/' "$task"
grep -q 'keypool patch' "$task" || die "could not patch $task"
# And wasm memory grows by a quarter (at least 1 MiB) instead of doubling:
# the leaking collector's heap is what was allocated, and a doubled memory
# would count twice against the isolate's 128 MB.
arch="$SRC/src/runtime/arch_tinygowasm.go"
perl -pi -e 's/result := wasm_memory_grow\(wasmMemoryIndex, memorySize\)/result := wasm_memory_grow(wasmMemoryIndex, max(memorySize\/4, 16)) \/\/ keypool patch/' "$arch"
grep -q 'keypool patch' "$arch" || die "could not patch $arch"

# Build. The llvm19 tag selects cgo flags for Debian's /usr/lib/llvm-19, so
# no llvm-config is needed.
log "building tinygo (takes a minute or two)"
(cd "$SRC" && GOTOOLCHAIN=local CGO_ENABLED=1 GOFLAGS=-mod=mod \
  "$GO_TG" build -tags="llvm$LLVM" -o build/tinygo . >&2) || die "go build of tinygo failed"

# 7. Prebuilt C libraries, then the wrapper.
link_libs
mkdir -p "$ROOT/bin"
cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Generated by scripts/tinygo.sh: TinyGo $TINYGO_VERSION driven by go$GO_VERSION.
# Keep Go's own build cache where it was before XDG_CACHE_HOME is changed.
if [ -z "\${GOCACHE:-}" ]; then GOCACHE=\$(GOTOOLCHAIN=local '$GO_TG' env GOCACHE); export GOCACHE; fi
export TINYGOROOT='$SRC'
export XDG_CACHE_HOME='$CACHE'
export GOTOOLCHAIN=local
export PATH='$GOROOT_TG/bin':"\$PATH"
exec '$SRC/build/tinygo' "\$@"
EOF
chmod +x "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"

"$WRAPPER" version >&2 || die "$WRAPPER version failed"
echo "$PATCHES" >"$MARKER"
log "done"
echo "$WRAPPER"
