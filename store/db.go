package store

import (
	"context"
	"database/sql"
	"strings"
)

// Unavailable reports whether err says D1 itself failed (it did not
// answer in time, or lost its connection) rather than a statement: the
// failed work may be retried as it was, and the client is told the store
// is unavailable. D1_UNAVAILABLE is what keypool's entry module reports
// (entry/store.mjs); the others are the transient errors Cloudflare's D1
// documentation says to retry.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"D1_UNAVAILABLE", "Network connection lost", "storage caused object to be reset",
		"reset because its code was updated", "D1 DB is overloaded"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// DB is the database of one request or event, each round trip counted in
// a Counter (D1 queries per request, for the benchmarks and the cron's
// subrequest budget). Its methods are the store's parts on it.
type DB struct {
	db countingDB
}

// On returns the store on db, counting round trips in queries (nil: not
// counted).
func On(db *sql.DB, queries Counter) DB { return DB{db: countingDB{db: db, n: queries}} }

// Ping reads nothing from D1 but whether it answers.
func (d DB) Ping(ctx context.Context) error {
	var one int
	return d.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Keys is the key pool.
func (d DB) Keys() *Keys { return &Keys{db: d.db} }

// Tokens is the client tokens.
func (d DB) Tokens() *Tokens { return &Tokens{db: d.db} }

// Audit is the audit log and the login throttle.
func (d DB) Audit() *Audit { return &Audit{db: d.db} }

// Rollups is the usage statistics.
func (d DB) Rollups() *Rollups { return &Rollups{db: d.db} }

// Settings is the settings the admin changes at run time.
func (d DB) Settings() *Settings { return &Settings{db: d.db} }

// Sessions is the session generations.
func (d DB) Sessions() *Sessions { return &Sessions{db: d.db} }

// Models is the model lists.
func (d DB) Models() *Models { return &Models{db: d.db} }

// Checks is the health-check state and check jobs.
func (d DB) Checks() *Checks { return &Checks{db: d.db} }

// countingDB is the part of *sql.DB the store uses, with each call counted.
type countingDB struct {
	db *sql.DB
	n  Counter
}

func (c countingDB) count() {
	if c.n != nil {
		c.n.Add(1)
	}
}

func (c countingDB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	c.count()
	return c.db.QueryContext(ctx, q, args...)
}

func (c countingDB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	c.count()
	return c.db.QueryRowContext(ctx, q, args...)
}

func (c countingDB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	c.count()
	return c.db.ExecContext(ctx, q, args...)
}
