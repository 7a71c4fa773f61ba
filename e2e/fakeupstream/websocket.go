package fakeupstream

import (
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tidwall/gjson"
)

// The Responses API over WebSocket, as OpenAI serves it at
// GET /v1/responses with Upgrade: websocket: the client sends
// {"type":"response.create", "model":…, "input":…} messages, one at a
// time (Codex's first one, "generate": false, only warms the session up
// and gets response.completed alone), and gets each response's events (the ones a Responses stream
// sends, as JSON text messages without SSE framing) on the same socket.
// The handshake is answered like any other request (scripted rules, a
// missing key's 401), so a test can make keypool rotate at the handshake.
// Each message is recorded as a Request with Method SocketMethod, the
// handshake's headers and key, and the message as its Body.

// SocketMethod is the Method of a recorded WebSocket message.
const SocketMethod = "WS"

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

// isSocket: r asks to open the Responses WebSocket.
func isSocket(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/responses") &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// socket upgrades r, records the handshake as rec with status 101, and
// answers its messages until the client closes; false: the upgrade
// failed (the upgrader answered 400). A SlowHeader on the handshake
// spaces each response's text deltas ("<n>x<ms>": n deltas, ms apart),
// as a slow stream does.
func (s *Server) socket(w http.ResponseWriter, r *http.Request, rec Request) bool {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return false
	}
	rec.Status = http.StatusSwitchingProtocols
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	s.open++
	s.mu.Unlock()
	defer func() {
		conn.Close()
		s.mu.Lock()
		s.open--
		s.mu.Unlock()
	}()
	n, gap, slow := parseSlow(r.Header.Get(SlowHeader))
	if !slow {
		n = 4
	}
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil {
			return true
		}
		model := gjson.GetBytes(msg, "model").String()
		s.mu.Lock()
		s.reqs = append(s.reqs, Request{Method: SocketMethod, Path: r.URL.Path, Header: rec.Header, Key: rec.Key,
			Model: model, Body: msg, Status: http.StatusOK, Began: time.Now()})
		s.mu.Unlock()
		if kind != websocket.TextMessage || gjson.GetBytes(msg, "type").String() != "response.create" {
			conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"error","status":400,"error":{"type":"invalid_request_error",`+
				`"code":"unknown_message","message":"expected a response.create message"}}`))
			continue
		}
		events := SocketEvents(model, n)
		if gjson.GetBytes(msg, "generate").Type == gjson.False {
			// Codex's prewarm: the request is set up, nothing generated.
			events = []string{`{"type":"response.completed","sequence_number":0,"response":{"id":"resp_warm","object":"response",` +
				`"status":"completed","model":"` + model + `","output":[]}}`}
		}
		for i, ev := range events {
			if i > 1 && gap > 0 {
				time.Sleep(gap)
			}
			if conn.WriteMessage(websocket.TextMessage, []byte(ev)) != nil {
				return true
			}
		}
	}
}

// OpenSockets is the number of WebSocket sessions open now.
func (s *Server) OpenSockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// SocketEvents are the messages answering one response.create for model
// with n text deltas: the events of a Responses stream (responsesSlow),
// each a JSON object on its own, the last one response.completed with
// the usage of a slow stream (5 in, 7 out).
func SocketEvents(model string, n int) []string {
	var out []string
	for _, ev := range responsesSlow(model, n) {
		_, data, _ := strings.Cut(ev, "\ndata: ")
		out = append(out, strings.TrimSuffix(data, "\n\n"))
	}
	return out
}
