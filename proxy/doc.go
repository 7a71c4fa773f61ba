// Package proxy is the request path clients call: /v1/* (the OpenAI API,
// any provider by model) and /api/<provider>/* (each provider's native
// API, and AI Gateway's compat endpoint). It identifies and admits the
// client (token scope, quotas, rate), reads only what it must decide on
// (the model, a failed answer's head), picks keys with package rotation,
// relays the answer with its body and stream left in JS (and the
// Responses API's WebSocket, message by message in the runtime), and
// counts the usage in the isolate's pool. Everything it touches of the world comes
// in through Proxy's fields.
package proxy

import (
	"context"
	"database/sql"
	"net/http"
	"time"

	"github.com/keypool/keypool/config"
	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// Proxy serves the proxy routes. Every field must be set but Queries.
type Proxy struct {
	Config func() *config.Config
	DB     func() (*sql.DB, error)
	// Fetch sends a request upstream; a deadline on its context bounds the
	// wait for the response headers.
	Fetch func(*http.Request) (*http.Response, error)
	// ReadBody reads a request body of at most limit bytes in one piece
	// (ok false: larger); ReadAll does it in Go.
	ReadBody func(r *http.Request, limit int64) (body []byte, ok bool, err error)
	// Defer runs work after the response has gone (ctx.waitUntil).
	Defer func(func())
	Now   func() time.Time
	IntN  func(n int) int
	// Queries counts D1 round trips (nil: not counted).
	Queries store.Counter
	// Pool is the isolate's shared state.
	Pool *pool.State
	// Box opens sealed keys (an error: KEYPOOL_SECRET is missing).
	Box func() (*seal.Box, error)
	// Settings reads the run-time settings.
	Settings func(ctx context.Context, db *sql.DB) settings.Settings
	// RefreshModels fetches and stores a provider's model list (package
	// checks), for GET /v1/models when one was never fetched.
	RefreshModels func(ctx context.Context, db *sql.DB, name string, queries store.Counter) ([]string, bool)
}

// db returns the database, or answers 500 saying it is missing.
func (px *Proxy) db(w http.ResponseWriter) (*sql.DB, bool) {
	db, err := px.DB()
	if err != nil {
		reply.Failed(w, err, "keypool's database is not available (is the D1 binding DB configured?)", "database unavailable")
		return nil, false
	}
	return db, true
}

// needBox returns the sealing box, or answers 503 when KEYPOOL_SECRET is
// missing.
func (px *Proxy) needBox(w http.ResponseWriter) (*seal.Box, bool) {
	b, err := px.Box()
	if err != nil {
		reply.NoSecret(w, err)
		return nil, false
	}
	return b, true
}

// readThrough reads the cached record name through load (pool.ReadThrough)
// with CACHE_SECONDS as its TTL.
func (px *Proxy) readThrough(name string, fresh bool, load pool.Load) (payload string, hit bool, err error) {
	return px.Pool.ReadThrough(name, px.Config().CacheTTL, px.Now(), fresh, load)
}
