package store

import (
	"context"
	"strconv"
	"strings"

	"github.com/keypool/keypool/jsonout"
)

// Usage rollups: what the pool served, per minute and per day.
type Rollups struct {
	db countingDB
}

// Rollup is the counts of one group in one minute.
type Rollup struct {
	Minute         int64 // unix ms of the minute
	TokenID, KeyID int64
	Provider       string
	Model          string
	Counts
}

// Counts are the figures a rollup adds up.
type Counts struct {
	Requests         int64
	Successes        int64
	ClientErrors     int64
	UpstreamErrors   int64
	Rejected         int64
	PromptTokens     int64
	CompletionTokens int64
	Estimated        int64
	LatencyMS        int64
	// CachedTokens is the part of PromptTokens the providers read from
	// their prompt caches (usage.Usage.Cached).
	CachedTokens int64
}

// Add adds c to n.
func (n *Counts) Add(c Counts) {
	n.Requests += c.Requests
	n.Successes += c.Successes
	n.ClientErrors += c.ClientErrors
	n.UpstreamErrors += c.UpstreamErrors
	n.Rejected += c.Rejected
	n.PromptTokens += c.PromptTokens
	n.CompletionTokens += c.CompletionTokens
	n.Estimated += c.Estimated
	n.LatencyMS += c.LatencyMS
	n.CachedTokens += c.CachedTokens
}

// Values lists the counts in their column order.
func (n Counts) Values() []int64 {
	return []int64{n.Requests, n.Successes, n.ClientErrors, n.UpstreamErrors, n.Rejected,
		n.PromptTokens, n.CompletionTokens, n.Estimated, n.LatencyMS, n.CachedTokens}
}

// countColumns are the columns of Counts, in order.
var countColumns = []string{"requests", "successes", "client_errors", "upstream_errors", "rejected",
	"prompt_tokens", "completion_tokens", "estimated", "latency_ms", "cached_tokens"}

// Add writes rollups into both the minute and the day rows, in one
// statement however many groups.
func (u *Rollups) Add(ctx context.Context, rows []Rollup) error {
	if len(rows) == 0 {
		return nil
	}
	var b jsonout.Builder
	b.Array()
	for _, r := range rows {
		b.Array().Int(r.Minute).Int(r.TokenID).Int(r.KeyID).String(r.Provider).String(r.Model)
		for _, v := range r.Values() {
			b.Int(v)
		}
		b.EndArray()
	}
	var sel, upd strings.Builder
	for i, c := range countColumns {
		sel.WriteString(", u.value ->> " + strconv.Itoa(5+i))
		if i > 0 {
			upd.WriteString(", ")
		}
		upd.WriteString(c + " = " + c + " + excluded." + c)
	}
	_, err := u.db.ExecContext(ctx,
		`INSERT INTO usage_rollups (granularity, bucket, token_id, key_id, provider, model, `+strings.Join(countColumns, ", ")+`)
		 SELECT g.value, CASE g.value WHEN 'm' THEN u.value ->> 0 ELSE (u.value ->> 0) - ((u.value ->> 0) % 86400000) END,
		        u.value ->> 1, u.value ->> 2, u.value ->> 3, u.value ->> 4`+sel.String()+`
		 FROM json_each(?) AS u, json_each('["m","d"]') AS g WHERE true
		 ON CONFLICT (granularity, bucket, token_id, key_id, provider, model) DO UPDATE SET `+upd.String(),
		string(b.EndArray().Bytes()))
	return err
}

// Filter narrows a series; zero values mean all.
type Filter struct {
	TokenID  int64
	HasToken bool // filter on TokenID (whose 0 is AUTH_KEY)
	KeyID    int64
	Provider string
	Model    string
}

// Point is one bucket (and group) of a series.
type Point struct {
	Bucket int64
	Group  string // the group's value ("" without grouping)
	Counts
}

// Series sums the rollups of granularity ("m" or "d") between from and
// to (unix ms, inclusive from, exclusive to) per bucket, optionally per
// group ("token", "key", "provider", "model").
func (u *Rollups) Series(ctx context.Context, granularity string, from, to int64, f Filter, group string) ([]Point, error) {
	groupCol := map[string]string{"token": "CAST(token_id AS TEXT)", "key": "CAST(key_id AS TEXT)",
		"provider": "provider", "model": "provider || '/' || model"}[group]
	if groupCol == "" {
		groupCol = "''"
	}
	var sums strings.Builder
	for _, c := range countColumns {
		sums.WriteString(", SUM(" + c + ")")
	}
	q := `SELECT bucket, ` + groupCol + ` AS g` + sums.String() + ` FROM usage_rollups
	      WHERE granularity = ? AND bucket >= ? AND bucket < ?`
	args := []any{granularity, from, to}
	if f.HasToken {
		q += ` AND token_id = ?`
		args = append(args, f.TokenID)
	}
	if f.KeyID > 0 {
		q += ` AND key_id = ?`
		args = append(args, f.KeyID)
	}
	if f.Provider != "" {
		q += ` AND provider = ?`
		args = append(args, f.Provider)
	}
	if f.Model != "" {
		q += ` AND model = ?`
		args = append(args, f.Model)
	}
	rows, err := u.db.QueryContext(ctx, q+` GROUP BY bucket, g ORDER BY bucket, g`, args...)
	if err != nil {
		return nil, err
	}
	var out []Point
	for rows.Next() {
		var p Point
		if err := rows.Scan(&p.Bucket, &p.Group, &p.Requests, &p.Successes, &p.ClientErrors, &p.UpstreamErrors,
			&p.Rejected, &p.PromptTokens, &p.CompletionTokens, &p.Estimated, &p.LatencyMS, &p.CachedTokens); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, closeRows(rows)
}

// Prune deletes minute rows older than minutesBefore and day rows older
// than daysBefore.
func (u *Rollups) Prune(ctx context.Context, minutesBefore, daysBefore int64) (int64, error) {
	res, err := u.db.ExecContext(ctx,
		`DELETE FROM usage_rollups WHERE (granularity = 'm' AND bucket < ?) OR (granularity = 'd' AND bucket < ?)`,
		minutesBefore, daysBefore)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
