//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// testIsolateDeath: a worker with the default USAGE_FLUSH_SECONDS (5) is
// killed (SIGKILL to wrangler dev and its workerd) while a client sends
// requests, then started again on the same local D1. The cooldown decided
// before the kill is there; the counts lost are at most the requests
// served in the last flush interval before the kill, and none is counted
// twice.
func testIsolateDeath(t *testing.T, build string, up *fakeupstream.Server) {
	w := startWorker(t, build, up, map[string]string{"USAGE_FLUSH_SECONDS": "5"})
	const model = "gpt-fault-death"
	cool, serve := "sk-death-a"+randomHex(10), "sk-death-b"+randomHex(10)
	w.importKeys(t, "openai", cool, serve)
	up.SetRule(cool, fakeupstream.OpenAIRateLimited(model, 600))
	defer up.ClearRule(cool)

	var served []time.Time // when each 200 arrived
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("POST", w.base+"/v1/chat/completions",
				strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Authorization", "Bearer "+w.token)
			resp, err := client.Do(req)
			if err != nil {
				time.Sleep(20 * time.Millisecond) // the worker is down
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				served = append(served, time.Now())
			}
		}
	}()
	time.Sleep(7 * time.Second) // past one flush interval, into the next
	killed := time.Now()
	w.stop(syscall.SIGKILL)
	close(stop)
	<-done
	w.launch(t)

	n := len(served)
	recent := 0 // served within one flush interval (and a little) before the kill
	for _, at := range served {
		if killed.Sub(at) <= 5500*time.Millisecond {
			recent++
		}
	}
	rows := w.query(t, "SELECT km.state, km.until FROM key_models km JOIN keys k ON k.id = km.key_id WHERE k.masked = '"+
		mask(cool)+"' AND km.model = '"+model+"'")
	if len(rows) != 1 || rows[0].Get("state").String() != "cooling" || rows[0].Get("until").Int() < killed.UnixMilli() {
		t.Errorf("the cooldown decided before the kill: %v, want a cooling row that outlasts it", rows)
	}
	got := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&model="+model, "").json().Get("totals.requests").Int()
	lost := int64(n) - got
	t.Logf("isolate death: %d requests served, %d counted, %d lost; %d were served in the last 5.5 s before the kill", n, got, lost, recent)
	if lost < 0 || lost > int64(recent) {
		t.Errorf("%d of %d requests lost: want between 0 and the %d of the last flush interval", lost, n, recent)
	}
}

// testMemory: the worker keeps serving under 16 concurrent uploads at
// MAX_BODY_BYTES (its default, 6 MiB), 200 concurrent streams and a
// 10 000-key pool listed and exported; no request fails. The peak
// resident memory of the worker's workerd is reported.
func testMemory(t *testing.T, build string, up *fakeupstream.Server) {
	// 200 streams at once on two cores can keep an answer's headers
	// waiting past the suite's 5 s upstream timeout: not a memory fault.
	w := startWorker(t, build, up, map[string]string{"MAX_BODY_BYTES": "6291456", "UPSTREAM_TIMEOUT_SECONDS": "60"})
	w.importKeys(t, "openai", "sk-mem-"+randomHex(12))
	report(t, w, "after start", nil)

	// 16 uploads at the limit, at once.
	head, end := `{"model":"gpt-mem","messages":[{"role":"user","content":"`, `"}]}`
	body := head + strings.Repeat("x", 6291456-len(head)-len(end)) + end
	fails := parallel(16, func(i int) error {
		r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + w.token}, body)
		if r.status != http.StatusOK {
			return fmt.Errorf("upload %d (%d bytes): %d %s", i, len(body), r.status, tail(string(r.body), 300))
		}
		return nil
	})
	report(t, w, "16 uploads of 6 MiB", fails)

	// 200 streams at once, each 10 events over a second.
	fails = parallel(200, func(i int) error {
		req, _ := http.NewRequest("POST", w.base+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-mem-stream","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+w.token)
		req.Header.Set(fakeupstream.SlowHeader, fakeupstream.SlowSpec(10, 100*time.Millisecond))
		resp, err := w.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), "[DONE]") {
			return fmt.Errorf("stream %d: %d, %v, %d bytes: %s", i, resp.StatusCode, err, len(b), tail(string(b), 200))
		}
		return nil
	})
	report(t, w, "200 streams", fails)

	// 10 000 keys: imported in four parts, listed, exported.
	for part := 0; part < 4; part++ {
		keys := make([]string, 2500)
		for i := range keys {
			keys[i] = "sk-many-" + strconv.Itoa(part) + "-" + randomHex(16)
		}
		if got := w.importKeys(t, "openai", keys...); got.Get("added").Int() != 2500 {
			t.Fatalf("import part %d: %s", part, tail(got.Raw, 300))
		}
	}
	var listErr []error
	list := w.adminCall(t, "GET", "/admin/api/keys?provider=openai", "")
	if list.status != http.StatusOK {
		listErr = append(listErr, fmt.Errorf("list: %d %s", list.status, tail(string(list.body), 300)))
	}
	export := w.adminCall(t, "POST", "/admin/api/keys/export", `{"provider":"openai"}`)
	if export.status != http.StatusOK || strings.Count(string(export.body), "sk-many-") != 10000 {
		listErr = append(listErr, fmt.Errorf("export: %d, %d keys in %d bytes", export.status, strings.Count(string(export.body), "sk-many-"), len(export.body)))
	}
	report(t, w, "10 001 keys listed and exported", listErr)
	if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-mem-after","messages":[]}`); r.status != 200 {
		t.Errorf("a request after the load: %d %s", r.status, r.body)
	}
}

// parallel runs n calls of do at once and returns their errors.
func parallel(n int, do func(i int) error) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := do(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return errs
}

// report logs a phase's failures and the memory figures so far: the Go
// instances' wasm memory (now, summed over instances, and the most one
// has held: the part of the isolate's heap that is keypool's own) and
// the peak resident memory of the worker's workerd (the whole runtime:
// every isolate, V8, the sockets' buffers).
func report(t *testing.T, w *worker, phase string, fails []error) {
	t.Helper()
	st := w.adminCall(t, "GET", "/admin/api/debug/stats", "").json()
	t.Logf("%s: %d failed; Go instances %d, wasm memory %d MiB now, peak %d MiB in one; workerd peak resident %d MiB",
		phase, len(fails), st.Get("instances").Int(), st.Get("wasm_bytes").Int()>>20, st.Get("wasm_peak_bytes").Int()>>20,
		workerdMemory(t, w)>>20)
	for i, err := range fails {
		if i == 3 {
			t.Errorf("… and %d more", len(fails)-3)
			break
		}
		t.Error(err)
	}
}

// workerdMemory is the largest peak resident memory (VmHWM) of the
// workerd processes serving w (not wrangler's proxy workerd, which runs
// elsewhere): the isolate's heap is inside it.
func workerdMemory(t *testing.T, w *worker) int64 {
	var peak int64
	for _, p := range w.workerdProcesses() {
		status, _ := os.ReadFile(p + "/status")
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				peak = max(peak, kb<<10)
			}
		}
	}
	if peak == 0 {
		t.Errorf("no workerd process of this worker found")
	}
	return peak
}
