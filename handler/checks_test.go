package handler

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// The health checks: the cron task within its subrequest budget, the order
// keys are checked in, what each answer does to a key, the check-job admin
// API, pacing, and pruning.

// checkEnv is a test environment that also counts D1 queries (Deps.Queries)
// and captures the log.
type checkEnv struct {
	*testEnv
	queries *atomic.Int64
	logs    *lockedBuffer
}

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func newCheckEnv(t *testing.T, vars ...string) *checkEnv {
	t.Helper()
	e := newEnv(t, vars...)
	q := new(atomic.Int64)
	e.h.d.Queries = q
	logs := &lockedBuffer{}
	prevOut, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(logs)
	t.Cleanup(func() { log.SetOutput(prevOut); log.SetFlags(prevFlags) })
	// Every provider's model list is fresh, so that the cron's list
	// refresh does not call the upstream with some key in the middle of a
	// test about checks (TestCronSubrequestBudget removes them).
	for _, name := range provider.Names() {
		if err := store.On(e.db, nil).Models().Replace(context.Background(), name, []string{"listed-model"}, t0.Add(365*24*time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	return &checkEnv{testEnv: e, queries: q, logs: logs}
}

// cronRun is what one Scheduled call cost and logged.
type cronRun struct {
	queries, fetches int64
	summary          string // the summary log line
	logged           int64  // the subrequests it reports
	limit            int64  // and the limit it reports
}

var summaryRE = regexp.MustCompile(`keypool cron: checked \d+ keys .*subrequests (\d+)/(\d+)`)

// cron runs the cron task once and measures it: every D1 query (the
// Deps.Queries counter) and every request the fake upstream received.
func (e *checkEnv) cron() cronRun {
	e.t.Helper()
	e.logs.Reset()
	q0, f0 := e.queries.Load(), len(e.requests())
	if err := e.h.Scheduled(context.Background()); err != nil {
		e.t.Fatalf("Scheduled: %v", err)
	}
	r := cronRun{queries: e.queries.Load() - q0, fetches: int64(len(e.requests()) - f0)}
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if m := summaryRE.FindStringSubmatch(line); m != nil {
			r.summary = line
			r.logged, _ = strconv.ParseInt(m[1], 10, 64)
			r.limit, _ = strconv.ParseInt(m[2], 10, 64)
		}
	}
	if r.summary == "" {
		e.t.Fatalf("the cron logged no summary line; log:\n%s", e.logs.String())
	}
	return r
}

func (r cronRun) total() int64 { return r.queries + r.fetches }

// keyState is a key's health-check columns.
type keyState struct {
	Status, Reason string
	Balance        sql.NullFloat64
	LastChecked    int64
	NextCheck      int64
	Fails          int64
	Result         string
}

func (e *testEnv) keyState(id int64) keyState {
	e.t.Helper()
	var s keyState
	if err := e.db.QueryRow(`SELECT status, status_reason, balance, last_checked_at, next_check_at, check_fails, check_result
		FROM keys WHERE id = ?`, id).Scan(&s.Status, &s.Reason, &s.Balance, &s.LastChecked, &s.NextCheck, &s.Fails, &s.Result); err != nil {
		e.t.Fatalf("reading key %d: %v", id, err)
	}
	return s
}

// setKeyState puts a key in status, due for a check at next.
func (e *testEnv) setKeyState(id int64, status string, next time.Time) {
	e.t.Helper()
	if _, err := e.db.Exec(`UPDATE keys SET status = ?, next_check_at = ? WHERE id = ?`, status, next.UnixMilli(), id); err != nil {
		e.t.Fatal(err)
	}
}

// checkRow is one key_checks row.
type checkRow struct {
	At      int64
	Outcome string
	Status  int64
	Balance sql.NullFloat64
	Detail  string
}

func (e *testEnv) checkRows(id int64) []checkRow {
	e.t.Helper()
	rows, err := e.db.Query(`SELECT at, outcome, status, balance, detail FROM key_checks WHERE key_id = ? ORDER BY id`, id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []checkRow
	for rows.Next() {
		var r checkRow
		if err := rows.Scan(&r.At, &r.Outcome, &r.Status, &r.Balance, &r.Detail); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// requestsOf returns the requests the fake received with secret, since
// index from of its log.
func (e *testEnv) requestsOf(secret string, from int) []fakeupstream.Request {
	var out []fakeupstream.Request
	for _, r := range e.requests()[from:] {
		if r.Key == secret {
			out = append(out, r)
		}
	}
	return out
}

// paths lists the paths of requests.
func paths(reqs []fakeupstream.Request) string {
	var p []string
	for _, r := range reqs {
		p = append(p, r.Method+" "+r.Path)
	}
	return strings.Join(p, ", ")
}

// slowFetches makes every upstream call move the test clock on by d, as
// real calls take time (the job's rate and ETA are measured on the clock).
func (e *testEnv) slowFetches(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fetch = func(r *http.Request) (*http.Response, error) {
		e.advance(d)
		return http.DefaultClient.Do(r)
	}
}

// Balance endpoint answers, as the providers send them.

func sfInfo(total string) string {
	return `{"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username","image":"","email":"","isAdmin":false,` +
		`"balance":"0.00","status":"normal","introduction":"","role":"","chargeBalance":"` + total + `","totalBalance":"` + total + `"}}`
}

const (
	deepSeekBalance   = `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"}]}`
	openRouterCredits = `{"data":{"total_credits":15,"total_usage":2.5}}`
)

// balanceRule answers prov's balance endpoint with status and body; other
// paths are served normally.
func balanceRule(prov string, status int, body string) fakeupstream.Rule {
	p, _ := provider.Lookup(prov)
	return fakeupstream.Rule{Status: status, Body: body, Paths: []string{p.BalancePath}}
}

// warmCron runs the cron once with no key due, so that it seals the keys
// the tests stored in plain text (work a run does once), then moves the
// clock on a minute and makes every key due at next.
func (e *checkEnv) warmCron(next time.Time) {
	e.t.Helper()
	if _, err := e.db.Exec(`UPDATE keys SET next_check_at = ?`, t0.Add(1000*time.Hour).UnixMilli()); err != nil {
		e.t.Fatal(err)
	}
	e.cron()
	e.advance(time.Minute)
	if _, err := e.db.Exec(`UPDATE keys SET next_check_at = ?`, next.UnixMilli()); err != nil {
		e.t.Fatal(err)
	}
}

// TestCronSubrequestBudget: one cron run never makes more subrequests
// (upstream fetches plus D1 queries) than CHECK_SUBREQUESTS, logs how many
// it made, and successive runs reach every key.
func TestCronSubrequestBudget(t *testing.T) {
	const limit, nKeys = 20, 50
	mixed := []string{"openai", "siliconflow", "groq", "deepseek", "anthropic", "openrouter", "google-ai-studio", "mistral", "cerebras", "grok"}
	tests := []struct {
		name  string
		provs []string
		// fallbacks: siliconflow keys whose balance endpoint is gone (410),
		// so that their check costs two fetches.
		fallbacks   int
		concurrency string
	}{
		{"balances answer", mixed, 0, ""},
		{"some balance endpoints gone", mixed, 2, ""},
		{"one at a time", mixed, 2, "1"},
		// Each check reserves two subrequests (the balance and its
		// fallback) and spends one: checks under way give back half.
		{"balance providers only", []string{"siliconflow", "deepseek", "openrouter"}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnv(t, "CHECK_SUBREQUESTS", strconv.Itoa(limit), "CHECK_CONCURRENCY", tc.concurrency)
			var ids []int64
			secretOf := map[int64]string{}
			fallbacks := 0
			for i := 0; i < nKeys; i++ {
				prov := tc.provs[i%len(tc.provs)]
				secret := fmt.Sprintf("%s-budget-key-%03d", prov, i)
				id := e.addKeys(prov, secret)[0]
				ids = append(ids, id)
				secretOf[id] = secret
				switch prov {
				case "siliconflow":
					if fallbacks < tc.fallbacks {
						e.up.SetRule(secret, balanceRule(prov, http.StatusGone, `{"code":410,"message":"Gone"}`))
						fallbacks++
					} else {
						e.up.SetRule(secret, balanceRule(prov, http.StatusOK, sfInfo("5.00")))
					}
				case "deepseek":
					e.up.SetRule(secret, balanceRule(prov, http.StatusOK, deepSeekBalance))
				case "openrouter":
					e.up.SetRule(secret, balanceRule(prov, http.StatusOK, openRouterCredits))
				}
			}
			e.warmCron(time.UnixMilli(0))
			// Stale lists: the cron refreshes one when it has budget left.
			if _, err := e.db.Exec(`DELETE FROM provider_models`); err != nil {
				t.Fatal(err)
			}
			// The overhead of a run is what it spends besides its checks'
			// fetches: its D1 queries, measured on the first run (which has
			// no budget left for a list refresh or a job).
			var overhead, maxRuns int64
			var used []int64
			runs := int64(0)
			for unchecked := nKeys; unchecked > 0; {
				if runs > 0 && runs == maxRuns {
					t.Fatalf("%d keys still unchecked after %d cron runs (subrequests per run %v), want all within ceil(%d/(%d-%d))+1 = %d",
						unchecked, runs, used, nKeys, limit, overhead, maxRuns)
				}
				r := e.cron()
				runs++
				if runs == 1 {
					overhead = r.queries
					maxRuns = (nKeys+limit-overhead-1)/(limit-overhead) + 1
				}
				used = append(used, r.total())
				if r.total() > limit {
					t.Errorf("run %d: %d subrequests (%d fetches, %d queries), limit %d", runs, r.total(), r.fetches, r.queries, limit)
				}
				if r.logged != r.total() || r.limit != limit {
					t.Errorf("run %d: summary reports subrequests %d/%d, measured %d of %d: %s", runs, r.logged, r.limit, r.total(), limit, r.summary)
				}
				unchecked = 0
				for _, id := range ids {
					if e.keyState(id).LastChecked == 0 {
						unchecked++
					}
				}
				e.advance(time.Minute)
			}
			t.Logf("subrequests per cron run: %v (limit %d, overhead %d)", used, limit, overhead)
			// Every key was checked exactly once.
			for _, id := range ids {
				k := e.keyState(id)
				if k.Status != "active" || k.Result != "ok" {
					t.Errorf("key %d (%s): status %s result %q, want active ok", id, secretOf[id], k.Status, k.Result)
				}
				if n := len(e.checkRows(id)); n != 1 {
					t.Errorf("key %d (%s): %d check rows, want 1", id, secretOf[id], n)
				}
			}
		})
	}
}

// TestCronAdvancesJobWithinBudget: a running check job that the cron
// advances after its own work stays within the cron's budget too.
func TestCronAdvancesJobWithinBudget(t *testing.T) {
	const limit = 30
	e := newCheckEnv(t, "CHECK_SUBREQUESTS", strconv.Itoa(limit))
	ctx := context.Background()
	var secrets []string
	for i := 0; i < 12; i++ {
		secrets = append(secrets, fmt.Sprintf("sk-job-cron-%03d", i))
	}
	ids := e.addKeys("openai", secrets...)
	// No key is due and the model lists are fresh: the cron's budget goes
	// to the job.
	e.warmCron(t0.Add(time.Hour))
	j, err := store.On(e.db, nil).Checks().CreateJob(ctx, `{}`, `{"concurrency":6}`, t0.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	for run := 1; ; run++ {
		if run > 10 {
			t.Fatalf("job not done after 10 cron runs")
		}
		r := e.cron()
		if r.total() > limit || r.logged != r.total() {
			t.Errorf("run %d: %d subrequests (%d fetches, %d queries), summary says %d/%d: %s",
				run, r.total(), r.fetches, r.queries, r.logged, r.limit, r.summary)
		}
		if !strings.Contains(r.summary, fmt.Sprintf("advanced job %d", j.ID)) {
			t.Errorf("run %d: summary does not name job %d: %s", run, j.ID, r.summary)
		}
		got, err := store.On(e.db, nil).Checks().Job(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.fetches == 0 && got.State != store.JobDone {
			t.Fatalf("run %d: no progress on the job (%+v)", run, got)
		}
		if got.State == store.JobDone {
			if got.Done != int64(len(ids)) {
				t.Errorf("job done with %d of %d keys", got.Done, len(ids))
			}
			break
		}
		e.advance(time.Minute)
	}
	for i, s := range secrets {
		if n := len(e.requestsOf(s, 0)); n != 1 {
			t.Errorf("key %d checked %d times, want 1", ids[i], n)
		}
	}
}

// TestCronCheckOrder: recovery probes of blocked and exhausted keys come
// before routine checks of active keys, whatever their due times; disabled
// keys and keys not yet due are left alone.
func TestCronCheckOrder(t *testing.T) {
	tests := []struct {
		name  string
		limit string // CHECK_SUBREQUESTS
		all   bool   // room to check every due key
	}{
		// One at a time, so the fake sees the order.
		{"enough budget", "200", true},
		// Room for a few checks only: the probes still come first.
		{"small budget", "20", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnv(t, "CHECK_CONCURRENCY", "1", "CHECK_SUBREQUESTS", tc.limit)
			type key struct {
				name, status string
				due          time.Duration // from now
			}
			keys := []key{
				{"blocked", "blocked", -2 * time.Hour},
				{"exhausted", "exhausted", -time.Hour},
				{"disabled", "disabled", -1000 * time.Hour},
				{"active-not-due", "active", time.Millisecond},
				{"blocked-not-due", "blocked", time.Minute},
			}
			// Active keys due earlier than the probes, oldest first.
			var want []string
			for i := 0; i < 30; i++ {
				keys = append(keys, key{fmt.Sprintf("active-%02d", i), "active", -3*time.Hour + time.Duration(i)*time.Hour/10})
			}
			for _, k := range keys {
				if !strings.Contains(k.name, "not-due") && k.name != "disabled" {
					want = append(want, k.name)
				}
			}
			nameOf, idOf := map[string]string{}, map[string]int64{}
			for _, k := range keys {
				secret := "sk-order-" + k.name
				idOf[k.name] = e.addKeys("openai", secret)[0]
				nameOf[secret] = k.name
			}
			e.warmCron(time.UnixMilli(0))
			now := e.clock()
			for _, k := range keys {
				e.setKeyState(idOf[k.name], k.status, now.Add(k.due))
			}
			f0 := len(e.requests())
			e.cron()
			var got []string
			for _, r := range e.requests()[f0:] {
				got = append(got, nameOf[r.Key])
			}
			if len(got) < 2 || (tc.all && len(got) != len(want)) || (!tc.all && len(got) >= len(want)) ||
				strings.Join(got, ",") != strings.Join(want[:len(got)], ",") {
				t.Errorf("checked %v, want the start of %v", got, want)
			}
			for name, id := range idOf {
				if strings.Contains(name, "not-due") || name == "disabled" {
					if n := len(e.checkRows(id)); n != 0 {
						t.Errorf("%s key checked %d times", name, n)
					}
				}
			}
		})
	}
}

// TestCheckOutcomes: what each check answer does to a key.
func TestCheckOutcomes(t *testing.T) {
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }

	t.Run("401 blocks", func(t *testing.T) {
		e := newCheckEnv(t, "CHECK_PROBE_SECONDS", "60")
		secret := "sk-check-revoked-0001"
		id := e.addKeys("openai", secret)[0]
		e.up.SetRule(secret, fakeupstream.OpenAIInvalidKey("sk-chec****0001"))
		e.cron()
		k, evs := e.key(id)
		st := e.keyState(id)
		if k.Status != "blocked" || st.Fails != 1 || st.NextCheck != t0.Add(sec(60)).UnixMilli() || st.Result != "invalid" {
			t.Errorf("after a 401: %+v, want blocked, 1 failed probe, next probe in 60 s", st)
		}
		if len(evs) != 1 || evs[0].From != "active" || evs[0].To != "blocked" || !strings.HasPrefix(evs[0].Reason, "check: ") || evs[0].Status != 401 {
			t.Errorf("events %+v, want one active → blocked with reason \"check: …\" and status 401", evs)
		}
		if rows := e.checkRows(id); len(rows) != 1 || rows[0].Outcome != "invalid" || rows[0].Status != 401 || rows[0].Balance.Valid {
			t.Errorf("check rows %+v, want one invalid 401 without balance", rows)
		}
		if strings.Contains(evs[0].Excerpt, secret) {
			t.Errorf("event excerpt shows the secret: %q", evs[0].Excerpt)
		}
	})

	t.Run("siliconflow balance", func(t *testing.T) {
		e := newCheckEnv(t, "CHECK_PROBE_SECONDS", "60")
		secret := "sk-sf-balance-000001"
		id := e.addKeys("siliconflow", secret)[0]
		e.up.SetRule(secret, balanceRule("siliconflow", http.StatusOK, sfInfo("0.00")))
		e.cron()
		st := e.keyState(id)
		if st.Status != "exhausted" || !st.Balance.Valid || st.Balance.Float64 != 0 {
			t.Errorf("after totalBalance 0.00: %+v, want exhausted with balance 0", st)
		}
		if got := paths(e.requestsOf(secret, 0)); got != "GET /v1/user/info" {
			t.Errorf("check called %s, want only the balance", got)
		}
		// Not due again before its probe time.
		e.up.SetRule(secret, balanceRule("siliconflow", http.StatusOK, sfInfo("88.88")))
		e.setNow(t0.Add(sec(59)))
		e.cron()
		if n := len(e.requestsOf(secret, 0)); n != 1 {
			t.Errorf("probed %d times before its probe time", n)
		}
		e.setNow(t0.Add(sec(60)))
		e.cron()
		st = e.keyState(id)
		if st.Status != "active" || !st.Balance.Valid || st.Balance.Float64 != 88.88 || st.Fails != 0 {
			t.Errorf("after a top-up: %+v, want active with balance 88.88", st)
		}
		rows := e.checkRows(id)
		if len(rows) != 2 || !rows[0].Balance.Valid || rows[0].Balance.Float64 != 0 || !rows[1].Balance.Valid || rows[1].Balance.Float64 != 88.88 {
			t.Fatalf("check rows %+v, want balances 0 then 88.88", rows)
		}
		if rows[0].Outcome != "exhausted" || rows[1].Outcome != "ok" || !strings.Contains(rows[1].Detail, `"totalBalance":"88.88"`) {
			t.Errorf("check rows %+v, want exhausted then ok with the balance fields", rows)
		}
		_, evs := e.key(id)
		if len(evs) != 2 || evs[1].To != "exhausted" || evs[0].From != "exhausted" || evs[0].To != "active" ||
			!strings.HasPrefix(evs[0].Reason, "check: ") || !strings.HasPrefix(evs[1].Reason, "check: ") {
			t.Errorf("events %+v, want active → exhausted → active, each \"check: …\"", evs)
		}
	})

	t.Run("balance endpoint not a balance", func(t *testing.T) {
		tests := []struct {
			name   string
			status string // the key's status before
			rule   fakeupstream.Rule
		}{
			{"410 on an active key", "active", balanceRule("siliconflow", http.StatusGone, `{"code":410,"message":"Gone"}`)},
			{"410 on a blocked key", "blocked", balanceRule("siliconflow", http.StatusGone, `{"code":410,"message":"Gone"}`)},
			{"404", "active", balanceRule("siliconflow", http.StatusNotFound, `404 page not found`)},
			{"HTML 200", "active", fakeupstream.Rule{Status: http.StatusOK, Paths: []string{"/v1/user/info"},
				Header: map[string]string{"Content-Type": "text/html"}, Body: "<!DOCTYPE html><html><body>Maintenance</body></html>"}},
			{"HTML 200 on a blocked key", "blocked", fakeupstream.Rule{Status: http.StatusOK, Paths: []string{"/v1/user/info"},
				Header: map[string]string{"Content-Type": "text/html"}, Body: "<html>login</html>"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newCheckEnv(t)
				secret := "sk-sf-fallback-000001"
				id := e.addKeys("siliconflow", secret)[0]
				e.setKeyState(id, tc.status, t0)
				e.up.SetRule(secret, tc.rule)
				e.cron()
				if got := paths(e.requestsOf(secret, 0)); got != "GET /v1/user/info, GET /v1/models" {
					t.Errorf("check called %s, want the balance, then the model list", got)
				}
				st := e.keyState(id)
				if st.Status != "active" || st.Result != "ok" || st.Balance.Valid {
					t.Errorf("after a 200 model list: %+v, want active, ok, no balance", st)
				}
			})
		}
	})

	t.Run("blocked key comes back after its probe time", func(t *testing.T) {
		e := newCheckEnv(t, "CHECK_PROBE_SECONDS", "60")
		secret := "sk-check-restored-01"
		id := e.addKeys("openai", secret)[0]
		e.up.SetRule(secret, fakeupstream.OpenAIInvalidKey("sk-chec****d-01"))
		e.cron()
		e.up.ClearRule(secret)
		for _, step := range []struct {
			at   time.Duration
			want string
			n    int // checks so far
		}{
			{sec(30), "blocked", 1},
			{sec(59), "blocked", 1},
			{sec(60), "active", 2},
		} {
			e.setNow(t0.Add(step.at))
			e.cron()
			if st := e.keyState(id); st.Status != step.want || len(e.checkRows(id)) != step.n {
				t.Errorf("at +%v: %s after %d checks, want %s after %d", step.at, st.Status, len(e.checkRows(id)), step.want, step.n)
			}
		}
		if _, evs := e.key(id); len(evs) != 2 || evs[0].To != "active" || evs[0].Reason != "check: credential accepted again" {
			t.Errorf("events %+v, want blocked → active \"check: credential accepted again\"", evs)
		}
	})

	t.Run("failed probes back off", func(t *testing.T) {
		e := newCheckEnv(t, "CHECK_PROBE_SECONDS", "60")
		secret := "sk-check-dead-000001"
		id := e.addKeys("openai", secret)[0]
		e.up.SetRule(secret, fakeupstream.OpenAIInvalidKey("sk-chec****0001"))
		at := time.Duration(0)
		for i, wait := range []time.Duration{sec(60), sec(120), sec(240), sec(480)} {
			e.setNow(t0.Add(at))
			e.cron()
			st := e.keyState(id)
			if st.Status != "blocked" || st.Fails != int64(i+1) || st.NextCheck != t0.Add(at+wait).UnixMilli() {
				t.Errorf("probe %d at +%v: %+v, want blocked, %d fails, next in %v", i+1, at, st, i+1, wait)
			}
			// Just before the next probe the key is left alone.
			e.setNow(t0.Add(at + wait - time.Millisecond))
			e.cron()
			if n := len(e.checkRows(id)); n != i+1 {
				t.Errorf("probe %d: checked %d times before the next probe time", i+1, n)
			}
			at += wait
		}
		if _, evs := e.key(id); len(evs) != 1 {
			t.Errorf("events %+v, want the one block only", evs)
		}
	})

	t.Run("5xx changes nothing and is retried", func(t *testing.T) {
		for _, status := range []string{"active", "exhausted", "blocked"} {
			t.Run(status, func(t *testing.T) {
				e := newCheckEnv(t, "CHECK_RETRY_SECONDS", "300", "CHECK_PROBE_SECONDS", "60")
				secret := "sk-check-5xx-" + status
				id := e.addKeys("openai", secret)[0]
				e.setKeyState(id, status, t0)
				e.up.SetRule(secret, fakeupstream.OpenAIServerError())
				e.cron()
				st := e.keyState(id)
				if st.Status != status || st.Result != "error" || st.NextCheck != t0.Add(sec(300)).UnixMilli() || st.Fails != 0 {
					t.Errorf("after a 500: %+v, want %s unchanged, error, retried in 300 s", st, status)
				}
				if _, evs := e.key(id); len(evs) != 0 {
					t.Errorf("events %+v after a 500", evs)
				}
				e.setNow(t0.Add(sec(299)))
				e.cron()
				if n := len(e.requestsOf(secret, 0)); n != 1 {
					t.Errorf("retried before CHECK_RETRY_SECONDS: %d calls", n)
				}
				e.setNow(t0.Add(sec(300)))
				e.cron()
				if n := len(e.requestsOf(secret, 0)); n != 2 {
					t.Errorf("%d calls at CHECK_RETRY_SECONDS, want the retry", n)
				}
			})
		}
	})

	t.Run("check model", func(t *testing.T) {
		tests := []struct {
			name     string
			setting  string
			wantCall string
			want     string
		}{
			// A 1-token completion proves the key can spend again.
			{"with check_models", `{"check_models":{"openai":"gpt-4o-mini"}}`, "POST /v1/chat/completions", "active"},
			// A model list only proves the key is valid.
			{"without", "", "GET /v1/models", "exhausted"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newCheckEnv(t)
				if tc.setting != "" {
					e.putSettings(tc.setting)
				}
				secret := "sk-check-topped-up-01"
				id := e.addKeys("openai", secret)[0]
				e.setKeyState(id, "exhausted", t0)
				e.cron()
				reqs := e.requestsOf(secret, 0)
				if paths(reqs) != tc.wantCall {
					t.Fatalf("check called %s, want %s", paths(reqs), tc.wantCall)
				}
				if r := reqs[0]; r.Method == http.MethodPost {
					b := gjson.ParseBytes(r.Body)
					if b.Get("model").String() != "gpt-4o-mini" || b.Get("max_tokens").Int() != 1 || !b.Get("messages.0.content").Exists() {
						t.Errorf("check body %s, want gpt-4o-mini with max_tokens 1", r.Body)
					}
				}
				if st := e.keyState(id); st.Status != tc.want {
					t.Errorf("exhausted key after the check: %s, want %s", st.Status, tc.want)
				}
			})
		}
	})

	t.Run("disabled key never changed", func(t *testing.T) {
		e := newCheckEnv(t)
		secret := "sk-check-disabled-01"
		id := e.addKeys("openai", secret)[0]
		e.setKeyState(id, "disabled", time.UnixMilli(0))
		e.up.SetRule(secret, fakeupstream.OpenAIInvalidKey("sk-chec****d-01"))
		e.cron()
		if n := len(e.requestsOf(secret, 0)); n != 0 {
			t.Errorf("the cron checked a disabled key (%d calls)", n)
		}
		// An explicit job may check it, but changes nothing.
		w := e.admin(http.MethodPost, "/admin/api/checks", `{"ids":[`+idStr(id)+`]}`)
		if w.Code != http.StatusAccepted {
			t.Fatalf("POST checks: %d %s", w.Code, w.Body.String())
		}
		if k, evs := e.key(id); k.Status != "disabled" || len(evs) != 0 {
			t.Errorf("disabled key now %s with events %+v", k.Status, evs)
		}
		e.up.ClearRule(secret)
		e.admin(http.MethodPost, "/admin/api/checks", `{"ids":[`+idStr(id)+`]}`)
		if k, evs := e.key(id); k.Status != "disabled" || len(evs) != 0 {
			t.Errorf("disabled key now %s with events %+v", k.Status, evs)
		}
	})
}

// jobJSON is a check job as the admin API shows it.
type jobJSON struct {
	ID          int64           `json:"id"`
	State       string          `json:"state"`
	Filter      json.RawMessage `json:"filter"`
	Options     json.RawMessage `json:"options"`
	Total       int64           `json:"total"`
	Done        int64           `json:"done"`
	Changed     int64           `json:"changed"`
	Errors      int64           `json:"errors"`
	Percent     float64         `json:"percent"`
	RatePerS    *float64        `json:"rate_per_s"`
	EtaS        *int64          `json:"eta_s"`
	ChangedKeys []struct {
		ID   int64  `json:"id"`
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"changed_keys"`
}

func (e *checkEnv) job(method, target, body string, status int) jobJSON {
	e.t.Helper()
	w := e.admin(method, target, body)
	if w.Code != status {
		e.t.Fatalf("%s %s %s: status %d, want %d; body %s", method, target, body, w.Code, status, w.Body.String())
	}
	var j jobJSON
	decode(e.t, w, &j)
	return j
}

func jobPath(id int64) string { return "/admin/api/checks/" + idStr(id) }

// TestCheckJobStart: POST /admin/api/checks picks keys by id, provider
// and status, answers 202 with the total and has the first chunk done.
func TestCheckJobStart(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantTotal int64
	}{
		{"all", `{}`, 6},
		{"empty body", ``, 6},
		{"ids", `{"ids":[IDS]}`, 2},
		{"provider and status", `{"provider":"groq","status":["blocked"]}`, 1},
		{"statuses", `{"status":["blocked","exhausted"]}`, 2},
		{"provider", `{"provider":"openai"}`, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnv(t)
			oa := e.addKeys("openai", "sk-job-openai-0001", "sk-job-openai-0002", "sk-job-openai-0003", "sk-job-openai-0004")
			gq := e.addKeys("groq", "gsk_job_groq_0001", "gsk_job_groq_0002")
			e.setKeyState(gq[1], "blocked", t0.Add(time.Hour))
			e.setKeyState(oa[3], "exhausted", t0.Add(time.Hour))
			body := strings.ReplaceAll(tc.body, "IDS", idStr(oa[0])+","+idStr(gq[1]))
			j := e.job(http.MethodPost, "/admin/api/checks", body, http.StatusAccepted)
			if j.ID <= 0 || j.Total != tc.wantTotal {
				t.Errorf("job %+v, want total %d", j, tc.wantTotal)
			}
			// Small jobs finish in the first chunk.
			if j.Done != tc.wantTotal || j.State != "done" || j.Percent != 100 || len(e.requests()) != int(tc.wantTotal) {
				t.Errorf("after POST: %+v with %d upstream calls, want all %d done", j, len(e.requests()), tc.wantTotal)
			}
			if c := gjson.GetBytes(j.Options, "concurrency"); c.Int() != 6 {
				t.Errorf("options %s, want the defaults filled in", j.Options)
			}
		})
	}
}

// TestCheckJobBadInput: bad input is a 400 naming the field, and no job.
func TestCheckJobBadInput(t *testing.T) {
	e := newCheckEnv(t)
	e.addKeys("openai", "sk-job-bad-input-0001")
	tests := []struct {
		name, body, param string
	}{
		{"ids not an array", `{"ids":5}`, "ids"},
		{"ids with a string", `{"ids":["1"]}`, "ids"},
		{"ids with zero", `{"ids":[0]}`, "ids"},
		{"unknown provider", `{"provider":"nope"}`, "provider"},
		{"provider not a string", `{"provider":1}`, "provider"},
		{"status weird", `{"status":["weird"]}`, "status"},
		{"status not an array", `{"status":"blocked"}`, "status"},
		{"concurrency 9", `{"concurrency":9}`, "concurrency"},
		{"concurrency 0", `{"concurrency":0}`, "concurrency"},
		{"concurrency 2.5", `{"concurrency":2.5}`, "concurrency"},
		{"interval_ms -1", `{"interval_ms":-1}`, "interval_ms"},
		{"interval_ms a string", `{"interval_ms":"100"}`, "interval_ms"},
		{"jitter_ms too large", `{"jitter_ms":60001}`, "jitter_ms"},
		{"retries 6", `{"retries":6}`, "retries"},
		{"retry_interval_ms -5", `{"retry_interval_ms":-5}`, "retry_interval_ms"},
		{"not an object", `[1,2]`, ""},
		{"not JSON", `{"ids":`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := e.admin(http.MethodPost, "/admin/api/checks", tc.body)
			ae := wantError(t, w, http.StatusBadRequest, "invalid_request")
			got := ""
			if ae.Error.Param != nil {
				got = *ae.Error.Param
			}
			if got != tc.param {
				t.Errorf("param %q, want %q; body %s", got, tc.param, w.Body.String())
			}
			if tc.param != "" && !strings.Contains(ae.Error.Message, tc.param) {
				t.Errorf("message %q does not name %s", ae.Error.Message, tc.param)
			}
		})
	}
	if w := e.admin(http.MethodGet, "/admin/api/checks", ""); w.Code != http.StatusOK || w.Body.String() != `{"jobs":[]}` {
		t.Errorf("jobs after bad input: %d %s, want none", w.Code, w.Body.String())
	}
	if len(e.requests()) != 0 {
		t.Errorf("bad input checked keys")
	}
}

// TestCheckJobProgress: GET advances a running job one budget at a time
// until it is done, and reports progress.
func TestCheckJobProgress(t *testing.T) {
	const limit, nKeys = 12, 40
	// CACHE_SECONDS=0: every advance reads the settings (one query).
	e := newCheckEnv(t, "JOB_SUBREQUESTS", strconv.Itoa(limit), "CACHE_SECONDS", "0")
	e.slowFetches(200 * time.Millisecond)
	var secrets []string
	for i := 0; i < nKeys; i++ {
		secrets = append(secrets, fmt.Sprintf("sk-job-progress-%03d", i))
	}
	ids := e.addKeys("openai", secrets...)
	revoked := map[int64]bool{}
	for _, i := range []int{3, 17, 38} {
		e.up.SetRule(secrets[i], fakeupstream.OpenAIInvalidKey("sk-job****"))
		revoked[ids[i]] = true
	}
	e.up.SetRule(secrets[25], fakeupstream.OpenAIServerError())

	// What the routes spend besides the advance, which JOB_SUBREQUESTS
	// bounds: a POST that selects no key creates the job (and audits the
	// change) but advances nothing, a GET of a finished job only reads
	// it; an advance reads the settings before it starts.
	measure := func(method, target, body string, status int) (jobJSON, int64, int64) {
		t.Helper()
		q0, f0 := e.queries.Load(), len(e.requests())
		j := e.job(method, target, body, status)
		return j, e.queries.Load() - q0, int64(len(e.requests()) - f0)
	}
	empty, postOutside, _ := measure(http.MethodPost, "/admin/api/checks", `{"ids":[999999]}`, http.StatusAccepted)
	if empty.State != "done" || empty.Total != 0 || len(e.requests()) != 0 {
		t.Fatalf("a job of no keys: %+v", empty)
	}
	_, getOutside, _ := measure(http.MethodGet, jobPath(empty.ID), "", http.StatusOK)
	const settingsRead = 1

	j, q, f := measure(http.MethodPost, "/admin/api/checks", `{}`, http.StatusAccepted)
	if j.Total != nKeys || j.State != "running" || j.Done == 0 || j.Done >= nKeys {
		t.Fatalf("after POST: %+v, want running with the first chunk done", j)
	}
	t.Logf("POST: %d subrequests (%d fetches, %d outside the advance), %d keys checked", q+f, f, postOutside+settingsRead, j.Done)
	if spent := q + f - postOutside - settingsRead; spent > limit {
		t.Errorf("POST: %d subrequests in the first advance, limit %d", spent, limit)
	}
	prev := j
	for gets := 1; ; gets++ {
		if gets > nKeys {
			t.Fatalf("job not done after %d GETs: %+v", gets, prev)
		}
		var queries, fetches int64
		j, queries, fetches = measure(http.MethodGet, jobPath(j.ID), "", http.StatusOK)
		if spent := queries + fetches - getOutside - settingsRead; spent > limit {
			t.Errorf("GET %d: %d subrequests in the advance (%d fetches), limit %d", gets, spent, fetches, limit)
		}
		if j.Done-prev.Done != fetches {
			t.Errorf("GET %d: done %d → %d with %d fetches", gets, prev.Done, j.Done, fetches)
		}
		if j.Done > 0 && (j.RatePerS == nil || *j.RatePerS <= 0 || j.EtaS == nil) {
			t.Errorf("GET %d: rate_per_s %v eta_s %v with %d done", gets, j.RatePerS, j.EtaS, j.Done)
		}
		if p := float64(j.Done) * 100 / nKeys; j.State == "running" && (fetches == 0 || j.Percent >= 100 || j.Percent > p || j.Percent < p-0.1) {
			t.Errorf("GET %d: %+v with %d fetches, want progress", gets, j, fetches)
		}
		prev = j
		if j.State == "done" {
			break
		}
	}
	if j.Done != nKeys || j.Percent != 100 || j.Changed != 3 || j.Errors != 1 || j.EtaS == nil || *j.EtaS != 0 {
		t.Errorf("finished job %+v, want 40 done, 100%%, 3 changed, 1 error, eta 0", j)
	}
	var changed []string
	for _, c := range j.ChangedKeys {
		if !revoked[c.ID] || c.From != "active" || c.To != "blocked" {
			t.Errorf("changed key %+v, want only the revoked keys, active → blocked", c)
		}
		changed = append(changed, idStr(c.ID))
	}
	if len(changed) != 3 {
		t.Errorf("changed_keys %v, want the 3 revoked keys", changed)
	}
	for i, s := range secrets {
		if n := len(e.requestsOf(s, 0)); n != 1 {
			t.Errorf("key %d checked %d times, want once", ids[i], n)
		}
	}
	// A finished job is not advanced again.
	if j2, _, f := measure(http.MethodGet, jobPath(j.ID), "", http.StatusOK); j2.State != "done" || f != 0 {
		t.Errorf("GET on a done job: %+v, %d fetches", j2, f)
	}
}

// TestCheckJobStopResume: DELETE stops a job, a GET then leaves it alone,
// and POST …/resume goes on from where it stopped, checking no key twice.
func TestCheckJobStopResume(t *testing.T) {
	const nKeys = 40
	e := newCheckEnv(t, "JOB_SUBREQUESTS", "12")
	var secrets []string
	for i := 0; i < nKeys; i++ {
		secrets = append(secrets, fmt.Sprintf("gsk_job_resume_%03d", i))
	}
	ids := e.addKeys("groq", secrets...)
	j := e.job(http.MethodPost, "/admin/api/checks", `{"provider":"groq","concurrency":2}`, http.StatusAccepted)
	if j.State != "running" || j.Done == 0 {
		t.Fatalf("after POST: %+v", j)
	}
	stopped := e.job(http.MethodDelete, jobPath(j.ID), "", http.StatusOK)
	if stopped.State != "stopped" || stopped.Done != j.Done {
		t.Fatalf("after DELETE: %+v", stopped)
	}
	f0 := len(e.requests())
	for i := 0; i < 2; i++ {
		if got := e.job(http.MethodGet, jobPath(j.ID), "", http.StatusOK); got.State != "stopped" || got.Done != j.Done || len(e.requests()) != f0 {
			t.Fatalf("GET on a stopped job: %+v, %d fetches", got, len(e.requests())-f0)
		}
	}
	// The cron leaves a stopped job alone too.
	if _, err := e.db.Exec(`UPDATE keys SET next_check_at = ?`, t0.Add(time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if r := e.cron(); strings.Contains(r.summary, "advanced job "+idStr(j.ID)) {
		t.Errorf("the cron advanced a stopped job: %s", r.summary)
	}
	f0 = len(e.requests())
	resumed := e.job(http.MethodPost, jobPath(j.ID)+"/resume", "", http.StatusOK)
	if resumed.State != "running" || resumed.Done <= j.Done || int64(len(e.requests())-f0) != resumed.Done-j.Done {
		t.Fatalf("after resume: %+v (was %d done), %d fetches", resumed, j.Done, len(e.requests())-f0)
	}
	for gets := 0; resumed.State == "running"; gets++ {
		if gets > nKeys {
			t.Fatalf("job not done: %+v", resumed)
		}
		resumed = e.job(http.MethodGet, jobPath(j.ID), "", http.StatusOK)
	}
	if resumed.State != "done" || resumed.Done != nKeys || resumed.Percent != 100 {
		t.Errorf("finished job %+v", resumed)
	}
	for i, s := range secrets {
		if n := len(e.requestsOf(s, 0)); n != 1 {
			t.Errorf("key %d checked %d times, want once", ids[i], n)
		}
	}
	// Resuming a finished job changes nothing.
	f0 = len(e.requests())
	if again := e.job(http.MethodPost, jobPath(j.ID)+"/resume", "", http.StatusOK); again.State != "done" || len(e.requests()) != f0 {
		t.Errorf("resuming a done job: %+v, %d fetches", again, len(e.requests())-f0)
	}
}

// TestCheckJobRoutes: listing, unknown ids, methods, and the password.
func TestCheckJobRoutes(t *testing.T) {
	e := newCheckEnv(t)
	id := e.addKeys("openai", "sk-job-routes-000001")[0]
	var created []int64
	for i := 0; i < 3; i++ {
		created = append(created, e.job(http.MethodPost, "/admin/api/checks", `{"ids":[`+idStr(id)+`]}`, http.StatusAccepted).ID)
	}
	var list struct{ Jobs []jobJSON }
	w := e.admin(http.MethodGet, "/admin/api/checks", "")
	decode(t, w, &list)
	var got []int64
	for _, j := range list.Jobs {
		got = append(got, j.ID)
	}
	sort.Slice(created, func(i, k int) bool { return created[i] > created[k] })
	if fmt.Sprint(got) != fmt.Sprint(created) {
		t.Errorf("listed jobs %v, want newest first %v", got, created)
	}

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/admin/api/checks/999", http.StatusNotFound},
		{http.MethodDelete, "/admin/api/checks/999", http.StatusNotFound},
		{http.MethodPost, "/admin/api/checks/999/resume", http.StatusNotFound},
		// Not an id: the route's 400 naming the id, or no route.
		{http.MethodGet, "/admin/api/checks/abc", 0},
		{http.MethodGet, "/admin/api/checks/0", 0},
		{http.MethodGet, jobPath(created[0]) + "/other", http.StatusNotFound},
		{http.MethodPut, "/admin/api/checks", http.StatusMethodNotAllowed},
		{http.MethodPost, jobPath(created[0]), http.StatusMethodNotAllowed},
		{http.MethodGet, jobPath(created[0]) + "/resume", http.StatusMethodNotAllowed},
	} {
		w := e.admin(tc.method, tc.path, "")
		if tc.status == 0 && (w.Code == http.StatusBadRequest || w.Code == http.StatusNotFound) {
			continue
		}
		if w.Code != tc.status {
			t.Errorf("%s %s: %d, want %d; %s", tc.method, tc.path, w.Code, tc.status, w.Body.String())
		}
	}

	before := len(e.requests())
	for i, tc := range []struct{ method, path, body string }{
		{http.MethodGet, "/admin/api/checks", ""},
		{http.MethodPost, "/admin/api/checks", "{}"},
		{http.MethodGet, jobPath(created[0]), ""},
		{http.MethodDelete, jobPath(created[0]), ""},
		{http.MethodPost, jobPath(created[0]) + "/resume", ""},
		{http.MethodGet, "/admin/api/checks/999", ""},
	} {
		for _, auth := range [][]string{nil, {"Authorization", "Bearer wrong-password"}, {"Authorization", "Bearer " + testAuthKey}} {
			// An address per path: the login throttle allows 5 failures.
			w := e.serve(tc.method, tc.path, tc.body, append(auth, "Cf-Connecting-Ip", "198.18.2."+strconv.Itoa(i))...)
			wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
		}
	}
	if len(e.requests()) != before {
		t.Errorf("unauthenticated requests checked keys")
	}
	if w := e.admin(http.MethodGet, "/admin/api/checks", ""); gjson.Get(w.Body.String(), "jobs.#").Int() != 3 {
		t.Errorf("unauthenticated POST created a job: %s", w.Body.String())
	}
}

// heldUpstream sits in front of the fake upstream, holds each answer and
// records how many requests it had at once. A request is held until fill
// requests are in (or 2 s have passed), then for hold more: on a loaded
// machine a fixed hold alone let a job's checks miss each other, and the
// test then saw fewer at once than the job allows.
type heldUpstream struct {
	mu            sync.Mutex
	in, maxIn, n  int
	fill          int
	hold          time.Duration
	fetchStarts   []time.Time
	fetchStartsMu sync.Mutex
}

func (e *testEnv) holdUpstream(fill int, hold time.Duration) *heldUpstream {
	hu := &heldUpstream{fill: fill, hold: hold}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hu.mu.Lock()
		hu.in++
		hu.n++
		hu.maxIn = max(hu.maxIn, hu.in)
		hu.mu.Unlock()
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			hu.mu.Lock()
			full := hu.in >= hu.fill
			hu.mu.Unlock()
			if full {
				break
			}
		}
		time.Sleep(hu.hold)
		rec := httptest.NewRecorder()
		e.up.ServeHTTP(rec, r)
		// Leave before answering, so that the next request a checker
		// sends after this answer never overlaps it here.
		hu.mu.Lock()
		hu.in--
		hu.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	e.t.Cleanup(srv.Close)
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		e.set(p.BaseURLVar(), srv.URL)
	}
	e.mu.Lock()
	e.fetch = func(r *http.Request) (*http.Response, error) {
		hu.fetchStartsMu.Lock()
		hu.fetchStarts = append(hu.fetchStarts, time.Now())
		hu.fetchStartsMu.Unlock()
		return http.DefaultClient.Do(r)
	}
	e.mu.Unlock()
	return hu
}

// TestCheckJobPacing: a job's concurrency bounds the checks at once, and
// interval_ms spaces their starts.
func TestCheckJobPacing(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		keys        int
		realClock   bool
		wantMaxIn   int
		minInterval time.Duration
	}{
		{"concurrency 3", `{"concurrency":3}`, 12, false, 3, 0},
		{"concurrency 1", `{"concurrency":1}`, 4, false, 1, 0},
		{"interval 100 ms", `{"concurrency":3,"interval_ms":100}`, 5, true, 1, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnv(t)
			if tc.realClock {
				e.followRealTime()
			}
			hu := e.holdUpstream(tc.wantMaxIn, 50*time.Millisecond)
			var secrets []string
			for i := 0; i < tc.keys; i++ {
				secrets = append(secrets, fmt.Sprintf("sk-pacing-key-%03d", i))
			}
			e.addKeys("openai", secrets...)
			j := e.job(http.MethodPost, "/admin/api/checks", tc.body, http.StatusAccepted)
			if j.State != "done" || j.Done != int64(tc.keys) || hu.n != tc.keys {
				t.Fatalf("job %+v, %d upstream calls, want all %d keys checked at once", j, hu.n, tc.keys)
			}
			if hu.maxIn != tc.wantMaxIn {
				t.Errorf("the upstream saw up to %d requests at once, want %d", hu.maxIn, tc.wantMaxIn)
			}
			// The starts are stamped where the fetch is made, not where the
			// job decided to Wait: allow a few ms of scheduling either side
			// (unpaced starts are under 1 ms apart).
			slack := min(tc.minInterval, 5*time.Millisecond)
			for i := 1; i < len(hu.fetchStarts); i++ {
				if gap := hu.fetchStarts[i].Sub(hu.fetchStarts[i-1]); gap < tc.minInterval-slack {
					t.Errorf("checks %d and %d started %v apart, want at least %v", i, i+1, gap, tc.minInterval)
				}
			}
		})
	}
}

// TestCronPrunesHistory: check results and key events older than
// CHECK_HISTORY_DAYS go, per-model blocks older than a day are lifted.
func TestCronPrunesHistory(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name string
		days string
		keep time.Duration // history this old stays, older goes
	}{
		{"default 30 days", "", 30 * day},
		{"7 days", "7", 7 * day},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnv(t, "CHECK_HISTORY_DAYS", tc.days)
			id := e.addKeys("openai", "sk-prune-history-0001")[0]
			e.setKeyState(id, "active", t0.Add(time.Hour)) // not due
			rows := []struct {
				age  time.Duration
				kept bool
			}{
				{tc.keep + time.Millisecond, false},
				{tc.keep + day, false},
				{tc.keep, true},
				{tc.keep - time.Millisecond, true},
				{time.Hour, true},
			}
			for i, r := range rows {
				at := t0.Add(-r.age).UnixMilli()
				detail := "row-" + strconv.Itoa(i)
				if _, err := e.db.Exec(`INSERT INTO key_checks (key_id, at, outcome, status, detail) VALUES (?, ?, 'ok', 200, ?)`, id, at, detail); err != nil {
					t.Fatal(err)
				}
				if _, err := e.db.Exec(`INSERT INTO key_events (key_id, at, from_state, to_state, reason) VALUES (?, ?, 'active', 'blocked', ?)`, id, at, detail); err != nil {
					t.Fatal(err)
				}
			}
			models := []struct {
				model, state string
				age          time.Duration
				kept         bool
			}{
				{"blocked-old", "blocked", day + time.Millisecond, false},
				{"blocked-week", "blocked", 7 * day, false},
				{"blocked-day", "blocked", day, true},
				{"blocked-recent", "blocked", time.Hour, true},
				{"cooling-long", "cooling", 3 * day, true}, // a cooldown that has not ended
			}
			for _, m := range models {
				at := t0.Add(-m.age).UnixMilli()
				until := int64(0)
				if m.state == "cooling" {
					until = t0.Add(time.Hour).UnixMilli()
				}
				if _, err := e.db.Exec(`INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, ?, ?, ?, '', 1, ?)`,
					id, m.model, m.state, until, at); err != nil {
					t.Fatal(err)
				}
			}
			r := e.cron()
			for i, row := range rows {
				detail := "row-" + strconv.Itoa(i)
				checks := e.count(`SELECT COUNT(*) FROM key_checks WHERE detail = ?`, detail)
				events := e.count(`SELECT COUNT(*) FROM key_events WHERE reason = ?`, detail)
				want := 0
				if row.kept {
					want = 1
				}
				if checks != want || events != want {
					t.Errorf("history %v old: %d check rows and %d events left, want %d", row.age, checks, events, want)
				}
			}
			for _, m := range models {
				n := e.count(`SELECT COUNT(*) FROM key_models WHERE key_id = ? AND model = ?`, id, m.model)
				if (n == 1) != m.kept {
					t.Errorf("model state %s (%v old): %d rows left, kept %v", m.model, m.age, n, m.kept)
				}
			}
			if !strings.Contains(r.summary, "and 6 old rows") {
				t.Errorf("summary does not report the 6 pruned rows: %s", r.summary)
			}
		})
	}
}
