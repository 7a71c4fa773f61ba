package handler

import (
	"database/sql"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/store"
)

// Usage statistics: series of the rollups (per minute or per day),
// filtered by token, key, provider and model and optionally grouped by
// one of them, as JSON or CSV; and the current rates.

// statsQuery is a parsed stats request.
type statsQuery struct {
	granularity string // "m" or "d"
	from, to    int64
	filter      store.Filter
	group       string
	csv         bool
}

// statsRequest is a stats route's query (parseStats) and the database;
// false: answered.
func (h *Handler) statsRequest(w http.ResponseWriter, r *http.Request) (statsQuery, *sql.DB, bool) {
	s, ok := h.parseStats(w, r)
	if !ok {
		return s, nil, false
	}
	db, ok := h.db(w)
	return s, db, ok
}

// parseStats reads ?granularity=minute|day&from=&to= (unix ms; default
// the last hour per minute, the last 30 days per day), &token= (0 is
// AUTH_KEY), &key=, &provider=, &model=, &group=token|key|provider|model,
// &format=csv. It answers 400 naming the parameter itself.
func (h *Handler) parseStats(w http.ResponseWriter, r *http.Request) (statsQuery, bool) {
	q := r.URL.Query()
	now := h.d.Now().UnixMilli()
	s := statsQuery{granularity: "m"}
	switch g := q.Get("granularity"); g {
	case "", "minute":
	case "day":
		s.granularity = "d"
	default:
		reply.BadRequest("granularity: minute or day", "granularity").Write(w)
		return s, false
	}
	if s.granularity == "m" {
		s.from, s.to = now/60000*60000-59*60000, now/60000*60000+60000
	} else {
		s.from, s.to = now/86400000*86400000-29*86400000, now/86400000*86400000+86400000
	}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &s.from}, {"to", &s.to}, {"key", &s.filter.KeyID}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				reply.BadRequest(p.name+": a whole number ≥ 0", p.name).Write(w)
				return s, false
			}
			*p.dst = n
		}
	}
	if v := q.Get("token"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			reply.BadRequest("token: a token id (0: AUTH_KEY)", "token").Write(w)
			return s, false
		}
		s.filter.TokenID, s.filter.HasToken = n, true
	}
	s.filter.Provider, s.filter.Model = q.Get("provider"), q.Get("model")
	switch s.group = q.Get("group"); s.group {
	case "", "token", "key", "provider", "model":
	default:
		reply.BadRequest("group: token, key, provider or model", "group").Write(w)
		return s, false
	}
	switch f := q.Get("format"); f {
	case "", "json":
	case "csv":
		s.csv = true
	default:
		reply.BadRequest("format: json or csv", "format").Write(w)
		return s, false
	}
	if s.to <= s.from {
		reply.BadRequest("to must be after from", "to").Write(w)
		return s, false
	}
	return s, true
}

// stats serves GET /admin/api/stats.
func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	s, db, ok := h.statsRequest(w, r)
	if !ok {
		return
	}
	h.proxy().FlushNow() // what this isolate still holds counts too
	points, err := store.On(db, h.d.Queries).Rollups().Series(r.Context(), s.granularity, s.from, s.to, s.filter, s.group)
	if err != nil {
		reply.Failed(w, err, "could not read the usage statistics", "reading usage rollups")
		return
	}
	if s.csv {
		writeStatsCSV(w, s, points)
		return
	}
	var b jsonout.Builder
	gran := "minute"
	if s.granularity == "d" {
		gran = "day"
	}
	b.Object().Key("granularity").String(gran).Key("from").Int(s.from).Key("to").Int(s.to).Key("group")
	if s.group == "" {
		b.Null()
	} else {
		b.String(s.group)
	}
	var total store.Counts
	b.Key("points").Array()
	for _, p := range points {
		total.Add(p.Counts)
		b.Object().Key("bucket").Int(p.Bucket)
		if s.group != "" {
			b.Key(s.group).String(p.Group)
		}
		writeCounts(&b, p.Counts)
		b.EndObject()
	}
	b.EndArray().Key("totals").Object()
	writeCounts(&b, total)
	reply.JSON(w, http.StatusOK, b.EndObject().EndObject().Bytes())
}

func writeCounts(b *jsonout.Builder, c store.Counts) {
	b.Key("requests").Int(c.Requests).Key("successes").Int(c.Successes).
		Key("client_errors").Int(c.ClientErrors).Key("upstream_errors").Int(c.UpstreamErrors).Key("rejected").Int(c.Rejected).
		Key("prompt_tokens").Int(c.PromptTokens).Key("completion_tokens").Int(c.CompletionTokens).
		Key("total_tokens").Int(c.PromptTokens + c.CompletionTokens).Key("estimated").Int(c.Estimated).
		Key("cached_tokens").Int(c.CachedTokens).Key("cached_share")
	if c.PromptTokens > 0 {
		b.Float(float64(c.CachedTokens) / float64(c.PromptTokens))
	} else {
		b.Null()
	}
	b.Key("success_rate")
	if c.Requests > 0 {
		b.Float(float64(c.Successes) / float64(c.Requests))
	} else {
		b.Null()
	}
	b.Key("latency_avg_ms")
	if c.Requests > 0 {
		b.Int(c.LatencyMS / c.Requests)
	} else {
		b.Null()
	}
}

// writeStatsCSV writes the series as CSV, one row per bucket and group.
func writeStatsCSV(w http.ResponseWriter, s statsQuery, points []store.Point) {
	var out strings.Builder
	head := []string{"bucket", "time"}
	if s.group != "" {
		head = append(head, s.group)
	}
	head = append(head, "requests", "successes", "client_errors", "upstream_errors", "rejected",
		"prompt_tokens", "completion_tokens", "total_tokens", "estimated", "latency_avg_ms", "cached_tokens")
	out.WriteString(strings.Join(head, ",") + "\r\n")
	for _, p := range points {
		row := []string{strconv.FormatInt(p.Bucket, 10), time.UnixMilli(p.Bucket).UTC().Format(time.RFC3339)}
		if s.group != "" {
			row = append(row, csvField(p.Group))
		}
		avg := int64(0)
		if p.Requests > 0 {
			avg = p.LatencyMS / p.Requests
		}
		for _, n := range []int64{p.Requests, p.Successes, p.ClientErrors, p.UpstreamErrors, p.Rejected,
			p.PromptTokens, p.CompletionTokens, p.PromptTokens + p.CompletionTokens, p.Estimated, avg, p.CachedTokens} {
			row = append(row, strconv.FormatInt(n, 10))
		}
		out.WriteString(strings.Join(row, ",") + "\r\n")
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", `attachment; filename="keypool-usage.csv"`)
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(out.String()))
}

// csvField quotes a field when it must be (RFC 4180), and defuses
// formulas a spreadsheet would run.
func csvField(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		s = "'" + s
	}
	if strings.ContainsAny(s, ",\"\r\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// statsNow serves GET /admin/api/stats/now: requests and tokens in the
// last complete minute (RPM, TPM) and so far today, UTC (RPD, TPD), with
// the same filters as /admin/api/stats.
func (h *Handler) statsNow(w http.ResponseWriter, r *http.Request) {
	s, db, ok := h.statsRequest(w, r)
	if !ok {
		return
	}
	h.proxy().FlushNow()
	now := h.d.Now().UnixMilli()
	minute := now/60000*60000 - 60000
	day := now / 86400000 * 86400000
	rollups := store.On(db, h.d.Queries).Rollups()
	sum := func(gran string, from, to int64) (store.Counts, error) {
		points, err := rollups.Series(r.Context(), gran, from, to, s.filter, "")
		var c store.Counts
		for _, p := range points {
			c.Add(p.Counts)
		}
		return c, err
	}
	m, err1 := sum("m", minute, minute+60000)
	d, err2 := sum("d", day, day+86400000)
	if err1 != nil || err2 != nil {
		log.Printf("keypool: reading usage rollups: %v %v", err1, err2)
		reply.Internal("could not read the usage statistics").Write(w)
		return
	}
	var b jsonout.Builder
	b.Object().Key("minute").Int(minute).Key("day").Int(day).
		Key("rpm").Int(m.Requests).Key("tpm").Int(m.PromptTokens + m.CompletionTokens).
		Key("rpd").Int(d.Requests).Key("tpd").Int(d.PromptTokens + d.CompletionTokens).
		Key("success_rate_today")
	if d.Requests > 0 {
		b.Float(float64(d.Successes) / float64(d.Requests))
	} else {
		b.Null()
	}
	reply.JSON(w, http.StatusOK, b.EndObject().Bytes())
}
