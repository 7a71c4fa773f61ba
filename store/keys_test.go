package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

const t0 int64 = 1_700_000_000_000 // unix ms

var ctx = context.Background()

func open(t *testing.T) (*store.Keys, *sql.DB) {
	t.Helper()
	db := sqlitetest.Open(t)
	return store.On(db, nil).Keys(), db
}

func secrets(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%06d-secret", prefix, i)
	}
	return out
}

func mustAdd(t *testing.T, k *store.Keys, prov string, ss ...string) []int64 {
	t.Helper()
	added, dups, err := k.Add(ctx, prov, "", ss, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != len(ss) || len(dups) != 0 {
		t.Fatalf("Add(%q): %d added, duplicates %q", ss, len(added), dups)
	}
	ids := make([]int64, len(added))
	for i, a := range added {
		ids[i] = a.ID
	}
	return ids
}

// record is one attempt as the handler writes it: the key's use and the
// state change rotation decided (Kind 0: none). A ChangeCool's Until is
// the write time plus cooldown.
type record struct {
	use      rotation.KeyUse
	change   rotation.Change
	cooldown time.Duration
}

// mustRecord persists attempts as the handler does: usage counters in one
// AddUsage, then the state changes in one Apply.
func mustRecord(t *testing.T, k *store.Keys, now int64, rs ...record) {
	t.Helper()
	usage := map[int64]*store.KeyUsage{}
	var changes []rotation.Change
	for _, r := range rs {
		if usage[r.use.Key] == nil {
			usage[r.use.Key] = &store.KeyUsage{}
		}
		usage[r.use.Key].Add(r.use, now)
		if r.change.Kind != 0 {
			c := r.change
			if c.Kind == rotation.ChangeCool {
				c.Until = now + r.cooldown.Milliseconds()
			}
			changes = append(changes, c)
		}
	}
	var list []store.KeyUsage
	for _, u := range usage {
		list = append(list, *u)
	}
	if err := k.AddUsage(ctx, list); err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(ctx, changes, now); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func mustGet(t *testing.T, k *store.Keys, id int64) (store.Key, []store.Event) {
	t.Helper()
	x, evs, err := k.Get(ctx, id, 100)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	return x, evs
}

func candIDs(cs []rotation.Candidate) []int64 {
	out := []int64{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func cool(id int64, model string, d time.Duration) record {
	return record{use: rotation.KeyUse{Key: id}, cooldown: d, change: rotation.Change{Kind: rotation.ChangeCool, Key: id,
		Model: model, Status: 429, Excerpt: "slow down", Reason: "rate limited (429)"}}
}

func block(id int64) record {
	return record{use: rotation.KeyUse{Key: id}, change: rotation.Change{Kind: rotation.ChangeBlockKey, Key: id,
		Status: 401, Excerpt: `{"error":"invalid key sk-ab…1234"}`, Reason: "credential rejected (401)",
		From: []string{store.StatusActive, store.StatusExhausted}}}
}

func TestAdd(t *testing.T) {
	k, _ := open(t)
	first := []string{"sk-aaaaaaaaaaaa", "sk-bbbbbbbbbbbb", "sk-cccccccccccc"}
	added, dups, err := k.Add(ctx, "openai", "team", first, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 3 || len(dups) != 0 {
		t.Fatalf("first Add: %d added, duplicates %q", len(added), dups)
	}
	seen := map[int64]bool{}
	for i, a := range added {
		if a.Secret != first[i] || a.Provider != "openai" || a.Label != "team" || a.Status != store.StatusActive ||
			a.CreatedAt != t0 || a.UpdatedAt != t0 {
			t.Errorf("added[%d] = %+v", i, a)
		}
		if a.ID <= 0 || seen[a.ID] {
			t.Errorf("added[%d] has bad or repeated id %d", i, a.ID)
		}
		seen[a.ID] = true
		got, _ := mustGet(t, k, a.ID)
		if got.Secret != a.Secret || got.Label != "team" || got.Provider != "openai" {
			t.Errorf("Get(%d) = %+v, want the key Add returned", a.ID, got)
		}
	}

	// The same list again: nothing new, every key reported, in input order.
	added, dups, err = k.Add(ctx, "openai", "team", first, t0+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 0 || strings.Join(dups, ",") != strings.Join(first, ",") {
		t.Errorf("second Add: added %+v, duplicates %q", added, dups)
	}

	// A mix of old and new.
	mixed := []string{"sk-dddddddddddd", first[1], "sk-eeeeeeeeeeee"}
	added, dups, err = k.Add(ctx, "openai", "", mixed, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 2 || added[0].Secret != mixed[0] || added[1].Secret != mixed[2] {
		t.Errorf("mixed Add: added %+v", added)
	}
	if len(dups) != 1 || dups[0] != first[1] {
		t.Errorf("mixed Add: duplicates %q, want [%q]", dups, first[1])
	}

	// The same secret under another provider is another key.
	added, dups, err = k.Add(ctx, "deepseek", "", first[:1], t0)
	if err != nil || len(added) != 1 || len(dups) != 0 {
		t.Errorf("Add under another provider: %+v, %q, %v", added, dups, err)
	}

	// Nothing to add.
	added, dups, err = k.Add(ctx, "openai", "", nil, t0)
	if err != nil || len(added) != 0 || len(dups) != 0 {
		t.Errorf("empty Add: %+v, %q, %v", added, dups, err)
	}

	all, err := k.List(ctx, "openai")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Errorf("List after adds: %d keys, want 5", len(all))
	}
}

func TestAddSecretsNeedingEscapes(t *testing.T) {
	k, _ := open(t)
	odd := []string{`sk-"quoted"\back`, "sk-<html>&amp;", "sk-\u2028sep\u2029x", "sk-é€😀-unicode"}
	ids := mustAdd(t, k, "mistral", odd...)
	for i, id := range ids {
		got, _ := mustGet(t, k, id)
		if got.Secret != odd[i] {
			t.Errorf("stored secret %q, want %q", got.Secret, odd[i])
		}
	}
	_, dups, err := k.Add(ctx, "mistral", "", odd, t0)
	if err != nil || len(dups) != len(odd) {
		t.Errorf("re-adding escaped secrets: duplicates %q, err %v", dups, err)
	}
}

func TestAddAcrossChunks(t *testing.T) {
	k, db := open(t)
	const n = 1203 // three statements: 500 + 500 + 203
	ss := secrets("sk-bulk-", n)
	added, dups, err := k.Add(ctx, "openai", "bulk", ss, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != n || len(dups) != 0 {
		t.Fatalf("bulk Add: %d added, %d duplicates, want %d, 0", len(added), len(dups), n)
	}
	byID := map[int64]string{}
	for i, a := range added {
		if a.Secret != ss[i] {
			t.Fatalf("added[%d].Secret = %q, want %q (input order)", i, a.Secret, ss[i])
		}
		if _, ok := byID[a.ID]; ok || a.ID <= 0 {
			t.Fatalf("added[%d] has bad or repeated id %d", i, a.ID)
		}
		byID[a.ID] = a.Secret
	}
	if c := count(t, db, `SELECT COUNT(*) FROM keys WHERE provider = 'openai'`); c != n {
		t.Errorf("%d rows in keys, want %d", c, n)
	}
	list, err := k.List(ctx, "openai")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range list {
		if byID[x.ID] != x.Secret {
			t.Fatalf("List has id %d = %q, Add said %q", x.ID, x.Secret, byID[x.ID])
		}
	}

	// Again, plus new keys spread over every chunk.
	again := append([]string(nil), ss...)
	fresh := secrets("sk-more-", 3)
	again[10], again[700], again[1202] = fresh[0], fresh[1], fresh[2]
	added, dups, err = k.Add(ctx, "openai", "bulk", again, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 3 || added[0].Secret != fresh[0] || added[1].Secret != fresh[1] || added[2].Secret != fresh[2] {
		t.Errorf("re-Add: added %+v, want the 3 fresh keys", added)
	}
	if len(dups) != n-3 || dups[0] != ss[0] || dups[10] != ss[11] || dups[len(dups)-1] != ss[1201] {
		t.Errorf("re-Add: %d duplicates, want %d in input order", len(dups), n-3)
	}
	if c := count(t, db, `SELECT COUNT(*) FROM keys`); c != n+3 {
		t.Errorf("%d rows in keys, want %d", c, n+3)
	}
}

// A secret listed twice in one call is one key: the first occurrence is
// added, the second is a duplicate, as it is when the two occurrences fall
// in different chunks.
func TestAddRepeatedWithinInput(t *testing.T) {
	k, db := open(t)
	added, dups, err := k.Add(ctx, "openai", "", []string{"sk-twice-000000", "sk-other-000000", "sk-twice-000000"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if c := count(t, db, `SELECT COUNT(*) FROM keys`); c != 2 {
		t.Errorf("%d rows in keys, want 2", c)
	}
	var got []string
	for _, a := range added {
		got = append(got, fmt.Sprintf("%d:%s", a.ID, a.Secret))
	}
	if len(added) != 2 || len(dups) != 1 || dups[0] != "sk-twice-000000" {
		t.Errorf("added %q, duplicates %q; want 2 added and [sk-twice-000000] duplicate", got, dups)
	}
}

func TestList(t *testing.T) {
	k, db := open(t)
	oa := mustAdd(t, k, "openai", "sk-list-1-00000", "sk-list-2-00000", "sk-list-3-00000")
	g := mustAdd(t, k, "google-ai-studio", "AIzaListGoogle01")
	oa4 := mustAdd(t, k, "openai", "sk-list-4-00000")
	mustRecord(t, k, t0, cool(oa[1], "gpt-4o", 30*time.Second), cool(oa[1], "gpt-4o-mini", time.Minute), cool(g[0], "gemini", time.Second))
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'o1', 'blocked', 0, 'no access', 0, ?)`, oa4[0], t0)

	tests := []struct {
		prov    string
		wantIDs []int64
	}{
		{"openai", []int64{oa[0], oa[1], oa[2], oa4[0]}},
		{"google-ai-studio", g},
		{"", []int64{oa[0], oa[1], oa[2], g[0], oa4[0]}},
		{"anthropic", nil},
	}
	for _, tt := range tests {
		t.Run("provider="+tt.prov, func(t *testing.T) {
			keys, err := k.List(ctx, tt.prov)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, x := range keys {
				got = append(got, x.ID)
				if tt.prov != "" && x.Provider != tt.prov {
					t.Errorf("key %d of provider %q listed for %q", x.ID, x.Provider, tt.prov)
				}
				var models []string
				for _, m := range x.Models {
					models = append(models, fmt.Sprintf("%s/%s/%d/%d", m.Model, m.State, m.Until, m.Streak))
				}
				var want []string
				switch x.ID {
				case oa[1]:
					want = []string{
						fmt.Sprintf("gpt-4o/cooling/%d/1", t0+30_000),
						fmt.Sprintf("gpt-4o-mini/cooling/%d/1", t0+60_000),
					}
				case g[0]:
					want = []string{fmt.Sprintf("gemini/cooling/%d/1", t0+1000)}
				case oa4[0]:
					want = []string{"o1/blocked/0/0"}
				}
				if strings.Join(models, " ") != strings.Join(want, " ") {
					t.Errorf("key %d models = %q, want %q", x.ID, models, want)
				}
			}
			if !equalIDs(got, tt.wantIDs) {
				t.Errorf("List(%q) ids = %v, want %v", tt.prov, got, tt.wantIDs)
			}
		})
	}
}

func TestGet(t *testing.T) {
	k, _ := open(t)
	id := mustAdd(t, k, "openai", "sk-get-000000000")[0]
	other := mustAdd(t, k, "openai", "sk-get-111111111")[0]

	if _, _, err := k.Get(ctx, 9999, 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(missing) err = %v, want ErrNotFound", err)
	}

	x, evs := mustGet(t, k, id)
	if x.ID != id || x.Status != store.StatusActive || len(x.Models) != 0 || len(evs) != 0 {
		t.Errorf("fresh key: %+v, events %+v", x, evs)
	}

	mustRecord(t, k, t0+100, cool(id, "a", time.Second))
	mustRecord(t, k, t0+300, cool(id, "c", time.Second))
	mustRecord(t, k, t0+200, cool(id, "b", time.Second))
	mustRecord(t, k, t0+300, cool(id, "d", time.Second)) // same time as "c", written later
	mustRecord(t, k, t0+400, block(id))
	mustRecord(t, k, t0+500, cool(other, "x", time.Second))

	x, evs = mustGet(t, k, id)
	var order []string
	for _, e := range evs {
		order = append(order, fmt.Sprintf("%d:%s:%s>%s", e.At-t0, e.Model, e.From, e.To))
	}
	want := "400::active>blocked 300:d:active>cooling 300:c:active>cooling 200:b:active>cooling 100:a:active>cooling"
	if strings.Join(order, " ") != want {
		t.Errorf("events = %q, want %q", order, want)
	}
	if len(x.Models) != 4 || x.Models[0].Model != "a" || x.Models[3].Model != "d" {
		t.Errorf("models = %+v, want a..d", x.Models)
	}
	if x.Status != store.StatusBlocked || x.Requests != 5 || x.Failures != 5 || x.LastUsedAt != t0+400 {
		t.Errorf("key = %+v", x)
	}

	_, evs, err := k.Get(ctx, id, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].At != t0+400 || evs[1].Model != "d" {
		t.Errorf("Get(id, 2) events = %+v, want the 2 newest", evs)
	}
}

func TestDelete(t *testing.T) {
	k, db := open(t)
	ids := mustAdd(t, k, "openai", "sk-del-000000000", "sk-del-111111111")
	victim, keep := ids[0], ids[1]
	for _, id := range ids {
		mustRecord(t, k, t0, cool(id, "m1", time.Minute), cool(id, "m2", time.Minute), block(id))
	}
	if count(t, db, `SELECT COUNT(*) FROM key_models WHERE key_id = ?`, victim) != 2 ||
		count(t, db, `SELECT COUNT(*) FROM key_events WHERE key_id = ?`, victim) != 3 {
		t.Fatal("setup did not write the expected rows")
	}

	if err := k.Delete(ctx, victim); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := k.Get(ctx, victim, 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	for _, table := range []string{"key_models", "key_events"} {
		if c := count(t, db, `SELECT COUNT(*) FROM `+table+` WHERE key_id = ?`, victim); c != 0 {
			t.Errorf("%d %s rows left for the deleted key", c, table)
		}
		if c := count(t, db, `SELECT COUNT(*) FROM `+table+` WHERE key_id = ?`, keep); c == 0 {
			t.Errorf("%s rows of the other key were deleted", table)
		}
	}
	if c := count(t, db, `SELECT COUNT(*) FROM keys`); c != 1 {
		t.Errorf("%d keys left, want 1", c)
	}
	if err := k.Delete(ctx, victim); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	if err := k.Delete(ctx, 424242); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete(never existed): %v, want ErrNotFound", err)
	}
	if _, _, err := k.Get(ctx, keep, 10); err != nil {
		t.Errorf("other key gone: %v", err)
	}
}

func TestCandidates(t *testing.T) {
	k, db := open(t)
	id := mustAdd(t, k, "openai",
		"sk-cand-a000000", // 0: used at t0-300
		"sk-cand-b000000", // 1: used at t0-100, cooling for m1
		"sk-cand-c000000", // 2: used at t0-200, blocked for m1
		"sk-cand-d000000", // 3: disabled
		"sk-cand-e000000", // 4: blocked key
		"sk-cand-f000000", // 5: used at t0-400
		"sk-cand-g000000", // 6: never used
		"sk-cand-h000000", // 7: exhausted
		"sk-cand-i000000", // 8: used at t0-300, same as a
	)
	g := mustAdd(t, k, "google-ai-studio", "AIzaCandidate000")
	for i, at := range map[int]int64{0: t0 - 300, 1: t0 - 100, 2: t0 - 200, 5: t0 - 400, 8: t0 - 300} {
		mustExec(t, db, `UPDATE keys SET last_used_at = ? WHERE id = ?`, at, id[i])
	}
	mustExec(t, db, `UPDATE keys SET status = 'disabled' WHERE id = ?`, id[3])
	mustExec(t, db, `UPDATE keys SET status = 'exhausted' WHERE id = ?`, id[7])
	mustRecord(t, k, t0-1000, block(id[4]))
	mustExec(t, db, `UPDATE keys SET last_used_at = 0 WHERE id = ?`, id[4])
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'm1', 'cooling', ?, '', 1, ?)`, id[1], t0+60_000, t0)
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'm1', 'blocked', 0, '', 0, ?)`, id[2], t0)

	tests := []struct {
		name  string
		prov  string
		model string
		now   int64
		limit int
		want  []int64
	}{
		{"excludes cooling and blocked", "openai", "m1", t0, 10, []int64{id[6], id[5], id[0], id[8]}},
		{"another model", "openai", "m2", t0, 10, []int64{id[6], id[5], id[0], id[8], id[2], id[1]}},
		{"cooling until later", "openai", "m1", t0 + 59_999, 10, []int64{id[6], id[5], id[0], id[8]}},
		{"cooling over", "openai", "m1", t0 + 60_000, 10, []int64{id[6], id[5], id[0], id[8], id[1]}},
		{"limit", "openai", "m1", t0, 2, []int64{id[6], id[5]}},
		{"limit 1", "openai", "m2", t0 + 60_000, 1, []int64{id[6]}},
		{"other provider", "google-ai-studio", "m1", t0, 10, g},
		{"no keys", "anthropic", "m1", t0, 10, []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := k.Candidates(ctx, tt.prov, tt.model, tt.now, tt.limit, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := candIDs(cs); !equalIDs(got, tt.want) {
				t.Errorf("Candidates = %v, want %v", got, tt.want)
			}
			for i := 1; i < len(cs); i++ {
				if cs[i].LastUsed < cs[i-1].LastUsed {
					t.Errorf("not least recently used first: %+v", cs)
				}
			}
			for _, c := range cs {
				x, _ := mustGet(t, k, c.ID)
				if c.Secret != x.Secret || c.LastUsed != x.LastUsedAt {
					t.Errorf("candidate %+v does not match key %+v", c, x)
				}
			}
		})
	}
}

func TestRecordCounters(t *testing.T) {
	// Serve and Return only count. A Retry with no cooldown (a first 5xx)
	// also counts the failure in the key-model's streak: a cooling row that
	// ends at once (until = now), so the key stays a candidate, with no
	// event since nothing left rotation.
	tests := []struct {
		name                         string
		served                       bool
		requests, successes, failure int64
		streakRow                    bool
	}{
		{"served", true, 1, 1, 0, false},
		{"first 5xx", false, 1, 0, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, db := open(t)
			ids := mustAdd(t, k, "openai", "sk-rec-000000000", "sk-rec-111111111")
			o := record{use: rotation.KeyUse{Key: ids[0], Served: tt.served}}
			if tt.streakRow {
				o.change = rotation.Change{Kind: rotation.ChangeCool, Key: ids[0], Model: "m", Status: 500, Reason: "x"}
			}
			wantModels := func(now, streak int64) string {
				if !tt.streakRow {
					return ""
				}
				return fmt.Sprintf("m/cooling/%d/x/%d", now, streak)
			}
			mustRecord(t, k, t0+5, o)
			x, evs := mustGet(t, k, ids[0])
			if x.Requests != tt.requests || x.Successes != tt.successes || x.Failures != tt.failure {
				t.Errorf("counters %d/%d/%d, want %d/%d/%d", x.Requests, x.Successes, x.Failures, tt.requests, tt.successes, tt.failure)
			}
			if x.LastUsedAt != t0+5 {
				t.Errorf("LastUsedAt = %d, want %d", x.LastUsedAt, t0+5)
			}
			if x.Status != store.StatusActive || x.UpdatedAt != t0 || len(evs) != 0 {
				t.Errorf("%s changed the key: %+v, events %+v", tt.name, x, evs)
			}
			if got, want := modelStates(x), wantModels(t0+5, 1); got != want {
				t.Errorf("models = %q, want %q", got, want)
			}
			mustRecord(t, k, t0+9, o, o)
			x, evs = mustGet(t, k, ids[0])
			if x.Requests != 3*tt.requests || x.Successes != 3*tt.successes || x.Failures != 3*tt.failure || x.LastUsedAt != t0+9 {
				t.Errorf("after 3 records: %+v", x)
			}
			if got, want := modelStates(x), wantModels(t0+9, 3); got != want {
				t.Errorf("models after 3 records = %q, want %q", got, want)
			}
			if len(evs) != 0 {
				t.Errorf("events after 3 records: %+v, want none", evs)
			}
			// Still a candidate (last, as the most recently used): a zero
			// cooldown takes nothing out of rotation.
			cs, err := k.Candidates(ctx, "openai", "m", t0+9, 10, false)
			if want := []int64{ids[1], ids[0]}; err != nil || !equalIDs(candIDs(cs), want) {
				t.Errorf("Candidates = %v, %v; want %v", candIDs(cs), err, want)
			}
			y, _ := mustGet(t, k, ids[1])
			if y.Requests != 0 || y.LastUsedAt != 0 || len(y.Models) != 0 {
				t.Errorf("other key touched: %+v", y)
			}
			if c := count(t, db, `SELECT COUNT(*) FROM key_events`); c != 0 {
				t.Errorf("%d key_events rows, want 0", c)
			}
		})
	}
}

func TestRecordBlockKey(t *testing.T) {
	k, db := open(t)
	ids := mustAdd(t, k, "openai", "sk-blk-000000000", "sk-blk-111111111")
	o := block(ids[0])
	mustRecord(t, k, t0+10, o)
	x, evs := mustGet(t, k, ids[0])
	if x.Status != store.StatusBlocked || x.StatusReason != "credential rejected (401)" || x.UpdatedAt != t0+10 {
		t.Errorf("key after BlockKey: %+v", x)
	}
	if x.Requests != 1 || x.Failures != 1 || x.Successes != 0 {
		t.Errorf("counters after BlockKey: %+v", x)
	}
	if len(evs) != 1 {
		t.Fatalf("events = %+v, want one", evs)
	}
	e := evs[0]
	if e.From != store.StatusActive || e.To != store.StatusBlocked || e.Model != "" || e.Status != 401 ||
		e.Excerpt != o.change.Excerpt || e.Reason != o.change.Reason || e.At != t0+10 {
		t.Errorf("event = %+v", e)
	}

	// Blocking a blocked key changes nothing but the counters.
	mustRecord(t, k, t0+20, o)
	x, evs = mustGet(t, k, ids[0])
	if len(evs) != 1 || x.UpdatedAt != t0+10 || x.Status != store.StatusBlocked {
		t.Errorf("second BlockKey: key %+v, events %+v", x, evs)
	}
	if x.Requests != 2 || x.Failures != 2 {
		t.Errorf("second BlockKey counters: %+v", x)
	}
	if c := count(t, db, `SELECT COUNT(*) FROM key_events`); c != 1 {
		t.Errorf("%d key_events rows, want 1", c)
	}
	if y, _ := mustGet(t, k, ids[1]); y.Status != store.StatusActive {
		t.Errorf("other key status %q", y.Status)
	}
	// A blocked key is never a candidate.
	cs, err := k.Candidates(ctx, "openai", "m", t0+30, 10, false)
	if err != nil || !equalIDs(candIDs(cs), []int64{ids[1]}) {
		t.Errorf("Candidates after block = %v, %v", candIDs(cs), err)
	}
}

func TestRecordCool(t *testing.T) {
	k, db := open(t)
	id := mustAdd(t, k, "openai", "sk-cool-00000000")[0]
	steps := []struct {
		now      int64
		model    string
		cooldown time.Duration
		streak   int64
	}{
		{t0, "gpt-4o", 30 * time.Second, 1},
		{t0 + 40_000, "gpt-4o", 2 * time.Minute, 2},
		{t0 + 200_000, "gpt-4o", 1500 * time.Millisecond, 3},
		{t0 + 200_000, "gpt-4o-mini", time.Hour, 1},
	}
	for i, s := range steps {
		mustRecord(t, k, s.now, cool(id, s.model, s.cooldown))
		var state, reason string
		var until, streak, updated int64
		if err := db.QueryRow(`SELECT state, until, reason, streak, updated_at FROM key_models WHERE key_id = ? AND model = ?`, id, s.model).
			Scan(&state, &until, &reason, &streak, &updated); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if state != store.ModelCooling || until != s.now+s.cooldown.Milliseconds() || streak != s.streak ||
			reason != "rate limited (429)" || updated != s.now {
			t.Errorf("step %d: row %s until %d streak %d updated %d reason %q; want cooling until %d streak %d",
				i, state, until, streak, updated, reason, s.now+s.cooldown.Milliseconds(), s.streak)
		}
		_, evs := mustGet(t, k, id)
		if len(evs) != i+1 {
			t.Fatalf("step %d: %d events, want %d", i, len(evs), i+1)
		}
		e := evs[0]
		if e.Model != s.model || e.From != store.StatusActive || e.To != store.ModelCooling || e.Status != 429 ||
			e.Excerpt != "slow down" || e.At != s.now {
			t.Errorf("step %d: event %+v", i, e)
		}
	}
	x, _ := mustGet(t, k, id)
	if x.Status != store.StatusActive || x.Failures != 4 || x.Successes != 0 || x.Requests != 4 {
		t.Errorf("key after cools: %+v", x)
	}
	if c := count(t, db, `SELECT COUNT(*) FROM key_models`); c != 2 {
		t.Errorf("%d key_models rows, want 2 (one per model)", c)
	}
}

func TestRecordCoolAfterBlockedModel(t *testing.T) {
	// A 429 on a key-model that is blocked for that model keeps the block
	// (only the admin or a check lifts it) and counts in the streak.
	k, db := open(t)
	id := mustAdd(t, k, "openai", "sk-cool-blocked0")[0]
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'm', 'blocked', 0, '', 4, ?)`, id, t0)
	mustRecord(t, k, t0, cool(id, "m", time.Second))
	x, _ := mustGet(t, k, id)
	if len(x.Models) != 1 || x.Models[0].State != store.ModelBlocked || x.Models[0].Until != 0 || x.Models[0].Streak != 5 {
		t.Errorf("models = %+v", x.Models)
	}
}

func TestNextCoolingEnd(t *testing.T) {
	k, db := open(t)
	id := mustAdd(t, k, "openai", "sk-next-a0000000", "sk-next-b0000000", "sk-next-c0000000", "sk-next-d0000000")
	g := mustAdd(t, k, "google-ai-studio", "AIzaNextCooling0")
	mustRecord(t, k, t0,
		cool(id[0], "m1", 30*time.Second),
		cool(id[1], "m1", 10*time.Second),
		cool(id[2], "m1", 5*time.Second), // key then blocked: does not count
		cool(id[3], "m2", time.Second),   // another model
		cool(g[0], "m1", 2*time.Second),  // another provider
		block(id[2]),
	)
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'm3', 'blocked', 0, '', 0, ?)`, id[0], t0)

	tests := []struct {
		name  string
		prov  string
		model string
		now   int64
		want  int64
	}{
		{"earliest", "openai", "m1", t0, t0 + 10_000},
		{"first ended", "openai", "m1", t0 + 10_000, t0 + 30_000},
		{"all ended", "openai", "m1", t0 + 30_000, 0},
		{"other model", "openai", "m2", t0, t0 + 1000},
		{"blocked model only", "openai", "m3", t0, 0},
		{"unknown model", "openai", "nope", t0, 0},
		{"other provider", "google-ai-studio", "m1", t0, t0 + 2000},
		{"no keys", "anthropic", "m1", t0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.NextCoolingEnd(ctx, tt.prov, tt.model, tt.now, false)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("NextCoolingEnd = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPruneCooling(t *testing.T) {
	// Cooling rows outlive their cooldown by rotation.StreakMemory, so that
	// the failure streak still grows the next cooldown; then they go.
	// Blocked rows always stay.
	k, db := open(t)
	id := mustAdd(t, k, "openai", "sk-prune-0000000", "sk-prune-1111111")
	mustRecord(t, k, t0,
		cool(id[0], "ended", time.Second),
		cool(id[0], "ends-now", 5*time.Second),
		cool(id[1], "later", time.Minute),
	)
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'blk', 'blocked', 0, '', 0, ?)`, id[1], t0)
	eventsBefore := count(t, db, `SELECT COUNT(*) FROM key_events`)
	memory := rotation.StreakMemory.Milliseconds()

	steps := []struct {
		name string
		now  int64
		want int64
		left string
	}{
		{"cooldowns just ended: streaks remembered", t0 + 5000, 0, "blk,ended,ends-now,later"},
		{"one ms short of the memory", t0 + 1000 + memory - 1, 0, "blk,ended,ends-now,later"},
		{"first forgotten", t0 + 1000 + memory, 1, "blk,ends-now,later"},
		{"second forgotten", t0 + 5000 + memory, 1, "blk,later"},
		{"again: nothing", t0 + 5000 + memory, 0, "blk,later"},
		{"long after: blocked row kept", t0 + 1_000_000_000, 1, "blk"},
	}
	for _, s := range steps {
		n, err := k.PruneCooling(ctx, s.now)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if n != s.want {
			t.Errorf("%s: PruneCooling removed %d rows, want %d", s.name, n, s.want)
		}
		if left := strings.Join(modelNames(t, db), ","); left != s.left {
			t.Errorf("%s: rows left %q, want %q", s.name, left, s.left)
		}
	}
	if c := count(t, db, `SELECT COUNT(*) FROM key_events`); c != eventsBefore {
		t.Errorf("PruneCooling touched key_events: %d rows, had %d", c, eventsBefore)
	}
}

// TestBrokenAnswerMarksStreak: an answer the upstream broke off counts one
// failure in the key-model's streak and leaves the key serving; a cut
// never blocks, however many there are.
func TestBrokenAnswerMarksStreak(t *testing.T) {
	k, db := open(t)
	id := mustAdd(t, k, "openai", "sk-cut-000000000")[0]
	for i := int64(1); i <= 3; i++ {
		c, _ := rotation.BrokenAnswer(id, "m", "the upstream cut the answer before its end", t0+i)
		if err := k.Apply(ctx, []rotation.Change{c}, t0+i); err != nil {
			t.Fatal(err)
		}
		if got := count(t, db, `SELECT streak FROM key_models WHERE key_id = ? AND model = 'm'`, id); got != int(i) {
			t.Errorf("after cut %d: streak %d, want %d", i, got, i)
		}
		cs, err := k.Candidates(ctx, "openai", "m", t0+i, 10, false)
		if err != nil || !equalIDs(candIDs(cs), []int64{id}) {
			t.Errorf("after cut %d: candidates %v, %v; want the key", i, candIDs(cs), err)
		}
	}
	if x, _ := mustGet(t, k, id); x.Status != store.StatusActive {
		t.Errorf("after 3 cuts the key is %q, want active", x.Status)
	}
}
