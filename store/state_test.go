package store_test

import (
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// modelStates renders a key's per-model states as
// "model/state/until/reason/streak", space separated, in model order.
func modelStates(x store.Key) string {
	var out []string
	for _, m := range x.Models {
		out = append(out, fmt.Sprintf("%s/%s/%d/%s/%d", m.Model, m.State, m.Until, m.Reason, m.Streak))
	}
	return strings.Join(out, " ")
}

// modelNames lists the models of every key_models row, sorted.
func modelNames(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT model FROM key_models ORDER BY model`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// allModelRows renders every key_models row as
// "key/model/state/until/reason/streak/updated", sorted; keys are named
// by their index in ids.
func allModelRows(t *testing.T, db *sql.DB, ids []int64) []string {
	t.Helper()
	name := map[int64]int{}
	for i, id := range ids {
		name[id] = i
	}
	rows, err := db.Query(`SELECT key_id, model, state, until, reason, streak, updated_at FROM key_models ORDER BY key_id, model`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, until, streak, updated int64
		var model, state, reason string
		if err := rows.Scan(&id, &model, &state, &until, &reason, &streak, &updated); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("k%d/%s/%s/%d/%s/%d/%d", name[id], model, state, rel(until), reason, streak, rel(updated)))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rel shows a time relative to t0, and 0 as 0.
func rel(ms int64) int64 {
	if ms == 0 {
		return 0
	}
	return ms - t0
}

// eventStrings renders events as "at:model:from>to:status:reason:excerpt"
// with at relative to t0, in the order given (newest first from Get).
func eventStrings(evs []store.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%d:%s:%s>%s:%d:%s:%s", e.At-t0, e.Model, e.From, e.To, e.Status, e.Reason, e.Excerpt))
	}
	return out
}

func insertModel(t *testing.T, db *sql.DB, id int64, model, state string, until, streak, updated int64) {
	t.Helper()
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, ?, ?, ?, 'setup', ?, ?)`,
		id, model, state, until, streak, updated)
}

// change is the state change of kind for key id at now, as rotation
// decides it: a cooldown of cd from now, key changes only from the
// statuses rotation allows.
func change(id int64, kind rotation.ChangeKind, status int, cd time.Duration, reason string, now int64) rotation.Change {
	c := rotation.Change{Kind: kind, Key: id, Model: "m", Status: status, Excerpt: "body " + reason, Reason: reason}
	switch kind {
	case rotation.ChangeCool:
		c.Until = now + cd.Milliseconds()
	case rotation.ChangeBlockKey:
		c.Model, c.From = "", []string{store.StatusActive, store.StatusExhausted}
	case rotation.ChangeExhaustKey:
		c.Model, c.From = "", []string{store.StatusActive}
	}
	return c
}

// TestApply applies state changes to key 0 of two fresh keys and checks
// every trace they leave: the key's status, its per-model rows, its events,
// and whether it is still a candidate. Key 1 must stay untouched.
func TestApply(t *testing.T) {
	type step struct {
		at int64 // ms after t0
		a  rotation.ChangeKind
		st int // upstream status
		cd time.Duration
		rs string // reason
	}
	type cands struct {
		model         string
		withExhausted bool
		want          []int // indexes of the keys, in order
	}
	tests := []struct {
		name   string
		status string // key 0's status before the steps ("" = active)
		pre    func(t *testing.T, db *sql.DB, id int64)
		steps  []step
		// Wanted state after the steps.
		status2 string // key 0's status
		reason2 string // key 0's status reason
		updated int64  // key 0's updated_at, relative to t0
		models  string // modelStates, times relative to t0
		events  []string
		candAt  int64 // when candidates are read, relative to t0
		cands   []cands
	}{
		{
			name:    "cool",
			steps:   []step{{0, rotation.ChangeCool, 429, 30 * time.Second, "rate limited"}},
			status2: "active",
			models:  "m/cooling/30000/rate limited/1",
			events:  []string{"0:m:active>cooling:429:rate limited:body rate limited"},
			candAt:  1,
			cands:   []cands{{"m", false, []int{1}}, {"m", true, []int{1}}, {"other", false, []int{0, 1}}},
		},
		{
			name: "cool twice grows the streak",
			steps: []step{
				{0, rotation.ChangeCool, 429, 30 * time.Second, "rate limited"},
				{40_000, rotation.ChangeCool, 429, time.Minute, "rate limited again"},
			},
			status2: "active",
			models:  "m/cooling/100000/rate limited again/2",
			events: []string{
				"40000:m:active>cooling:429:rate limited again:body rate limited again",
				"0:m:active>cooling:429:rate limited:body rate limited",
			},
			candAt: 99_999,
			cands:  []cands{{"m", false, []int{1}}},
		},
		{
			name:    "cooldown over: a candidate again",
			steps:   []step{{0, rotation.ChangeCool, 429, 30 * time.Second, "rate limited"}},
			status2: "active",
			models:  "m/cooling/30000/rate limited/1",
			events:  []string{"0:m:active>cooling:429:rate limited:body rate limited"},
			candAt:  30_000,
			cands:   []cands{{"m", false, []int{0, 1}}},
		},
		{
			name:    "retry without cooldown counts the streak only",
			steps:   []step{{0, rotation.ChangeCool, 500, 0, "upstream error"}},
			status2: "active",
			models:  "m/cooling/0/upstream error/1", // until = now = t0
			events:  []string{},
			candAt:  0,
			cands:   []cands{{"m", false, []int{0, 1}}},
		},
		{
			name: "retry without cooldown twice",
			steps: []step{
				{0, rotation.ChangeCool, 500, 0, "upstream error"},
				{10, rotation.ChangeCool, 0, 0, "network error"},
			},
			status2: "active",
			models:  "m/cooling/10/network error/2",
			events:  []string{},
			candAt:  10,
			cands:   []cands{{"m", false, []int{0, 1}}},
		},
		{
			name: "retry with a cooldown after one without",
			steps: []step{
				{0, rotation.ChangeCool, 500, 0, "upstream error"},
				{10, rotation.ChangeCool, 502, 5 * time.Second, "upstream error again"},
			},
			status2: "active",
			models:  "m/cooling/5010/upstream error again/2",
			events:  []string{"10:m:active>cooling:502:upstream error again:body upstream error again"},
			candAt:  5009,
			cands:   []cands{{"m", false, []int{1}}, {"other", false, []int{0, 1}}},
		},
		{
			name:    "cool after an ended cooldown keeps counting",
			pre:     func(t *testing.T, db *sql.DB, id int64) { insertModel(t, db, id, "m", "cooling", t0-1, 4, t0-60_000) },
			steps:   []step{{0, rotation.ChangeCool, 429, time.Minute, "rate limited"}},
			status2: "active",
			models:  "m/cooling/60000/rate limited/5",
			events:  []string{"0:m:active>cooling:429:rate limited:body rate limited"},
			candAt:  1,
			cands:   []cands{{"m", false, []int{1}}},
		},
		{
			name:    "block model",
			steps:   []step{{5, rotation.ChangeBlockModel, 403, 0, "no permission for this model"}},
			status2: "active",
			models:  "m/blocked/0/no permission for this model/1",
			events:  []string{"5:m:active>blocked:403:no permission for this model:body no permission for this model"},
			candAt:  1_000_000_000,
			cands: []cands{
				{"m", false, []int{1}}, {"m", true, []int{1}},
				{"other", false, []int{0, 1}}, {"other", true, []int{0, 1}},
			},
		},
		{
			name:    "block key",
			steps:   []step{{5, rotation.ChangeBlockKey, 401, 0, "credential rejected"}},
			status2: "blocked",
			reason2: "credential rejected",
			events:  []string{"5::active>blocked:401:credential rejected:body credential rejected"},
			candAt:  1,
			cands: []cands{
				{"m", false, []int{1}}, {"m", true, []int{1}},
				{"other", false, []int{1}}, {"other", true, []int{1}},
			},
		},
		{
			name: "block key twice: one event",
			steps: []step{
				{0, rotation.ChangeBlockKey, 401, 0, "credential rejected"},
				{50, rotation.ChangeBlockKey, 403, 0, "permission denied"},
			},
			status2: "blocked",
			reason2: "credential rejected",
			events:  []string{"0::active>blocked:401:credential rejected:body credential rejected"},
			candAt:  100,
			cands:   []cands{{"m", true, []int{1}}},
		},
		{
			name:    "block key already blocked: no event",
			status:  "blocked",
			steps:   []step{{0, rotation.ChangeBlockKey, 401, 0, "credential rejected"}},
			status2: "blocked",
			updated: -1, // untouched
			events:  []string{},
			candAt:  1,
			cands:   []cands{{"m", true, []int{1}}},
		},
		{
			name:    "block an exhausted key",
			status:  "exhausted",
			steps:   []step{{0, rotation.ChangeBlockKey, 401, 0, "credential rejected"}},
			status2: "blocked",
			reason2: "credential rejected",
			events:  []string{"0::exhausted>blocked:401:credential rejected:body credential rejected"},
			candAt:  1,
			cands:   []cands{{"m", true, []int{1}}},
		},
		{
			name:    "exhaust key",
			steps:   []step{{5, rotation.ChangeExhaustKey, 402, 0, "payment required"}},
			status2: "exhausted",
			reason2: "payment required",
			events:  []string{"5::active>exhausted:402:payment required:body payment required"},
			candAt:  1,
			cands: []cands{
				{"m", false, []int{1}}, {"m", true, []int{0, 1}},
				{"other", false, []int{1}}, {"other", true, []int{0, 1}},
			},
		},
		{
			name: "exhaust key twice: one event",
			steps: []step{
				{0, rotation.ChangeExhaustKey, 402, 0, "payment required"},
				{50, rotation.ChangeExhaustKey, 429, 0, "no balance or quota left"},
			},
			status2: "exhausted",
			reason2: "payment required",
			events:  []string{"0::active>exhausted:402:payment required:body payment required"},
			candAt:  100,
			cands:   []cands{{"m", false, []int{1}}, {"m", true, []int{0, 1}}},
		},
		{
			name:    "exhaust a disabled key: nothing",
			status:  "disabled",
			steps:   []step{{0, rotation.ChangeExhaustKey, 402, 0, "payment required"}},
			status2: "disabled",
			updated: -1,
			events:  []string{},
			candAt:  1,
			cands:   []cands{{"m", true, []int{1}}},
		},
		{
			name:    "exhaust a blocked key: nothing",
			status:  "blocked",
			steps:   []step{{0, rotation.ChangeExhaustKey, 402, 0, "payment required"}},
			status2: "blocked",
			updated: -1,
			events:  []string{},
			candAt:  1,
			cands:   []cands{{"m", true, []int{1}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, db := open(t)
			ids := mustAdd(t, k, "openai", "sk-verdict-00000", "sk-verdict-11111")
			if tt.status != "" {
				mustExec(t, db, `UPDATE keys SET status = ? WHERE id = ?`, tt.status, ids[0])
			}
			if tt.pre != nil {
				tt.pre(t, db, ids[0])
			}
			for _, s := range tt.steps {
				c := change(ids[0], s.a, s.st, s.cd, s.rs, t0+s.at)
				if err := k.Apply(ctx, []rotation.Change{c}, t0+s.at); err != nil {
					t.Fatalf("Apply(%v at %d): %v", s.a, s.at, err)
				}
			}

			x, evs := mustGet(t, k, ids[0])
			if x.Status != tt.status2 || x.StatusReason != tt.reason2 {
				t.Errorf("status %q (%q), want %q (%q)", x.Status, x.StatusReason, tt.status2, tt.reason2)
			}
			wantUpdated := t0 // as added
			if tt.status2 != store.StatusActive && tt.updated != -1 {
				wantUpdated = t0 + tt.steps[0].at
			}
			if x.UpdatedAt != wantUpdated {
				t.Errorf("updated_at %d, want %d", x.UpdatedAt-t0, wantUpdated-t0)
			}
			// Times in the model rows, relative to t0.
			for i := range x.Models {
				x.Models[i].Until = rel(x.Models[i].Until)
			}
			if got := modelStates(x); got != tt.models {
				t.Errorf("models = %q, want %q", got, tt.models)
			}
			if len(x.Models) > 0 {
				last := tt.steps[len(tt.steps)-1].at
				var updated int64
				if err := db.QueryRow(`SELECT updated_at FROM key_models WHERE key_id = ? AND model = 'm'`, ids[0]).Scan(&updated); err != nil {
					t.Fatal(err)
				}
				if updated != t0+last {
					t.Errorf("key_models.updated_at = %d, want %d", updated-t0, last)
				}
			}
			if got := eventStrings(evs); strings.Join(got, "\n") != strings.Join(tt.events, "\n") {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.events, "\n"))
			}
			// Apply never touches usage counters.
			if x.Requests != 0 || x.Failures != 0 || x.Successes != 0 || x.LastUsedAt != 0 {
				t.Errorf("counters changed: %+v", x)
			}

			for _, c := range tt.cands {
				cs, err := k.Candidates(ctx, "openai", c.model, t0+tt.candAt, 10, c.withExhausted)
				if err != nil {
					t.Fatal(err)
				}
				want := []int64{}
				for _, i := range c.want {
					want = append(want, ids[i])
				}
				if got := candIDs(cs); !equalIDs(got, want) {
					t.Errorf("Candidates(%s, withExhausted=%v) at %d = %v, want %v", c.model, c.withExhausted, tt.candAt, got, want)
				}
			}

			y, yevs := mustGet(t, k, ids[1])
			if y.Status != store.StatusActive || y.UpdatedAt != t0 || len(y.Models) != 0 || len(yevs) != 0 {
				t.Errorf("other key touched: %+v, events %+v", y, yevs)
			}
		})
	}
}

// TestApplyDeletedKey: a key deleted while its request ran leaves no row
// behind and no error, whatever the change.
func TestApplyDeletedKey(t *testing.T) {
	for kind := rotation.ChangeCool; kind <= rotation.ChangeLiftCooldowns; kind++ {
		for _, cd := range []time.Duration{0, time.Minute} {
			t.Run(fmt.Sprintf("%d/cooldown=%v", kind, cd), func(t *testing.T) {
				k, db := open(t)
				ids := mustAdd(t, k, "openai", "sk-gone-00000000", "sk-kept-00000000")
				if err := k.Delete(ctx, ids[0]); err != nil {
					t.Fatal(err)
				}
				c := change(ids[0], kind, 500, cd, "x", t0)
				c.Keys, c.Since = []int64{ids[0]}, t0
				if err := k.Apply(ctx, []rotation.Change{c}, t0); err != nil {
					t.Errorf("Apply on a deleted key: %v", err)
				}
				for _, table := range []string{"keys", "key_models", "key_events"} {
					want := 0
					if table == "keys" {
						want = 1
					}
					if c := count(t, db, `SELECT COUNT(*) FROM `+table); c != want {
						t.Errorf("%d rows in %s, want %d", c, table, want)
					}
				}
			})
		}
	}
}

// TestApplyGoesOn: a change that cannot be written does not stop the
// ones after it, and its error is returned.
func TestApplyGoesOn(t *testing.T) {
	k, _ := open(t)
	ids := mustAdd(t, k, "openai", "sk-on-000000000")
	err := k.Apply(ctx, []rotation.Change{{Kind: 99, Key: ids[0]}, change(ids[0], rotation.ChangeCool, 429, time.Minute, "r", t0)}, t0)
	if err == nil || !strings.Contains(err.Error(), "unknown state change") {
		t.Errorf("Apply error %v, want the unknown change named", err)
	}
	if x, _ := mustGet(t, k, ids[0]); modelStates(x) != fmt.Sprintf("m/cooling/%d/r/1", t0+60_000) {
		t.Errorf("models %q, want the cooldown written", modelStates(x))
	}
	if err := k.Apply(ctx, nil, t0); err != nil {
		t.Errorf("Apply of nothing: %v", err)
	}
}

// TestCandidatesRotation covers what the rotation engine reads from
// Candidates: the streak and cooldown end of each key-model, and the
// exhausted keys offered for free models.
func TestCandidatesRotation(t *testing.T) {
	k, db := open(t)
	type key struct {
		name     string
		status   string
		lastUsed int64 // relative to t0
	}
	keys := []key{
		{"a", "active", -300},
		{"b", "active", -200},    // ended cooling for m: streak 3, ended at -50
		{"c", "active", -100},    // cooling for m until +1000, streak 2
		{"d", "active", -250},    // blocked for m
		{"e", "exhausted", -150}, // nothing
		{"f", "exhausted", -350}, // ended cooling for m: streak 1, ended at -10
		{"g", "disabled", -400},
		{"h", "blocked", -500},
		{"i", "exhausted", -120}, // cooling for m until +1000
		{"j", "active", -300},    // same time as a, added later
		{"k", "exhausted", -300}, // same time as a and j, added later
		{"l", "disabled", -600},  // ended cooling for m
		{"n", "blocked", -600},   // blocked for m2
	}
	ss := make([]string, len(keys))
	for i, x := range keys {
		ss[i] = "sk-rot-" + x.name + "-000000"
	}
	ids := mustAdd(t, k, "openai", ss...)
	byName := map[string]int64{}
	nameOf := map[int64]string{}
	for i, x := range keys {
		byName[x.name] = ids[i]
		nameOf[ids[i]] = x.name
		mustExec(t, db, `UPDATE keys SET status = ?, last_used_at = ? WHERE id = ?`, x.status, t0+x.lastUsed, ids[i])
	}
	other := mustAdd(t, k, "deepseek", "sk-rot-other-000", "sk-rot-other-111")
	mustExec(t, db, `UPDATE keys SET last_used_at = ? WHERE id = ?`, t0-1000, other[0])
	mustExec(t, db, `UPDATE keys SET status = 'exhausted', last_used_at = ? WHERE id = ?`, t0-2000, other[1])
	insertModel(t, db, byName["b"], "m", "cooling", t0-50, 3, t0-60_050)
	insertModel(t, db, byName["c"], "m", "cooling", t0+1000, 2, t0)
	insertModel(t, db, byName["d"], "m", "blocked", 0, 1, t0)
	insertModel(t, db, byName["f"], "m", "cooling", t0-10, 1, t0-5000)
	insertModel(t, db, byName["i"], "m", "cooling", t0+1000, 1, t0)
	insertModel(t, db, byName["l"], "m", "cooling", t0-10, 1, t0-5000)
	insertModel(t, db, byName["n"], "m2", "blocked", 0, 1, t0)

	tests := []struct {
		name          string
		prov, model   string
		now           int64 // relative to t0
		limit         int
		withExhausted bool
		want          string // name:streak:coolEnd (relative), in order
	}{
		{"active only", "openai", "m", 0, 10, false, "a:0:0 j:0:0 b:3:-50"},
		{"limit", "openai", "m", 0, 2, false, "a:0:0 j:0:0"},
		{"limit 1", "openai", "m", 0, 1, false, "a:0:0"},
		{"running cooldown ends", "openai", "m", 1000, 10, false, "a:0:0 j:0:0 b:3:-50 c:2:1000"},
		{"one ms before it ends", "openai", "m", 999, 10, false, "a:0:0 j:0:0 b:3:-50"},
		{"with exhausted", "openai", "m", 0, 10, true, "f:1:-10 a:0:0 j:0:0 k:0:0 b:3:-50 e:0:0"},
		{"with exhausted, cooldowns over", "openai", "m", 1000, 10, true, "f:1:-10 a:0:0 j:0:0 k:0:0 b:3:-50 e:0:0 i:1:1000 c:2:1000"},
		{"with exhausted, limit", "openai", "m", 0, 3, true, "f:1:-10 a:0:0 j:0:0"},
		{"with exhausted, limit 1", "openai", "m", 0, 1, true, "f:1:-10"},
		// Each branch is cut at the limit before the merge; the merge must
		// still be the overall least recently used.
		{"with exhausted, limit 4", "openai", "m2", 0, 4, true, "f:0:0 a:0:0 j:0:0 k:0:0"},
		{"another model", "openai", "m2", 0, 10, false, "a:0:0 j:0:0 d:0:0 b:0:0 c:0:0"},
		{"another model with exhausted", "openai", "m2", 0, 20, true,
			"f:0:0 a:0:0 j:0:0 k:0:0 d:0:0 b:0:0 e:0:0 i:0:0 c:0:0"},
		{"blocked for the model forever", "openai", "m", 1_000_000_000, 10, false, "a:0:0 j:0:0 b:3:-50 c:2:1000"},
		{"other provider", "deepseek", "m", 0, 10, false, "other0:0:0"},
		{"other provider with exhausted", "deepseek", "m", 0, 10, true, "other1:0:0 other0:0:0"},
		{"no keys", "anthropic", "m", 0, 10, true, ""},
	}
	nameOf[other[0]], nameOf[other[1]] = "other0", "other1"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := k.Candidates(ctx, tt.prov, tt.model, t0+tt.now, tt.limit, tt.withExhausted)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range cs {
				got = append(got, fmt.Sprintf("%s:%d:%d", nameOf[c.ID], c.Streak, rel(c.CoolEnd)))
				x, _ := mustGet(t, k, c.ID)
				if c.Secret != x.Secret || c.LastUsed != x.LastUsedAt {
					t.Errorf("candidate %+v does not match key %+v", c, x)
				}
				if x.Status != store.StatusActive && (x.Status != store.StatusExhausted || !tt.withExhausted) {
					t.Errorf("candidate %s has status %s (withExhausted %v)", nameOf[c.ID], x.Status, tt.withExhausted)
				}
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("Candidates =\n  %s\nwant\n  %s", g, tt.want)
			}
		})
	}
}

func TestResetStreak(t *testing.T) {
	tests := []struct {
		name  string
		key   int // index of the key reset
		model string
		now   int64 // relative to t0
		want  []string
	}{
		{"ended cooldown goes", 0, "ended", 0, []string{
			"k0/blocked/blocked/0/setup/1/0", "k0/other/cooling/-5/setup/2/-100", "k0/running/cooling/1000/setup/2/0",
			"k1/ended/cooling/-10/setup/3/-100"}},
		{"ends exactly now", 0, "running", 1000, []string{
			"k0/blocked/blocked/0/setup/1/0", "k0/ended/cooling/-10/setup/3/-100", "k0/other/cooling/-5/setup/2/-100",
			"k1/ended/cooling/-10/setup/3/-100"}},
		{"running cooldown stays", 0, "running", 999, nil},
		{"block stays", 0, "blocked", 1_000_000_000, nil},
		{"no row", 0, "none", 0, nil},
		{"other key", 1, "ended", 0, []string{
			"k0/blocked/blocked/0/setup/1/0", "k0/ended/cooling/-10/setup/3/-100", "k0/other/cooling/-5/setup/2/-100",
			"k0/running/cooling/1000/setup/2/0"}},
	}
	all := []string{
		"k0/blocked/blocked/0/setup/1/0", "k0/ended/cooling/-10/setup/3/-100", "k0/other/cooling/-5/setup/2/-100",
		"k0/running/cooling/1000/setup/2/0", "k1/ended/cooling/-10/setup/3/-100",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, db := open(t)
			ids := mustAdd(t, k, "openai", "sk-reset-0000000", "sk-reset-1111111")
			insertModel(t, db, ids[0], "ended", "cooling", t0-10, 3, t0-100)
			insertModel(t, db, ids[0], "other", "cooling", t0-5, 2, t0-100)
			insertModel(t, db, ids[0], "running", "cooling", t0+1000, 2, t0)
			insertModel(t, db, ids[0], "blocked", "blocked", 0, 1, t0)
			insertModel(t, db, ids[1], "ended", "cooling", t0-10, 3, t0-100)
			reset := rotation.Change{Kind: rotation.ChangeResetStreak, Key: ids[tt.key], Model: tt.model}
			if err := k.Apply(ctx, []rotation.Change{reset}, t0+tt.now); err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == nil {
				want = all
			}
			if got := allModelRows(t, db, ids); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("rows left:\n  %q\nwant\n  %q", got, want)
			}
			if c := count(t, db, `SELECT COUNT(*) FROM key_events`); c != 0 {
				t.Errorf("ResetStreak wrote %d events", c)
			}
		})
	}
}

func TestLiftCooldowns(t *testing.T) {
	const reason = "storm"
	// Rows: key/model/state/until/updated (relative to t0).
	setup := func(t *testing.T, db *sql.DB, ids []int64) {
		insertModel(t, db, ids[0], "m1", "cooling", t0+60_000, 2, t0+100)  // lifted when listed
		insertModel(t, db, ids[0], "m2", "cooling", t0+60_000, 2, t0-5000) // older than since
		insertModel(t, db, ids[0], "m3", "cooling", t0+200, 1, t0+100)     // rest over at now: streak only
		insertModel(t, db, ids[0], "m4", "blocked", 0, 1, t0+100)          // a block, not a cooldown
		insertModel(t, db, ids[1], "m1", "cooling", t0+30_000, 1, t0+200)  // lifted when listed
		insertModel(t, db, ids[2], "m1", "cooling", t0+30_000, 1, t0+200)  // not listed
	}
	all := []string{
		"k0/m1/cooling/60000/setup/2/100", "k0/m2/cooling/60000/setup/2/-5000", "k0/m3/cooling/200/setup/1/100",
		"k0/m4/blocked/0/setup/1/100", "k1/m1/cooling/30000/setup/1/200", "k2/m1/cooling/30000/setup/1/200",
	}
	without := func(gone ...string) []string {
		var out []string
	next:
		for _, r := range all {
			for _, g := range gone {
				if strings.HasPrefix(r, g+"/") {
					continue next
				}
			}
			out = append(out, r)
		}
		return out
	}
	tests := []struct {
		name   string
		keys   []int // indexes
		since  int64 // relative to t0
		now    int64
		want   int64
		left   []string
		events []string // "key:model", sorted
	}{
		// A streak row whose rest is over (k0/m3 at now=500) goes too,
		// silently: no event, not counted.
		{"listed keys", []int{0, 1}, 0, 500, 2, without("k0/m1", "k0/m3", "k1/m1"), []string{"k0:m1", "k1:m1"}},
		{"one key", []int{0}, 0, 500, 1, without("k0/m1", "k0/m3"), []string{"k0:m1"}},
		{"since is inclusive", []int{0, 1}, 100, 500, 2, without("k0/m1", "k0/m3", "k1/m1"), []string{"k0:m1", "k1:m1"}},
		{"later since", []int{0, 1}, 101, 500, 1, without("k1/m1"), []string{"k1:m1"}},
		{"old cooldowns too", []int{0}, -5000, 500, 2, without("k0/m1", "k0/m2", "k0/m3"), []string{"k0:m1", "k0:m2"}},
		{"earlier now: still running", []int{0}, 0, 100, 2, without("k0/m1", "k0/m3"), []string{"k0:m1", "k0:m3"}},
		{"ended cooldown: streak cleared silently", []int{1}, 0, 30_000, 0, without("k1/m1"), nil},
		{"unknown key", []int{3}, 0, 500, 0, all, nil},
		{"no keys", []int{}, 0, 500, 0, all, nil},
		{"listed twice", []int{1, 1}, 0, 500, 1, without("k1/m1"), []string{"k1:m1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, db := open(t)
			ids := mustAdd(t, k, "openai", "sk-lift-0000000", "sk-lift-1111111", "sk-lift-2222222")
			ids = append(ids, 999) // never existed
			setup(t, db, ids)
			var list []int64
			for _, i := range tt.keys {
				list = append(list, ids[i])
			}
			lift := rotation.Change{Kind: rotation.ChangeLiftCooldowns, Keys: list, Since: t0 + tt.since, Reason: reason}
			if err := k.Apply(ctx, []rotation.Change{lift}, t0+tt.now); err != nil {
				t.Fatal(err)
			}
			if got := allModelRows(t, db, ids); strings.Join(got, " ") != strings.Join(tt.left, " ") {
				t.Errorf("rows left:\n  %q\nwant\n  %q", got, tt.left)
			}
			var evs []string
			for i, id := range ids[:3] {
				_, es := mustGet(t, k, id)
				for _, e := range es {
					if e.At != t0+tt.now || e.From != store.ModelCooling || e.To != store.StatusActive ||
						e.Reason != reason || e.Status != 0 || e.Excerpt != "" {
						t.Errorf("event %+v", e)
					}
					evs = append(evs, fmt.Sprintf("k%d:%s", i, e.Model))
				}
			}
			sort.Strings(evs)
			if strings.Join(evs, " ") != strings.Join(tt.events, " ") || int64(len(evs)) != tt.want {
				t.Errorf("events %q, want %q (%d lifted)", evs, tt.events, tt.want)
			}
		})
	}
}

func TestNextCoolingEndWithExhausted(t *testing.T) {
	k, db := open(t)
	ids := mustAdd(t, k, "openai", "sk-nce-a0000000", "sk-nce-b0000000", "sk-nce-c0000000", "sk-nce-d0000000")
	mustExec(t, db, `UPDATE keys SET status = 'exhausted' WHERE id = ?`, ids[1])
	mustExec(t, db, `UPDATE keys SET status = 'disabled' WHERE id = ?`, ids[2])
	mustExec(t, db, `UPDATE keys SET status = 'blocked' WHERE id = ?`, ids[3])
	insertModel(t, db, ids[0], "m", "cooling", t0+30_000, 1, t0)
	insertModel(t, db, ids[1], "m", "cooling", t0+10_000, 1, t0)
	insertModel(t, db, ids[2], "m", "cooling", t0+5000, 1, t0)
	insertModel(t, db, ids[3], "m", "cooling", t0+1000, 1, t0)
	insertModel(t, db, ids[1], "x", "cooling", t0+2000, 1, t0) // only an exhausted key cools for x

	tests := []struct {
		name          string
		model         string
		now           int64
		withExhausted bool
		want          int64
	}{
		{"active only", "m", 0, false, 30_000},
		{"exhausted first", "m", 0, true, 10_000},
		{"exhausted over", "m", 10_000, true, 30_000},
		{"all over", "m", 30_000, true, 0},
		{"exhausted only, not asked", "x", 0, false, 0},
		{"exhausted only, asked", "x", 0, true, 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.NextCoolingEnd(ctx, "openai", tt.model, t0+tt.now, tt.withExhausted)
			if err != nil {
				t.Fatal(err)
			}
			if rel(got) != tt.want {
				t.Errorf("NextCoolingEnd = %d, want %d", rel(got), tt.want)
			}
		})
	}
}

func TestAddUsage(t *testing.T) {
	k, _ := open(t)
	ids := mustAdd(t, k, "openai", "sk-use-a0000000", "sk-use-b0000000", "sk-use-c0000000")
	if err := k.AddUsage(ctx, []store.KeyUsage{
		{KeyID: ids[0], Requests: 3, Successes: 2, Failures: 1, LastUsed: t0 + 50},
		{KeyID: ids[1], Requests: 1, Failures: 1, LastUsed: t0 + 20},
		{KeyID: 999, Requests: 7, LastUsed: t0}, // deleted meanwhile
	}); err != nil {
		t.Fatal(err)
	}
	// A later flush of usage that is older (another isolate) does not move
	// last_used_at back.
	if err := k.AddUsage(ctx, []store.KeyUsage{{KeyID: ids[0], Requests: 1, Successes: 1, LastUsed: t0 + 10}}); err != nil {
		t.Fatal(err)
	}
	if err := k.AddUsage(ctx, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"4/3/1/50", "1/0/1/20", "0/0/0/0"}
	for i, id := range ids {
		x, _ := mustGet(t, k, id)
		if got := fmt.Sprintf("%d/%d/%d/%d", x.Requests, x.Successes, x.Failures, rel(x.LastUsedAt)); got != want[i] {
			t.Errorf("key %d: requests/successes/failures/last used = %s, want %s", i, got, want[i])
		}
	}
}

func TestUsageAdd(t *testing.T) {
	var u store.KeyUsage
	for i, served := range []bool{true, true, false, false, false, false, false, false} {
		u.Add(rotation.KeyUse{Key: 7, Served: served}, t0+int64(10-i))
	}
	u.Add(rotation.KeyUse{Key: 7}, t0)
	if u != (store.KeyUsage{KeyID: 7, Requests: 9, Successes: 2, Failures: 7, LastUsed: t0 + 10}) {
		t.Errorf("KeyUsage = %+v", u)
	}
}
