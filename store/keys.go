// Package store keeps keypool's state in D1 (SQLite) through database/sql.
// The same code runs on Workers against D1 and in tests against SQLite with
// the same migration files. It makes no decisions: package rotation does,
// and the store writes the state changes it decides (Apply).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"slices"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/seal"
)

// Key states: rotation decides them, the store keeps them.
const (
	StatusActive    = rotation.KeyActive
	StatusDisabled  = rotation.KeyDisabled
	StatusBlocked   = rotation.KeyBlocked
	StatusExhausted = rotation.KeyExhausted
)

// Per-model states.
const (
	ModelCooling = "cooling"
	ModelBlocked = "blocked"
)

// Key is one upstream key with its counters and per-model states.
type Key struct {
	ID            int64
	Provider      string
	Secret        string // the key; empty when read sealed (see scanKey)
	Masked        string // "sk-ab…7f3c"
	Label         string
	Status        string
	StatusReason  string
	Balance       sql.NullFloat64
	CreatedAt     int64
	UpdatedAt     int64
	LastUsedAt    int64
	LastCheckedAt int64
	Requests      int64
	Successes     int64
	Failures      int64
	Models        []ModelState
}

// ModelState is a key's state for one model.
type ModelState struct {
	Model  string
	State  string
	Until  int64 // end of cooling, unix ms; 0 when blocked
	Reason string
	Streak int64
}

// Event is one recorded state change of a key.
type Event struct {
	At      int64
	Model   string
	From    string
	To      string
	Reason  string
	Status  int64
	Excerpt string
}

// Keys is the key pool in the database.
type Keys struct {
	db     countingDB
	sealer Sealer
}

// Counter counts database round trips; atomic.Int64 is one. The
// benchmarks read it to report D1 queries per proxied request.
type Counter interface {
	Add(delta int64) int64
}

// NewKeys returns the pool stored in db.
func NewKeys(db *sql.DB) *Keys { return &Keys{db: countingDB{db: db}} }

// Counting makes k count each database round trip in queries (nil: none).
func (k *Keys) Counting(queries Counter) *Keys {
	k.db.n = queries
	return k
}

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

// ErrNotFound is returned for a key id that does not exist.
var ErrNotFound = errors.New("key not found")

// ErrIntegrity means a sealed key did not open to the key it was sealed
// from, or its fingerprint came out differently twice: memory corruption.
// Add and SealLegacy then fail before writing anything.
var ErrIntegrity = errors.New("keypool: a sealed key did not verify before it was written (memory corruption); nothing was stored")

// addChunk bounds one INSERT's JSON parameter; D1 caps values at 1 MB.
const addChunk = 500

// Sealer encrypts keys at rest (seal.Box is one). ad binds a sealed value
// to its provider.
type Sealer interface {
	Seal(plain, ad string) string
	Open(sealed, ad string) (string, error)
	Fingerprint(plain, ad string) string
}

// Sealing makes k store keys sealed by s and open them when it reads
// them. Without it keys are stored as they are (tests of other parts).
func (k *Keys) Sealing(s Sealer) *Keys {
	k.sealer = s
	return k
}

// open returns the key stored as stored: sealed values are opened, plain
// ones (stored before keys were sealed) returned as they are.
func (k *Keys) open(prov, stored string) (string, error) {
	if !seal.IsSealed(stored) {
		return stored, nil
	}
	if k.sealer == nil {
		return "", seal.ErrOpen
	}
	return k.sealer.Open(stored, prov)
}

// Add inserts secrets for provider and reports which were new and which
// were already in the pool. Each chunk of keys is a single statement, so a
// bulk import of thousands of keys costs a handful of D1 round trips, and a
// concurrent import of the same key cannot insert it twice. Sealed keys
// are told apart by their fingerprints.
func (k *Keys) Add(ctx context.Context, prov, label string, secrets []string, now int64) (added []Key, duplicates []string, err error) {
	seen := make(map[string]bool, len(secrets))
	unique := secrets[:0:0]
	for _, s := range secrets {
		if seen[s] {
			duplicates = append(duplicates, s)
			continue
		}
		seen[s] = true
		unique = append(unique, s)
	}
	secrets = unique
	// Every key is sealed and verified before the first chunk is written,
	// so a mismatch stores nothing.
	stored, fps := secrets, make([]string, len(secrets))
	if k.sealer != nil {
		stored = make([]string, len(secrets))
		for i, sec := range secrets {
			if stored[i], fps[i], err = k.sealVerified(sec, prov); err != nil {
				return nil, duplicates, err
			}
		}
	}
	for start := 0; start < len(secrets); start += addChunk {
		end := min(start+addChunk, len(secrets))
		// The answer names rows by fingerprint (or by the plain secret
		// when not sealed).
		ident := stored[start:end]
		if k.sealer != nil {
			ident = fps[start:end]
		}
		fresh, err := k.insertChunk(ctx, prov, label, now, secrets[start:end], stored[start:end], fps[start:end])
		if err != nil {
			return added, duplicates, err
		}
		for i, s := range secrets[start:end] {
			id, ok := fresh[ident[i]]
			if !ok {
				duplicates = append(duplicates, s)
				continue
			}
			added = append(added, Key{ID: id, Provider: prov, Secret: s, Masked: provider.Mask(s), Label: label,
				Status: StatusActive, CreatedAt: now, UpdatedAt: now})
		}
	}
	return added, duplicates, nil
}

// insertChunk inserts one chunk of keys in one statement and returns the
// ids of the rows it added, by fingerprint (by stored secret when the
// store does not seal).
func (k *Keys) insertChunk(ctx context.Context, prov, label string, now int64, secrets, stored, fps []string) (map[string]int64, error) {
	// Each row: [stored secret, fingerprint, masked].
	var b jsonout.Builder
	b.Array()
	for i, sec := range secrets {
		b.Array().String(stored[i]).String(fps[i]).String(provider.Mask(sec)).EndArray()
	}
	conflict, returning := `(provider, secret)`, `secret`
	if k.sealer != nil {
		conflict, returning = `(provider, fingerprint) WHERE fingerprint <> ''`, `fingerprint`
	}
	rows, err := k.db.QueryContext(ctx,
		`INSERT INTO keys (provider, secret, fingerprint, masked, label, created_at, updated_at)
		 SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, ?, ?, ? FROM json_each(?) AS j WHERE true
		 ON CONFLICT `+conflict+` DO NOTHING
		 RETURNING id, `+returning,
		prov, label, now, now, string(b.EndArray().Bytes()))
	if err != nil {
		return nil, err
	}
	fresh := map[string]int64{}
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			rows.Close()
			return nil, err
		}
		fresh[s] = id
	}
	return fresh, closeRows(rows)
}

// sealVerified seals sec and checks the result before anything is
// written: it must open to sec, and the fingerprint must come out the same
// twice.
func (k *Keys) sealVerified(sec, prov string) (stored, fp string, err error) {
	stored, fp = k.sealer.Seal(sec, prov), k.sealer.Fingerprint(sec, prov)
	if back, err := k.sealer.Open(stored, prov); err != nil || back != sec || k.sealer.Fingerprint(sec, prov) != fp {
		return "", "", ErrIntegrity
	}
	return stored, fp, nil
}

// SealLegacy seals up to limit keys stored plain (before keys were sealed)
// and reports how many it sealed. A plain key that turns out to duplicate
// a sealed one is deleted. It needs Sealing.
func (k *Keys) SealLegacy(ctx context.Context, limit int) (int, error) {
	if k.sealer == nil {
		return 0, errors.New("SealLegacy needs a Sealer")
	}
	rows, err := k.db.QueryContext(ctx,
		`SELECT id, provider, secret FROM keys WHERE fingerprint = '' ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return 0, err
	}
	type legacy struct {
		id        int64
		prov, sec string
	}
	var list []legacy
	for rows.Next() {
		var x legacy
		if err := rows.Scan(&x.id, &x.prov, &x.sec); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, x)
	}
	if err := closeRows(rows); err != nil || len(list) == 0 {
		return 0, err
	}
	var b jsonout.Builder
	b.Array()
	for _, x := range list {
		stored, fp, err := k.sealVerified(x.sec, x.prov)
		if err != nil {
			return 0, err
		}
		b.Array().Int(x.id).String(stored).String(fp).String(provider.Mask(x.sec)).String(x.prov).EndArray()
	}
	data := string(b.EndArray().Bytes())
	// Duplicates of sealed keys go first, then the rest is sealed in one
	// statement.
	if _, err := k.db.ExecContext(ctx,
		`DELETE FROM keys WHERE id IN (
		   SELECT u.value ->> 0 FROM json_each(?) AS u
		   WHERE EXISTS (SELECT 1 FROM keys k2 WHERE k2.provider = u.value ->> 4 AND k2.fingerprint = u.value ->> 2))`,
		data); err != nil {
		return 0, err
	}
	res, err := k.db.ExecContext(ctx,
		`UPDATE keys SET secret = u.value ->> 1, fingerprint = u.value ->> 2, masked = u.value ->> 3
		 FROM json_each(?) AS u WHERE keys.id = u.value ->> 0 AND keys.fingerprint = ''`, data)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// Reveal returns a key in full, for the admin who asked for it.
func (k *Keys) Reveal(ctx context.Context, id int64) (string, error) {
	var prov, stored string
	err := k.db.QueryRowContext(ctx, `SELECT provider, secret FROM keys WHERE id = ?`, id).Scan(&prov, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", err
	}
	return k.open(prov, stored)
}

func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

const keyColumns = `id, provider, secret, masked, label, status, status_reason, balance, created_at,
	updated_at, last_used_at, last_checked_at, requests, successes, failures`

// scanKey reads a key for listing: a sealed secret stays sealed (Secret
// is empty; listings show Masked, and Reveal opens one key on request).
func scanKey(rows *sql.Rows) (Key, error) {
	var x Key
	err := rows.Scan(&x.ID, &x.Provider, &x.Secret, &x.Masked, &x.Label, &x.Status, &x.StatusReason, &x.Balance,
		&x.CreatedAt, &x.UpdatedAt, &x.LastUsedAt, &x.LastCheckedAt, &x.Requests, &x.Successes, &x.Failures)
	if seal.IsSealed(x.Secret) {
		x.Secret = ""
	} else if x.Masked == "" {
		x.Masked = provider.Mask(x.Secret)
	}
	return x, err
}

// List returns the keys of one provider (all providers when prov is ""),
// oldest first, each with its per-model states. It costs two queries
// whatever the number of keys.
func (k *Keys) List(ctx context.Context, prov string) ([]Key, error) {
	q := `SELECT ` + keyColumns + ` FROM keys`
	var args []any
	if prov != "" {
		q += ` WHERE provider = ?`
		args = append(args, prov)
	}
	rows, err := k.db.QueryContext(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	var keys []Key
	index := map[int64]int{}
	for rows.Next() {
		x, err := scanKey(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		index[x.ID] = len(keys)
		keys = append(keys, x)
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	q = `SELECT m.key_id, m.model, m.state, m.until, m.reason, m.streak FROM key_models m`
	if prov != "" {
		q += ` JOIN keys k ON k.id = m.key_id WHERE k.provider = ?`
	}
	rows, err = k.db.QueryContext(ctx, q+` ORDER BY m.key_id, m.model`, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var m ModelState
		if err := rows.Scan(&id, &m.Model, &m.State, &m.Until, &m.Reason, &m.Streak); err != nil {
			rows.Close()
			return nil, err
		}
		if i, ok := index[id]; ok {
			keys[i].Models = append(keys[i].Models, m)
		}
	}
	return keys, closeRows(rows)
}

// Get returns one key with its per-model states and its most recent events,
// newest first.
func (k *Keys) Get(ctx context.Context, id int64, events int) (Key, []Event, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = ?`, id)
	if err != nil {
		return Key{}, nil, err
	}
	if !rows.Next() {
		if err := closeRows(rows); err != nil {
			return Key{}, nil, err
		}
		return Key{}, nil, ErrNotFound
	}
	x, err := scanKey(rows)
	rows.Close()
	if err != nil {
		return Key{}, nil, err
	}
	rows, err = k.db.QueryContext(ctx,
		`SELECT model, state, until, reason, streak FROM key_models WHERE key_id = ? ORDER BY model`, id)
	if err != nil {
		return Key{}, nil, err
	}
	for rows.Next() {
		var m ModelState
		if err := rows.Scan(&m.Model, &m.State, &m.Until, &m.Reason, &m.Streak); err != nil {
			rows.Close()
			return Key{}, nil, err
		}
		x.Models = append(x.Models, m)
	}
	if err := closeRows(rows); err != nil {
		return Key{}, nil, err
	}
	rows, err = k.db.QueryContext(ctx,
		`SELECT at, model, from_state, to_state, reason, status, excerpt FROM key_events
		 WHERE key_id = ? ORDER BY at DESC, id DESC LIMIT ?`, id, events)
	if err != nil {
		return Key{}, nil, err
	}
	var evs []Event
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.At, &e.Model, &e.From, &e.To, &e.Reason, &e.Status, &e.Excerpt); err != nil {
			rows.Close()
			return Key{}, nil, err
		}
		evs = append(evs, e)
	}
	return x, evs, closeRows(rows)
}

// AdminUpdate is the admin's change to a key: status "active" or
// "disabled" ("" keeps it; enabling also gives a blocked or exhausted key
// another chance), a label (nil keeps it), and clearModels drops its
// per-model cooldowns and blocks. Each status change is an event.
func (k *Keys) AdminUpdate(ctx context.Context, id int64, status string, label *string, clearModels bool, now int64) error {
	var from string
	if err := k.db.QueryRowContext(ctx, `SELECT status FROM keys WHERE id = ?`, id).Scan(&from); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	if label != nil {
		if _, err := k.db.ExecContext(ctx, `UPDATE keys SET label = ?, updated_at = ? WHERE id = ?`, *label, now, id); err != nil {
			return err
		}
	}
	if status != "" && status != from {
		if _, err := k.db.ExecContext(ctx,
			`UPDATE keys SET status = ?, status_reason = 'set by the admin', updated_at = ?, check_fails = 0, next_check_at = 0
			 WHERE id = ?`, status, now, id); err != nil {
			return err
		}
		if err := k.event(ctx, id, "", from, status, "set by the admin", 0, "", now); err != nil {
			return err
		}
	}
	if clearModels {
		_, err := k.db.ExecContext(ctx, `DELETE FROM key_models WHERE key_id = ?`, id)
		return err
	}
	return nil
}

// Delete removes a key and everything recorded about it.
func (k *Keys) Delete(ctx context.Context, id int64) error {
	res, err := k.db.ExecContext(ctx, `DELETE FROM keys WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return ErrNotFound
	}
	// Explicit, in case foreign keys are not enforced on this connection.
	if _, err := k.db.ExecContext(ctx, `DELETE FROM key_models WHERE key_id = ?`, id); err != nil {
		return err
	}
	_, err = k.db.ExecContext(ctx, `DELETE FROM key_events WHERE key_id = ?`, id)
	return err
}

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

// Usage is the coalesced traffic of one key since the last write.
type Usage struct {
	KeyID     int64
	Requests  int64
	Successes int64
	Failures  int64
	LastUsed  int64 // unix ms of the latest use
}

// Add counts one attempt into u.
func (u *Usage) Add(use rotation.KeyUse, now int64) {
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
func (k *Keys) AddUsage(ctx context.Context, usage []Usage) error {
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
