//go:build e2e

package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestSocket: the Responses API over WebSocket (GET /v1/responses with
// Upgrade: websocket, which Codex opens first). The handshake is a
// request like any other: the client's token is checked and never sent
// upstream, a pool key goes instead, and a key refused at the handshake
// makes way for the next one (and is blocked or cooled as over HTTPS).
// Then every message is relayed both ways as sent, events as the
// upstream sends them (not gathered), several responses on one socket;
// a token limited to some models has each response.create checked; each
// finished response counts in the rollups with its usage.
func TestSocket(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, map[string]string{"STREAM_IDLE_SECONDS": "3"})
			t.Run("relay", func(t *testing.T) { w.testSocketRelay(t, up) })
			t.Run("close", func(t *testing.T) { w.testSocketClose(t, up) })
			t.Run("rotation", func(t *testing.T) { w.testSocketRotation(t, up) })
			t.Run("scope", func(t *testing.T) { w.testSocketScope(t, up) })
		})
	}
}

// dialSocket opens the Responses WebSocket on w with header.
func (w *worker) dialSocket(t *testing.T, header map[string]string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	for k, v := range header {
		h.Set(k, v)
	}
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	return d.Dial("ws"+strings.TrimPrefix(w.base, "http")+"/v1/responses", h)
}

// socketTurn sends one response.create for model and reads the events
// up to response.completed (or an error event), with when each came.
func socketTurn(t *testing.T, c *websocket.Conn, model string) (events []string, at []time.Duration) {
	t.Helper()
	msg := `{"type":"response.create","model":"` + model + `","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],"stream":true}`
	start := time.Now()
	must(t, c.WriteMessage(websocket.TextMessage, []byte(msg)))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		kind, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading the events of %s after %d: %v", model, len(events), err)
		}
		if kind != websocket.TextMessage {
			t.Fatalf("message %d is not text (%d)", len(events), kind)
		}
		events, at = append(events, string(data)), append(at, time.Since(start))
		if typ := gjson.Get(string(data), "type").String(); typ == "response.completed" || typ == "error" {
			return events, at
		}
	}
}

func (w *worker) testSocketRelay(t *testing.T, up *fakeupstream.Server) {
	key := "sk-socket-" + randomHex(12)
	w.importKeys(t, "openai", key)
	// No credential: the handshake is refused before any upstream call.
	before := len(up.Requests())
	if _, resp, err := w.dialSocket(t, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("handshake without a credential: %v %v, want 401", err, resp)
	}
	if n := len(up.Requests()); n != before {
		t.Fatalf("a refused handshake reached the upstream (%d requests)", n-before)
	}

	// A WebSocket anywhere else is refused with 426 (Codex then uses
	// HTTPS at once), before any upstream call.
	// (A socket on a path that is no inference endpoint is outside the
	// token's scope: 403.)
	for path, status := range map[string]int{"/api/openai/responses": http.StatusUpgradeRequired, "/v1/chat/completions": http.StatusForbidden} {
		h := http.Header{"Authorization": {"Bearer " + w.token}}
		_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(w.base, "http")+path, h)
		if err == nil || resp == nil || resp.StatusCode != status {
			t.Fatalf("a WebSocket on %s: %v %+v, want %d", path, err, resp, status)
		}
	}
	if n := len(up.Requests()); n != before {
		t.Fatalf("a refused handshake reached the upstream (%d requests)", n-before)
	}

	c, resp, err := w.dialSocket(t, map[string]string{"Authorization": "Bearer " + w.token,
		"OpenAI-Beta": "responses_websockets=2026-02-06", fakeupstream.SlowHeader: "6x250"})
	if err != nil {
		t.Fatalf("handshake: %v %+v", err, resp)
	}
	defer c.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("X-Keypool-Request-Id") == "" || resp.Header.Get("X-Keypool-Key") == "" {
		t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
	}
	for turn, model := range []string{"gpt-socket-a", "gpt-socket-b"} {
		if turn > 0 {
			time.Sleep(1500 * time.Millisecond) // the user thinks: not the response's latency
		}
		events, at := socketTurn(t, c, model)
		want := fakeupstream.SocketEvents(model, 6)
		if strings.Join(events, "\n") != strings.Join(want, "\n") {
			t.Fatalf("turn %d: events\n%s\nwant\n%s", turn, strings.Join(events, "\n"), strings.Join(want, "\n"))
		}
		// Six deltas 250 ms apart: the first text arrives well before the
		// last, and they come spread out, not gathered at the end.
		first, last := at[2], at[len(at)-1]
		if last-first < 900*time.Millisecond || first > last/2 {
			t.Fatalf("turn %d: events not relayed as sent: first delta at %v, completed at %v (%v)", turn, first, last, at)
		}
	}
	c.Close()

	var shake *fakeupstream.Request
	var msgs []fakeupstream.Request
	for _, r := range up.Requests()[before:] {
		switch {
		case r.Method == fakeupstream.SocketMethod:
			msgs = append(msgs, r)
		case r.Path == "/v1/responses" && r.Status == http.StatusSwitchingProtocols:
			shake = &r
		}
	}
	if shake == nil || shake.Key != key || len(msgs) != 2 {
		t.Fatalf("upstream saw handshake %+v and %d messages, want key %s and 2", shake, len(msgs), mask(key))
	}
	if got := shake.Header.Get("OpenAI-Beta"); got != "responses_websockets=2026-02-06" {
		t.Errorf("OpenAI-Beta upstream = %q", got)
	}
	for _, h := range []string{"Authorization", "X-Api-Key"} {
		if strings.Contains(shake.Header.Get(h), w.token) {
			t.Errorf("the client's token went upstream in %s", h)
		}
	}
	if msgs[0].Model != "gpt-socket-a" || msgs[1].Model != "gpt-socket-b" || !strings.Contains(string(msgs[0].Body), `"input_text","text":"hi"`) {
		t.Errorf("messages upstream: %s / %s", msgs[0].Body, msgs[1].Body)
	}
	// Each finished response is a request in the rollups, with its usage
	// and its latency from the message that asked for it (eight pauses
	// of 250 ms between its events: about 2 s, not counting the 1.5 s
	// the client waited before it asked).
	for _, model := range []string{"gpt-socket-a", "gpt-socket-b"} {
		eventually(t, model+" counted", func() bool {
			got := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&model="+model, "").json()
			ms := got.Get("totals.latency_avg_ms").Float()
			t.Logf("%s: %s", model, got.Get("totals").Raw)
			return got.Get("totals.requests").Int() == 1 && got.Get("totals.prompt_tokens").Int() == 5 &&
				got.Get("totals.completion_tokens").Int() == 7 && ms >= 1900 && ms < 3000
		})
	}
}

// testSocketClose: a client that hangs up closes the upstream's socket; a
// session where nothing moves for STREAM_IDLE_SECONDS (3 s here) is
// closed on both sides; an isolate relays at most six sessions at once
// (each holds a Go instance) and answers the seventh 426, which gets a
// socket again once one has closed.
func (w *worker) testSocketClose(t *testing.T, up *fakeupstream.Server) {
	auth := map[string]string{"Authorization": "Bearer " + w.token}
	c, _, err := w.dialSocket(t, auth)
	must(t, err)
	socketTurn(t, c, "gpt-socket-close")
	c.Close()
	eventually(t, "the upstream socket closed after the client left", func() bool { return up.OpenSockets() == 0 })

	c, _, err = w.dialSocket(t, auth)
	must(t, err)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, _, err = c.ReadMessage()
	idle := time.Since(start)
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseNormalClosure || idle < 2500*time.Millisecond || idle > 8*time.Second {
		t.Fatalf("an idle session ended after %v with %v, want a normal close after about 3 s", idle, err)
	}
	eventually(t, "the idle session's upstream socket closed", func() bool { return up.OpenSockets() == 0 })

	stats := func(when string) {
		st := w.adminCall(t, "GET", "/admin/api/debug/stats", "").json()
		t.Logf("%s: %d Go instances, %.1f MiB of wasm memory", when, st.Get("instances").Int(), float64(st.Get("wasm_bytes").Int())/(1<<20))
	}
	stats("no session open")
	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < 6; i++ {
		c, resp, err := w.dialSocket(t, auth)
		if err != nil {
			t.Fatalf("session %d: %v %+v", i+1, err, resp)
		}
		open = append(open, c)
	}
	stats("six sessions open")
	_, resp, err := w.dialSocket(t, auth)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("a seventh session: %v %+v, want 426 (Codex then uses HTTPS at once)", err, resp)
	}
	if body, _ := io.ReadAll(resp.Body); gjson.GetBytes(body, "error.code").String() != "too_many_websockets" {
		t.Fatalf("a seventh session: %s", body)
	}
	eventually(t, "the seventh session's upstream socket closed", func() bool { return up.OpenSockets() == 6 })
	open[0].Close()
	open = open[1:]
	eventually(t, "a session again once one has closed", func() bool {
		c, _, err := w.dialSocket(t, auth)
		if err == nil {
			open = append(open, c)
		}
		return err == nil
	})
}

func (w *worker) testSocketRotation(t *testing.T, up *fakeupstream.Server) {
	bad, limited, good := "sk-sockbad-"+randomHex(12), "sk-socklim-"+randomHex(12), "sk-sockok-"+randomHex(12)
	// Only keys that fail at the handshake: the relay test's key goes.
	for _, k := range w.adminCall(t, "GET", "/admin/api/keys?provider=openai", "").json().Get("keys.#.id").Array() {
		w.adminCall(t, "DELETE", "/admin/api/keys/"+k.String(), "")
	}
	w.importKeys(t, "openai", bad, limited)
	up.SetRule(bad, fakeupstream.OpenAIInvalidKey(mask(bad)))
	up.SetRule(limited, fakeupstream.OpenAIRateLimitedNoHint(""))
	before := len(up.Requests())
	_, resp, err := w.dialSocket(t, map[string]string{"Authorization": "Bearer " + w.token})
	if err == nil || resp == nil || resp.StatusCode < 400 {
		t.Fatalf("handshake with only failing keys: %v %+v, want an error answer", err, resp)
	}
	tried := map[string]bool{}
	for _, r := range up.Requests()[before:] {
		tried[r.Key] = true
	}
	if !tried[bad] || !tried[limited] {
		t.Fatalf("the handshake did not move on to the next key: tried %v", tried)
	}
	eventually(t, "the rejected key blocked and the limited one cooling", func() bool {
		return w.keyState(t, "openai", bad).Get("status").String() == "blocked" &&
			strings.Contains(w.keyState(t, "openai", limited).Raw, "cooling")
	})
	// A working key serves the next handshake, and the session with it.
	w.importKeys(t, "openai", good)
	before = len(up.Requests())
	c, resp, err := w.dialSocket(t, map[string]string{"Authorization": "Bearer " + w.token})
	if err != nil {
		t.Fatalf("handshake: %v %+v", err, resp)
	}
	defer c.Close()
	if events, _ := socketTurn(t, c, "gpt-socket-rot"); !strings.Contains(events[len(events)-1], "response.completed") {
		t.Fatalf("session on the working key: %v", events)
	}
	for _, r := range up.Requests()[before:] {
		if r.Key != good {
			t.Fatalf("%s %s went upstream with %s, not the working key", r.Method, r.Path, mask(r.Key))
		}
	}
}

func (w *worker) testSocketScope(t *testing.T, up *fakeupstream.Server) {
	r := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"socket scope","models":["gpt-socket-ok"]}`)
	tok := r.json().Get("token").String()
	if r.status != http.StatusCreated || tok == "" {
		t.Fatalf("create token: %d %s", r.status, r.body)
	}
	refusedCount := func() int64 {
		return w.adminCall(t, "GET", "/admin/api/stats?granularity=day&model=%28refused%29", "").json().Get("totals.rejected").Int()
	}
	wasRefused := refusedCount()
	c, resp, err := w.dialSocket(t, map[string]string{"Authorization": "Bearer " + tok})
	if err != nil {
		t.Fatalf("handshake: %v %+v", err, resp)
	}
	defer c.Close()
	before := len(up.Requests())
	events, _ := socketTurn(t, c, "gpt-socket-other")
	if len(events) != 1 || gjson.Get(events[0], "error.code").String() != "model_not_allowed" {
		t.Fatalf("a model outside the token's scope: %v", events)
	}
	// A message whose model cannot be read is refused too.
	must(t, c.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create","model":`)))
	if _, data, err := c.ReadMessage(); err != nil || gjson.GetBytes(data, "error.code").String() != "invalid_json" {
		t.Fatalf("a message that is not JSON: %s %v", data, err)
	}
	if events, _ = socketTurn(t, c, "gpt-socket-ok"); !strings.Contains(events[len(events)-1], "response.completed") {
		t.Fatalf("the allowed model: %v", events)
	}
	for _, r := range up.Requests()[before:] {
		if r.Model == "gpt-socket-other" || r.Method == fakeupstream.SocketMethod && !gjson.ValidBytes(r.Body) {
			t.Fatalf("a refused message reached the upstream: %s", r.Body)
		}
	}
	// The refused model counts as a rejected request once the session is over.
	c.Close()
	eventually(t, "the refused model counted", func() bool { return refusedCount() == wasRefused+1 })
	// A token for another provider is refused at the handshake.
	other := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"socket anthropic","providers":["anthropic"]}`).json().Get("token").String()
	if _, resp, err := w.dialSocket(t, map[string]string{"Authorization": "Bearer " + other}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("handshake with an anthropic-only token: %v %v, want 403", err, resp)
	}
}
