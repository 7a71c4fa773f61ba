//go:build js && wasm

// Command keypool is the Cloudflare Worker: it binds the handler to the
// Workers runtime (env, D1, fetch, waitUntil) and registers it for HTTP and
// cron events. Nothing else happens here.
package main

import (
	"database/sql"
	"sync"
	"time"

	"github.com/syumai/workers"
	"github.com/syumai/workers/cloudflare"
	"github.com/syumai/workers/cloudflare/cron"

	"github.com/keypool/keypool/config"
	"github.com/keypool/keypool/handler"
	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/workerjs"
)

func main() {
	db := workerjs.D1("DB")
	h := handler.New(handler.Deps{
		Config:   sync.OnceValue(func() *config.Config { c := config.Parse(getenv); return &c }),
		DB:       func() (*sql.DB, error) { return db, nil },
		Fetch:    workerjs.Fetch,
		ReadBody: workerjs.ReadBody,
		Defer:    cloudflare.WaitUntil,
		Now:      time.Now,
		Queries:  workerjs.Counter("keypoolD1Queries"),
		Shared: workerjs.Map{Name: "keypoolShared", CachePrefix: pool.CachePrefix,
			CacheEntries: pool.CacheEntries, CacheBytes: pool.CacheBytes},
		Memory:      workerjs.Memory,
		InjectFault: workerjs.InjectFault,
	})
	workerjs.Serve(h)
	cron.ScheduleTaskNonBlock(h.Scheduled)
	workers.Ready()
	// Keep the program alive so that work handed to waitUntil finishes
	// after the response; workers.Serve would exit once the body is read.
	select {}
}

// getenv reads a var or secret. The configuration is parsed once per
// isolate: vars and secrets are fixed for its life (changing one deploys
// a new version, in new isolates), and each cloudflare.Getenv costs
// several calls into JS.
func getenv(name string) string { return cloudflare.Getenv(name) }
