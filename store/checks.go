package store

import (
	"context"
	"database/sql"
	"errors"
	"log"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/rotation"
)

// Checks is the health-check state in the database: which keys are due,
// what each check found, and the on-demand check jobs.
type Checks struct {
	db     countingDB
	sealer Sealer
}

// Sealing makes c open the sealed keys it reads (see Keys.Sealing).
func (c *Checks) Sealing(s Sealer) *Checks {
	c.sealer = s
	return c
}

// CheckKey is a key to check.
type CheckKey struct {
	ID       int64
	Provider string
	Secret   string
	Status   string
	Fails    int64 // failed recovery probes in a row
	// Unopened: the key is sealed under another KEYPOOL_SECRET; Secret is
	// empty and the key must not be sent anywhere.
	Unopened bool
}

// Due returns up to limit keys due for a check at now, most urgent first
// (one query): active keys whose cooldown for some model has ended since
// their last check, then blocked and exhausted keys due for a recovery
// probe, then active keys by how long ago they were checked. The due
// times kept in keys.next_check_at are the cron's persistent cursor: each
// run takes the next keys in line and moves them back.
func (c *Checks) Due(ctx context.Context, now int64, limit int) ([]CheckKey, error) {
	rows, err := c.db.QueryContext(ctx,
		`SELECT id, provider, secret, status, check_fails FROM (
		 SELECT id, provider, secret, status, check_fails, MIN(pri) AS pri, MIN(due) AS due FROM (
		   SELECT k.id, k.provider, k.secret, k.status, k.check_fails, 0 AS pri, MIN(m.until) AS due
		   FROM key_models m JOIN keys k ON k.id = m.key_id
		   WHERE m.state = 'cooling' AND m.until <= ? AND m.until > k.last_checked_at AND k.status = 'active'
		   GROUP BY k.id
		   UNION ALL
		   SELECT id, provider, secret, status, check_fails, CASE WHEN status = 'active' THEN 2 ELSE 1 END, next_check_at
		   FROM keys WHERE next_check_at <= ? AND status <> 'disabled'
		 ) GROUP BY id) ORDER BY pri, due, id LIMIT ?`, now, now, limit)
	if err != nil {
		return nil, err
	}
	return c.scanCheckKeys(rows)
}

func (c *Checks) scanCheckKeys(rows *sql.Rows) ([]CheckKey, error) {
	var out []CheckKey
	seen := map[int64]bool{}
	for rows.Next() {
		var k CheckKey
		if err := rows.Scan(&k.ID, &k.Provider, &k.Secret, &k.Status, &k.Fails); err != nil {
			rows.Close()
			return nil, err
		}
		if seen[k.ID] {
			continue
		}
		seen[k.ID] = true
		var err error
		if k.Secret, err = (&Keys{sealer: c.sealer}).open(k.Provider, k.Secret); err != nil {
			log.Printf("keypool: key %d does not open with this KEYPOOL_SECRET; not checked", k.ID)
			k.Secret, k.Unopened = "", true
		}
		out = append(out, k)
	}
	return out, closeRows(rows)
}

// CheckRecord is one finished check to store.
type CheckRecord struct {
	Key    CheckKey // as read before the check
	Result rotation.CheckResult
	Next   rotation.Transition
}

// RecordChecks stores finished checks in three statements whatever their
// number: the keys' new state (a status only changes if nobody changed it
// meanwhile), one history row each (the balance history), and an event
// for each status change.
func (c *Checks) RecordChecks(ctx context.Context, recs []CheckRecord, now int64) error {
	if len(recs) == 0 {
		return nil
	}
	var b jsonout.Builder
	b.Array()
	for _, r := range recs {
		b.Array().Int(r.Key.ID).String(r.Key.Status).String(r.Next.Status).String(r.Next.Reason).
			Int(r.Next.Next.UnixMilli()).Int(r.Next.Fails).String(string(r.Result.Outcome)).Int(int64(r.Result.Status))
		if r.Result.HasBalance {
			b.Float(r.Result.Balance)
		} else {
			b.Null()
		}
		b.String(r.Result.Detail).EndArray()
	}
	data := string(b.EndArray().Bytes())
	if _, err := c.db.ExecContext(ctx,
		`UPDATE keys SET
		   status = CASE WHEN keys.status = u.value ->> 1 THEN u.value ->> 2 ELSE keys.status END,
		   status_reason = CASE WHEN keys.status = u.value ->> 1 AND u.value ->> 1 <> u.value ->> 2
		                        THEN u.value ->> 3 ELSE keys.status_reason END,
		   updated_at = CASE WHEN keys.status = u.value ->> 1 AND u.value ->> 1 <> u.value ->> 2
		                     THEN ? ELSE keys.updated_at END,
		   balance = COALESCE(u.value ->> 8, keys.balance),
		   last_checked_at = ?, next_check_at = u.value ->> 4, check_fails = u.value ->> 5,
		   check_result = u.value ->> 6
		 FROM json_each(?) AS u WHERE keys.id = u.value ->> 0`, now, now, data); err != nil {
		return err
	}
	if _, err := c.db.ExecContext(ctx,
		`INSERT INTO key_checks (key_id, at, outcome, status, balance, detail)
		 SELECT u.value ->> 0, ?, u.value ->> 6, u.value ->> 7, u.value ->> 8, u.value ->> 9
		 FROM json_each(?) AS u WHERE EXISTS (SELECT 1 FROM keys WHERE id = u.value ->> 0)`, now, data); err != nil {
		return err
	}
	_, err := c.db.ExecContext(ctx,
		`INSERT INTO key_events (key_id, at, model, from_state, to_state, reason, status, excerpt)
		 SELECT k.id, ?, '', u.value ->> 1, u.value ->> 2, u.value ->> 3, u.value ->> 7, u.value ->> 9
		 FROM json_each(?) AS u JOIN keys k ON k.id = u.value ->> 0
		 WHERE u.value ->> 1 <> u.value ->> 2 AND k.status = u.value ->> 2 AND k.updated_at = ?`, now, data, now)
	return err
}

// BalancePoint is one balance reading.
type BalancePoint struct {
	At      int64
	Balance float64
}

// BalanceHistory returns a key's balance readings since a time, oldest
// first.
func (c *Checks) BalanceHistory(ctx context.Context, keyID, since int64) ([]BalancePoint, error) {
	rows, err := c.db.QueryContext(ctx,
		`SELECT at, balance FROM key_checks WHERE key_id = ? AND at >= ? AND balance IS NOT NULL ORDER BY at`, keyID, since)
	if err != nil {
		return nil, err
	}
	var out []BalancePoint
	for rows.Next() {
		var p BalancePoint
		if err := rows.Scan(&p.At, &p.Balance); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, closeRows(rows)
}

// Prune deletes check results and key events older than before, and
// per-model blocks older than blocksBefore: a model permission may be
// granted later, and a block that still holds is learnt again from the
// next answer.
func (c *Checks) Prune(ctx context.Context, before, blocksBefore int64) (int64, error) {
	var total int64
	for _, q := range []struct {
		sql string
		at  int64
	}{
		{`DELETE FROM key_checks WHERE at < ?`, before},
		{`DELETE FROM key_events WHERE at < ?`, before},
		{`DELETE FROM key_models WHERE state = 'blocked' AND updated_at < ?`, blocksBefore},
	} {
		res, err := c.db.ExecContext(ctx, q.sql, q.at)
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// Job states.
const (
	JobRunning = "running"
	JobStopped = "stopped"
	JobDone    = "done"
)

// Job is an on-demand check of many keys, advanced in chunks.
type Job struct {
	ID          int64
	State       string
	Filter      string // JSON: {"ids":[…]} and/or {"provider":…,"status":[…]}
	Options     string // JSON, read by the handler
	Total       int64
	Done        int64
	Changed     int64
	Errors      int64
	Cursor      int64 // last key id checked
	ChangedKeys string
	CreatedAt   int64
	UpdatedAt   int64
	RunMS       int64
	LeaseUntil  int64
}

// ErrJobNotFound is returned for a job id that does not exist.
var ErrJobNotFound = errors.New("check job not found")

// jobWhere is the SQL condition for a job's filter; its arguments are the
// filter JSON, three times.
const jobWhere = `(json_array_length(?, '$.ids') IS NULL OR id IN (SELECT value FROM json_each(?, '$.ids')))
	AND (COALESCE(? ->> '$.provider', '') = '' OR provider = (? ->> '$.provider'))
	AND (json_array_length(?, '$.status') IS NULL OR status IN (SELECT value FROM json_each(?, '$.status')))`

func jobArgs(filter string) []any {
	return []any{filter, filter, filter, filter, filter, filter}
}

// CreateJob starts a job over the keys filter selects.
func (c *Checks) CreateJob(ctx context.Context, filter, options string, now int64) (Job, error) {
	var total int64
	if err := c.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys WHERE `+jobWhere, jobArgs(filter)...).Scan(&total); err != nil {
		return Job{}, err
	}
	state := JobRunning
	if total == 0 {
		state = JobDone
	}
	var id int64
	if err := c.db.QueryRowContext(ctx,
		`INSERT INTO check_jobs (state, filter, options, total, created_at, updated_at)
		 VALUES (?, ?, ?, ?, ?, ?) RETURNING id`, state, filter, options, total, now, now).Scan(&id); err != nil {
		return Job{}, err
	}
	return Job{ID: id, State: state, Filter: filter, Options: options, Total: total, ChangedKeys: "[]", CreatedAt: now, UpdatedAt: now}, nil
}

const jobColumns = `id, state, filter, options, total, done, changed, errors, cursor, changed_keys,
	created_at, updated_at, run_ms, lease_until`

func scanJob(sc interface{ Scan(...any) error }) (Job, error) {
	var j Job
	err := sc.Scan(&j.ID, &j.State, &j.Filter, &j.Options, &j.Total, &j.Done, &j.Changed, &j.Errors, &j.Cursor,
		&j.ChangedKeys, &j.CreatedAt, &j.UpdatedAt, &j.RunMS, &j.LeaseUntil)
	return j, err
}

// Job returns one job.
func (c *Checks) Job(ctx context.Context, id int64) (Job, error) {
	j, err := scanJob(c.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM check_jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return j, ErrJobNotFound
	}
	return j, err
}

// Jobs returns the most recent jobs, newest first; running only when
// runningOnly.
func (c *Checks) Jobs(ctx context.Context, limit int, runningOnly bool) ([]Job, error) {
	q := `SELECT ` + jobColumns + ` FROM check_jobs`
	if runningOnly {
		q += ` WHERE state = 'running'`
	}
	rows, err := c.db.QueryContext(ctx, q+` ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, j)
	}
	return out, closeRows(rows)
}

// Claim takes a running job's lease until leaseUntil, so that two
// advancers (an admin poll and the cron) never check the same chunk. It
// reports whether the lease was free.
func (c *Checks) Claim(ctx context.Context, id, now, leaseUntil int64) (bool, error) {
	res, err := c.db.ExecContext(ctx,
		`UPDATE check_jobs SET lease_until = ? WHERE id = ? AND state = 'running' AND lease_until <= ?`, leaseUntil, id, now)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// JobKeys returns the next keys of a job after its cursor, by id.
func (c *Checks) JobKeys(ctx context.Context, j Job, limit int) ([]CheckKey, error) {
	args := append(jobArgs(j.Filter), j.Cursor, limit)
	rows, err := c.db.QueryContext(ctx,
		`SELECT id, provider, secret, status, check_fails FROM keys WHERE `+jobWhere+` AND id > ? ORDER BY id LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	return c.scanCheckKeys(rows)
}

// JobChange is one key whose status a job changed.
type JobChange struct {
	ID       int64
	From, To string
}

// maxChangedKeys bounds the changed keys a job remembers.
const maxChangedKeys = 200

// Advance records a chunk of a job and releases its lease: cursor moves
// on, counters grow, and the job is done when nothing is left. A job
// stopped meanwhile stays stopped.
func (c *Checks) Advance(ctx context.Context, j Job, cursor, done, changed, errs int64, changes []JobChange, runMS, now int64, finished bool) error {
	list := gjson.Parse(j.ChangedKeys).Array()
	var b jsonout.Builder
	b.Array()
	n := 0
	for _, x := range list {
		b.Raw([]byte(x.Raw))
		n++
	}
	for _, ch := range changes {
		if n >= maxChangedKeys {
			break
		}
		b.Array().Int(ch.ID).String(ch.From).String(ch.To).EndArray()
		n++
	}
	state := JobRunning
	if finished {
		state = JobDone
	}
	_, err := c.db.ExecContext(ctx,
		`UPDATE check_jobs SET cursor = ?, done = done + ?, changed = changed + ?, errors = errors + ?,
		   changed_keys = ?, run_ms = run_ms + ?, updated_at = ?, lease_until = 0,
		   state = CASE WHEN state = 'running' THEN ? ELSE state END
		 WHERE id = ?`, cursor, done, changed, errs, string(b.EndArray().Bytes()), runMS, now, state, j.ID)
	return err
}

// SetJobState stops or resumes a job. Resuming a finished job does
// nothing; the answer is the job as it is afterwards.
func (c *Checks) SetJobState(ctx context.Context, id int64, state string, now int64) (Job, error) {
	from := JobRunning
	if state == JobRunning {
		from = JobStopped
	}
	if _, err := c.db.ExecContext(ctx,
		`UPDATE check_jobs SET state = ?, updated_at = ?, lease_until = 0 WHERE id = ? AND state = ?`,
		state, now, id, from); err != nil {
		return Job{}, err
	}
	return c.Job(ctx, id)
}

// TrendPoint is one day of the pool's balance.
type TrendPoint struct {
	Day     int64 // unix ms of the UTC day
	Keys    int64 // keys with a reading that day
	Total   float64
	Balance []float64 // each key's last reading of the day, for outlier filters and medians
}

// BalanceTrend returns, per UTC day since since, the last balance reading
// of each key that day, of provider ("" all).
func (c *Checks) BalanceTrend(ctx context.Context, since int64, prov string) ([]TrendPoint, error) {
	q := `SELECT day, balance FROM (
	        SELECT c.at / 86400000 * 86400000 AS day, c.balance,
	               ROW_NUMBER() OVER (PARTITION BY c.key_id, c.at / 86400000 ORDER BY c.at DESC) AS rn
	        FROM key_checks c JOIN keys k ON k.id = c.key_id
	        WHERE c.balance IS NOT NULL AND c.at >= ?`
	args := []any{since}
	if prov != "" {
		q += ` AND k.provider = ?`
		args = append(args, prov)
	}
	rows, err := c.db.QueryContext(ctx, q+`) WHERE rn = 1 ORDER BY day`, args...)
	if err != nil {
		return nil, err
	}
	var out []TrendPoint
	for rows.Next() {
		var day int64
		var bal float64
		if err := rows.Scan(&day, &bal); err != nil {
			rows.Close()
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].Day != day {
			out = append(out, TrendPoint{Day: day})
		}
		p := &out[len(out)-1]
		p.Keys++
		p.Total += bal
		p.Balance = append(p.Balance, bal)
	}
	return out, closeRows(rows)
}
