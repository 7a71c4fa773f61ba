package store_test

import (
	"database/sql"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// usageDay is a UTC midnight; usageMin the minute 10:00 of that day.
const (
	usageDay int64 = 1_748_736_000_000 // 2025-06-01T00:00:00Z
	usageMin       = usageDay + 10*3_600_000
	dayMS          = 86_400_000
)

// storedRollup is one usage_rollups row.
type storedRollup struct {
	Gran     string
	Bucket   int64
	Token    int64
	Key      int64
	Provider string
	Model    string
	store.Counts
}

func storedRollups(t *testing.T, db *sql.DB) []storedRollup {
	t.Helper()
	rows, err := db.Query(`SELECT granularity, bucket, token_id, key_id, provider, model, requests, successes, client_errors,
		upstream_errors, rejected, prompt_tokens, completion_tokens, estimated, latency_ms
		FROM usage_rollups ORDER BY granularity DESC, bucket, token_id, key_id, provider, model`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedRollup
	for rows.Next() {
		var r storedRollup
		if err := rows.Scan(&r.Gran, &r.Bucket, &r.Token, &r.Key, &r.Provider, &r.Model, &r.Requests, &r.Successes,
			&r.ClientErrors, &r.UpstreamErrors, &r.Rejected, &r.PromptTokens, &r.CompletionTokens, &r.Estimated, &r.LatencyMS); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// served is the counts of n successful requests with the given tokens.
func served(n, prompt, completion, latency int64) store.Counts {
	return store.Counts{Requests: n, Successes: n, PromptTokens: prompt, CompletionTokens: completion, LatencyMS: latency}
}

func TestCountsAddValues(t *testing.T) {
	a := store.Counts{1, 2, 3, 4, 5, 6, 7, 8, 9, 3}
	a.Add(store.Counts{10, 20, 30, 40, 50, 60, 70, 80, 90, 30})
	if want := []int64{11, 22, 33, 44, 55, 66, 77, 88, 99, 33}; !reflect.DeepEqual(a.Values(), want) {
		t.Errorf("Values = %v, want %v", a.Values(), want)
	}
}

func TestRollupsAddMerges(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	u := store.On(db, &n).Rollups()
	r := store.Rollup{Minute: usageMin, TokenID: 3, KeyID: 7, Provider: "openai", Model: "gpt-4o-mini",
		Counts: store.Counts{Requests: 1, Successes: 1, PromptTokens: 19, CompletionTokens: 10, LatencyMS: 250}}
	if err := u.Add(ctx, []store.Rollup{r}); err != nil {
		t.Fatal(err)
	}
	r2 := r
	r2.Counts = store.Counts{Requests: 2, Successes: 1, ClientErrors: 1, PromptTokens: 5, CompletionTokens: 1, Estimated: 1, LatencyMS: 50}
	if err := u.Add(ctx, []store.Rollup{r2}); err != nil {
		t.Fatal(err)
	}
	sum := store.Counts{Requests: 3, Successes: 2, ClientErrors: 1, PromptTokens: 24, CompletionTokens: 11, Estimated: 1, LatencyMS: 300}
	want := []storedRollup{
		{"m", usageMin, 3, 7, "openai", "gpt-4o-mini", sum},
		{"d", usageDay, 3, 7, "openai", "gpt-4o-mini", sum},
	}
	if got := storedRollups(t, db); !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n got %+v\nwant %+v", got, want)
	}
	if n.Load() != 2 {
		t.Errorf("%d statements for two Adds, want 2", n.Load())
	}
}

func TestRollupsAddOneStatement(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	u := store.On(db, &n).Rollups()
	if err := u.Add(ctx, nil); err != nil || n.Load() != 0 {
		t.Fatalf("Add(nil) = %v with %d statements, want none", err, n.Load())
	}
	// Many groups, minutes of one day and of the next, a group twice:
	// one statement.
	var rows []store.Rollup
	for i := int64(0); i < 50; i++ {
		rows = append(rows, store.Rollup{Minute: usageMin + i*60_000, TokenID: i % 3, KeyID: i % 5, Provider: "groq",
			Model: "llama-3.1-8b-instant", Counts: served(1, i, 2*i, 10)})
	}
	rows = append(rows, rows[0])
	rows = append(rows, store.Rollup{Minute: usageDay + dayMS - 60_000, Provider: "openai", Model: "m", Counts: served(1, 1, 1, 1)},
		store.Rollup{Minute: usageDay + dayMS, Provider: "openai", Model: "m", Counts: served(1, 2, 2, 2)})
	if err := u.Add(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Errorf("%d statements for one Add of %d rollups, want 1", n.Load(), len(rows))
	}
	got := storedRollups(t, db)
	var minutes, days int
	var dayTotal store.Counts
	for _, r := range got {
		if r.Gran == "m" {
			minutes++
			continue
		}
		days++
		if r.Provider == "groq" {
			dayTotal.Add(r.Counts)
		}
	}
	// 50 groq minute rows + 2 openai; day rows: 15 groq groups (token ×
	// key repeat every 15 minutes) + openai on two days.
	if minutes != 52 || days != 15+2 {
		t.Errorf("%d minute rows and %d day rows, want 52 and 17", minutes, days)
	}
	// 0+1+…+49 prompt tokens, plus the repeated first row (0).
	if want := served(51, 1225, 2450, 510); dayTotal != want {
		t.Errorf("groq day rows add up to %+v, want %+v", dayTotal, want)
	}
	// The repeated group was summed into its minute row.
	for _, r := range got {
		if r.Gran == "m" && r.Bucket == usageMin && r.Provider == "groq" && r.Requests != 2 {
			t.Errorf("repeated group's minute row: %+v, want 2 requests", r)
		}
	}
	// The minutes either side of midnight went to their own days.
	for _, r := range got {
		if r.Gran == "d" && r.Provider == "openai" {
			switch r.Bucket {
			case usageDay:
				if r.PromptTokens != 1 {
					t.Errorf("day row before midnight: %+v", r)
				}
			case usageDay + dayMS:
				if r.PromptTokens != 2 {
					t.Errorf("day row after midnight: %+v", r)
				}
			default:
				t.Errorf("openai day row in bucket %d", r.Bucket)
			}
		}
	}
}

func TestRollupsDayAddsMinutes(t *testing.T) {
	db := sqlitetest.Open(t)
	u := store.On(db, nil).Rollups()
	base := store.Rollup{TokenID: 0, KeyID: 1, Provider: "anthropic", Model: "claude-3-5-haiku-latest"}
	for i, m := range []int64{usageDay, usageMin, usageMin + 60_000, usageDay + dayMS - 60_000} {
		r := base
		r.Minute, r.Counts = m, served(1, int64(10*(i+1)), int64(i+1), 100)
		if err := u.Add(ctx, []store.Rollup{r}); err != nil {
			t.Fatal(err)
		}
	}
	got := storedRollups(t, db)
	if len(got) != 5 {
		t.Fatalf("%d rows, want 4 minute rows and 1 day row: %+v", len(got), got)
	}
	if d := got[4]; d.Gran != "d" || d.Bucket != usageDay || d.Counts != served(4, 100, 10, 400) {
		t.Errorf("day row %+v, want the sum of the four minutes", d)
	}
}

// seriesFixture stores rollups for the Series tests: two minutes of one
// day, one minute of the next, several tokens, keys, providers and models.
func seriesFixture(t *testing.T) *store.Rollups {
	t.Helper()
	db := sqlitetest.Open(t)
	u := store.On(db, nil).Rollups()
	rows := []store.Rollup{
		{Minute: usageMin, TokenID: 0, KeyID: 1, Provider: "openai", Model: "gpt-4o-mini", Counts: served(1, 10, 1, 100)},
		{Minute: usageMin, TokenID: 2, KeyID: 1, Provider: "openai", Model: "gpt-4o-mini", Counts: served(2, 20, 2, 200)},
		{Minute: usageMin, TokenID: 2, KeyID: 0, Provider: "openai", Model: "gpt-4o-mini", Counts: store.Counts{Requests: 1, Rejected: 1}},
		{Minute: usageMin, TokenID: 2, KeyID: 3, Provider: "groq", Model: "llama-3.1-8b-instant", Counts: served(4, 40, 4, 400)},
		{Minute: usageMin + 60_000, TokenID: 0, KeyID: 1, Provider: "openai", Model: "gpt-4o", Counts: served(8, 80, 8, 800)},
		{Minute: usageMin + 60_000, TokenID: 5, KeyID: 3, Provider: "groq", Model: "llama-3.1-8b-instant", Counts: store.Counts{Requests: 16, ClientErrors: 16}},
		{Minute: usageDay + dayMS + 60_000, TokenID: 0, KeyID: 1, Provider: "openai", Model: "gpt-4o-mini", Counts: served(32, 320, 32, 3200)},
	}
	if err := u.Add(ctx, rows); err != nil {
		t.Fatal(err)
	}
	return u
}

// pt is a Point, for the tables.
func pt(bucket int64, group string, c store.Counts) store.Point {
	return store.Point{Bucket: bucket, Group: group, Counts: c}
}

func TestRollupsSeries(t *testing.T) {
	u := seriesFixture(t)
	m1, m2 := usageMin, usageMin+60_000
	all := [2]int64{usageDay, usageDay + 2*dayMS}
	rej := store.Counts{Requests: 1, Rejected: 1}
	cli := store.Counts{Requests: 16, ClientErrors: 16}
	sum := func(cs ...store.Counts) store.Counts {
		var c store.Counts
		for _, x := range cs {
			c.Add(x)
		}
		return c
	}
	tests := []struct {
		name     string
		gran     string
		from, to int64
		f        store.Filter
		group    string
		want     []store.Point
	}{
		{"minutes, no filter", "m", all[0], all[1], store.Filter{}, "", []store.Point{
			pt(m1, "", sum(served(1, 10, 1, 100), served(2, 20, 2, 200), rej, served(4, 40, 4, 400))),
			pt(m2, "", sum(served(8, 80, 8, 800), cli)),
			pt(usageDay+dayMS+60_000, "", served(32, 320, 32, 3200)),
		}},
		{"days, no filter", "d", all[0], all[1], store.Filter{}, "", []store.Point{
			pt(usageDay, "", sum(served(15, 150, 15, 1500), rej, cli)),
			pt(usageDay+dayMS, "", served(32, 320, 32, 3200)),
		}},
		{"from inclusive, to exclusive", "m", m1, m2, store.Filter{}, "", []store.Point{
			pt(m1, "", sum(served(7, 70, 7, 700), rej)),
		}},
		{"from inclusive (second minute on)", "m", m2, all[1], store.Filter{}, "", []store.Point{
			pt(m2, "", sum(served(8, 80, 8, 800), cli)),
			pt(usageDay+dayMS+60_000, "", served(32, 320, 32, 3200)),
		}},
		{"to before everything", "m", 0, m1, store.Filter{}, "", nil},
		{"one day only", "d", usageDay + dayMS, usageDay + 2*dayMS, store.Filter{}, "", []store.Point{
			pt(usageDay+dayMS, "", served(32, 320, 32, 3200)),
		}},
		{"token 0 (AUTH_KEY)", "d", all[0], all[1], store.Filter{HasToken: true}, "", []store.Point{
			pt(usageDay, "", served(9, 90, 9, 900)),
			pt(usageDay+dayMS, "", served(32, 320, 32, 3200)),
		}},
		{"token 2", "d", all[0], all[1], store.Filter{HasToken: true, TokenID: 2}, "", []store.Point{
			pt(usageDay, "", sum(served(6, 60, 6, 600), rej)),
		}},
		{"key 3", "m", all[0], all[1], store.Filter{KeyID: 3}, "", []store.Point{
			pt(m1, "", served(4, 40, 4, 400)),
			pt(m2, "", cli),
		}},
		{"provider groq", "d", all[0], all[1], store.Filter{Provider: "groq"}, "", []store.Point{
			pt(usageDay, "", sum(served(4, 40, 4, 400), cli)),
		}},
		{"model gpt-4o (not gpt-4o-mini)", "m", all[0], all[1], store.Filter{Model: "gpt-4o"}, "", []store.Point{
			pt(m2, "", served(8, 80, 8, 800)),
		}},
		{"filters combined", "m", all[0], all[1], store.Filter{HasToken: true, TokenID: 2, KeyID: 1, Provider: "openai", Model: "gpt-4o-mini"}, "", []store.Point{
			pt(m1, "", served(2, 20, 2, 200)),
		}},
		{"no match", "d", all[0], all[1], store.Filter{Provider: "mistral"}, "", nil},
		{"group by token", "d", all[0], all[1], store.Filter{}, "token", []store.Point{
			pt(usageDay, "0", served(9, 90, 9, 900)),
			pt(usageDay, "2", sum(served(6, 60, 6, 600), rej)),
			pt(usageDay, "5", cli),
			pt(usageDay+dayMS, "0", served(32, 320, 32, 3200)),
		}},
		{"group by key", "m", m1, m2, store.Filter{}, "key", []store.Point{
			pt(m1, "0", rej),
			pt(m1, "1", served(3, 30, 3, 300)),
			pt(m1, "3", served(4, 40, 4, 400)),
		}},
		{"group by provider", "d", usageDay, usageDay + dayMS, store.Filter{}, "provider", []store.Point{
			pt(usageDay, "groq", sum(served(4, 40, 4, 400), cli)),
			pt(usageDay, "openai", sum(served(11, 110, 11, 1100), rej)),
		}},
		{"group by model (provider/model)", "d", usageDay, usageDay + dayMS, store.Filter{}, "model", []store.Point{
			pt(usageDay, "groq/llama-3.1-8b-instant", sum(served(4, 40, 4, 400), cli)),
			pt(usageDay, "openai/gpt-4o", served(8, 80, 8, 800)),
			pt(usageDay, "openai/gpt-4o-mini", sum(served(3, 30, 3, 300), rej)),
		}},
		{"group with a filter", "d", all[0], all[1], store.Filter{Provider: "openai"}, "token", []store.Point{
			pt(usageDay, "0", served(9, 90, 9, 900)),
			pt(usageDay, "2", sum(served(2, 20, 2, 200), rej)),
			pt(usageDay+dayMS, "0", served(32, 320, 32, 3200)),
		}},
		{"unknown group: none", "d", usageDay, usageDay + dayMS, store.Filter{}, "nope", []store.Point{
			pt(usageDay, "", sum(served(15, 150, 15, 1500), rej, cli)),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := u.Series(ctx, tc.gran, tc.from, tc.to, tc.f, tc.group)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Series:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestRollupsSeriesOneQuery(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	u := store.On(db, &n).Rollups()
	if _, err := u.Series(ctx, "m", 0, usageDay, store.Filter{HasToken: true, KeyID: 1, Provider: "p", Model: "m"}, "model"); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Errorf("%d queries for a series, want 1", n.Load())
	}
}

func TestRollupsPrune(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	u := store.On(db, &n).Rollups()
	var rows []store.Rollup
	for d := int64(0); d < 4; d++ {
		rows = append(rows, store.Rollup{Minute: usageMin + d*dayMS, Provider: "openai", Model: "m", Counts: served(1, 1, 1, 1)})
	}
	if err := u.Add(ctx, rows); err != nil {
		t.Fatal(err)
	}
	n.Store(0)
	// Minute rows before day 2's 10:00, day rows before day 1.
	got, err := u.Prune(ctx, usageMin+2*dayMS, usageDay+dayMS)
	if err != nil || got != 2+1 {
		t.Fatalf("Prune = %d, %v; want 3 rows", got, err)
	}
	if n.Load() != 1 {
		t.Errorf("%d statements for Prune, want 1", n.Load())
	}
	var left []string
	for _, r := range storedRollups(t, db) {
		left = append(left, r.Gran+":"+itoa64((r.Bucket-usageDay)/3_600_000))
	}
	// Hours since usageDay: minutes at 58 (day 2, 10:00) and 82 (day 3);
	// days at 24, 48, 72.
	if want := []string{"m:58", "m:82", "d:24", "d:48", "d:72"}; !reflect.DeepEqual(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	// Pruning again removes nothing.
	if got, err := u.Prune(ctx, usageMin+2*dayMS, usageDay+dayMS); err != nil || got != 0 {
		t.Errorf("second Prune = %d, %v; want 0", got, err)
	}
}

func itoa64(n int64) string {
	if n == 0 {
		return "0"
	}
	s := ""
	neg := n < 0
	if neg {
		n = -n
	}
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	if neg {
		s = "-" + s
	}
	return s
}

// TestRollupsNames: provider and model names with quotes, commas,
// unicode and SQL are stored as given.
func TestRollupsNames(t *testing.T) {
	db := sqlitetest.Open(t)
	u := store.On(db, nil).Rollups()
	names := []string{`a"b`, "c,d", "日本語 ✓", "x'); DROP TABLE usage_rollups; --", "@cf/meta/llama-3.1-8b-instruct", ""}
	var rows []store.Rollup
	for i, m := range names {
		rows = append(rows, store.Rollup{Minute: usageMin, KeyID: int64(i), Provider: "workers-ai", Model: m, Counts: served(1, 1, 1, 1)})
	}
	if err := u.Add(ctx, rows); err != nil {
		t.Fatal(err)
	}
	for _, m := range names {
		got, err := u.Series(ctx, "m", usageMin, usageMin+60_000, store.Filter{Model: m}, "model")
		if m == "" {
			// An empty model filter means every model.
			if err != nil || len(got) != len(names) {
				t.Errorf("Series with no model filter: %d points, %v", len(got), err)
			}
			continue
		}
		if err != nil || len(got) != 1 || got[0].Group != "workers-ai/"+m || got[0].Requests != 1 {
			t.Errorf("Series(model %q) = %+v, %v", m, got, err)
		}
	}
}
