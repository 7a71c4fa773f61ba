//go:build js && wasm

// Command keypool is the Cloudflare Worker: it binds the handler to the
// Workers runtime (env, D1, fetch, waitUntil) and registers it for HTTP and
// cron events. Nothing else happens here.
package main

import (
	"database/sql"
	"net/http"
	"time"

	"github.com/syumai/workers"
	"github.com/syumai/workers/cloudflare"
	"github.com/syumai/workers/cloudflare/cron"
	"github.com/syumai/workers/cloudflare/d1"
	"github.com/syumai/workers/cloudflare/fetch"

	"github.com/keypool/keypool/handler"
)

func main() {
	h := handler.New(handler.Deps{
		Getenv: cloudflare.Getenv,
		DB:     openD1,
		Fetch: func(r *http.Request) (*http.Response, error) {
			return fetch.NewClient().Do(&fetch.Request{Request: r}, nil)
		},
		Defer: cloudflare.WaitUntil,
		Now:   time.Now,
	})
	workers.ServeNonBlock(h)
	cron.ScheduleTaskNonBlock(h.Scheduled)
	workers.Ready()
	// Keep the program alive so that work handed to waitUntil finishes
	// after the response; workers.Serve would exit once the body is read.
	select {}
}

// openD1 opens the D1 database bound as DB in wrangler.toml. The binding
// lives in the current event's env, so it is looked up per event.
func openD1() (*sql.DB, error) {
	c, err := d1.OpenConnector("DB")
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}
