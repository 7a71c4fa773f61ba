//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestStreams: on every stream route, a stream the upstream spreads over
// more than a second reaches the client as it is sent (first chunk long
// before the upstream's last, chunks spread out) and byte for byte as sent
// (minus the usage chunk keypool asked for); a client that hangs up stops
// the upstream within a few hundred ms; and the usage of such streams
// lands in the rollups.
func TestStreams(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			w.importKeys(t, "openai", "sk-slow-"+randomHex(12))
			w.importKeys(t, "google-ai-studio", "AIzaSlow"+randomHex(12))
			w.importKeys(t, "anthropic", "sk-ant-slow"+randomHex(12))
			// A first request starts the worker, so that the timings below
			// are not a cold start's.
			if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-warm","messages":[]}`); r.status != 200 {
				t.Fatalf("warm-up: %d %s", r.status, r.body)
			}
			t.Run("incremental", w.testSlowStreams)
			t.Run("hang-up", w.testHangUps)
			t.Run("usage", w.testSlowStreamUsage)
		})
	}
}

// streamRoute is one route a client streams from.
type streamRoute struct {
	name   string
	path   string
	header map[string]string
	// body is the request body, with %s for the model.
	body string
	// stripped: keypool asked for the usage chunk (the client did not), so
	// the client sees the upstream's stream without it.
	stripped bool
	// provider and the usage the fake reports, for the rollups.
	prov               string
	prompt, completion int64
}

func (w *worker) streamRoutes() []streamRoute {
	bearer := map[string]string{"Authorization": "Bearer " + w.token}
	return []streamRoute{
		{name: "chat", path: "/v1/chat/completions", header: bearer, stripped: true, prov: "openai", prompt: 5, completion: 7,
			body: `{"model":"%s","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{name: "chat-include-usage", path: "/v1/chat/completions", header: bearer, prov: "openai", prompt: 5, completion: 7,
			body: `{"model":"%s","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
		{name: "responses", path: "/v1/responses", header: bearer, prov: "openai", prompt: 5, completion: 7,
			body: `{"model":"%s","stream":true,"input":"hi"}`},
		{name: "completions", path: "/v1/completions", header: bearer, prov: "openai", prompt: 5, completion: 7,
			body: `{"model":"%s","stream":true,"prompt":"hi"}`},
		{name: "compat", path: "/api/compat/chat/completions", header: bearer, stripped: true, prov: "openai", prompt: 5, completion: 7,
			body: `{"model":"openai/%s","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{name: "gemini", path: "/api/google-ai-studio/v1beta/models/%s:streamGenerateContent?alt=sse",
			header: map[string]string{"x-goog-api-key": w.token}, prov: "google-ai-studio", prompt: 5, completion: 7,
			body: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`},
		{name: "anthropic", path: "/api/anthropic/v1/messages", header: map[string]string{"x-api-key": w.token},
			prov: "anthropic", prompt: 3, completion: 6,
			body: `{"model":"%s","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
	}
}

// model is the route's model for one scenario, so that each has its own
// line in the rollups.
func (r streamRoute) model(scenario string) string { return "slow-" + r.name + "-" + scenario }

func (r streamRoute) request(base, model, id, slow string) *http.Request {
	path := strings.Replace(r.path, "%s", model, 1)
	body := strings.Replace(r.body, "%s", model, 1)
	req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Test-Id", id)
	req.Header.Set(fakeupstream.SlowHeader, slow)
	return req
}

// arrival is one read of the client's body: when, and how many bytes.
type arrival struct {
	at time.Duration // since the request was sent
	n  int
}

// readTimed reads the whole body, noting when each piece arrived.
func readTimed(body io.Reader, sent time.Time) ([]byte, []arrival, error) {
	var all []byte
	var got []arrival
	buf := make([]byte, 64<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			got = append(got, arrival{at: time.Since(sent), n: n})
			all = append(all, buf[:n]...)
		}
		if err == io.EOF {
			return all, got, nil
		}
		if err != nil {
			return all, got, err
		}
	}
}

const (
	slowEvents = 24
	slowGap    = 50 * time.Millisecond
)

// testSlowStreams: every stream route relays a slow stream as it comes.
func (w *worker) testSlowStreams(t *testing.T) {
	for _, rt := range w.streamRoutes() {
		t.Run(rt.name, func(t *testing.T) {
			id := randomHex(6)
			model := rt.model("incremental")
			sent := time.Now()
			resp, err := w.client.Do(rt.request(w.base, model, id, fakeupstream.SlowSpec(slowEvents, slowGap)))
			must(t, err)
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			body, got, err := readTimed(resp.Body, sent)
			must(t, err)
			q := findRequest(t, w.up, id)
			events := len(fakeupstream.SlowEvents(q.Path, q.Model, slowEvents, true, gjson.GetBytes(q.Body, "stream_options.include_usage").Bool()))
			upstream := q.Ended.Sub(q.Began) // the upstream's own duration
			first, last := got[0].at, got[len(got)-1].at
			t.Logf("%s: upstream streamed %d events over %v; client: first byte %v, last byte %v, %d reads",
				rt.name, events, upstream.Round(time.Millisecond), first.Round(time.Millisecond), last.Round(time.Millisecond), len(got))
			want := q.Sent
			if rt.stripped {
				chunk := fakeupstream.StreamUsageChunk(q.Model)
				if !bytes.Contains(q.Sent, []byte(chunk)) {
					t.Fatalf("keypool did not ask for usage: the fake sent %q", q.Sent)
				}
				want = bytes.Replace(q.Sent, []byte(chunk), nil, 1)
			}
			if !bytes.Equal(body, want) {
				t.Errorf("client got\n%q\nwant\n%q", body, want)
			}
			if upstream < time.Second {
				t.Fatalf("the fake's stream lasted %v, want over 1 s", upstream)
			}
			if first > upstream/3 {
				t.Errorf("first byte after %v: want within a third of the upstream's %v", first, upstream)
			}
			if len(got) < 10 || last-first < upstream/2 {
				t.Errorf("%d reads between %v and %v: want at least 10, spread over more than half of %v",
					len(got), first, last, upstream)
			}
		})
	}
}

// testHangUps: a client that leaves 200 ms into a 2 s stream closes the
// upstream's connection within a few hundred ms, on every stream route.
// This workerd sometimes reports no disconnect at all (neither
// request.signal nor a cancel of the body: about 1 in 4 here, whatever
// the worker does), so each route gets up to three tries, every one
// logged; today's code stopped the upstream in none.
func (w *worker) testHangUps(t *testing.T) {
	direct := w.directBase(t)
	for _, rt := range w.streamRoutes() {
		t.Run(rt.name, func(t *testing.T) {
			var took time.Duration
			for try := 1; try <= 3; try++ {
				var gone bool
				took, gone = w.hangUp(t, direct, rt)
				if gone && took <= 500*time.Millisecond {
					return
				}
			}
			t.Errorf("the upstream went on %v after the client left: want it closed within 500 ms", took.Round(time.Millisecond))
		})
	}
}

// hangUp streams rt from base, leaves 200 ms in and returns how long the
// fake went on writing after that, and whether it saw the client gone.
func (w *worker) hangUp(t *testing.T, base string, rt streamRoute) (time.Duration, bool) {
	id := randomHex(6)
	return w.leaveEarly(t, rt.name, rt.request(base, rt.model("hangup"), id, fakeupstream.SlowSpec(40, slowGap)), id)
}

// leaveEarly sends req (whose X-Test-Id is id), resets the connection
// 200 ms after sending it and returns how long the fake went on writing
// after that, and whether it saw the client gone.
func (w *worker) leaveEarly(t *testing.T, name string, req *http.Request, id string) (time.Duration, bool) {
	// The client's connection, to reset it when it leaves: the worker
	// learns at once that the client has gone, whether it writes or not.
	var conn net.Conn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		conn = c
		return c, err
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}, Timeout: 30 * time.Second}
	sent := time.Now()
	resp, err := client.Do(req)
	must(t, err)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	time.Sleep(200*time.Millisecond - time.Since(sent))
	left := time.Now()
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
	resp.Body.Close()
	var q fakeupstream.Request
	eventually(t, "the fake's stream to end", func() bool {
		for _, r := range w.up.Requests() {
			if r.Header.Get("X-Test-Id") == id {
				q = r
				return true
			}
		}
		return false
	})
	took := q.Ended.Sub(left)
	t.Logf("%s: client left %v in; the fake stopped %v later (gone: %v), after writing %d bytes over %v",
		name, left.Sub(sent).Round(time.Millisecond), took.Round(time.Millisecond), q.Gone, len(q.Sent),
		q.Ended.Sub(q.Began).Round(time.Millisecond))
	return took, q.Gone
}

// testSlowStreamUsage: the slow streams of testSlowStreams are counted
// with the usage the upstream reported, none estimated.
func (w *worker) testSlowStreamUsage(t *testing.T) {
	for _, rt := range w.streamRoutes() {
		model := rt.model("incremental")
		eventually(t, rt.name+" stream usage counted", func() bool {
			got := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider="+rt.prov+"&model="+model, "").json()
			ok := got.Get("totals.requests").Int() == 1 && got.Get("totals.prompt_tokens").Int() == rt.prompt &&
				got.Get("totals.completion_tokens").Int() == rt.completion && got.Get("totals.estimated").Int() == 0
			if !ok {
				t.Logf("%s: %s", rt.name, got.Get("totals").Raw)
			}
			return ok
		})
	}
}

// workerdProcesses are the /proc directories of the workerd processes
// run in w.dir (the worker's; wrangler's proxy workerd runs elsewhere).
func (w *worker) workerdProcesses() []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		exe, _ := os.Readlink(p + "/exe")
		cwd, _ := os.Readlink(p + "/cwd")
		if strings.HasSuffix(exe, "/workerd") && cwd == w.dir {
			out = append(out, p)
		}
	}
	return out
}

// directBase is the address workerd serves the worker on behind wrangler
// dev's own proxy (the one w.base points at). That proxy does not pass a
// client's hang-up on to the worker: through it the worker's response
// body is never cancelled (measured: the upstream streamed to the end,
// while straight to workerd it was closed 8–50 ms after the client left).
// In production nothing stands between the client and the worker, so the
// hang-up tests call workerd directly. Found from /proc: the listening
// sockets of the workerd processes run in w.dir that answer like keypool.
func (w *worker) directBase(t *testing.T) string {
	t.Helper()
	inodes := map[string]bool{}
	for _, p := range w.workerdProcesses() {
		fds, _ := filepath.Glob(p + "/fd/*")
		for _, fd := range fds {
			if l, _ := os.Readlink(fd); strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	tcp, err := os.ReadFile("/proc/net/tcp")
	must(t, err)
	for _, line := range strings.Split(string(tcp), "\n")[1:] {
		f := strings.Fields(line)
		// local address 127.0.0.1:port, state 0A (listening), inode
		if len(f) < 10 || f[3] != "0A" || !strings.HasPrefix(f[1], "0100007F:") || !inodes[f[9]] {
			continue
		}
		port, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0100007F:"), 16, 16)
		if err != nil {
			continue
		}
		base := "http://127.0.0.1:" + strconv.FormatUint(port, 10)
		if base == w.base {
			continue
		}
		resp, err := w.client.Get(base + "/v1/models")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && gjson.GetBytes(b, "error.type").Exists() {
			return base
		}
	}
	t.Fatalf("no workerd socket serving the worker found (sockets %v)", inodes)
	return ""
}
