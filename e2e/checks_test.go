//go:build e2e

package e2e

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestChecks runs the health checks — the cron's budgeted checks and the
// admin's check jobs — against each build, each build with its own wrangler
// dev, fresh D1 state and fake upstream. The scenarios share one pool of
// 120 keys and run in order: each starts from the states the last left.
func TestChecks(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, map[string]string{
				"CHECK_SUBREQUESTS":       "45",
				"CHECK_PROBE_SECONDS":     "1",
				"CHECK_PROBE_MAX_SECONDS": "2",
				"CHECK_RETRY_SECONDS":     "1",
				"CHECK_INTERVAL_SECONDS":  "3600",
			})
			c := &checksSuite{w: w, up: up}
			t.Run("cover-120", c.testCover)
			t.Run("recovery", c.testRecovery)
			t.Run("job", c.testJob)
			t.Run("cron-advances-job", c.testCronJob)
			t.Run("log-hygiene", c.testLogHygiene)
			var sum strings.Builder
			for i, r := range c.runs {
				fmt.Fprintf(&sum, "\n  run %2d: checked %3d (%2d changed, %2d errors), subrequests %2d/%d = %2d fetches + %2d D1 queries, worker time %v, wall %v",
					i+1, r.checked, r.changed, r.errors, r.used, r.limit, r.fetches, r.queries, r.took, r.wall.Round(time.Millisecond))
			}
			t.Logf("%s: %d cron runs:%s", build, len(c.runs), sum.String())
		})
	}
}

// The pool: 40 keys of each provider, every fourth one unhealthy.
const (
	checkKeysPerProvider = 40
	checkCronLimit       = 45
)

type checkKey struct {
	provider string
	secret   string
	kind     string  // ok, invalid, zero, error
	balance  float64 // siliconflow: the totalBalance the fake reports
}

type checksSuite struct {
	w    *worker
	up   *fakeupstream.Server
	keys []checkKey
	runs []cronRun // every cron run, in order
}

// siliconFlowUserInfo is SiliconFlow's GET /v1/user/info answer, with the
// amounts as the strings it sends; totalBalance = balance + chargeBalance.
func siliconFlowUserInfo(balanceCents, chargeCents int) fakeupstream.Rule {
	money := func(c int) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }
	body := `{"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username","image":"","email":"","isAdmin":false,` +
		`"balance":"` + money(balanceCents) + `","status":"normal","introduction":"","role":"",` +
		`"chargeBalance":"` + money(chargeCents) + `","totalBalance":"` + money(balanceCents+chargeCents) + `"}}`
	return fakeupstream.Rule{Status: http.StatusOK, Body: body, Paths: []string{"user/info"}}
}

// cronRun is one cron summary line.
type cronRun struct {
	checked, changed, errors int
	lists                    int
	job                      int64
	used, limit              int
	took                     time.Duration // as the worker measured it
	wall                     time.Duration // the /__scheduled call, as the test saw it
	// Measured from outside: the requests the fake upstream received and
	// the D1 queries the isolate counted during the run.
	fetches, queries int
}

var cronSummary = regexp.MustCompile(`keypool cron: checked (\d+) keys \((\d+) changed, (\d+) errors\), pruned (\d+) cooldowns and (\d+) old rows, refreshed (\d+) model lists, advanced job (\d+), subrequests (\d+)/(\d+), (\S+)`)

func parseCronRuns(logs string) []cronRun {
	var out []cronRun
	for _, m := range cronSummary.FindAllStringSubmatch(logs, -1) {
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		took, _ := time.ParseDuration(m[10])
		out = append(out, cronRun{checked: n(1), changed: n(2), errors: n(3), lists: n(6), job: int64(n(7)), used: n(8), limit: n(9), took: took})
	}
	return out
}

// cron triggers one cron run and returns its summary line.
func (c *checksSuite) cron(t *testing.T) cronRun {
	t.Helper()
	before := len(parseCronRuns(c.w.logs.String()))
	sent, queries := len(c.up.Requests()), c.d1Queries(t)
	start := time.Now()
	r := c.w.do(t, "GET", "/__scheduled?cron=*/5+*+*+*+*", nil, "")
	wall := time.Since(start)
	if r.status != http.StatusOK {
		t.Fatalf("/__scheduled: %d %s", r.status, r.body)
	}
	var runs []cronRun
	deadline := time.Now().Add(30 * time.Second)
	for runs = parseCronRuns(c.w.logs.String()); len(runs) <= before; runs = parseCronRuns(c.w.logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no cron summary line 30 s after /__scheduled:\n%s", tail(c.w.logs.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(runs) > before+1 {
		t.Errorf("one /__scheduled logged %d cron summaries", len(runs)-before)
	}
	run := runs[before]
	run.wall = wall
	run.fetches, run.queries = len(c.up.Requests())-sent, int(c.d1Queries(t)-queries)
	c.runs = append(c.runs, run)
	t.Logf("cron run %d: checked %d keys (%d changed, %d errors), refreshed %d model lists, advanced job %d, subrequests %d/%d "+
		"(measured: %d fetches + %d D1 queries), worker time %v, wall %v",
		len(c.runs), run.checked, run.changed, run.errors, run.lists, run.job, run.used, run.limit,
		run.fetches, run.queries, run.took, wall.Round(time.Millisecond))
	if run.fetches+run.queries != run.used {
		t.Errorf("cron run %d reported %d subrequests, but made %d fetches and %d D1 queries",
			len(c.runs), run.used, run.fetches, run.queries)
	}
	// Every key the suite sets up answers its first check call (a balance
	// or a model list), so a check is one fetch, a model list another (a
	// job's checks are counted by testCronJob).
	if run.job == 0 && run.fetches != run.checked+run.lists {
		t.Errorf("cron run %d made %d fetches for %d checks and %d model lists", len(c.runs), run.fetches, run.checked, run.lists)
	}
	if run.limit != checkCronLimit {
		t.Errorf("cron budget %d, want CHECK_SUBREQUESTS = %d", run.limit, checkCronLimit)
	}
	if run.used > run.limit {
		t.Errorf("cron run %d used %d subrequests, over its budget of %d", len(c.runs), run.used, run.limit)
	}
	return run
}

// d1Queries reads the isolate's count of D1 round trips.
func (c *checksSuite) d1Queries(t *testing.T) int64 {
	t.Helper()
	r := c.w.adminCall(t, "GET", "/admin/api/debug/stats", "")
	if r.status != http.StatusOK || r.json().Get("d1_queries").Type != gjson.Number {
		t.Fatalf("GET /admin/api/debug/stats: %d %s", r.status, r.body)
	}
	return r.json().Get("d1_queries").Int()
}

// freePlanSubrequests is what one invocation may make on the Workers free
// plan: fetches and D1 queries alike.
const freePlanSubrequests = 50

// jobCall makes an admin check-job request and measures the subrequests it
// made (the fake's requests and the isolate's D1 count): one request
// advancing a job must stay within an invocation's limit.
func (c *checksSuite) jobCall(t *testing.T, method, path, body string) response {
	t.Helper()
	sent, queries := len(c.up.Requests()), c.d1Queries(t)
	start := time.Now()
	r := c.w.adminCall(t, method, path, body)
	took := time.Since(start)
	fetches, q := len(c.up.Requests())-sent, int(c.d1Queries(t)-queries)
	t.Logf("%s %s: %d, %s %d/%d; subrequests %d = %d fetches + %d D1 queries, %v",
		method, path, r.status, r.json().Get("state"), r.json().Get("done").Int(), r.json().Get("total").Int(),
		fetches+q, fetches, q, took.Round(time.Millisecond))
	if fetches+q > freePlanSubrequests {
		t.Errorf("%s %s made %d subrequests (%d fetches, %d D1 queries), over the %d an invocation may make",
			method, path, fetches+q, fetches, q, freePlanSubrequests)
	}
	return r
}

// keyRow is a key as the database holds it.
type keyRow struct {
	id          int64
	status      string
	balance     gjson.Result
	lastChecked int64
	result      string
	reason      string
}

// state reads every key's row, by secret. D1 holds the keys sealed, so
// rows are found by their masked form, which the suite's keys make unique
// (each ends in its own number).
func (c *checksSuite) state(t *testing.T) map[string]keyRow {
	t.Helper()
	bySecret := map[string]string{}
	for _, k := range c.keys {
		bySecret[mask(k.secret)] = k.secret
	}
	out := map[string]keyRow{}
	for _, r := range c.w.query(t, "SELECT id, masked, status, status_reason, balance, last_checked_at, check_result FROM keys") {
		out[bySecret[r.Get("masked").String()]] = keyRow{
			id: r.Get("id").Int(), status: r.Get("status").String(), balance: r.Get("balance"),
			lastChecked: r.Get("last_checked_at").Int(), result: r.Get("check_result").String(),
			reason: r.Get("status_reason").String(),
		}
	}
	return out
}

func (c *checksSuite) checkedCount(t *testing.T) int64 {
	t.Helper()
	return c.w.query(t, "SELECT COUNT(*) AS n FROM keys WHERE last_checked_at > 0")[0].Get("n").Int()
}

func (c *checksSuite) byKind(prov, kind string) []checkKey {
	var out []checkKey
	for _, k := range c.keys {
		if k.provider == prov && k.kind == kind {
			out = append(out, k)
		}
	}
	return out
}

// testCover: 120 keys of mixed health are all checked by successive cron
// runs, each within its subrequest budget, and end in exactly the right
// state.
func (c *checksSuite) testCover(t *testing.T) {
	var sf, oai, groq []string
	for i := 0; i < checkKeysPerProvider; i++ {
		// SiliconFlow: every fourth account is empty, the others hold
		// varying amounts.
		k := checkKey{provider: "siliconflow", secret: "sk-sflow" + randomHex(12) + fmt.Sprintf("%04d", i), kind: "ok"}
		bal, charge := (i%7)*11, i*250+100
		if i%4 == 3 {
			k.kind, bal, charge = "zero", 0, 0
		}
		k.balance = float64(bal+charge) / 100
		c.up.SetRule(k.secret, siliconFlowUserInfo(bal, charge))
		c.keys, sf = append(c.keys, k), append(sf, k.secret)
	}
	for i := 0; i < checkKeysPerProvider; i++ {
		// OpenAI: every fourth key revoked.
		k := checkKey{provider: "openai", secret: "sk-oaich" + randomHex(12) + fmt.Sprintf("%04d", i), kind: "ok"}
		if i%4 == 0 {
			k.kind = "invalid"
			c.up.SetRule(k.secret, fakeupstream.OpenAIInvalidKey(mask(k.secret)))
		}
		c.keys, oai = append(c.keys, k), append(oai, k.secret)
	}
	for i := 0; i < checkKeysPerProvider; i++ {
		// Groq: every fourth key meets a failing upstream.
		k := checkKey{provider: "groq", secret: "gsk_chk" + randomHex(12) + fmt.Sprintf("%04d", i), kind: "ok"}
		if i%4 == 1 {
			k.kind = "error"
			c.up.SetRule(k.secret, fakeupstream.OpenAIServerError())
		}
		c.keys, groq = append(c.keys, k), append(groq, k.secret)
	}
	// In this order, so that key ids (the cron's order among keys never
	// checked, and a job's) follow it.
	for _, imp := range []struct {
		prov    string
		secrets []string
	}{{"siliconflow", sf}, {"openai", oai}, {"groq", groq}} {
		if j := c.w.importKeys(t, imp.prov, imp.secrets...); j.Get("added").Int() != checkKeysPerProvider {
			t.Fatalf("import %s: %s", imp.prov, j.Raw)
		}
	}
	total := int64(len(c.keys))

	covered := int64(0)
	runs := 0
	for runs < 10 && covered < total {
		runs++
		r := c.cron(t)
		before := covered
		covered = c.checkedCount(t)
		t.Logf("after run %d: %d/%d keys checked at least once", runs, covered, total)
		if r.checked == 0 {
			t.Errorf("cron run %d checked no key while %d were never checked", runs, total-before)
		}
		if covered <= before {
			t.Errorf("cron run %d checked no new key (%d/%d)", runs, covered, total)
		}
	}
	if covered < total {
		t.Fatalf("after %d cron runs only %d of %d keys were ever checked", runs, covered, total)
	}
	t.Logf("all %d keys checked after %d cron runs", total, runs)

	st := c.state(t)
	for _, k := range c.keys {
		row, ok := st[k.secret]
		if !ok {
			t.Fatalf("%s key %s not in the database", k.provider, mask(k.secret))
		}
		want := map[string][2]string{ // kind → status, check_result
			"ok": {"active", "ok"}, "invalid": {"blocked", "invalid"}, "zero": {"exhausted", "exhausted"}, "error": {"active", "error"},
		}[k.kind]
		if row.status != want[0] || row.result != want[1] {
			t.Errorf("%s %s key %s (id %d): status %q, last check %q; want %q, %q (reason %q)",
				k.provider, k.kind, mask(k.secret), row.id, row.status, row.result, want[0], want[1], row.reason)
		}
		switch {
		case k.provider == "siliconflow":
			if row.balance.Type != gjson.Number || math.Abs(row.balance.Float()-k.balance) > 1e-9 {
				t.Errorf("siliconflow key %d: balance %s, want %v", row.id, row.balance.Raw, k.balance)
			}
		case row.balance.Type != gjson.Null:
			t.Errorf("%s key %d: balance %s, want none (the provider tells none)", k.provider, row.id, row.balance.Raw)
		}
	}

	// The balance history: a row per SiliconFlow check, with its balance.
	hist := map[int64]gjson.Result{}
	for _, r := range c.w.query(t, "SELECT key_id, COUNT(*) AS n, MIN(balance) AS lo, MAX(balance) AS hi FROM key_checks WHERE balance IS NOT NULL GROUP BY key_id") {
		hist[r.Get("key_id").Int()] = r
	}
	for _, k := range c.byKind("siliconflow", "ok") {
		h, ok := hist[st[k.secret].id]
		if !ok || h.Get("lo").Float() != k.balance || h.Get("hi").Float() != k.balance {
			t.Errorf("siliconflow key %d: balance history %s, want readings of %v", st[k.secret].id, h.Raw, k.balance)
		}
	}
	for _, k := range c.byKind("siliconflow", "zero") {
		if h, ok := hist[st[k.secret].id]; !ok || h.Get("hi").Float() != 0 {
			t.Errorf("empty siliconflow key %d: balance history %s, want readings of 0", st[k.secret].id, h.Raw)
		}
	}
	if len(hist) != checkKeysPerProvider {
		t.Errorf("balance history for %d keys, want the %d siliconflow keys", len(hist), checkKeysPerProvider)
	}
	// Every key has check rows; the failures keep the upstream status, and
	// no detail shows a key.
	rows := c.w.query(t, "SELECT key_id, outcome, status, detail FROM key_checks")
	perKey := map[int64]int{}
	for _, r := range rows {
		perKey[r.Get("key_id").Int()]++
		for _, k := range c.keys {
			if strings.Contains(r.Get("detail").String(), k.secret) {
				t.Errorf("key_checks row of key %d shows a full key in its detail", r.Get("key_id").Int())
			}
		}
		switch r.Get("outcome").String() {
		case "invalid":
			if r.Get("status").Int() != 401 {
				t.Errorf("invalid check with status %d: %s", r.Get("status").Int(), r.Raw)
			}
		case "error":
			if r.Get("status").Int() != 500 {
				t.Errorf("error check with status %d: %s", r.Get("status").Int(), r.Raw)
			}
		}
	}
	if len(perKey) != len(c.keys) {
		t.Errorf("key_checks rows for %d keys, want %d", len(perKey), len(c.keys))
	}
	// The state changes are in the keys' history.
	events := c.events(t)
	for _, k := range append(c.byKind("openai", "invalid"), c.byKind("siliconflow", "zero")...) {
		to := map[string]string{"invalid": "blocked", "zero": "exhausted"}[k.kind]
		ev := events[st[k.secret].id]
		if len(ev) == 0 || ev[0].Get("from_state").String() != "active" || ev[0].Get("to_state").String() != to {
			t.Errorf("%s %s key %d: events %v, want active → %s", k.provider, k.kind, st[k.secret].id, ev, to)
		}
	}
	for _, k := range append(c.byKind("groq", "error"), c.byKind("openai", "ok")...) {
		if ev := events[st[k.secret].id]; len(ev) != 0 {
			t.Errorf("%s %s key %d changed state: %v", k.provider, k.kind, st[k.secret].id, ev)
		}
	}
}

// events returns the key-wide state changes, by key id, oldest first.
func (c *checksSuite) events(t *testing.T) map[int64][]gjson.Result {
	t.Helper()
	out := map[int64][]gjson.Result{}
	for _, r := range c.w.query(t, "SELECT key_id, from_state, to_state, reason, status FROM key_events WHERE model = '' ORDER BY id") {
		out[r.Get("key_id").Int()] = append(out[r.Get("key_id").Int()], r)
	}
	return out
}

// testRecovery: blocked keys that work again and exhausted keys that were
// topped up come back to active through the cron's probes; the others stay
// where they are.
func (c *checksSuite) testRecovery(t *testing.T) {
	blocked, empty := c.byKind("openai", "invalid"), c.byKind("siliconflow", "zero")
	if len(blocked) < 2 || len(empty) < 2 {
		t.Fatal("cover-120 did not set up the pool")
	}
	restored, stillBlocked := blocked[:len(blocked)/2], blocked[len(blocked)/2:]
	topped, stillEmpty := empty[:len(empty)/2], empty[len(empty)/2:]
	healed := map[string]bool{}
	for _, k := range restored {
		c.up.ClearRule(k.secret) // the key works again
		healed[k.secret] = true
	}
	for _, k := range topped {
		c.up.SetRule(k.secret, siliconFlowUserInfo(50, 1200)) // topped up to 12.50
		healed[k.secret] = true
	}
	for i := range c.keys {
		if healed[c.keys[i].secret] {
			c.keys[i].kind = "ok"
			if c.keys[i].provider == "siliconflow" {
				c.keys[i].balance = 12.5
			}
		}
	}
	// Past the longest probe wait (CHECK_PROBE_MAX_SECONDS), every dead key
	// is due again.
	time.Sleep(2500 * time.Millisecond)
	back := func(st map[string]keyRow) int {
		n := 0
		for _, k := range append(append([]checkKey(nil), restored...), topped...) {
			if st[k.secret].status == "active" {
				n++
			}
		}
		return n
	}
	want := len(restored) + len(topped)
	var st map[string]keyRow
	runs := 0
	for runs < 6 {
		runs++
		r := c.cron(t)
		st = c.state(t)
		n := back(st)
		t.Logf("recovery run %d: %d/%d keys back (run changed %d)", runs, n, want, r.changed)
		if n == want {
			break
		}
	}
	if n := back(st); n != want {
		t.Fatalf("after %d cron runs %d of %d recovered keys are active", runs, n, want)
	}
	t.Logf("all %d recovered keys active after %d cron runs", want, runs)
	events := c.events(t)
	for _, set := range []struct {
		keys             []checkKey
		dead, wantStatus string
		wantReason       string
	}{
		{restored, "blocked", "active", "credential accepted again"},
		{topped, "exhausted", "active", "balance available again"},
	} {
		for _, k := range set.keys {
			row := st[k.secret]
			if row.status != set.wantStatus {
				t.Errorf("%s key %d: %s, want %s", k.provider, row.id, row.status, set.wantStatus)
			}
			ev := events[row.id]
			if len(ev) != 2 || ev[0].Get("from_state").String() != "active" || ev[0].Get("to_state").String() != set.dead ||
				ev[1].Get("from_state").String() != set.dead || ev[1].Get("to_state").String() != "active" ||
				!strings.Contains(ev[1].Get("reason").String(), set.wantReason) {
				t.Errorf("%s key %d: events %v, want active → %s → active (%q)", k.provider, row.id, ev, set.dead, set.wantReason)
			}
		}
	}
	for _, k := range topped {
		if b := st[k.secret].balance; math.Abs(b.Float()-12.5) > 1e-9 {
			t.Errorf("topped-up key %d: balance %s, want 12.5", st[k.secret].id, b.Raw)
		}
	}
	for _, k := range stillBlocked {
		if row := st[k.secret]; row.status != "blocked" || len(events[row.id]) != 1 {
			t.Errorf("still revoked key %d: %s, events %v; want blocked, one event", row.id, row.status, events[row.id])
		}
	}
	for _, k := range stillEmpty {
		if row := st[k.secret]; row.status != "exhausted" || row.balance.Float() != 0 || len(events[row.id]) != 1 {
			t.Errorf("still empty key %d: %s, balance %s, events %v; want exhausted at 0, one event", row.id, row.status, row.balance.Raw, events[row.id])
		}
	}
	// A recovered key serves again.
	r := c.w.call(t, "POST", "/v1/chat/completions", `{"model":"siliconflow/Qwen/Qwen2.5-7B-Instruct","messages":[{"role":"user","content":"hi"}]}`)
	if r.status != http.StatusOK {
		t.Errorf("siliconflow request after recovery: %d %s", r.status, r.body)
	}
}

// pollJob GETs a job until done, at most 60 times.
func (c *checksSuite) pollJob(t *testing.T, id string) (gjson.Result, int) {
	t.Helper()
	var j gjson.Result
	for i := 1; i <= 60; i++ {
		r := c.jobCall(t, "GET", "/admin/api/checks/"+id, "")
		if r.status != http.StatusOK {
			t.Fatalf("poll %d of job %s: %d %s", i, id, r.status, r.body)
		}
		j = r.json()
		t.Logf("job %s poll %d: %s %d/%d (%v%%), rate %s/s, eta %s s", id, i, j.Get("state"), j.Get("done").Int(), j.Get("total").Int(),
			j.Get("percent"), j.Get("rate_per_s").Raw, j.Get("eta_s").Raw)
		if j.Get("state").String() != "running" {
			return j, i
		}
	}
	t.Fatalf("job %s not done after 60 polls: %s", id, j.Raw)
	return j, 0
}

// testJob: an admin check job over every key runs to 100 %; a paced job can
// be stopped and resumed, and checks each key exactly once.
func (c *checksSuite) testJob(t *testing.T) {
	total := int64(len(c.keys))
	r := c.jobCall(t, "POST", "/admin/api/checks", `{}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /admin/api/checks: %d %s", r.status, r.body)
	}
	j := r.json()
	id := j.Get("id").String()
	if j.Get("total").Int() != total || j.Get("state").String() != "running" || j.Get("done").Int() <= 0 {
		t.Errorf("new job: %s; want running over %d keys, a first chunk done", r.body, total)
	}
	j, polls := c.pollJob(t, id)
	if j.Get("state").String() != "done" || j.Get("done").Int() != total || j.Get("total").Int() != total ||
		j.Get("percent").Float() != 100 {
		t.Errorf("job after %d polls: %s; want done, %d/%d, 100 %%", polls, j.Raw, total, total)
	}
	if rate := j.Get("rate_per_s"); rate.Type != gjson.Number || rate.Float() <= 0 {
		t.Errorf("job rate_per_s %s, want a positive number", rate.Raw)
	}
	// The pool is as the last scenario left it: nothing changes, and the
	// failing upstream's keys count as errors.
	if n := int64(len(c.byKind("groq", "error"))); j.Get("errors").Int() != n || j.Get("changed").Int() != 0 {
		t.Errorf("job counted %d errors, %d changes; want %d, 0", j.Get("errors").Int(), j.Get("changed").Int(), n)
	}
	t.Logf("job %s: %d keys in %d polls, rate %s keys/s", id, total, polls+1, j.Get("rate_per_s").Raw)
	if list := c.w.adminCall(t, "GET", "/admin/api/checks", ""); list.status != http.StatusOK || list.json().Get("jobs.0.id").String() != id {
		t.Errorf("GET /admin/api/checks: %d %s", list.status, list.body)
	}

	// A paced job: one check at a time, 200 ms apart.
	c.up.ClearRequests()
	start := time.Now()
	r = c.jobCall(t, "POST", "/admin/api/checks", `{"concurrency":1,"interval_ms":200}`)
	took := time.Since(start)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /admin/api/checks (paced): %d %s", r.status, r.body)
	}
	j = r.json()
	id2 := j.Get("id").String()
	if id2 == id || j.Get("options.concurrency").Int() != 1 || j.Get("options.interval_ms").Int() != 200 {
		t.Errorf("paced job: %s", r.body)
	}
	if n := j.Get("done").Int(); n > 1 && took < time.Duration(n-1)*200*time.Millisecond {
		t.Errorf("paced job checked %d keys in %v, faster than one per 200 ms", n, took)
	}
	t.Logf("paced job %s: first chunk %d keys in %v", id2, j.Get("done").Int(), took.Round(time.Millisecond))
	// The first poll advances it; then it is stopped.
	r = c.jobCall(t, "GET", "/admin/api/checks/"+id2, "")
	t.Logf("paced job %s: first poll: %s %d/%d", id2, r.json().Get("state"), r.json().Get("done").Int(), total)
	if r.status != http.StatusOK || r.json().Get("done").Int() <= j.Get("done").Int() {
		t.Errorf("first poll of the paced job did not advance it: %d %s (was %d done)", r.status, r.body, j.Get("done").Int())
	}
	r = c.jobCall(t, "DELETE", "/admin/api/checks/"+id2, "")
	stopped := r.json()
	if r.status != http.StatusOK || stopped.Get("state").String() != "stopped" || stopped.Get("done").Int() >= total {
		t.Fatalf("DELETE the paced job: %d %s; want stopped before the end", r.status, r.body)
	}
	t.Logf("paced job %s: DELETE: %s at %d/%d", id2, stopped.Get("state"), stopped.Get("done").Int(), total)
	sent := len(c.up.Requests())
	r = c.jobCall(t, "GET", "/admin/api/checks/"+id2, "")
	if g := r.json(); r.status != http.StatusOK || g.Get("state").String() != "stopped" || g.Get("done").Int() != stopped.Get("done").Int() {
		t.Errorf("GET of the stopped job: %d %s; want it stopped at %d", r.status, r.body, stopped.Get("done").Int())
	}
	if n := len(c.up.Requests()); n != sent {
		t.Errorf("GET of the stopped job checked %d keys", n-sent)
	}
	r = c.jobCall(t, "POST", "/admin/api/checks/"+id2+"/resume", "")
	t.Logf("paced job %s: resume: %d, %s %d/%d", id2, r.status, r.json().Get("state"), r.json().Get("done").Int(), total)
	if g := r.json(); r.status != http.StatusOK || g.Get("done").Int() <= stopped.Get("done").Int() {
		t.Errorf("resume: %d %s; want it running on from %d", r.status, r.body, stopped.Get("done").Int())
	}
	if r.json().Get("state").String() == "running" {
		j, polls = c.pollJob(t, id2)
	} else {
		j = r.json()
	}
	if j.Get("state").String() != "done" || j.Get("done").Int() != total || j.Get("percent").Float() != 100 {
		t.Errorf("paced job after resume: %s; want done, %d/%d", j.Raw, total, total)
	}
	// Each key was checked exactly once, across the stop and the chunks.
	per := map[string]int{}
	for _, q := range c.up.Requests() {
		per[q.Key]++
	}
	for _, k := range c.keys {
		if per[k.secret] != 1 {
			t.Errorf("paced job: %s %s key %s checked %d times, want 1", k.provider, k.kind, mask(k.secret), per[k.secret])
		}
		delete(per, k.secret)
	}
	for k, n := range per {
		t.Errorf("paced job: %d requests with a key not in the pool (%q)", n, mask(k))
	}
}

// testCronJob: a running job that nobody polls is advanced by the cron,
// within the cron's budget, to the end.
func (c *checksSuite) testCronJob(t *testing.T) {
	total := int64(len(c.keys))
	r := c.jobCall(t, "POST", "/admin/api/checks", `{}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /admin/api/checks: %d %s", r.status, r.body)
	}
	id := r.json().Get("id").Int()
	// Read through the list, which does not advance a job.
	job := func() gjson.Result {
		l := c.w.adminCall(t, "GET", "/admin/api/checks", "")
		for _, j := range l.json().Get("jobs").Array() {
			if j.Get("id").Int() == id {
				return j
			}
		}
		t.Fatalf("job %d not in GET /admin/api/checks: %d %s", id, l.status, l.body)
		return gjson.Result{}
	}
	advanced := 0
	j := job()
	for runs := 0; runs < 15 && j.Get("state").String() == "running"; runs++ {
		done := j.Get("done").Int()
		run := c.cron(t)
		j = job()
		if run.job == id {
			advanced++
		}
		if (run.job == id) != (j.Get("done").Int() > done) {
			t.Errorf("cron run %d logged advanced job %d; job %d went from %d to %d done", len(c.runs), run.job, id, done, j.Get("done").Int())
		}
		if jobChecks := int(j.Get("done").Int() - done); run.fetches != run.checked+run.lists+jobChecks {
			t.Errorf("cron run %d made %d fetches for %d checks, %d model lists and %d checks of the job",
				len(c.runs), run.fetches, run.checked, run.lists, jobChecks)
		}
		t.Logf("job %d after cron run %d: %s %d/%d", id, len(c.runs), j.Get("state"), j.Get("done").Int(), total)
	}
	if j.Get("state").String() != "done" || j.Get("done").Int() != total || advanced == 0 {
		t.Errorf("job after the cron runs: %s; want done %d/%d, advanced by the cron (%d times)", j.Raw, total, total, advanced)
	}
}

// testLogHygiene: no full upstream key, nor the client token or the admin
// password, appears in the worker log.
func (c *checksSuite) testLogHygiene(t *testing.T) {
	logs := c.w.logs.String()
	if strings.Contains(logs, c.w.token) || strings.Contains(logs, c.w.admin) {
		t.Fatalf("a keypool secret appears in the worker log")
	}
	for _, k := range c.keys {
		if strings.Contains(logs, k.secret) {
			t.Errorf("%s key %s appears in the worker log", k.provider, mask(k.secret))
		}
	}
	for _, q := range c.up.Requests() {
		if q.Key != "" && strings.Contains(logs, q.Key) {
			t.Errorf("upstream key %s appears in the worker log", mask(q.Key))
		}
	}
	if len(c.keys) == 0 {
		t.Errorf("no keys to look for")
	}
}
