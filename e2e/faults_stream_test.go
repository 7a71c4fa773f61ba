//go:build e2e

package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// streamRequest is a chat request for model with the fault client's
// token: a stream the fake sends slowly (slow: a SlowSpec), or when slow
// is "" a plain one, with the extra fault headers given.
func (f *faultRun) streamRequest(base, model, id, slow string, extra map[string]string) *http.Request {
	stream := "false"
	if slow != "" {
		stream = "true"
	}
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","stream":`+stream+`,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("X-Test-Id", id)
	if slow != "" {
		req.Header.Set(fakeupstream.SlowHeader, slow)
	}
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	return req
}

// readStream sends req and reads its whole body: the status, the bytes,
// how the body ended (nil: a clean end) and when, after sending.
func (f *faultRun) readStream(t *testing.T, req *http.Request) (int, []byte, error, time.Duration) {
	t.Helper()
	sent := time.Now()
	resp, err := f.w.client.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err, time.Since(sent)
}

// fakeRequest is the request the fake received with X-Test-Id id.
func (f *faultRun) fakeRequest(t *testing.T, id string) fakeupstream.Request {
	t.Helper()
	var q fakeupstream.Request
	eventually(t, "the fake's request "+id, func() bool {
		for _, r := range f.w.up.Requests() {
			if r.Header.Get("X-Test-Id") == id && !r.Ended.IsZero() {
				q = r
				return true
			}
		}
		return false
	})
	return q
}

// modelStats is the day's totals for an openai model.
func (f *faultRun) modelStats(t *testing.T, model string) gjson.Result {
	return f.w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&model="+model, "").json().Get("totals")
}

// testStreamCut: an upstream that closes its connection after 4 of 10
// events (no [DONE], no end of the chunked body): the client gets the 4
// events and a clean end at once, the key-model one transient failure
// (streak 1, never blocked, the key still serves), and the request is
// counted with an estimate.
func (f *faultRun) testStreamCut(t *testing.T) {
	const model = "gpt-fault-cut"
	id := randomHex(6)
	status, body, err, took := f.readStream(t, f.streamRequest(f.w.base, model, id, fakeupstream.SlowSpec(10, 100*time.Millisecond),
		map[string]string{fakeupstream.CutHeader: "4"}))
	events := strings.Count(string(body), "data: ")
	t.Logf("cut stream: %d, %d events, ended %v after %v", status, events, err, took.Round(time.Millisecond))
	if status != 200 || err != nil || events != 4 || strings.Contains(string(body), "[DONE]") {
		t.Fatalf("got %d, %d events, end %v: want 200, the 4 events sent, a clean end, no [DONE]:\n%s", status, events, err, body)
	}
	if took > 2*time.Second {
		t.Errorf("the cut stream ended %v after it was sent: want at once after the 4th event (~0.3 s)", took)
	}
	q := f.fakeRequest(t, id)
	eventually(t, "the key-model marked once, not blocked", func() bool {
		rows := f.w.query(t, "SELECT km.state, km.streak, k.status FROM key_models km JOIN keys k ON k.id = km.key_id WHERE k.masked = '"+
			mask(q.Key)+"' AND km.model = '"+model+"'")
		if len(rows) != 1 {
			return false
		}
		t.Logf("key-model after the cut: %s", rows[0].Raw)
		return rows[0].Get("streak").Int() == 1 && rows[0].Get("state").String() != "blocked" && rows[0].Get("status").String() == "active"
	})
	if r, _ := f.chat(t, model, ""); r.status != 200 {
		t.Errorf("the model after a cut: %d %s, want served", r.status, r.body)
	}
	eventually(t, "the cut stream counted with an estimate", func() bool {
		got := f.modelStats(t, model)
		return got.Get("requests").Int() == 2 && got.Get("estimated").Int() >= 1 && got.Get("completion_tokens").Int() > 0
	})
}

// testStreamStall: with STREAM_IDLE_SECONDS=2, a stream that pauses 1.5 s
// (a model thinking) reaches the client whole, and one that pauses 4 s
// ends cleanly after the 2 s limit with what came, and its upstream
// connection is closed then.
func (f *faultRun) testStreamStall(t *testing.T) {
	id := randomHex(6)
	status, body, err, took := f.readStream(t, f.streamRequest(f.w.base, "gpt-fault-think", id, fakeupstream.SlowSpec(5, 50*time.Millisecond),
		map[string]string{fakeupstream.StallHeader: "2x1500"}))
	t.Logf("1.5 s pause: %d, %d events, ended %v after %v", status, strings.Count(string(body), "data: "), err, took.Round(time.Millisecond))
	if status != 200 || err != nil || !strings.Contains(string(body), "[DONE]") {
		t.Errorf("a stream pausing 1.5 s under a 2 s limit: %d, end %v, want it whole:\n%s", status, err, body)
	}

	id = randomHex(6)
	status, body, err, took = f.readStream(t, f.streamRequest(f.w.base, "gpt-fault-stall", id, fakeupstream.SlowSpec(6, 50*time.Millisecond),
		map[string]string{fakeupstream.StallHeader: "3x4000"}))
	ended := time.Now()
	events := strings.Count(string(body), "data: ")
	t.Logf("4 s stall: %d, %d events, ended %v after %v", status, events, err, took.Round(time.Millisecond))
	if status != 200 || err != nil || events != 3 {
		t.Fatalf("a stream stalled 4 s under a 2 s limit: %d, %d events, end %v: want 200, the 3 events sent, a clean end", status, events, err)
	}
	if took < 2*time.Second || took > 3500*time.Millisecond {
		t.Errorf("the stalled stream ended after %v: want about 2 s after its third event", took)
	}
	q := f.fakeRequest(t, id)
	t.Logf("the fake stopped %v after the client's end (gone: %v)", q.Ended.Sub(ended).Round(time.Millisecond), q.Gone)
	if !q.Gone || q.Ended.Sub(ended) > time.Second {
		t.Errorf("the stalled upstream: gone %v, %v after the client's end: want its connection closed within 1 s", q.Gone, q.Ended.Sub(ended))
	}
}

// testHangUpCounted: a client that leaves a stream and one that leaves a
// large JSON answer (40 × 16 KiB over 2 s) close the upstream within 1 s,
// and both requests are counted (estimated, as the upstream never said).
func (f *faultRun) testHangUpCounted(t *testing.T) {
	direct := f.w.directBase(t)
	leave := func(name, model string, extra map[string]string, slow string) {
		for try := 1; try <= 3; try++ { // workerd sometimes misses a hang-up (see testHangUps)
			id := randomHex(6)
			took, gone := f.w.leaveEarly(t, name, f.streamRequest(direct, model, id, slow, extra), id)
			f.left[model]++
			if gone && took <= time.Second {
				f.seen[model]++
				return
			}
		}
		t.Errorf("%s: the upstream went on after the client left: want it closed within 1 s", name)
	}
	leave("stream", "gpt-fault-leave", nil, fakeupstream.SlowSpec(40, 50*time.Millisecond))
	leave("large JSON answer", "gpt-fault-leave-large", map[string]string{fakeupstream.LargeHeader: "40x50"}, "")
	// A try whose hang-up workerd missed is never told its body is over
	// (neither pulled again nor cancelled), so it may stay uncounted:
	// every try the worker saw end must be counted, none twice.
	for _, model := range []string{"gpt-fault-leave", "gpt-fault-leave-large"} {
		eventually(t, model+": the requests left counted", func() bool {
			got := f.modelStats(t, model)
			n := got.Get("requests").Int()
			t.Logf("%s: %s (tries %d, hang-ups seen %d)", model, got.Raw, f.left[model], f.seen[model])
			return n >= int64(f.seen[model]) && n <= int64(f.left[model]) && got.Get("estimated").Int() == n
		})
	}
}
