// Package store keeps keypool's state in D1 (SQLite) through database/sql.
// The same code runs on Workers against D1 and in tests against SQLite with
// the same migration files. It makes no decisions: package rotation does,
// and the store writes the state changes it decides (Apply).
package store

import (
	"context"
	"database/sql"
	"errors"

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
