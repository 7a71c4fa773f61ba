package proxy

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/usage"
)

// RequestIDHeader carries the id of every answer keypool sends; for a
// proxied request it finds the request's entry in the request log
// (GET /admin/api/requests/{id}), when it was kept.
const RequestIDHeader = "X-Keypool-Request-Id"

// NewRequestID is a request id: unix ms << store.RequestIDShift | random
// bits, written in base 36. It orders by time, so the log needs no index
// of its own; two requests in the same millisecond share an id once in
// 4 096 (the log then keeps the first).
// (Its draws, and the sample's, are not Deps.IntN's, which are the key
// choices a test may script.)
func NewRequestID(now time.Time) string {
	return strconv.FormatInt(now.UnixMilli()<<store.RequestIDShift|int64(rand.IntN(1<<store.RequestIDShift)), 36)
}

// sampled draws whether a successful request is kept in the log, with
// probability share.
func sampled(share float64) bool { return share > 0 && rand.Float64() < share }

// ParseRequestID reads a request id; false when s is not one.
func ParseRequestID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 36, 64)
	return id, err == nil && id > 0 && id < 1<<53
}

// answerWriter is the client's response as the proxy writes it: the status
// it got, for the request log, and the request's id and route.
type answerWriter struct {
	reply.Recorder
	id    int64
	route string
}

// answering wraps the proxy route's writer; the id comes from the
// RequestIDHeader the handler set on it.
func answering(w http.ResponseWriter, r *http.Request) *answerWriter {
	id, _ := ParseRequestID(w.Header().Get(RequestIDHeader))
	return &answerWriter{Recorder: reply.NewRecorder(w), id: id, route: r.URL.Path}
}

// answerOf is the answerWriter under w, if any.
func answerOf(w http.ResponseWriter) *answerWriter {
	a, _ := w.(*answerWriter)
	return a
}

// logRequest keeps the request's entry for the next flush when it failed,
// was refused, was retried on another key, or was sampled (the setting
// request_log_sample). Never a body or a secret: ids and counts.
func (px *Proxy) logRequest(s served, u usage.Usage) {
	a := s.answer
	if a == nil || a.id == 0 || (s.class == classSuccess && len(s.uses) <= 1 && !s.sampled) {
		return
	}
	e := store.LoggedRequest{ID: a.id, TokenID: s.token, Provider: s.prov, Model: s.model, Route: a.route,
		Status: a.Status(), Class: s.class, KeyID: s.key, Attempts: attemptsJSON(s.uses, s.started),
		Prompt: u.Prompt, Completion: u.Completion, Cached: u.Cached, Estimated: u.Estimated, LatencyMS: s.latency.Milliseconds()}
	for _, k := range s.uses {
		e.Keys = append(e.Keys, k.Key)
	}
	px.Pool.LogRequest(e)
}

// attemptsJSON is what each attempt met, ms after the request arrived.
func attemptsJSON(uses []rotation.KeyUse, started time.Time) string {
	var b jsonout.Builder
	b.Array()
	for _, k := range uses {
		b.Object().Key("key").Int(k.Key).Key("status").Int(int64(k.Status)).Key("verdict").String(k.Verdict).
			Key("reason").String(k.Reason).Key("ms").Int(max(k.At-started.UnixMilli(), 0)).EndObject()
	}
	return string(b.EndArray().Bytes())
}
