package store_test

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

func openChecks(t *testing.T) (*store.Checks, *store.Keys, *sql.DB) {
	t.Helper()
	db := sqlitetest.Open(t)
	return store.On(db, nil).Checks(), store.On(db, nil).Keys(), db
}

// setCheckState puts a key in a state for the health checks.
func setCheckState(t *testing.T, db *sql.DB, id int64, status string, next, lastChecked, fails int64) {
	t.Helper()
	mustExec(t, db, `UPDATE keys SET status = ?, next_check_at = ?, last_checked_at = ?, check_fails = ? WHERE id = ?`,
		status, next, lastChecked, fails, id)
}

func checkKeyIDs(ks []store.CheckKey) []int64 {
	out := []int64{}
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

// checkRow is a key's health-check columns.
type checkRow struct {
	Status, Reason string
	Balance        sql.NullFloat64
	UpdatedAt      int64
	LastCheckedAt  int64
	NextCheckAt    int64
	Fails          int64
	Result         string
}

func readCheckRow(t *testing.T, db *sql.DB, id int64) checkRow {
	t.Helper()
	var r checkRow
	if err := db.QueryRow(`SELECT status, status_reason, balance, updated_at, last_checked_at, next_check_at, check_fails, check_result
		FROM keys WHERE id = ?`, id).Scan(&r.Status, &r.Reason, &r.Balance, &r.UpdatedAt, &r.LastCheckedAt, &r.NextCheckAt,
		&r.Fails, &r.Result); err != nil {
		t.Fatalf("key %d: %v", id, err)
	}
	return r
}

// TestDue builds keys in every situation and checks which are due and in
// what order: model cooldowns ended since the last check first, then
// recovery probes, then routine checks; by due time, then id.
func TestDue(t *testing.T) {
	c, k, db := openChecks(t)
	now := t0
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "kk", "l", "m", "n", "o", "p", "q", "r", "s", "a2"}
	ids := mustAdd(t, k, "openai", secrets("sk-due-", len(names))...)
	id := map[string]int64{}
	for i, n := range names {
		id[n] = ids[i]
	}
	// Routine checks (pri 2).
	setCheckState(t, db, id["a"], "active", now-100, now-6*3600_000, 0)
	setCheckState(t, db, id["a2"], "active", now-100, 0, 0) // same time as a, larger id
	setCheckState(t, db, id["b"], "active", now-500, 0, 0)
	setCheckState(t, db, id["p"], "active", now, 0, 0) // due exactly now
	// Recovery probes (pri 1).
	setCheckState(t, db, id["c"], "blocked", now-10, 0, 2)
	setCheckState(t, db, id["d"], "exhausted", now-10, 0, 1) // same time as c, larger id
	setCheckState(t, db, id["e"], "exhausted", now-1000, 0, 5)
	// Never: disabled, or not yet due.
	setCheckState(t, db, id["f"], "disabled", now-1000, 0, 0)
	setCheckState(t, db, id["g"], "active", now+1000, 0, 0)
	setCheckState(t, db, id["h"], "blocked", now+1, 0, 3)
	// A model cooldown ended after the last check (pri 0), even before
	// the key's own next check.
	setCheckState(t, db, id["i"], "active", now+5000, now-600, 0)
	insertModel(t, db, id["i"], "m1", "cooling", now-300, 1, now-900)
	// Both a cooldown that ended and a routine check: listed once, first.
	setCheckState(t, db, id["j"], "active", now-200, now-700, 0)
	insertModel(t, db, id["j"], "m1", "cooling", now-400, 1, now-900)
	// Cooldown ended before the last check: nothing new.
	setCheckState(t, db, id["kk"], "active", now+1000, now-100, 0)
	insertModel(t, db, id["kk"], "m1", "cooling", now-300, 1, now-900)
	// Still cooling.
	setCheckState(t, db, id["l"], "active", now+1000, 0, 0)
	insertModel(t, db, id["l"], "m1", "cooling", now+100, 1, now-900)
	// Disabled and blocked keys whose cooldown ended: not for pri 0.
	setCheckState(t, db, id["m"], "disabled", now+1000, 0, 0)
	insertModel(t, db, id["m"], "m1", "cooling", now-50, 1, now-900)
	setCheckState(t, db, id["n"], "blocked", now+1000, 0, 0)
	insertModel(t, db, id["n"], "m1", "cooling", now-50, 1, now-900)
	// A model block is no cooldown.
	setCheckState(t, db, id["o"], "active", now+1000, 0, 0)
	insertModel(t, db, id["o"], "m1", "blocked", 0, 0, now-900)
	// Two ended cooldowns: the earliest counts.
	setCheckState(t, db, id["q"], "active", now+1000, now-900, 0)
	insertModel(t, db, id["q"], "m1", "cooling", now-50, 1, now-950)
	insertModel(t, db, id["q"], "m2", "cooling", now-800, 1, now-950)
	// Same cooldown end as r's, larger id.
	setCheckState(t, db, id["r"], "active", now+1000, now-2000, 0)
	insertModel(t, db, id["r"], "m1", "cooling", now-400, 1, now-950)
	setCheckState(t, db, id["s"], "active", now+1000, 0, 0)
	insertModel(t, db, id["s"], "m1", "cooling", now-1, 1, now-950)

	// j (now-400) and r (now-400) tie: by id, j first.
	order := []string{"q", "j", "r", "i", "s", "e", "c", "d", "b", "a", "a2", "p"}
	want := make([]int64, len(order))
	for i, n := range order {
		want[i] = id[n]
	}

	var n atomic.Int64
	c = store.On(db, &n).Checks()
	got, err := c.Due(ctx, now, 100)
	if err != nil {
		t.Fatal(err)
	}
	if q := n.Load(); q != 1 {
		t.Errorf("Due: %d round trips, want 1", q)
	}
	if !equalIDs(checkKeyIDs(got), want) {
		t.Errorf("Due order:\n got %v\nwant %v (%v)", checkKeyIDs(got), want, order)
	}
	for _, x := range got {
		if x.Provider != "openai" || !strings.HasPrefix(x.Secret, "sk-due-") {
			t.Errorf("Due key %+v: provider or secret not read", x)
		}
	}
	byID := map[int64]store.CheckKey{}
	for _, x := range got {
		byID[x.ID] = x
	}
	if x := byID[id["e"]]; x.Status != "exhausted" || x.Fails != 5 {
		t.Errorf("Due key e = %+v, want status exhausted, fails 5", x)
	}
	if x := byID[id["c"]]; x.Status != "blocked" || x.Fails != 2 {
		t.Errorf("Due key c = %+v, want status blocked, fails 2", x)
	}

	// Any limit: never more keys, and always the most urgent first. A key
	// listed in two classes is dropped after LIMIT applied, so a limit
	// that reaches its second row (j's routine check, the 10th row)
	// yields one key fewer.
	for limit := 1; limit <= len(want)+2; limit++ {
		got, err := c.Due(ctx, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		ids := checkKeyIDs(got)
		if len(ids) > limit || len(ids) < min(limit, len(want))-1 || !equalIDs(ids, want[:len(ids)]) {
			t.Errorf("Due(limit %d) = %v, want a prefix of %v of at most %d", limit, ids, want, limit)
		}
	}
	// Limits that stop before the doubled key's second row are exact.
	for limit := 1; limit <= 8; limit++ {
		got, _ := c.Due(ctx, now, limit)
		if !equalIDs(checkKeyIDs(got), want[:limit]) {
			t.Errorf("Due(limit %d) = %v, want %v", limit, checkKeyIDs(got), want[:limit])
		}
	}

	// Earlier, fewer are due.
	got, err = c.Due(ctx, now-1000, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !equalIDs(checkKeyIDs(got), []int64{id["e"]}) {
		t.Errorf("Due(now-1000) = %v, want only e %d", checkKeyIDs(got), id["e"])
	}
}

func TestDueNone(t *testing.T) {
	c, k, db := openChecks(t)
	got, err := c.Due(ctx, t0, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("Due on an empty pool = %v, %v", got, err)
	}
	ids := mustAdd(t, k, "openai", secrets("sk-none-", 3)...)
	// New keys are due at once.
	got, err = c.Due(ctx, t0, 10)
	if err != nil || !equalIDs(checkKeyIDs(got), ids) {
		t.Errorf("Due of new keys = %v, %v; want %v", checkKeyIDs(got), err, ids)
	}
	for _, id := range ids {
		setCheckState(t, db, id, "active", t0+1, 0, 0)
	}
	got, err = c.Due(ctx, t0, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("Due with nothing due = %v, %v", checkKeyIDs(got), err)
	}
}

func TestRecordChecksRoundTrips(t *testing.T) {
	c, k, db := openChecks(t)
	ids := mustAdd(t, k, "openai", secrets("sk-rc-", 50)...)
	recs := make([]store.CheckRecord, 0, len(ids))
	for i, id := range ids {
		r := rotation.CheckResult{Outcome: rotation.CheckOK, Status: 200}
		if i%2 == 0 {
			r = r.WithBalance(float64(i))
		}
		next := rotation.HealthPolicy{}.After("active", 0, r, time.UnixMilli(t0))
		recs = append(recs, store.CheckRecord{Key: store.CheckKey{ID: id, Status: "active"}, Result: r, Next: next})
	}
	var n atomic.Int64
	c = store.On(db, &n).Checks()
	if err := c.RecordChecks(ctx, recs, t0); err != nil {
		t.Fatal(err)
	}
	if q := n.Swap(0); q != 3 {
		t.Errorf("RecordChecks of 50: %d round trips, want 3", q)
	}
	if got := count(t, db, `SELECT COUNT(*) FROM key_checks`); got != 50 {
		t.Errorf("%d key_checks rows, want 50", got)
	}
	// Key 0 had balance 0: exhausted, with an event.
	if got := count(t, db, `SELECT COUNT(*) FROM key_events`); got != 1 {
		t.Errorf("%d key_events rows, want 1 (the key with balance 0)", got)
	}
	if err := c.RecordChecks(ctx, nil, t0); err != nil {
		t.Fatal(err)
	}
	if q := n.Load(); q != 0 {
		t.Errorf("RecordChecks of none: %d round trips, want 0", q)
	}
}

func TestRecordChecks(t *testing.T) {
	c, k, db := openChecks(t)
	ids := mustAdd(t, k, "siliconflow", secrets("sk-rec-", 9)...)
	now := t0 + 60_000
	tnow := time.UnixMilli(now)
	hp := rotation.HealthPolicy{}
	for _, id := range ids {
		mustExec(t, db, `UPDATE keys SET balance = 5, status_reason = 'setup', updated_at = ? WHERE id = ?`, t0, id)
	}
	setCheckState(t, db, ids[1], "exhausted", t0, t0-1000, 3)
	setCheckState(t, db, ids[3], "blocked", t0, t0-1000, 1)
	setCheckState(t, db, ids[4], "disabled", t0, t0-1000, 0) // was active when read
	setCheckState(t, db, ids[5], "blocked", t0, t0-1000, 0)  // blocked by the proxy meanwhile
	setCheckState(t, db, ids[7], "exhausted", t0, t0-1000, 2)

	okBal := func(b float64) rotation.CheckResult {
		r := rotation.CheckResult{Outcome: rotation.CheckOK, Status: 200, Detail: fmt.Sprintf(`{"totalBalance":"%v"}`, b)}
		return r.WithBalance(b)
	}
	invalid := rotation.CheckResult{Outcome: rotation.CheckInvalid, Status: 401, Detail: `"Invalid token"`}
	errRes := rotation.CheckResult{Outcome: rotation.CheckError, Status: 0, Detail: "timeout"}
	rec := func(id int64, was string, fails int64, r rotation.CheckResult) store.CheckRecord {
		return store.CheckRecord{Key: store.CheckKey{ID: id, Provider: "siliconflow", Status: was, Fails: fails}, Result: r,
			Next: hp.After(was, fails, r, tnow)}
	}
	deleted := ids[8]
	if err := k.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	recs := []store.CheckRecord{
		rec(ids[0], "active", 0, invalid),        // active -> blocked, no balance: balance kept
		rec(ids[1], "exhausted", 3, okBal(12.5)), // exhausted -> active with a balance
		rec(ids[2], "active", 0, okBal(3.25)),    // stays active, new balance
		rec(ids[3], "blocked", 1, invalid),       // stays blocked, one more failed probe
		rec(ids[4], "active", 0, invalid),        // disabled meanwhile: stays disabled
		rec(ids[5], "active", 0, invalid),        // blocked meanwhile: no second event
		rec(ids[6], "active", 0, okBal(0)),       // balance 0: exhausted, balance 0 stored
		rec(ids[7], "exhausted", 2, errRes),      // nothing learnt
		rec(deleted, "active", 0, invalid),       // deleted meanwhile: skipped
	}
	if err := c.RecordChecks(ctx, recs, now); err != nil {
		t.Fatalf("RecordChecks: %v", err)
	}

	bal := func(f float64) sql.NullFloat64 { return sql.NullFloat64{Float64: f, Valid: true} }
	wantRows := []struct {
		status, reason string
		balance        sql.NullFloat64
		updated        int64
		next           time.Duration
		fails          int64
		result         string
	}{
		{"blocked", "check: credential rejected", bal(5), now, 10 * time.Minute, 1, "invalid"},
		{"active", "check: balance available again", bal(12.5), now, 6 * time.Hour, 0, "ok"},
		{"active", "setup", bal(3.25), t0, 6 * time.Hour, 0, "ok"},
		{"blocked", "setup", bal(5), t0, 20 * time.Minute, 2, "invalid"},
		{"disabled", "setup", bal(5), t0, 10 * time.Minute, 1, "invalid"},
		{"blocked", "setup", bal(5), t0, 10 * time.Minute, 1, "invalid"},
		{"exhausted", "check: no balance or quota left", bal(0), now, 10 * time.Minute, 1, "exhausted"},
		{"exhausted", "setup", bal(5), t0, 15 * time.Minute, 2, "error"},
	}
	for i, w := range wantRows {
		got := readCheckRow(t, db, ids[i])
		if got.Status != w.status || got.Reason != w.reason || got.Balance != w.balance || got.UpdatedAt != w.updated ||
			got.LastCheckedAt != now || got.NextCheckAt != now+w.next.Milliseconds() || got.Fails != w.fails || got.Result != w.result {
			t.Errorf("key %d after RecordChecks:\n got %+v\nwant status %s, reason %q, balance %v, updated_at %d, last_checked_at %d, next_check_at %d, fails %d, result %s",
				i, got, w.status, w.reason, w.balance, w.updated, now, now+w.next.Milliseconds(), w.fails, w.result)
		}
	}

	// One history row per check, the deleted key's dropped.
	rows, err := db.Query(`SELECT key_id, at, outcome, status, balance, detail FROM key_checks ORDER BY key_id`)
	if err != nil {
		t.Fatal(err)
	}
	var hist []string
	for rows.Next() {
		var id, at, status int64
		var outcome, detail string
		var b sql.NullFloat64
		if err := rows.Scan(&id, &at, &outcome, &status, &b, &detail); err != nil {
			t.Fatal(err)
		}
		bs := "NULL"
		if b.Valid {
			bs = fmt.Sprint(b.Float64)
		}
		hist = append(hist, fmt.Sprintf("%d@%d %s %d %s %s", id-ids[0], at-now, outcome, status, bs, detail))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	wantHist := []string{
		`0@0 invalid 401 NULL "Invalid token"`,
		`1@0 ok 200 12.5 {"totalBalance":"12.5"}`,
		`2@0 ok 200 3.25 {"totalBalance":"3.25"}`,
		`3@0 invalid 401 NULL "Invalid token"`,
		`4@0 invalid 401 NULL "Invalid token"`,
		`5@0 invalid 401 NULL "Invalid token"`,
		`6@0 exhausted 200 0 {"totalBalance":"0"}`,
		`7@0 error 0 NULL timeout`,
	}
	if strings.Join(hist, "\n") != strings.Join(wantHist, "\n") {
		t.Errorf("key_checks:\n%s\nwant\n%s", strings.Join(hist, "\n"), strings.Join(wantHist, "\n"))
	}

	// Events only for the status changes this check made.
	rows, err = db.Query(`SELECT key_id, at, model, from_state, to_state, reason, status, excerpt FROM key_events ORDER BY key_id`)
	if err != nil {
		t.Fatal(err)
	}
	var evs []string
	for rows.Next() {
		var id, at, status int64
		var model, from, to, reason, excerpt string
		if err := rows.Scan(&id, &at, &model, &from, &to, &reason, &status, &excerpt); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, fmt.Sprintf("%d@%d %q %s->%s %q %d %s", id-ids[0], at-now, model, from, to, reason, status, excerpt))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	wantEvs := []string{
		`0@0 "" active->blocked "check: credential rejected" 401 "Invalid token"`,
		`1@0 "" exhausted->active "check: balance available again" 200 {"totalBalance":"12.5"}`,
		`6@0 "" active->exhausted "check: no balance or quota left" 200 {"totalBalance":"0"}`,
	}
	if strings.Join(evs, "\n") != strings.Join(wantEvs, "\n") {
		t.Errorf("key_events:\n%s\nwant\n%s", strings.Join(evs, "\n"), strings.Join(wantEvs, "\n"))
	}
	if got := count(t, db, `SELECT COUNT(*) FROM keys WHERE id = ?`, deleted); got != 0 {
		t.Errorf("the deleted key came back")
	}

	// The keys as the rest of the store reads them.
	x, evList := mustGet(t, k, ids[0])
	if x.Status != "blocked" || x.LastCheckedAt != now || len(evList) != 1 {
		t.Errorf("Get after RecordChecks: %+v, %d events", x, len(evList))
	}

	// A second round: the keys' new state is the "was" of the next.
	recs = []store.CheckRecord{
		rec(ids[0], "blocked", 1, okBal(1)),   // back, funded
		rec(ids[6], "exhausted", 1, okBal(0)), // still nothing
		rec(ids[2], "exhausted", 0, okBal(2)), // stale: the key is active
	}
	if err := c.RecordChecks(ctx, recs, now+1000); err != nil {
		t.Fatal(err)
	}
	if r := readCheckRow(t, db, ids[0]); r.Status != "active" || r.Reason != "check: credential accepted again" || r.Balance != bal(1) || r.Fails != 0 {
		t.Errorf("key 0 after recovering: %+v", r)
	}
	if r := readCheckRow(t, db, ids[6]); r.Status != "exhausted" || r.Fails != 2 || r.NextCheckAt != now+20*60_000 /* rec plans from now */ {
		t.Errorf("key 6 after a second empty balance: %+v", r)
	}
	if r := readCheckRow(t, db, ids[2]); r.Status != "active" || r.Reason != "setup" || r.Balance != bal(2) {
		t.Errorf("key 2 after a stale record: %+v", r)
	}
	if got := count(t, db, `SELECT COUNT(*) FROM key_events`); got != 4 {
		t.Errorf("%d events after the second round, want 4", got)
	}
	if got := count(t, db, `SELECT COUNT(*) FROM key_checks`); got != 11 {
		t.Errorf("%d key_checks rows after the second round, want 11", got)
	}
}

func TestBalanceHistory(t *testing.T) {
	c, k, db := openChecks(t)
	ids := mustAdd(t, k, "deepseek", secrets("sk-bh-", 2)...)
	a, b := ids[0], ids[1]
	ins := func(id, at int64, bal any) {
		mustExec(t, db, `INSERT INTO key_checks (key_id, at, outcome, status, balance, detail) VALUES (?, ?, 'ok', 200, ?, '')`, id, at, bal)
	}
	ins(a, t0, 3.5)
	ins(a, t0-300, 5.0)
	ins(a, t0-200, nil)
	ins(b, t0-150, 99.0)
	ins(a, t0-100, 4.0)
	ins(a, t0+50, nil)
	// One through RecordChecks, balance 0 included.
	r := rotation.CheckResult{Outcome: rotation.CheckOK, Status: 200}.WithBalance(0)
	if err := c.RecordChecks(ctx, []store.CheckRecord{{Key: store.CheckKey{ID: a, Status: "active"}, Result: r,
		Next: rotation.HealthPolicy{}.After("active", 0, r, time.UnixMilli(t0+100))}}, t0+100); err != nil {
		t.Fatal(err)
	}
	render := func(ps []store.BalancePoint) string {
		var s []string
		for _, p := range ps {
			s = append(s, fmt.Sprintf("%d:%v", p.At-t0, p.Balance))
		}
		return strings.Join(s, " ")
	}
	tests := []struct {
		id, since int64
		want      string
	}{
		{a, 0, "-300:5 -100:4 0:3.5 100:0"},
		{a, t0 - 300, "-300:5 -100:4 0:3.5 100:0"},
		{a, t0 - 299, "-100:4 0:3.5 100:0"},
		{a, t0 - 100, "-100:4 0:3.5 100:0"},
		{a, t0 + 100, "100:0"},
		{a, t0 + 101, ""},
		{b, 0, "-150:99"},
		{424242, 0, ""},
	}
	for _, tt := range tests {
		got, err := c.BalanceHistory(ctx, tt.id, tt.since)
		if err != nil {
			t.Fatal(err)
		}
		if render(got) != tt.want {
			t.Errorf("BalanceHistory(%d, %d) = %q, want %q", tt.id-a, tt.since-t0, render(got), tt.want)
		}
	}
}

func TestPrune(t *testing.T) {
	c, k, db := openChecks(t)
	ids := mustAdd(t, k, "openai", secrets("sk-prune-", 2)...)
	before, blocksBefore := t0, t0-5000
	for _, at := range []int64{before - 1000, before - 1, before, before + 1} {
		mustExec(t, db, `INSERT INTO key_checks (key_id, at, outcome) VALUES (?, ?, 'ok')`, ids[0], at)
		mustExec(t, db, `INSERT INTO key_events (key_id, at, from_state, to_state) VALUES (?, ?, 'active', 'blocked')`, ids[1], at)
	}
	// Model blocks: two old, one at the limit, one new; cooling rows are
	// not Prune's.
	insertModel(t, db, ids[0], "old1", "blocked", 0, 0, blocksBefore-10)
	insertModel(t, db, ids[1], "old2", "blocked", 0, 0, blocksBefore-1)
	insertModel(t, db, ids[0], "edge", "blocked", 0, 0, blocksBefore)
	insertModel(t, db, ids[1], "new", "blocked", 0, 0, before-1)
	insertModel(t, db, ids[0], "cool", "cooling", before-9000, 1, before-9000)

	n, err := c.Prune(ctx, before, blocksBefore)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("Prune = %d, want 6 (2 checks, 2 events, 2 blocks)", n)
	}
	if got := count(t, db, `SELECT COUNT(*) FROM key_checks WHERE at >= ?`, before); got != 2 {
		t.Errorf("%d recent key_checks left, want 2", got)
	}
	if got := count(t, db, `SELECT COUNT(*) FROM key_checks`); got != 2 {
		t.Errorf("%d key_checks left, want 2", got)
	}
	if got := count(t, db, `SELECT COUNT(*) FROM key_events`); got != 2 || count(t, db, `SELECT MIN(at) FROM key_events`) != int(before) {
		t.Errorf("%d key_events left, want the 2 at or after before", got)
	}
	var models []string
	rows, err := db.Query(`SELECT model FROM key_models ORDER BY model`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			t.Fatal(err)
		}
		models = append(models, m)
	}
	rows.Close()
	if strings.Join(models, ",") != "cool,edge,new" {
		t.Errorf("key_models left: %v, want cool,edge,new", models)
	}
	n, err = c.Prune(ctx, before, blocksBefore)
	if err != nil || n != 0 {
		t.Errorf("second Prune = %d, %v; want 0", n, err)
	}
}

// jobKeys adds six keys: openai active, blocked, disabled; deepseek
// active, exhausted; siliconflow blocked.
func jobKeys(t *testing.T, k *store.Keys, db *sql.DB) []int64 {
	t.Helper()
	ids := mustAdd(t, k, "openai", secrets("sk-job-", 3)...)
	ids = append(ids, mustAdd(t, k, "deepseek", secrets("sk-jobds-", 2)...)...)
	ids = append(ids, mustAdd(t, k, "siliconflow", secrets("sk-jobsf-", 1)...)...)
	for i, s := range []string{"active", "blocked", "disabled", "active", "exhausted", "blocked"} {
		mustExec(t, db, `UPDATE keys SET status = ?, check_fails = ? WHERE id = ?`, s, i, ids[i])
	}
	return ids
}

func TestCreateJob(t *testing.T) {
	c, k, db := openChecks(t)
	ids := jobKeys(t, k, db)
	idList := func(is ...int) string {
		var s []string
		for _, i := range is {
			s = append(s, fmt.Sprint(ids[i]))
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	tests := []struct {
		filter string
		total  int64
		keys   []int // indexes into ids, in id order
	}{
		{`{}`, 6, []int{0, 1, 2, 3, 4, 5}},
		{`{"ids":` + idList(0, 3) + `}`, 2, []int{0, 3}},
		{`{"ids":` + idList(5, 1, 1) + `}`, 2, []int{1, 5}},
		{`{"ids":[424242]}`, 0, nil},
		{`{"ids":[]}`, 0, nil},
		{`{"provider":"openai"}`, 3, []int{0, 1, 2}},
		{`{"provider":"deepseek"}`, 2, []int{3, 4}},
		{`{"provider":""}`, 6, []int{0, 1, 2, 3, 4, 5}},
		{`{"provider":"nope"}`, 0, nil},
		{`{"status":["blocked"]}`, 2, []int{1, 5}},
		{`{"status":["blocked","exhausted"]}`, 3, []int{1, 4, 5}},
		{`{"status":["disabled"]}`, 1, []int{2}},
		{`{"status":[]}`, 0, nil},
		{`{"provider":"openai","status":["blocked","active"]}`, 2, []int{0, 1}},
		{`{"provider":"deepseek","status":["blocked"]}`, 0, nil},
		{`{"ids":` + idList(0, 1, 3) + `,"provider":"openai"}`, 2, []int{0, 1}},
		{`{"ids":` + idList(0, 1, 3) + `,"status":["active"]}`, 2, []int{0, 3}},
		{`{"ids":` + idList(0, 1, 3, 5) + `,"provider":"siliconflow","status":["blocked"]}`, 1, []int{5}},
	}
	var prevID int64
	for _, tt := range tests {
		now := t0 + int64(len(tt.filter))
		j, err := c.CreateJob(ctx, tt.filter, `{"pace":1}`, now)
		if err != nil {
			t.Fatalf("CreateJob(%s): %v", tt.filter, err)
		}
		wantState := store.JobRunning
		if tt.total == 0 {
			wantState = store.JobDone
		}
		if j.ID <= prevID || j.State != wantState || j.Total != tt.total || j.Filter != tt.filter || j.Options != `{"pace":1}` ||
			j.ChangedKeys != "[]" || j.CreatedAt != now || j.UpdatedAt != now {
			t.Errorf("CreateJob(%s) = %+v; want total %d, state %s", tt.filter, j, tt.total, wantState)
		}
		prevID = j.ID
		stored, err := c.Job(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored != j {
			t.Errorf("Job(%d) = %+v, want %+v as created", j.ID, stored, j)
		}
		// The job walks exactly its keys, by id.
		got, err := c.JobKeys(ctx, j, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := []int64{}
		for _, i := range tt.keys {
			want = append(want, ids[i])
		}
		if !equalIDs(checkKeyIDs(got), want) {
			t.Errorf("JobKeys(%s) = %v, want %v", tt.filter, checkKeyIDs(got), want)
		}
	}
	if _, err := c.Job(ctx, 424242); !errors.Is(err, store.ErrJobNotFound) {
		t.Errorf("Job(missing): %v, want ErrJobNotFound", err)
	}
}

func TestJobKeysCursor(t *testing.T) {
	c, k, db := openChecks(t)
	ids := jobKeys(t, k, db)
	j, err := c.CreateJob(ctx, `{"status":["active","blocked","exhausted"]}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	if j.Total != 5 {
		t.Fatalf("total %d, want 5", j.Total)
	}
	var walked []int64
	for step := 0; step < 10; step++ {
		got, err := c.JobKeys(ctx, j, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 2 {
			t.Fatalf("JobKeys(limit 2) = %d keys", len(got))
		}
		if len(got) == 0 {
			break
		}
		for _, x := range got {
			if x.ID <= j.Cursor {
				t.Errorf("JobKeys after cursor %d returned %d", j.Cursor, x.ID)
			}
			walked = append(walked, x.ID)
		}
		j.Cursor = got[len(got)-1].ID
	}
	want := []int64{ids[0], ids[1], ids[3], ids[4], ids[5]}
	if !equalIDs(walked, want) {
		t.Errorf("walked %v, want %v", walked, want)
	}
	// Keys read as they are.
	j.Cursor = 0
	got, err := c.JobKeys(ctx, j, 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("JobKeys: %v, %v", got, err)
	}
	if x := got[0]; x.ID != ids[0] || x.Provider != "openai" || x.Secret != "sk-job-000000-secret" || x.Status != "active" || x.Fails != 0 {
		t.Errorf("JobKeys key = %+v", x)
	}
	j.Cursor = ids[4]
	got, _ = c.JobKeys(ctx, j, 10)
	if len(got) != 1 || got[0].ID != ids[5] || got[0].Provider != "siliconflow" || got[0].Status != "blocked" || got[0].Fails != 5 {
		t.Errorf("JobKeys after %d = %+v", ids[4], got)
	}
	// A key changed after the job started is walked by its status now.
	mustExec(t, db, `UPDATE keys SET status = 'disabled' WHERE id = ?`, ids[5])
	got, _ = c.JobKeys(ctx, j, 10)
	if len(got) != 0 {
		t.Errorf("JobKeys after the last key was disabled = %+v", got)
	}
}

func TestClaim(t *testing.T) {
	c, k, db := openChecks(t)
	jobKeys(t, k, db)
	j, err := c.CreateJob(ctx, `{}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		now, until  int64
		want        bool
		wantLeaseAt int64
	}{
		{"free", t0, t0 + 30_000, true, t0 + 30_000},
		{"held", t0 + 1, t0 + 30_001, false, t0 + 30_000},
		{"held just before it ends", t0 + 29_999, t0 + 60_000, false, t0 + 30_000},
		{"lease over", t0 + 30_000, t0 + 60_000, true, t0 + 60_000},
		{"held again", t0 + 45_000, t0 + 75_000, false, t0 + 60_000},
	}
	for _, s := range steps {
		got, err := c.Claim(ctx, j.ID, s.now, s.until)
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := c.Job(ctx, j.ID)
		if got != s.want || stored.LeaseUntil != s.wantLeaseAt {
			t.Errorf("%s: Claim = %v, lease until %d; want %v, %d", s.name, got, stored.LeaseUntil-t0, s.want, s.wantLeaseAt-t0)
		}
	}
	// Advance releases the lease.
	j, _ = c.Job(ctx, j.ID)
	if err := c.Advance(ctx, j, 1, 1, 0, 0, nil, 10, t0+46_000, false); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Claim(ctx, j.ID, t0+46_001, t0+80_000); !ok {
		t.Errorf("Claim after Advance failed: the lease was not released")
	}
	// Only running jobs can be claimed.
	if _, err := c.SetJobState(ctx, j.ID, store.JobStopped, t0+50_000); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Claim(ctx, j.ID, t0+100_000, t0+130_000); ok {
		t.Errorf("Claim of a stopped job succeeded")
	}
	done, err := c.CreateJob(ctx, `{"provider":"nope"}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Claim(ctx, done.ID, t0, t0+30_000); ok {
		t.Errorf("Claim of a done job succeeded")
	}
	if ok, err := c.Claim(ctx, 424242, t0, t0+30_000); ok || err != nil {
		t.Errorf("Claim of a missing job = %v, %v", ok, err)
	}
}

func TestAdvance(t *testing.T) {
	c, k, db := openChecks(t)
	ids := jobKeys(t, k, db)
	j, err := c.CreateJob(ctx, `{}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Claim(ctx, j.ID, t0, t0+30_000); !ok {
		t.Fatal("Claim failed")
	}
	j, _ = c.Job(ctx, j.ID)
	ch1 := []store.JobChange{{ID: ids[1], From: "blocked", To: "active"}}
	if err := c.Advance(ctx, j, ids[2], 3, 1, 1, ch1, 1500, t0+1000, false); err != nil {
		t.Fatal(err)
	}
	j, _ = c.Job(ctx, j.ID)
	want := store.Job{ID: j.ID, State: store.JobRunning, Filter: `{}`, Options: `{}`, Total: 6, Done: 3, Changed: 1, Errors: 1,
		Cursor: ids[2], ChangedKeys: fmt.Sprintf(`[[%d,"blocked","active"]]`, ids[1]), CreatedAt: t0, UpdatedAt: t0 + 1000,
		RunMS: 1500, LeaseUntil: 0}
	if j != want {
		t.Errorf("after the first chunk:\n got %+v\nwant %+v", j, want)
	}
	// The next chunk continues after the cursor.
	if got, _ := c.JobKeys(ctx, j, 10); !equalIDs(checkKeyIDs(got), ids[3:]) {
		t.Errorf("JobKeys after the first chunk = %v, want %v", checkKeyIDs(got), ids[3:])
	}
	ch2 := []store.JobChange{{ID: ids[4], From: "exhausted", To: "active"}, {ID: ids[5], From: "blocked", To: "exhausted"}}
	if err := c.Advance(ctx, j, ids[5], 3, 2, 0, ch2, 500, t0+2000, true); err != nil {
		t.Fatal(err)
	}
	j, _ = c.Job(ctx, j.ID)
	want.State, want.Done, want.Changed, want.Errors, want.Cursor = store.JobDone, 6, 3, 1, ids[5]
	want.ChangedKeys = fmt.Sprintf(`[[%d,"blocked","active"],[%d,"exhausted","active"],[%d,"blocked","exhausted"]]`, ids[1], ids[4], ids[5])
	want.UpdatedAt, want.RunMS = t0+2000, 2000
	if j != want {
		t.Errorf("after the last chunk:\n got %+v\nwant %+v", j, want)
	}
	if got, _ := c.JobKeys(ctx, j, 10); len(got) != 0 {
		t.Errorf("JobKeys of a finished job = %v", checkKeyIDs(got))
	}
}

func TestAdvanceChangedKeysCap(t *testing.T) {
	c, k, db := openChecks(t)
	jobKeys(t, k, db)
	j, err := c.CreateJob(ctx, `{}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	changes := func(from, n int) []store.JobChange {
		out := make([]store.JobChange, n)
		for i := range out {
			out[i] = store.JobChange{ID: int64(from + i), From: "active", To: "blocked"}
		}
		return out
	}
	if err := c.Advance(ctx, j, 1, 150, 150, 0, changes(1, 150), 1, t0+1, false); err != nil {
		t.Fatal(err)
	}
	j, _ = c.Job(ctx, j.ID)
	if err := c.Advance(ctx, j, 2, 100, 100, 0, changes(151, 100), 1, t0+2, false); err != nil {
		t.Fatal(err)
	}
	j, _ = c.Job(ctx, j.ID)
	if err := c.Advance(ctx, j, 3, 5, 5, 0, changes(251, 5), 1, t0+3, false); err != nil {
		t.Fatal(err)
	}
	j, _ = c.Job(ctx, j.ID)
	var list [][]any
	if err := json.Unmarshal([]byte(j.ChangedKeys), &list); err != nil {
		t.Fatalf("changed_keys %q: %v", j.ChangedKeys, err)
	}
	if len(list) != 200 || j.Changed != 255 {
		t.Fatalf("%d changed keys kept, changed %d; want the first 200 and a count of 255", len(list), j.Changed)
	}
	for i, x := range list {
		if len(x) != 3 || x[0] != float64(i+1) || x[1] != "active" || x[2] != "blocked" {
			t.Fatalf("changed_keys[%d] = %v, want [%d active blocked]", i, x, i+1)
		}
	}
}

func TestAdvanceStoppedJob(t *testing.T) {
	c, k, db := openChecks(t)
	ids := jobKeys(t, k, db)
	for _, finished := range []bool{false, true} {
		j, err := c.CreateJob(ctx, `{}`, `{}`, t0)
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Claim(ctx, j.ID, t0, t0+30_000); !ok {
			t.Fatal("Claim failed")
		}
		j, _ = c.Job(ctx, j.ID)
		// The admin stops the job while a chunk is being checked.
		if _, err := c.SetJobState(ctx, j.ID, store.JobStopped, t0+10); err != nil {
			t.Fatal(err)
		}
		if err := c.Advance(ctx, j, ids[5], 6, 0, 0, nil, 100, t0+20, finished); err != nil {
			t.Fatal(err)
		}
		got, _ := c.Job(ctx, j.ID)
		if got.State != store.JobStopped || got.Cursor != ids[5] || got.Done != 6 || got.LeaseUntil != 0 {
			t.Errorf("Advance(finished=%v) of a job stopped meanwhile: %+v; want it stopped, the chunk counted", finished, got)
		}
	}
}

func TestSetJobState(t *testing.T) {
	c, k, db := openChecks(t)
	jobKeys(t, k, db)
	j, err := c.CreateJob(ctx, `{}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Claim(ctx, j.ID, t0, t0+30_000); !ok {
		t.Fatal("Claim failed")
	}
	done, err := c.CreateJob(ctx, `{"ids":[]}`, `{}`, t0)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		id        int64
		state     string
		now       int64
		wantState string
		wantAt    int64 // updated_at
	}{
		{"stop", j.ID, store.JobStopped, t0 + 1, store.JobStopped, t0 + 1},
		{"stop again", j.ID, store.JobStopped, t0 + 2, store.JobStopped, t0 + 1},
		{"resume", j.ID, store.JobRunning, t0 + 3, store.JobRunning, t0 + 3},
		{"resume again", j.ID, store.JobRunning, t0 + 4, store.JobRunning, t0 + 3},
		{"resume a done job", done.ID, store.JobRunning, t0 + 5, store.JobDone, t0},
		{"stop a done job", done.ID, store.JobStopped, t0 + 6, store.JobDone, t0},
	}
	for _, s := range steps {
		got, err := c.SetJobState(ctx, s.id, s.state, s.now)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got.ID != s.id || got.State != s.wantState || got.UpdatedAt != s.wantAt || got.LeaseUntil != 0 {
			t.Errorf("%s: %+v; want state %s, updated_at %d, no lease", s.name, got, s.wantState, s.wantAt-t0)
		}
	}
	if _, err := c.SetJobState(ctx, 424242, store.JobStopped, t0); !errors.Is(err, store.ErrJobNotFound) {
		t.Errorf("SetJobState of a missing job: %v, want ErrJobNotFound", err)
	}
}

func TestJobs(t *testing.T) {
	c, k, db := openChecks(t)
	jobKeys(t, k, db)
	var ids []int64
	for i, f := range []string{`{}`, `{"provider":"nope"}`, `{"provider":"openai"}`, `{}`, `{"status":["blocked"]}`} {
		j, err := c.CreateJob(ctx, f, `{}`, t0+int64(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	if _, err := c.SetJobState(ctx, ids[3], store.JobStopped, t0+10); err != nil {
		t.Fatal(err)
	}
	jobIDs := func(js []store.Job) []int64 {
		out := []int64{}
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	tests := []struct {
		limit   int
		running bool
		want    []int64
	}{
		{10, false, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{2, false, []int64{ids[4], ids[3]}},
		{10, true, []int64{ids[4], ids[2], ids[0]}},
		{1, true, []int64{ids[4]}},
	}
	for _, tt := range tests {
		got, err := c.Jobs(ctx, tt.limit, tt.running)
		if err != nil {
			t.Fatal(err)
		}
		if !equalIDs(jobIDs(got), tt.want) {
			t.Errorf("Jobs(%d, %v) = %v, want %v", tt.limit, tt.running, jobIDs(got), tt.want)
		}
	}
	all, _ := c.Jobs(ctx, 10, false)
	for _, j := range all {
		one, _ := c.Job(ctx, j.ID)
		if one != j {
			t.Errorf("Jobs row %+v differs from Job %+v", j, one)
		}
	}
	empty, err := store.On(sqlitetest.Open(t), nil).Checks().Jobs(ctx, 10, false)
	if err != nil || len(empty) != 0 {
		t.Errorf("Jobs of none = %v, %v", empty, err)
	}
}
