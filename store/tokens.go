package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
)

// Token is a client token: who may use the pool, for what, how much. The
// token itself is never stored, only its hash and a short prefix.
type Token struct {
	ID            int64
	Name          string
	Prefix        string
	Providers     []string // empty: every provider
	Models        []string // patterns, "*" wildcards; empty: every model
	Endpoints     string   // EndpointsInference ("" reads as it) or EndpointsAll
	ExpiresAt     int64    // unix ms; 0: never
	RPM           int64    // requests per minute; 0: no limit
	RequestsDay   int64    // quotas; 0: none
	RequestsTotal int64
	TokensDay     int64
	TokensTotal   int64
	Disabled      bool
	UsedRequests  int64
	UsedTokens    int64
	Day           int64 // the UTC day (unix ms of its 00:00) the day counters count
	DayRequests   int64
	DayTokens     int64
	LastUsedAt    int64
	CreatedAt     int64
	UpdatedAt     int64
}

// A token's endpoint scope: the inference endpoints keypool knows
// (provider.Inference), or every path a provider offers.
const (
	EndpointsInference = "inference"
	EndpointsAll       = "all"
)

// AllEndpoints reports whether the token has full pass-through.
func (x Token) AllEndpoints() bool { return x.Endpoints == EndpointsAll }

// EndpointScope is the token's endpoint scope, as stored and shown:
// EndpointsAll or EndpointsInference.
func (x Token) EndpointScope() string {
	if x.AllEndpoints() {
		return EndpointsAll
	}
	return EndpointsInference
}

// Tokens is the client tokens in the database.
type Tokens struct {
	db countingDB
}

// ErrTokenNotFound is returned for a token that does not exist.
var ErrTokenNotFound = errors.New("token not found")

const tokenColumns = `id, name, prefix, providers, models, expires_at, rpm, requests_day, requests_total,
	tokens_day, tokens_total, disabled, used_requests, used_tokens, day, day_requests, day_tokens,
	last_used_at, created_at, updated_at, endpoints`

func scanToken(sc interface{ Scan(...any) error }) (Token, error) {
	var x Token
	var provs, models string
	err := sc.Scan(&x.ID, &x.Name, &x.Prefix, &provs, &models, &x.ExpiresAt, &x.RPM, &x.RequestsDay, &x.RequestsTotal,
		&x.TokensDay, &x.TokensTotal, &x.Disabled, &x.UsedRequests, &x.UsedTokens, &x.Day, &x.DayRequests, &x.DayTokens,
		&x.LastUsedAt, &x.CreatedAt, &x.UpdatedAt, &x.Endpoints)
	x.Providers, x.Models = stringList(provs), stringList(models)
	return x, err
}

func stringList(js string) []string {
	var out []string
	for _, v := range gjson.Parse(js).Array() {
		out = append(out, v.String())
	}
	return out
}

// Create stores a new token under its hash.
func (t *Tokens) Create(ctx context.Context, x Token, hash string, now int64) (Token, error) {
	err := t.db.QueryRowContext(ctx,
		`INSERT INTO tokens (name, hash, prefix, providers, models, expires_at, rpm, requests_day, requests_total,
		   tokens_day, tokens_total, disabled, created_at, updated_at, endpoints)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		x.Name, hash, x.Prefix, string(jsonout.StringArray(x.Providers)), string(jsonout.StringArray(x.Models)),
		x.ExpiresAt, x.RPM, x.RequestsDay, x.RequestsTotal, x.TokensDay, x.TokensTotal, x.Disabled, now, now,
		x.EndpointScope()).Scan(&x.ID)
	x.CreatedAt, x.UpdatedAt, x.Endpoints = now, now, x.EndpointScope()
	return x, err
}

// Update changes a token's name, scopes, limits and state; counters stay.
func (t *Tokens) Update(ctx context.Context, x Token, now int64) error {
	res, err := t.db.ExecContext(ctx,
		`UPDATE tokens SET name = ?, providers = ?, models = ?, expires_at = ?, rpm = ?, requests_day = ?,
		   requests_total = ?, tokens_day = ?, tokens_total = ?, disabled = ?, endpoints = ?, updated_at = ? WHERE id = ?`,
		x.Name, string(jsonout.StringArray(x.Providers)), string(jsonout.StringArray(x.Models)), x.ExpiresAt, x.RPM,
		x.RequestsDay, x.RequestsTotal, x.TokensDay, x.TokensTotal, x.Disabled, x.EndpointScope(), now, x.ID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return ErrTokenNotFound
	}
	return nil
}

// Get returns one token.
func (t *Tokens) Get(ctx context.Context, id int64) (Token, error) {
	x, err := scanToken(t.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return x, ErrTokenNotFound
	}
	return x, err
}

// ByHash returns the token with this hash.
func (t *Tokens) ByHash(ctx context.Context, hash string) (Token, error) {
	x, err := scanToken(t.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return x, ErrTokenNotFound
	}
	return x, err
}

// List returns every token, oldest first.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	rows, err := t.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY id`)
	if err != nil {
		return nil, err
	}
	var out []Token
	for rows.Next() {
		x, err := scanToken(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, x)
	}
	return out, closeRows(rows)
}

// Delete removes a token.
func (t *Tokens) Delete(ctx context.Context, id int64) error {
	res, err := t.db.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return ErrTokenNotFound
	}
	return nil
}

// TokenUsage is a token's coalesced use since the last write.
type TokenUsage struct {
	ID       int64
	Day      int64 // the UTC day of the use
	Requests int64
	Tokens   int64
	LastUsed int64
}

// AddUsage adds the use of many tokens in one statement; a use on a new
// day starts that day's counters afresh, and a late use of an earlier day
// (another isolate's) counts in the totals only. A token listed twice (the
// use of two days) takes one more statement: an UPDATE … FROM applies one
// row per token.
func (t *Tokens) AddUsage(ctx context.Context, usage []TokenUsage) error {
	for len(usage) > 0 {
		seen := make(map[int64]bool, len(usage))
		var now, later []TokenUsage
		for _, u := range usage {
			if seen[u.ID] {
				later = append(later, u)
				continue
			}
			seen[u.ID] = true
			now = append(now, u)
		}
		if err := t.addUsage(ctx, now); err != nil {
			return err
		}
		usage = later
	}
	return nil
}

func (t *Tokens) addUsage(ctx context.Context, usage []TokenUsage) error {
	var b jsonout.Builder
	b.Array()
	for _, u := range usage {
		b.Array().Int(u.ID).Int(u.Day).Int(u.Requests).Int(u.Tokens).Int(u.LastUsed).EndArray()
	}
	_, err := t.db.ExecContext(ctx,
		`UPDATE tokens SET
		   used_requests = used_requests + (u.value ->> 2),
		   used_tokens = used_tokens + (u.value ->> 3),
		   day_requests = CASE WHEN day = u.value ->> 1 THEN day_requests + (u.value ->> 2)
		                       WHEN day < u.value ->> 1 THEN u.value ->> 2 ELSE day_requests END,
		   day_tokens = CASE WHEN day = u.value ->> 1 THEN day_tokens + (u.value ->> 3)
		                     WHEN day < u.value ->> 1 THEN u.value ->> 3 ELSE day_tokens END,
		   day = MAX(day, u.value ->> 1),
		   last_used_at = MAX(last_used_at, u.value ->> 4)
		 FROM json_each(?) AS u WHERE tokens.id = u.value ->> 0`, string(b.EndArray().Bytes()))
	return err
}

// Audit is the admin audit log.
type Audit struct {
	db countingDB
}

// Entry is one audit log entry.
type Entry struct {
	ID     int64
	At     int64
	Actor  string
	IP     string
	Action string
	Target string
	Detail string
}

// Add records an entry.
func (a *Audit) Add(ctx context.Context, e Entry) error {
	_, err := a.db.ExecContext(ctx,
		`INSERT INTO audit_log (at, actor, ip, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		e.At, e.Actor, e.IP, e.Action, e.Target, e.Detail)
	return err
}

// Page returns up to limit entries older than before (its id; 0: the
// newest), newest first.
func (a *Audit) Page(ctx context.Context, before int64, limit int) ([]Entry, error) {
	q, args := `SELECT id, at, actor, ip, action, target, detail FROM audit_log`, []any{}
	if before > 0 {
		q += ` WHERE id < ?`
		args = append(args, before)
	}
	rows, err := a.db.QueryContext(ctx, q+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.IP, &e.Action, &e.Target, &e.Detail); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, e)
	}
	return out, closeRows(rows)
}

// Prune deletes entries older than before.
func (a *Audit) Prune(ctx context.Context, before int64) (int64, error) {
	res, err := a.db.ExecContext(ctx, `DELETE FROM audit_log WHERE at < ?`, before)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// LoginSuccess clears ip's failures.
func (a *Audit) LoginSuccess(ctx context.Context, ip string) error {
	_, err := a.db.ExecContext(ctx, `DELETE FROM login_failures WHERE ip = ?`, ip)
	return err
}
