//go:build js && wasm

// Command keypool is the Cloudflare Worker: it binds the handler to the
// Workers runtime (env, D1, fetch, waitUntil) and registers it for HTTP and
// cron events. Nothing else happens here.
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"net/http"
	"syscall/js"
	"time"

	"github.com/syumai/workers"
	"github.com/syumai/workers/cloudflare"
	"github.com/syumai/workers/cloudflare/cron"
	"github.com/syumai/workers/cloudflare/d1"
	"github.com/syumai/workers/cloudflare/fetch"

	"github.com/keypool/keypool/handler"
)

func main() {
	// One *sql.DB for the life of this Go instance, which serves many
	// events. Connections are not kept idle, so each query looks the D1
	// binding up in the current event's env.
	db := sql.OpenDB(d1Connector{})
	db.SetMaxIdleConns(0)
	h := handler.New(handler.Deps{
		Getenv: cloudflare.Getenv,
		DB:     func() (*sql.DB, error) { return db, nil },
		Fetch: func(r *http.Request) (*http.Response, error) {
			return fetch.NewClient().Do(&fetch.Request{Request: r}, nil)
		},
		Defer:      cloudflare.WaitUntil,
		Now:        time.Now,
		Queries:    isolateCounter("keypoolD1Queries"),
		Generation: isolateCounter("keypoolStateGeneration"),
	})
	workers.ServeNonBlock(h)
	cron.ScheduleTaskNonBlock(h.Scheduled)
	workers.Ready()
	// Keep the program alive so that work handed to waitUntil finishes
	// after the response; workers.Serve would exit once the body is read.
	select {}
}

// d1Connector connects to the D1 database bound as DB in wrangler.toml,
// through the env of the event being served.
type d1Connector struct{}

func (d1Connector) Connect(ctx context.Context) (driver.Conn, error) {
	c, err := d1.OpenConnector("DB")
	if err != nil {
		return nil, err
	}
	return c.Connect(ctx)
}

func (d1Connector) Driver() driver.Driver { return &d1.Driver{} }

// isolateCounter is a number kept in a JS global, so that every Go instance
// of the isolate adds to one total.
type isolateCounter string

func (c isolateCounter) Load() int64 {
	v := js.Global().Get(string(c))
	if v.Type() != js.TypeNumber {
		return 0
	}
	return int64(v.Float())
}

func (c isolateCounter) Add(delta int64) int64 {
	n := c.Load() + delta
	js.Global().Set(string(c), float64(n))
	return n
}
