# keypool — build, run, test and deploy.
#   make dev     run keypool locally on http://127.0.0.1:8787 (workerd + local D1)
#   make test    vet, unit and store tests, end-to-end suite on both builds
#   make deploy  deploy to your Cloudflare account

# The compiler `make build` uses; see README ("Builds") for why.
COMPILER ?= tinygo
PORT ?= 8787

SHELL := /bin/bash
GO_WASM_ENV = GOOS=js GOARCH=wasm
ASSETS_GEN = go run github.com/syumai/workers/cmd/workers-assets-gen
export WRANGLER_SEND_METRICS = false

.PHONY: dev build ui build-go build-go-profile build-tinygo tinygo browser test vet unit e2e e2e-go e2e-tinygo bench profile deploy clean

dev: node_modules build
	PORT=$(PORT) scripts/dev.sh

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

# build/worker is what wrangler.toml runs: a copy of the default build.
build: ui build-$(COMPILER)
	rm -rf build/worker
	cp -r build/$(COMPILER) build/worker

# The admin UI: ui/src (and Chart.js) bundled by esbuild into
# ui/public/assets/app.js and app.css (git-ignored: every target that
# serves ui/public builds them first). `node ui/build.mjs --watch` rebuilds
# on every change while `make dev` runs.
ui: node_modules
	node ui/build.mjs

# workers-assets-gen writes the glue (wasm_exec.js, runtime.mjs); keypool's
# own entry module (entry/worker.mjs) replaces its worker.mjs, beside the
# modules it imports (entry/*.mjs).
build-go:
	$(ASSETS_GEN) -mode=go -o build/go
	cp entry/*.mjs build/go/
	$(GO_WASM_ENV) go build -trimpath -ldflags='-s -w' -o build/go/app.wasm .

# The standard Go build without -s -w: the wasm keeps its name section, so
# V8 CPU profiles name Go functions (`make profile`).
build-go-profile:
	$(ASSETS_GEN) -mode=go -o build/go-profile
	cp entry/*.mjs build/go-profile/
	$(GO_WASM_ENV) go build -trimpath -o build/go-profile/app.wasm .

# TinyGo: the one `make tinygo` bootstraps (done on demand; it carries two
# runtime patches, see scripts/tinygo.sh), or TINYGO=path. The leaking
# collector never frees: the entry retires an instance once its memory
# passes a mark (README "Builds" says why and what it measures).
TINYGO_FLAGS ?= -target=wasm -no-debug -gc=leaking -stack-size=$(TINYGO_STACK)
TINYGO_STACK ?= 64KB
build-tinygo:
	@tg=$${TINYGO:-$$(scripts/tinygo.sh)} && \
	$(ASSETS_GEN) -mode=tinygo -o build/tinygo && \
	cp entry/*.mjs build/tinygo/ && \
	echo "$$tg build -o build/tinygo/app.wasm $(TINYGO_FLAGS) ." && \
	$$tg build -o build/tinygo/app.wasm $(TINYGO_FLAGS) .

tinygo:
	scripts/tinygo.sh

test: vet unit e2e

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...
	go vet -tags e2e ./e2e/...
	$(GO_WASM_ENV) go vet .

unit:
	go test -count=1 ./...

# The end-to-end suite runs the real worker under wrangler dev against a
# fake upstream on 127.0.0.1, on both builds (standard Go, then TinyGo).
e2e: e2e-go e2e-tinygo

e2e-go: node_modules ui build-go browser
	KEYPOOL_BUILDS="go" go test -tags e2e -count=1 -timeout 40m -v ./e2e/

e2e-tinygo: node_modules ui build-tinygo browser
	KEYPOOL_BUILDS="tinygo" go test -tags e2e -count=1 -timeout 40m -v ./e2e/

# Debian's chromium for the UI tests (installed with apt when missing).
browser:
	scripts/browser.sh

# Benchmarks: a plain JS pass-through worker (bench/baseline) and keypool
# built by both compilers, each under wrangler dev against the fake upstream
# on 127.0.0.1, one table side by side. Flags via BENCH_FLAGS, e.g.
# BENCH_FLAGS="-quick" or BENCH_FLAGS="-targets baseline,go -soak 20000".
bench: node_modules ui build-go build-tinygo
	go run ./bench $(BENCH_FLAGS)

# V8 CPU profiles of keypool under bench load (cold request, non-stream,
# stream, 1 000-chunk streams): top frames by self and total time printed,
# build/profile-go-profile-*.cpuprofile written (Chrome DevTools, speedscope).
profile: node_modules ui build-go-profile
	go run ./bench -profile $(BENCH_FLAGS)

deploy: node_modules build
	scripts/deploy.sh

clean:
	rm -rf build .wrangler
