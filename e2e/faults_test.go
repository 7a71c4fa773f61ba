//go:build e2e

package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestFaults injects the failures keypool must survive and checks what it
// does: D1 down or slow (through /admin/api/debug/faults, which lifts
// itself after a few seconds), a cron run during an outage, an upstream
// that cuts or stalls a stream, a client that leaves. Each fault is
// bounded in time; README's "Reliability" table gives these figures.
func TestFaults(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			// A short cache TTL, so that the outages below outlast it: what
			// is served then is served on stale records.
			// A 2 s stream idle limit, so that a stall can outlast it.
			w := startWorker(t, build, up, map[string]string{"CACHE_SECONDS": "2", "STREAM_IDLE_SECONDS": "2"})
			f := &faultRun{w: w, left: map[string]int{}, seen: map[string]int{}, keys: []string{"sk-fault-a" + randomHex(10), "sk-fault-b" + randomHex(10), "sk-fault-c" + randomHex(10)}}
			w.importKeys(t, "openai", f.keys...)
			r := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"fault client"}`)
			if r.status != http.StatusCreated {
				t.Fatalf("create token: %d %s", r.status, r.body)
			}
			f.token = r.json().Get("token").String()
			t.Run("d1-down", f.testD1Down)
			t.Run("d1-slow", f.testD1Slow)
			t.Run("cron-d1-down", f.testCronD1Down)
			t.Run("stream-cut", f.testStreamCut)
			t.Run("stream-stall", f.testStreamStall)
			t.Run("client-leaves", f.testHangUpCounted)
			t.Run("concurrent-admins", f.testConcurrentAdmins)
			t.Run("isolate-death", func(t *testing.T) { testIsolateDeath(t, build, up) })
			t.Run("memory", func(t *testing.T) { testMemory(t, build, up) })
		})
	}
}

type faultRun struct {
	w     *worker
	keys  []string
	token string
	sent  int            // requests for faultModel answered 200, all to be counted
	left  map[string]int // per model: requests the client left early
	seen  map[string]int // per model: of those, the hang-ups the worker saw
}

const faultModel = "gpt-fault"

// inject starts a D1 fault that lifts itself after seconds, and returns
// when it ends.
func (f *faultRun) inject(t *testing.T, mode string, seconds int) time.Time {
	t.Helper()
	r := f.w.adminCall(t, "POST", "/admin/api/debug/faults?d1="+mode+"&seconds="+strconv.Itoa(seconds), "")
	if r.status != http.StatusOK {
		t.Fatalf("inject d1=%s: %d %s", mode, r.status, r.body)
	}
	until := time.UnixMilli(r.json().Get("until").Int())
	// A subtest that fails during the fault leaves it to lift itself (the
	// route needs D1 to admit the admin): the next one starts after it,
	// and after the isolate's pause on reads.
	t.Cleanup(func() { time.Sleep(time.Until(until.Add(5 * time.Second))) })
	return until
}

// chat sends one chat request for model with the fault client's token (or
// token, when given) and returns the answer and how long it took.
func (f *faultRun) chat(t *testing.T, model, token string) (response, time.Duration) {
	t.Helper()
	if token == "" {
		token = f.token
	}
	began := time.Now()
	r := f.w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + token},
		`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
	return r, time.Since(began)
}

// serveThrough sends n requests for faultModel, gap apart, and fails the
// test for any that is not served.
func (f *faultRun) serveThrough(t *testing.T, n int, gap time.Duration) (slowest time.Duration) {
	t.Helper()
	for i := 0; i < n; i++ {
		r, took := f.chat(t, faultModel, "")
		if r.status != http.StatusOK {
			t.Fatalf("warm request %d of %d: %d %s", i+1, n, r.status, r.body)
		}
		f.sent++
		slowest = max(slowest, took)
		time.Sleep(gap)
	}
	return slowest
}

// storeUnavailable checks that r is the 503 that names the store.
func storeUnavailable(t *testing.T, what string, r response) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable || r.json().Get("error.code").String() != "store_unavailable" ||
		!strings.Contains(r.json().Get("error.message").String(), "D1") {
		t.Errorf("%s: %d %s, want 503 store_unavailable naming D1", what, r.status, r.body)
	}
}

// counted waits until the stats count every request served for faultModel.
func (f *faultRun) counted(t *testing.T) {
	t.Helper()
	eventually(t, "every request counted", func() bool {
		got := f.w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&model="+faultModel, "")
		n := got.json().Get("totals.requests").Int()
		t.Logf("stats: %d of %d requests counted", n, f.sent)
		return got.status == http.StatusOK && n == int64(f.sent)
	})
}

// testD1Down: with every D1 statement failing for 8 s, warm requests are
// served on the isolate's cached token, settings and candidates (past
// their TTL), cold ones get a fast 503 store_unavailable, admin routes
// 503; the cooldown and the block decided meanwhile, and every usage
// count, reach D1 once it answers again.
func (f *faultRun) testD1Down(t *testing.T) {
	w := f.w
	f.serveThrough(t, 3, 0) // warm: the token, settings and candidates cached
	until := f.inject(t, "down", 8)
	// During the outage one key starts rate limiting and one is revoked.
	w.up.SetRule(f.keys[0], fakeupstream.OpenAIRateLimited(faultModel, 120))
	w.up.SetRule(f.keys[1], fakeupstream.OpenAIInvalidKey(mask(f.keys[1])))
	defer w.up.ClearRule(f.keys[0])
	defer w.up.ClearRule(f.keys[1])
	slowest := f.serveThrough(t, 12, 300*time.Millisecond) // 3.6 s: past the 2 s TTL
	r, took := f.chat(t, "gpt-never-cached", "")
	storeUnavailable(t, "a model this isolate never read", r)
	if took > time.Second {
		t.Errorf("the cold request took %v: want a fast answer", took)
	}
	storeUnavailable(t, "a token this isolate never read", func() response { r, _ := f.chat(t, faultModel, "kp-unknown"+randomHex(8)); return r }())
	storeUnavailable(t, "GET /admin/api/keys", w.adminCall(t, "GET", "/admin/api/keys", ""))
	t.Logf("D1 down: %d warm requests served (slowest %v), cold 503 in %v", 12, slowest.Round(time.Millisecond), took.Round(time.Millisecond))

	time.Sleep(time.Until(until) + 200*time.Millisecond)
	f.serveThrough(t, 1, 0) // its writes carry what waited
	eventually(t, "the cooldown and the block written", func() bool {
		cool := w.query(t, "SELECT km.state, km.until FROM key_models km JOIN keys k ON k.id = km.key_id WHERE k.masked = '"+
			mask(f.keys[0])+"' AND km.model = '"+faultModel+"'")
		blocked := w.query(t, "SELECT status FROM keys WHERE masked = '"+mask(f.keys[1])+"'")
		return len(cool) == 1 && cool[0].Get("state").String() == "cooling" &&
			len(blocked) == 1 && blocked[0].Get("status").String() == "blocked"
	})
	f.counted(t)
}

// testD1Slow: with every D1 statement taking 2 s for 8 s, warm requests
// are still served (a read waits 1.5 s at most, and once one has timed out
// the isolate stops waiting for 5 s), cold ones get 503 store_unavailable
// within a few seconds, and nothing written meanwhile is lost.
func (f *faultRun) testD1Slow(t *testing.T) {
	until := f.inject(t, "slow", 8)
	slowest := f.serveThrough(t, 8, 300*time.Millisecond)
	r, took := f.chat(t, "gpt-never-cached-2", "")
	storeUnavailable(t, "a model this isolate never read", r)
	if took > 4*time.Second {
		t.Errorf("the cold request took %v: want it answered within the read timeout, not after every query", took)
	}
	t.Logf("D1 slow: 8 warm requests served (slowest %v), cold 503 in %v", slowest.Round(time.Millisecond), took.Round(time.Millisecond))
	time.Sleep(time.Until(until) + 5*time.Second) // the fault and the isolate's pause end
	f.serveThrough(t, 1, 0)
	f.counted(t)
}

// testCronD1Down: a cron run while D1 is down ends at once and says why.
func (f *faultRun) testCronD1Down(t *testing.T) {
	until := f.inject(t, "down", 4)
	began := time.Now()
	r := f.w.do(t, "GET", "/__scheduled?cron=*/5+*+*+*+*", nil, "")
	took := time.Since(began)
	if r.status != http.StatusOK {
		t.Fatalf("/__scheduled: %d %s", r.status, r.body)
	}
	eventually(t, "the cron's log line", func() bool {
		return strings.Contains(f.w.logs.String(), "keypool cron: D1 is not answering")
	})
	if took > 2*time.Second {
		t.Errorf("the cron run took %v with D1 down: want it to stop at once", took)
	}
	t.Logf("cron with D1 down: ended in %v", took.Round(time.Millisecond))
	time.Sleep(time.Until(until))
}
