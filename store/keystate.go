package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"slices"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/rotation"
)

// Candidates returns up to limit keys of prov that may serve model at now,
// least recently used first: active keys (and exhausted ones too when
// withExhausted, for free models) that are neither cooling nor blocked for
// the model. Each comes with its failure streak for the model. The index
// on (provider, status, last_used_at) keeps the rows read close to limit
// instead of the size of the pool.
func (k *Keys) Candidates(ctx context.Context, prov, model string, now int64, limit int, withExhausted bool) ([]rotation.Candidate, error) {
	const one = `SELECT k.id, k.secret, k.last_used_at, COALESCE(m.streak, 0), COALESCE(m.until, 0) FROM keys k
		 LEFT JOIN key_models m ON m.key_id = k.id AND m.model = ?
		 WHERE k.provider = ? AND k.status = ? AND (m.key_id IS NULL OR (m.state = 'cooling' AND m.until <= ?))
		 ORDER BY k.last_used_at, k.id LIMIT ?`
	q, args := one, []any{model, prov, StatusActive, now, limit}
	if withExhausted {
		// Two index range scans merged, rather than one sort of the whole
		// provider's keys.
		q = `SELECT * FROM (` + one + `) UNION ALL SELECT * FROM (` + one + `) ORDER BY 3, 1 LIMIT ?`
		args = append(args, model, prov, StatusExhausted, now, limit, limit)
	}
	rows, err := k.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var cs []rotation.Candidate
	for rows.Next() {
		var c rotation.Candidate
		if err := rows.Scan(&c.ID, &c.Secret, &c.LastUsed, &c.Streak, &c.CoolEnd); err != nil {
			rows.Close()
			return nil, err
		}
		if c.Secret, err = k.open(prov, c.Secret); err != nil {
			// Sealed under another KEYPOOL_SECRET: unusable, and said so.
			log.Printf("keypool: key %d does not open with this KEYPOOL_SECRET; skipped", c.ID)
			continue
		}
		cs = append(cs, c)
	}
	return cs, closeRows(rows)
}

// NextCoolingEnd returns when the first usable key of prov that is cooling
// for model comes back (unix ms), or 0 when none is cooling. Only asked when
// no key is usable, to tell the client how long to wait.
func (k *Keys) NextCoolingEnd(ctx context.Context, prov, model string, now int64, withExhausted bool) (int64, error) {
	var until sql.NullInt64
	statuses := `'active'`
	if withExhausted {
		statuses += `, 'exhausted'`
	}
	err := k.db.QueryRowContext(ctx,
		`SELECT MIN(m.until) FROM key_models m JOIN keys k ON k.id = m.key_id
		 WHERE k.provider = ? AND k.status IN (`+statuses+`) AND m.model = ? AND m.state = 'cooling' AND m.until > ?`,
		prov, model, now).Scan(&until)
	if err != nil {
		return 0, err
	}
	return until.Int64, nil
}

// KeyUsage is the coalesced traffic of one key since the last write.
type KeyUsage struct {
	KeyID     int64
	Requests  int64
	Successes int64
	Failures  int64
	LastUsed  int64 // unix ms of the latest use
}

// Add counts one attempt into u.
func (u *KeyUsage) Add(use rotation.KeyUse, now int64) {
	u.KeyID = use.Key
	u.Requests++
	if use.Served {
		u.Successes++
	} else {
		u.Failures++
	}
	u.LastUsed = max(u.LastUsed, now)
}

// AddUsage adds the counters of many keys in one statement: one D1 round
// trip however many keys a busy instance has used. Each key appears once
// in usage (the handler merges per key).
func (k *Keys) AddUsage(ctx context.Context, usage []KeyUsage) error {
	if len(usage) == 0 {
		return nil
	}
	var b jsonout.Builder
	b.Array()
	for _, u := range usage {
		b.Array().Int(u.KeyID).Int(u.Requests).Int(u.Successes).Int(u.Failures).Int(u.LastUsed).EndArray()
	}
	b.EndArray()
	_, err := k.db.ExecContext(ctx,
		`UPDATE keys SET
		   requests = requests + json_extract(u.value, '$[1]'),
		   successes = successes + json_extract(u.value, '$[2]'),
		   failures = failures + json_extract(u.value, '$[3]'),
		   last_used_at = MAX(last_used_at, json_extract(u.value, '$[4]'))
		 FROM json_each(?) AS u WHERE keys.id = json_extract(u.value, '$[0]')`,
		string(b.Bytes()))
	return err
}

// Apply writes the state changes rotation decided, in order, at now
// (the time of the events and of updated_at). A change that fails does
// not stop the others; the errors are returned together.
func (k *Keys) Apply(ctx context.Context, changes []rotation.Change, now int64) error {
	var errs []error
	for _, c := range changes {
		if err := k.apply(ctx, c, now); err != nil {
			errs = append(errs, fmt.Errorf("key %d: %w", c.Key, err))
		}
	}
	return errors.Join(errs...)
}

func (k *Keys) apply(ctx context.Context, c rotation.Change, now int64) error {
	switch c.Kind {
	case rotation.ChangeBlockKey:
		return k.setStatus(ctx, c, StatusBlocked, now)
	case rotation.ChangeExhaustKey:
		return k.setStatus(ctx, c, StatusExhausted, now)
	case rotation.ChangeBlockModel:
		return k.setModel(ctx, c, ModelBlocked, 0, now)
	case rotation.ChangeCool:
		return k.setModel(ctx, c, ModelCooling, c.Until, now)
	case rotation.ChangeResetStreak:
		return k.resetStreak(ctx, c.Key, c.Model, now)
	case rotation.ChangeLiftCooldowns:
		_, err := k.liftCooldowns(ctx, c.Keys, c.Since, now, c.Reason)
		return err
	}
	return fmt.Errorf("unknown state change %d", c.Kind)
}

// setModel records a key-model state and, when it takes the key-model out
// of rotation, an event. The streak counts failures in a row. A cooldown
// never shortens one already running (a daily-quota rest outlasts a later
// short hint), and only a block replaces a block.
func (k *Keys) setModel(ctx context.Context, c rotation.Change, state string, until, now int64) error {
	rows, err := k.db.QueryContext(ctx,
		`INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at)
		 SELECT id, ?, ?, ?, ?, 1, ? FROM keys WHERE id = ?
		 ON CONFLICT (key_id, model) DO UPDATE SET
		   state = CASE WHEN 'blocked' IN (excluded.state, key_models.state) THEN 'blocked' ELSE 'cooling' END,
		   until = CASE WHEN 'blocked' IN (excluded.state, key_models.state) THEN 0
		                ELSE MAX(key_models.until, excluded.until) END,
		   reason = CASE WHEN key_models.state = 'blocked' AND excluded.state <> 'blocked' THEN key_models.reason
		                 ELSE excluded.reason END,
		   streak = key_models.streak + 1, updated_at = excluded.updated_at
		 RETURNING state, until`,
		c.Model, state, until, c.Reason, now, c.Key)
	if err != nil {
		return err
	}
	var gotState string
	var gotUntil int64
	found := rows.Next()
	if found {
		err = rows.Scan(&gotState, &gotUntil)
	}
	if cerr := closeRows(rows); err == nil {
		err = cerr
	}
	if err != nil || !found {
		return err // !found: the key was deleted while the request ran
	}
	if gotState != state || state == ModelCooling && until <= now {
		return nil // counted only: already blocked, or no rest asked for
	}
	return k.event(ctx, c.Key, c.Model, StatusActive, state, c.Reason, c.Status, c.Excerpt, now)
}

// resetStreak forgets a key-model's failure streak after a success. Only
// an ended cooldown row goes; a block stays.
func (k *Keys) resetStreak(ctx context.Context, keyID int64, model string, now int64) error {
	_, err := k.db.ExecContext(ctx,
		`DELETE FROM key_models WHERE key_id = ? AND model = ? AND state = 'cooling' AND until <= ?`,
		keyID, model, now)
	return err
}

// liftCooldowns ends the cooldowns and failure streaks given to keys since
// a time, with an event each: a storm showed they were the upstream's
// fault, not the keys'.
func (k *Keys) liftCooldowns(ctx context.Context, keyIDs []int64, since, now int64, reason string) (int64, error) {
	if len(keyIDs) == 0 {
		return 0, nil
	}
	ids := string(jsonout.IntArray(keyIDs))
	rows, err := k.db.QueryContext(ctx,
		`DELETE FROM key_models WHERE state = 'cooling' AND updated_at >= ?
		   AND key_id IN (SELECT value FROM json_each(?))
		 RETURNING key_id, model, until > ?`, since, ids, now)
	if err != nil {
		return 0, err
	}
	type km struct {
		id    int64
		model string
	}
	var lifted []km
	for rows.Next() {
		var x km
		var resting bool
		if err := rows.Scan(&x.id, &x.model, &resting); err != nil {
			rows.Close()
			return 0, err
		}
		if resting { // a streak without a running rest ends silently
			lifted = append(lifted, x)
		}
	}
	if err := closeRows(rows); err != nil {
		return 0, err
	}
	for _, x := range lifted {
		if err := k.event(ctx, x.id, x.model, ModelCooling, StatusActive, reason, 0, "", now); err != nil {
			return 0, err
		}
	}
	return int64(len(lifted)), nil
}

// setStatus moves c's key to status and records the change, when the key
// is in one of the statuses c applies to (From).
func (k *Keys) setStatus(ctx context.Context, c rotation.Change, status string, now int64) error {
	id := c.Key
	var cur string
	if err := k.db.QueryRowContext(ctx, `SELECT status FROM keys WHERE id = ?`, id).Scan(&cur); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil // deleted meanwhile
		}
		return err
	}
	if cur == status || !slices.Contains(c.From, cur) {
		return nil
	}
	// The status condition makes a concurrent change win instead of being
	// recorded under a stale "from".
	res, err := k.db.ExecContext(ctx,
		`UPDATE keys SET status = ?, status_reason = ?, updated_at = ? WHERE id = ? AND status = ?`,
		status, c.Reason, now, id, cur)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err
	}
	return k.event(ctx, id, "", cur, status, c.Reason, c.Status, c.Excerpt, now)
}

func (k *Keys) event(ctx context.Context, id int64, model, from, to, reason string, status int, excerpt string, now int64) error {
	_, err := k.db.ExecContext(ctx,
		`INSERT INTO key_events (key_id, at, model, from_state, to_state, reason, status, excerpt)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, now, model, from, to, reason, status, excerpt)
	return err
}

// PruneCooling deletes cooling rows that ended longer ago than a failure
// streak is remembered; they no longer affect selection nor cooldowns.
// Blocked rows stay until a check or the admin clears them.
func (k *Keys) PruneCooling(ctx context.Context, now int64) (int64, error) {
	res, err := k.db.ExecContext(ctx, `DELETE FROM key_models WHERE state = 'cooling' AND until <= ?`,
		now-rotation.StreakMemory.Milliseconds())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Bulk applies an admin action to many keys: "enable", "disable",
// "delete" or "clear_models". It reports how many keys it changed, and
// records an event for each status change.
func (k *Keys) Bulk(ctx context.Context, ids []int64, action string, now int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	list := string(jsonout.IntArray(ids))
	var res sql.Result
	var err error
	switch action {
	case "enable", "disable":
		to, reason := StatusActive, "enabled by the admin"
		if action == "disable" {
			to, reason = StatusDisabled, "disabled by the admin"
		}
		// Events first, from the statuses as they are.
		if _, err := k.db.ExecContext(ctx,
			`INSERT INTO key_events (key_id, at, model, from_state, to_state, reason, status, excerpt)
			 SELECT id, ?, '', status, ?, ?, 0, '' FROM keys
			 WHERE id IN (SELECT value FROM json_each(?)) AND status <> ?`, now, to, reason, list, to); err != nil {
			return 0, err
		}
		res, err = k.db.ExecContext(ctx,
			`UPDATE keys SET status = ?, status_reason = ?, updated_at = ?, check_fails = 0, next_check_at = 0
			 WHERE id IN (SELECT value FROM json_each(?)) AND status <> ?`, to, reason, now, list, to)
	case "delete":
		if _, err := k.db.ExecContext(ctx, `DELETE FROM key_models WHERE key_id IN (SELECT value FROM json_each(?))`, list); err != nil {
			return 0, err
		}
		if _, err := k.db.ExecContext(ctx, `DELETE FROM key_events WHERE key_id IN (SELECT value FROM json_each(?))`, list); err != nil {
			return 0, err
		}
		res, err = k.db.ExecContext(ctx, `DELETE FROM keys WHERE id IN (SELECT value FROM json_each(?))`, list)
	case "clear_models":
		res, err = k.db.ExecContext(ctx, `DELETE FROM key_models WHERE key_id IN (SELECT value FROM json_each(?))`, list)
	default:
		return 0, errors.New("unknown bulk action " + action)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Export is one key for an export, in full.
type Export struct {
	ID       int64
	Provider string
	Secret   string
	Status   string
	Balance  sql.NullFloat64
}

// Export opens the keys an admin export asks for: ids (all when empty),
// of provider ("" all), "valid" (active) only, or with a balance of at
// least minBalance (when hasMin). Keys that do not open are left out.
func (k *Keys) Export(ctx context.Context, ids []int64, prov string, validOnly, hasMin bool, minBalance float64) ([]Export, error) {
	q := `SELECT id, provider, secret, status, balance FROM keys WHERE 1 = 1`
	var args []any
	if len(ids) > 0 {
		q += ` AND id IN (SELECT value FROM json_each(?))`
		args = append(args, string(jsonout.IntArray(ids)))
	}
	if prov != "" {
		q += ` AND provider = ?`
		args = append(args, prov)
	}
	if validOnly {
		q += ` AND status = 'active'`
	}
	if hasMin {
		q += ` AND balance >= ?`
		args = append(args, minBalance)
	}
	rows, err := k.db.QueryContext(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	var out []Export
	for rows.Next() {
		var x Export
		if err := rows.Scan(&x.ID, &x.Provider, &x.Secret, &x.Status, &x.Balance); err != nil {
			rows.Close()
			return nil, err
		}
		if x.Secret, err = k.open(x.Provider, x.Secret); err != nil {
			continue
		}
		out = append(out, x)
	}
	return out, closeRows(rows)
}
