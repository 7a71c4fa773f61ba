package store

import (
	"context"
	"database/sql"
	"errors"
)

// LoginAttempt records one attempt at a password from key (a client
// address, or the /64 of an IPv6 one) and returns the failures counted in
// the current window, this attempt included, and when the window started
// (the window restarts window ms after it began). A failed attempt is
// counted in the same statement that reads the count, so parallel
// attempts each see their own number. A right password (failed false)
// runs the same UPDATE, adding nothing: a throttled address learns nothing
// from how long the answer took.
func (a *Audit) LoginAttempt(ctx context.Context, key string, failed bool, now, window int64) (n, since int64, err error) {
	inc := int64(0)
	if failed {
		inc = 1
	}
	// A failure after the window starts a new one; a right password
	// changes nothing, and touches only a row still in its window.
	err = a.db.QueryRowContext(ctx,
		`UPDATE login_failures SET
		   failures = CASE WHEN ? = 1 AND since <= ? - ? THEN 1 ELSE failures + ? END,
		   since = CASE WHEN ? = 1 AND since <= ? - ? THEN ? ELSE since END
		 WHERE ip = ? AND (? = 1 OR since > ? - ?) RETURNING failures, since`,
		inc, now, window, inc, inc, now, window, now, key, inc, now, window).Scan(&n, &since)
	switch {
	case err == nil:
		return n, since, nil
	case !errors.Is(err, sql.ErrNoRows):
		return 0, 0, err
	case !failed:
		return 0, 0, nil
	}
	// The first failure from key (or one racing it): insert, or count on
	// if a parallel attempt inserted first.
	err = a.db.QueryRowContext(ctx,
		`INSERT INTO login_failures (ip, since, failures) VALUES (?, ?, 1)
		 ON CONFLICT (ip) DO UPDATE SET
		   failures = CASE WHEN login_failures.since <= excluded.since - ? THEN 1 ELSE login_failures.failures + 1 END,
		   since = CASE WHEN login_failures.since <= excluded.since - ? THEN excluded.since ELSE login_failures.since END
		 RETURNING failures, since`, key, now, window, window).Scan(&n, &since)
	return n, since, err
}
