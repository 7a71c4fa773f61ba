// Package handler is keypool's HTTP entry: it routes every request, serves
// the admin API (/admin/api/*), the logins and the guest page itself, and
// hands the proxy routes (/v1/*, /api/<provider>/*) to package proxy and
// the cron task to package checks, bound to the same connections.
// Everything it touches from the outside world (configuration, D1,
// outbound fetch, the clock, work after the response) comes in through
// Deps, so tests drive it with SQLite, an httptest upstream and a fixed
// clock, and main.go binds it to the Workers runtime.
package handler

import (
	"context"
	"database/sql"
	"log"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool/checks"
	"github.com/keypool/keypool/config"
	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/proxy"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/seal"
)

// Deps are the handler's connections to the world.
type Deps struct {
	// Config is the environment, parsed (config.Parse). The Workers
	// binding parses it once per isolate: vars and secrets are fixed for
	// an isolate's life.
	Config func() *config.Config
	// DB returns the database of the current request or event.
	DB func() (*sql.DB, error)
	// Fetch sends a request upstream. A deadline on the request's context
	// bounds the wait for the response headers (UPSTREAM_TIMEOUT_SECONDS);
	// the Workers binding does not let it cut a body already streaming.
	Fetch func(*http.Request) (*http.Response, error)
	// ReadBody reads a request body of at most limit bytes in one piece
	// (ok false: larger). io.ReadAll when nil.
	ReadBody func(r *http.Request, limit int64) (body []byte, ok bool, err error)
	// Defer runs work that must finish after the response has gone, without
	// delaying it (ctx.waitUntil on Workers).
	Defer func(func())
	// Now is the clock.
	Now func() time.Time
	// Queries counts D1 round trips (nil: not counted); the benchmarks read
	// it through /admin/api/debug/stats.
	Queries Counter
	// Shared is memory all Go instances of the isolate see, for the
	// candidate-key cache; a process-local map when nil.
	Shared pool.Shared
	// Memory reports the Go instances of the isolate, their memory in
	// bytes and the most one instance has held, for /admin/api/debug/stats;
	// nil where unknown.
	Memory func() (instances int, bytes, peak int64)
	// IntN draws a random number in [0, n) for key selection; rand.IntN
	// when nil.
	IntN func(n int) int
	// InjectFault makes every D1 statement fail (mode "down") or wait
	// delay first ("slow") until the unix ms until; "" lifts it. For the
	// fault suite (KEYPOOL_DEBUG); nil where it cannot be done.
	InjectFault func(target, mode string, delay time.Duration, until int64)
}

// Counter is a shared count; atomic.Int64 is one.
type Counter interface {
	Add(delta int64) int64
	Load() int64
}

// Handler serves every route of the worker.
type Handler struct {
	d    Deps
	pool *pool.State // the isolate's shared records

	boxMu  sync.Mutex
	boxFor string    // the KEYPOOL_SECRET boxVal was derived from
	boxVal *seal.Box // see box()
}

// New returns the handler wired to d.
func New(d Deps) *Handler {
	if d.IntN == nil {
		d.IntN = rand.IntN
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.ReadBody == nil {
		d.ReadBody = proxy.ReadAll
	}
	return &Handler{d: d, pool: pool.New(d.Shared)}
}

// ServeHTTP routes a request. A panic anywhere below becomes a 500 in the
// OpenAI error format instead of a dead instance and a hung client.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tw := &trackingWriter{ResponseWriter: w}
	// Every answer carries an id; a proxied request's finds its entry in
	// the request log.
	tw.Header().Set(proxy.RequestIDHeader, proxy.NewRequestID(h.d.Now()))
	defer func() {
		if v := recover(); v != nil {
			log.Printf("keypool: panic serving %s %s: %v", r.Method, r.URL.Path, v)
			if !tw.wrote {
				reply.Internal("internal error in keypool; the request was not completed").Write(tw)
			}
		}
	}()
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1/"):
		proxy.Sandbox(tw.Header()) // keypool's own answers too
		h.proxy().ServeOpenAI(tw, r)
	case strings.HasPrefix(p, "/api/"):
		proxy.Sandbox(tw.Header())
		h.proxy().ServeNative(tw, r)
	case strings.HasPrefix(p, "/admin/api/"):
		h.admin(tw, r)
	case p == "/admin/login":
		h.login(tw, r)
	case p == "/admin/logout":
		h.logout(tw, r)
	case p == "/guest/login":
		h.guestLogin(tw, r)
	case p == "/guest/api/summary":
		h.guestSummary(tw, r)
	default:
		reply.NotFound("no route for " + r.Method + " " + p + "; keypool serves /v1/*, /api/<provider>/*, /admin/api/* and /guest/api/*").Write(tw)
	}
}

// trackingWriter remembers whether the response has started, so a panic
// handler knows if it can still send an error.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and io.Copy find the runtime's
// writer, which can take an upstream body without copying it through Go.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// Scheduled is the cron task (checks.Checker.Scheduled).
func (h *Handler) Scheduled(ctx context.Context) error { return h.checks().Scheduled(ctx) }

// checks is the health checking (check jobs, the cron run, model lists)
// on the handler's connections.
func (h *Handler) checks() *checks.Checker {
	px := &proxy.Proxy{Config: h.d.Config}
	return &checks.Checker{Config: h.d.Config, DB: h.d.DB, Fetch: h.d.Fetch, Now: h.d.Now, IntN: h.d.IntN, Queries: h.d.Queries,
		Box: h.box, Settings: h.settingsCounted, Invalidate: h.invalidate, Target: px.Target, GatewayHeaders: px.GatewayHeaders}
}

// proxy is the proxy routes on the handler's connections.
func (h *Handler) proxy() *proxy.Proxy {
	return &proxy.Proxy{Config: h.d.Config, DB: h.d.DB, Fetch: h.d.Fetch, ReadBody: h.d.ReadBody, Defer: h.d.Defer,
		Now: h.d.Now, IntN: h.d.IntN, Queries: h.d.Queries, Pool: h.pool, Box: h.box, Settings: h.settings,
		RefreshModels: h.checks().RefreshModels}
}

// readThrough reads the cached record name through load (pool.ReadThrough)
// with CACHE_SECONDS as its TTL.
func (h *Handler) readThrough(name string, fresh bool, load pool.Load) (payload string, hit bool, err error) {
	return h.pool.ReadThrough(name, h.cfg().CacheTTL, h.d.Now(), fresh, load)
}

// readBody reads a request body within MAX_BODY_BYTES (proxy.RequestBody).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	return h.proxy().RequestBody(w, r)
}

// invalidate drops the isolate's cache after an admin change, and ends
// the holds (the change is in D1 already).
func (h *Handler) invalidate() {
	h.pool.ForgetCache()
	h.pool.EndHolds()
}

// cfg is the configuration in force.
func (h *Handler) cfg() *config.Config { return h.d.Config() }
