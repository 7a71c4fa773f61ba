// Package checks is keypool's health checking: the cron run (prune, check
// the keys that are due, refresh a stale model list, advance a check job),
// the check jobs admins start, one key's check, and the model lists. All
// of it runs within one invocation's subrequest budget (Budget). The
// world (D1, fetch, the clock, the sealing box, the settings) comes in
// through Checker's fields, so tests drive it without a runtime.
package checks

import (
	"context"
	"database/sql"
	"net/http"
	"time"

	"github.com/keypool/keypool/config"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// Checker runs checks. Every field must be set.
type Checker struct {
	Config func() *config.Config
	DB     func() (*sql.DB, error)
	Fetch  func(*http.Request) (*http.Response, error)
	Now    func() time.Time
	IntN   func(n int) int
	// Queries is the isolate-wide D1 counter (nil: not counted).
	Queries store.Counter
	// Box opens sealed keys (an error: KEYPOOL_SECRET is missing).
	Box func() (*seal.Box, error)
	// Settings reads the run-time settings, its D1 query counted in
	// queries.
	Settings func(ctx context.Context, db *sql.DB, queries store.Counter) settings.Settings
	// Invalidate drops the isolate's cache after keys changed state.
	Invalidate func()
	// Target is where a provider's requests go in this deployment, and
	// GatewayHeaders sets what AI Gateway reads on a call through it.
	Target         func(provider.Provider) provider.Target
	GatewayHeaders func(h http.Header, metadata string, own bool)
}
