package proxy

import (
	"database/sql"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/usage"
)

// The Responses API over WebSocket, which Codex opens before it tries
// HTTPS (GET /v1/responses with Upgrade: websocket). The handshake is a
// request like any other: the client's token is admitted and its
// credential replaced by a pool key, which the attempt machine chooses
// and rotates (a key refused at the handshake makes way for the next).
// Then the socket's messages move in the runtime (socketRelayer); Go sees
// only the model of each response the client asks for, when its token
// is limited to some models, and each finished response's usage, which
// counts as one request in the rollups.

// socketRelayer is an upstream's 101 answer whose WebSocket the runtime
// relays to the client itself (workerjs: entry/sockets.mjs).
type socketRelayer interface {
	// RelaySocket answers the client's handshake with a socket relayed
	// to the upstream's. allow (nil: every model) is asked, without I/O,
	// for the model of each response.create the client sends: a
	// non-empty answer refuses it with that message, and it never reaches
	// the upstream. A session where nothing moves for idle (0: no limit)
	// is closed. next blocks until a response is finished and returns it
	// as JSON {"model","usage","status","ms"} (ms: from the client's
	// message that asked for it); false once the session is over.
	// ok is false when there is no socket to relay (the isolate relays as
	// many as it may); nothing was sent.
	RelaySocket(w http.ResponseWriter, allow func(model string) string, idle time.Duration) (next func() ([]byte, bool), ok bool)
}

// isSocket: r asks to switch to WebSocket.
func isSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// serveSocket serves a WebSocket handshake on /v1 (rest: the path after
// it, up: rest escaped). It goes to the default provider, straight to
// its API (AI Gateway is not asked to carry the socket).
func (px *Proxy) serveSocket(w http.ResponseWriter, r *http.Request, db *sql.DB, set settings.Settings, c client, rest, up string) {
	prov, ok := px.provider(w, px.defaultProvider())
	if !ok {
		return
	}
	if r.Method != http.MethodGet || rest != "/responses" || !prov.ResponsesSocket {
		refuseSocket(w, r.Method+" /v1"+rest+" (default provider "+prov.Name+")")
		return
	}
	t := px.Target(prov)
	t.Gateway = ""
	base, _ := prov.OpenAIBase(t)
	px.forward(w, r, db, set, upstreamCall{prov: prov, url: base + up + upstreamQuery(r.URL), openAIRoute: true,
		client: c, socket: true})
}

// refuseSocket answers a WebSocket keypool does not relay (what: the
// request) with 426, on which Codex goes to HTTPS at once (on a 404 or
// 5xx it retries for six seconds first).
func refuseSocket(w http.ResponseWriter, what string) {
	reply.Error{Status: http.StatusUpgradeRequired, Type: "invalid_request_error", Code: "websocket_not_supported",
		Message: "keypool relays WebSockets only for GET /v1/responses, to a default provider that serves it (openai); " +
			what + " is served over HTTPS only"}.Write(w)
}

// relaySocket relays a served handshake's socket and counts each
// finished response, after the handshake's answer has gone.
func (px *Proxy) relaySocket(w http.ResponseWriter, call upstreamCall, resp *http.Response, attempts int, keyID int64, fin served) served {
	sr, ok := resp.Body.(socketRelayer)
	hd := w.Header()
	hd.Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	hd.Set("X-Keypool-Key", strconv.FormatInt(keyID, 10))
	if p := resp.Header.Get("Sec-Websocket-Protocol"); p != "" {
		hd.Set("Sec-Websocket-Protocol", p)
	}
	allow, refused := socketScope(call)
	var next func() ([]byte, bool)
	if ok {
		next, ok = sr.RelaySocket(w, allow, px.Config().StreamIdle)
	}
	if !ok {
		resp.Body.Close()
		reply.Error{Status: http.StatusUpgradeRequired, Type: "server_error", Code: "too_many_websockets",
			Message: "this keypool isolate relays as many WebSockets as it may; use HTTPS (POST /v1/responses)"}.Write(w)
		fin.class = classUpstream
		return fin
	}
	// The handshake is in the request log (when it is kept); in the
	// rollups each response counts instead.
	fin.counted = true
	fin.latency = px.Now().Sub(fin.started)
	px.logRequest(fin, usage.Usage{})
	px.Defer(func() {
		for v, more := next(); more; v, more = next() {
			px.countResponse(fin, v)
			px.flushDue()
		}
		for i := 0; i < *refused; i++ {
			px.count(served{started: px.Now(), token: fin.token, prov: fin.prov, model: RefusedModel, class: classRejected},
				usage.Usage{}, false, 0, false)
		}
		px.flushDue()
	})
	return fin
}

// socketScope is the model check of a session's token (nil: none), the
// same as over HTTPS (scopeRefusal), and the count of the models it
// refused, counted as rejected requests when the session ends.
func socketScope(call upstreamCall) (func(string) string, *int) {
	refused := 0
	t := call.client.tok
	if t == nil || len(t.Models) == 0 {
		return nil, &refused
	}
	return func(model string) string {
		asked := call
		asked.model, asked.socket = model, false
		e := scopeRefusal(t, asked)
		if e.Status != 0 {
			refused++
		}
		return e.Message
	}, &refused
}

// countResponse counts one finished response of a session in the
// rollups: its model and usage as the provider reported them, its
// latency from the client's message that asked for it.
func (px *Proxy) countResponse(fin served, v []byte) {
	fin.latency = time.Duration(gjson.GetBytes(v, "ms").Int()) * time.Millisecond
	fin.started = px.Now().Add(-fin.latency)
	fin.model = gjson.GetBytes(v, "model").String()
	fin.class = classSuccess
	if gjson.GetBytes(v, "status").String() == "failed" {
		fin.class = classUpstream
	}
	fin.answer = nil // the handshake's log entry is the session's
	u, found := usage.FromJSON(v)
	px.count(fin, u, found, 0, false)
}
