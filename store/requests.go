package store

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/keypool/keypool/jsonout"
)

// Requests is the request log (migrations/0009_request_log.sql).
type Requests struct {
	db countingDB
}

// Requests is the request log.
func (d DB) Requests() *Requests { return &Requests{db: d.db} }

// LoggedRequest is one entry of the request log.
type LoggedRequest struct {
	ID       int64 // the request id: unix ms << RequestIDShift | random bits
	TokenID  int64
	Provider string
	Model    string
	Route    string
	Status   int
	Class    string
	KeyID    int64
	// Keys are the ids of every key tried, in order; Attempts the JSON
	// array of what each met.
	Keys       []int64
	Attempts   string
	Prompt     int64
	Completion int64
	Cached     int64
	Estimated  bool
	LatencyMS  int64
}

// RequestIDShift: a request id is its arrival (unix ms) shifted left
// this many bits, the bits below random. 41 bits of ms (until 2039) and
// 12 random ones stay within 2^53, so the id survives JavaScript numbers
// on its way through D1.
const RequestIDShift = 12

// At is when the request arrived, unix ms.
func (l LoggedRequest) At() int64 { return l.ID >> RequestIDShift }

// Add writes entries in one statement; an id written before is kept.
func (q *Requests) Add(ctx context.Context, entries []LoggedRequest) error {
	if len(entries) == 0 {
		return nil
	}
	var b jsonout.Builder
	b.Array()
	for _, e := range entries {
		var keys strings.Builder
		keys.WriteString(",")
		for _, k := range e.Keys {
			keys.WriteString(strconv.FormatInt(k, 10) + ",")
		}
		est := int64(0)
		if e.Estimated {
			est = 1
		}
		b.Array().Int(e.ID).Int(e.TokenID).String(e.Provider).String(e.Model).String(e.Route).Int(int64(e.Status)).
			String(e.Class).Int(e.KeyID).String(keys.String()).String(e.Attempts).Int(e.Prompt).Int(e.Completion).
			Int(e.Cached).Int(est).Int(e.LatencyMS).EndArray()
	}
	_, err := q.db.ExecContext(ctx,
		`INSERT OR IGNORE INTO request_log (id, token_id, provider, model, route, status, class, key_id, keys, attempts,
		   prompt_tokens, completion_tokens, cached_tokens, estimated, latency_ms)
		 SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4, e.value ->> 5, e.value ->> 6,
		        e.value ->> 7, e.value ->> 8, e.value ->> 9, e.value ->> 10, e.value ->> 11, e.value ->> 12, e.value ->> 13,
		        e.value ->> 14
		 FROM json_each(?) AS e WHERE true`, string(b.EndArray().Bytes()))
	return err
}

// RequestFilter narrows the request log; zero values mean all.
type RequestFilter struct {
	From, To int64  // unix ms: from inclusive, to exclusive
	Before   int64  // an id: only older entries (paging)
	Class    string // success, client, upstream, rejected
	Status   int    // 2, 4 or 5: the status class the client got
	TokenID  int64
	HasToken bool // filter on TokenID (whose 0 is AUTH_KEY)
	KeyID    int64
	Provider string
	Model    string
	Route    string
}

const requestColumns = `id, token_id, provider, model, route, status, class, key_id, keys, attempts,
	prompt_tokens, completion_tokens, cached_tokens, estimated, latency_ms`

// Page returns up to limit entries that match f, newest first.
func (q *Requests) Page(ctx context.Context, f RequestFilter, limit int) ([]LoggedRequest, error) {
	where, args := []string{"true"}, []any{}
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if f.From > 0 {
		add("id >= ?", f.From<<RequestIDShift)
	}
	if f.To > 0 {
		add("id < ?", f.To<<RequestIDShift)
	}
	if f.Before > 0 {
		add("id < ?", f.Before)
	}
	if f.Class != "" {
		add("class = ?", f.Class)
	}
	if f.Status > 0 {
		add("status / 100 = ?", f.Status)
	}
	if f.HasToken {
		add("token_id = ?", f.TokenID)
	}
	if f.KeyID > 0 {
		add("keys LIKE ?", "%,"+strconv.FormatInt(f.KeyID, 10)+",%")
	}
	if f.Provider != "" {
		add("provider = ?", f.Provider)
	}
	if f.Model != "" {
		add("model = ?", f.Model)
	}
	if f.Route != "" {
		add("route = ?", f.Route)
	}
	args = append(args, limit)
	rows, err := q.db.QueryContext(ctx, `SELECT `+requestColumns+` FROM request_log WHERE `+
		strings.Join(where, " AND ")+` ORDER BY id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	var out []LoggedRequest
	for rows.Next() {
		var e LoggedRequest
		var keys string
		var est int64
		if err := rows.Scan(&e.ID, &e.TokenID, &e.Provider, &e.Model, &e.Route, &e.Status, &e.Class, &e.KeyID, &keys,
			&e.Attempts, &e.Prompt, &e.Completion, &e.Cached, &est, &e.LatencyMS); err != nil {
			rows.Close()
			return nil, err
		}
		e.Estimated = est != 0
		for _, k := range strings.Split(strings.Trim(keys, ","), ",") {
			if id, err := strconv.ParseInt(k, 10, 64); err == nil {
				e.Keys = append(e.Keys, id)
			}
		}
		out = append(out, e)
	}
	return out, closeRows(rows)
}

// ErrRequestNotFound: no entry of the request log has that id.
var ErrRequestNotFound = errors.New("no request with that id in the request log")

// Get is the entry with id; ErrRequestNotFound when there is none.
func (q *Requests) Get(ctx context.Context, id int64) (LoggedRequest, error) {
	page, err := q.Page(ctx, RequestFilter{Before: id + 1, From: id >> RequestIDShift, To: id>>RequestIDShift + 1}, 1)
	if err != nil {
		return LoggedRequest{}, err
	}
	if len(page) == 0 || page[0].ID != id {
		return LoggedRequest{}, ErrRequestNotFound
	}
	return page[0], nil
}

// Prune deletes entries older than before (unix ms) and all but the
// newest keep, and says how many went.
func (q *Requests) Prune(ctx context.Context, before int64, keep int) (int64, error) {
	res, err := q.db.ExecContext(ctx,
		`DELETE FROM request_log WHERE id < ? OR id <= (SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?)`,
		before<<RequestIDShift, keep)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Masks is the masked form of each of ids that is a key, in one query.
func (k *Keys) Masks(ctx context.Context, ids []int64) (map[int64]string, error) {
	out := map[int64]string{}
	if len(ids) == 0 {
		return out, nil
	}
	var b jsonout.Builder
	b.Array()
	for _, id := range ids {
		b.Int(id)
	}
	rows, err := k.db.QueryContext(ctx, `SELECT id, masked FROM keys WHERE id IN (SELECT value FROM json_each(?))`,
		string(b.EndArray().Bytes()))
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var m string
		if err := rows.Scan(&id, &m); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = m
	}
	return out, closeRows(rows)
}
