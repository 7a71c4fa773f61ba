//go:build e2e

package e2e

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// These scenarios check the entry module's reuse of Go instances
// (entry/worker.mjs) against the traps that hang or kill requests.

// streamRequest starts a streamed completion held by the fake's gate id.
func (w *worker) streamRequest(t *testing.T, model, gate string) (*http.Response, error) {
	req, _ := http.NewRequest("POST", w.base+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+w.token)
	req.Header.Set("Content-Type", "application/json")
	if gate != "" {
		req.Header.Set("X-Fake-Gate", gate)
	}
	return w.client.Do(req)
}

// testConcurrentStreams: 50 concurrent streams all arrive byte-identical.
func (w *worker) testConcurrentStreams(t *testing.T) {
	want := strings.Join(fakeupstream.StreamChunks("gpt-many"), "")
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := w.streamRequest(t, "gpt-many", "")
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || string(b) != want {
				errs <- resp.Status + " " + string(b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("stream: %s", e)
	}
}

// testLongStreamBurst: 40 streams held open at once all get their first
// chunk while every one of them is still open: no request waits for
// another's instance.
func (w *worker) testLongStreamBurst(t *testing.T) {
	const n = 40
	var releases []func()
	firsts := make(chan error, n)
	var bodies []io.ReadCloser
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		id := randomHex(6)
		releases = append(releases, w.up.Gate(id))
		go func() {
			resp, err := w.streamRequest(t, "gpt-burst", id)
			if err != nil {
				firsts <- err
				return
			}
			mu.Lock()
			bodies = append(bodies, resp.Body)
			mu.Unlock()
			_, err = bufio.NewReader(resp.Body).ReadString('\n')
			firsts <- err
		}()
	}
	defer func() {
		for _, r := range releases {
			r()
		}
		mu.Lock()
		for _, b := range bodies {
			io.Copy(io.Discard, b)
			b.Close()
		}
		mu.Unlock()
	}()
	timeout := time.After(30 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case err := <-firsts:
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
		case <-timeout:
			t.Fatalf("only %d of %d held streams got their first chunk: requests wait on each other", i, n)
		}
	}
}

// testTimersAfterReuse: a timer left armed by one request (its setTimeout
// dies with that request) must not stop a later request's time.Sleep on
// the same instance from waking.
func (w *worker) testTimersAfterReuse(t *testing.T) {
	for i := 0; i < 6; i++ {
		r := w.adminCall(t, "GET", "/admin/api/debug/sleep?ms=1&leave=200", "")
		if r.status != 200 {
			t.Fatalf("sleep: %d %s", r.status, r.body)
		}
		start := time.Now()
		r = w.adminCall(t, "GET", "/admin/api/debug/sleep?ms=400", "")
		if r.status != 200 {
			t.Fatalf("a sleep after a left timer failed: %d %s", r.status, r.body)
		}
		if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
			t.Errorf("slept %v, want about 400 ms", d)
		}
	}
}

// testClientDisconnect: clients that hang up mid-stream leave the pool
// serving.
func (w *worker) testClientDisconnect(t *testing.T) {
	for i := 0; i < 5; i++ {
		id := randomHex(6)
		release := w.up.Gate(id)
		resp, err := w.streamRequest(t, "gpt-gone", id)
		must(t, err)
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // hang up mid-stream
		release()
	}
	w.client.CloseIdleConnections()
	for i := 0; i < 10; i++ {
		if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-after","messages":[]}`); r.status != 200 {
			t.Fatalf("after disconnects: %d %s", r.status, r.body)
		}
	}
}

// testNoStateLeak: alternating good and bad credentials on reused
// instances: each request is judged on its own.
func (w *worker) testNoStateLeak(t *testing.T) {
	for i := 0; i < 20; i++ {
		if r := w.call(t, "GET", "/v1/models", ""); r.status != 200 {
			t.Fatalf("good token, request %d: %d %s", i, r.status, r.body)
		}
		if r := w.do(t, "GET", "/v1/models", map[string]string{"Authorization": "Bearer nope"}, ""); r.status != 401 {
			t.Fatalf("bad token after a good one, request %d: %d", i, r.status)
		}
	}
}

// testCronInterleaved: cron events, one after another as the trigger fires
// them, while requests run concurrently on the same pool of instances.
func (w *worker) testCronInterleaved(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-cron","messages":[]}`); r.status != 200 {
				errs <- "request: " + string(r.body)
			}
		}()
	}
	for i := 0; i < 10; i++ {
		if r := w.do(t, "GET", "/__scheduled?cron=*/5+*+*+*+*", nil, ""); r.status != 200 {
			errs <- "cron: " + string(r.body)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
