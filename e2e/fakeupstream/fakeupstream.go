// Package fakeupstream plays the AI providers keypool talks to, on
// 127.0.0.1, for tests and benchmarks: OpenAI-compatible chat completions
// (JSON and SSE), model lists, Gemini and Anthropic native paths, with
// per-key scripted failures that use each provider's real status codes and
// error bodies. It records every request it receives.
package fakeupstream

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

// Rule scripts the answer to requests made with one upstream key.
type Rule struct {
	Status int               // HTTP status to answer with
	Body   string            // body to send
	Header map[string]string // extra response headers
	// Models limits the rule to requests for these models; others are
	// served normally. Empty means every request.
	Models []string
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string
	Query  string // raw query
	Header http.Header
	Body   []byte
	Key    string // the upstream key it carried, from whichever header
	Model  string
	Status int    // status the fake answered
	Sent   []byte // the bytes of the answer body the fake wrote
}

// Server is a running fake upstream.
type Server struct {
	URL string // http://127.0.0.1:port

	srv *http.Server
	ln  net.Listener

	mu    sync.Mutex
	rules map[string]Rule
	reqs  []Request
	gates map[string]chan struct{}
}

// Start listens on a free loopback port and serves until Close.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL:   "http://" + ln.Addr().String(),
		ln:    ln,
		rules: map[string]Rule{},
		gates: map[string]chan struct{}{},
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// SetRule scripts the answers for key.
func (s *Server) SetRule(key string, r Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules[key] = r
}

// ClearRule makes key answer normally again (e.g. a key that recovered).
func (s *Server) ClearRule(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rules, key)
}

// ClearRequests forgets the requests received so far, so that a long run
// (the benchmarks) does not keep every one of them in memory.
func (s *Server) ClearRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// Requests returns a copy of the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Gate makes a streamed answer for a request carrying header
// X-Fake-Gate: id pause after its first chunk until release is called
// (or 10 s pass), so a test can prove chunks reach the client one by one.
func (s *Server) Gate(id string) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.gates[id] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// RequestKey returns the upstream key a request carries, in any of the
// places providers read it from.
func RequestKey(r *http.Request) string {
	if v := r.Header.Get("Authorization"); strings.HasPrefix(v, "Bearer ") {
		return strings.TrimPrefix(v, "Bearer ")
	}
	for _, h := range []string{"X-Goog-Api-Key", "X-Api-Key", "Api-Key", "Xi-Api-Key"} {
		if v := r.Header.Get(h); v != "" {
			return v
		}
	}
	return r.URL.Query().Get("key")
}

// ServeHTTP answers like the provider the path belongs to.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, Key: RequestKey(r),
		Model: gjson.GetBytes(body, "model").String(),
	}
	if rec.Model == "" {
		rec.Model = modelInPath(r.URL.Path)
	}
	cw := &capture{ResponseWriter: w}
	defer func() {
		rec.Status, rec.Sent = cw.status, cw.buf
		s.mu.Lock()
		s.reqs = append(s.reqs, rec)
		s.mu.Unlock()
	}()

	s.mu.Lock()
	rule, scripted := s.rules[rec.Key]
	gate := s.gates[r.Header.Get("X-Fake-Gate")]
	s.mu.Unlock()
	if scripted && (len(rule.Models) == 0 || contains(rule.Models, rec.Model)) {
		for k, v := range rule.Header {
			cw.Header().Set(k, v)
		}
		cw.Header().Set("Content-Type", "application/json")
		cw.WriteHeader(rule.Status)
		cw.Write([]byte(rule.Body))
		return
	}
	if rec.Key == "" {
		cw.Header().Set("Content-Type", "application/json")
		cw.WriteHeader(http.StatusUnauthorized)
		cw.Write([]byte(OpenAIInvalidKey("").Body))
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/chat/completions"):
		if rec.Model == BigStreamModel {
			bigStream(cw)
			return
		}
		if gjson.GetBytes(body, "stream").Bool() {
			s.stream(cw, rec.Model, gate)
			return
		}
		writeJSON(cw, ChatCompletion(rec.Model))
	case strings.HasSuffix(r.URL.Path, "/models") && r.Method == http.MethodGet:
		writeJSON(cw, `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}`)
	case strings.Contains(r.URL.Path, ":generateContent"):
		writeJSON(cw, `{"candidates":[{"content":{"parts":[{"text":"Hello from the fake Gemini."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":6,"totalTokenCount":9},"modelVersion":"`+rec.Model+`"}`)
	case strings.HasSuffix(r.URL.Path, "/messages"):
		writeJSON(cw, `{"id":"msg_fake","type":"message","role":"assistant","model":"`+rec.Model+`","content":[{"type":"text","text":"Hello from the fake Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":6}}`)
	default:
		writeJSON(cw, `{"ok":true,"path":"`+r.URL.Path+`"}`)
	}
}

// StreamChunks are the SSE events a streamed chat completion sends, in order.
func StreamChunks(model string) []string {
	head := `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1732233000,"model":"` + model + `","choices":[{"index":0,"delta":`
	return []string{
		head + `{"role":"assistant","content":"Hel"},"finish_reason":null}]}` + "\n\n",
		head + `{"content":"lo"},"finish_reason":null}]}` + "\n\n",
		head + `{},"finish_reason":"stop"}]}` + "\n\n",
		"data: [DONE]\n\n",
	}
}

func (s *Server) stream(w *capture, model string, gate chan struct{}) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	for i, c := range StreamChunks(model) {
		w.Write([]byte(c))
		w.Flush()
		if i == 0 && gate != nil {
			select {
			case <-gate:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// BigStreamModel is the model name for which a chat completion, streamed
// or not, is answered with BigStreamSize bytes of SSE: BigStreamEvents
// content events of BigStreamEventSize bytes each, flushed one by one, then
// a finish event and "data: [DONE]". The benchmarks use it to time a large
// streamed answer. The bytes sent for it are not kept in Request.Sent.
const BigStreamModel = "big-stream"

// Shape of the BigStreamModel answer.
const (
	BigStreamEvents    = 1024
	BigStreamEventSize = 4096
)

var (
	bigStreamOnce   sync.Once
	bigStreamChunks [][]byte
	bigStreamSize   int
)

// BigStreamChunks returns the chunks of the BigStreamModel answer, in order
// (shared: do not modify them).
func BigStreamChunks() [][]byte {
	bigStreamOnce.Do(func() {
		head := `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1732233000,"model":"` + BigStreamModel + `","choices":[{"index":0,"delta":{"content":"`
		tail := `"},"finish_reason":null}]}` + "\n\n"
		pad := BigStreamEventSize - len(head) - len(tail)
		event := []byte(head + strings.Repeat("x", pad) + tail)
		for i := 0; i < BigStreamEvents; i++ {
			bigStreamChunks = append(bigStreamChunks, event)
		}
		fin := StreamChunks(BigStreamModel)
		bigStreamChunks = append(bigStreamChunks, []byte(fin[len(fin)-2]), []byte(fin[len(fin)-1]))
		for _, c := range bigStreamChunks {
			bigStreamSize += len(c)
		}
	})
	return bigStreamChunks
}

// BigStreamSize is the exact length in bytes of the BigStreamModel answer.
func BigStreamSize() int {
	BigStreamChunks()
	return bigStreamSize
}

// bigStream writes the BigStreamModel answer around the capture, so that
// its 4 MiB are not recorded for every request.
func bigStream(w *capture) {
	w.status = http.StatusOK
	rw := w.ResponseWriter
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.Header().Set("Cache-Control", "no-cache")
	rw.WriteHeader(http.StatusOK)
	f, _ := rw.(http.Flusher)
	for _, c := range BigStreamChunks() {
		if _, err := rw.Write(c); err != nil {
			return
		}
		if f != nil {
			f.Flush()
		}
	}
}

// ChatCompletion is a non-streamed chat answer for model.
func ChatCompletion(model string) string {
	return `{"id":"chatcmpl-fake","object":"chat.completion","created":1732233000,"model":"` + model + `","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fake upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
}

// OpenAIInvalidKey is OpenAI's answer to a revoked or mistyped key.
func OpenAIInvalidKey(masked string) Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{
    "error": {
        "message": "Incorrect API key provided: ` + masked + `. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_api_key"
    }
}
`}
}

// OpenAIRateLimited is OpenAI's per-minute rate limit answer for model,
// with a Retry-After of retryAfter seconds.
func OpenAIRateLimited(model string, retryAfter int) Rule {
	return Rule{
		Status: http.StatusTooManyRequests,
		Header: map[string]string{"Retry-After": strconv.Itoa(retryAfter), "X-Ratelimit-Reset-Requests": strconv.Itoa(retryAfter) + "s"},
		Body: `{
    "error": {
        "message": "Rate limit reached for ` + model + ` in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in ` + strconv.Itoa(retryAfter) + `s. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}
`,
		Models: []string{model},
	}
}

// OpenAIBadRequest is OpenAI's answer to invalid parameters: the client's
// fault, not the key's.
func OpenAIBadRequest(model string) Rule {
	return Rule{Status: http.StatusBadRequest, Models: []string{model}, Body: `{
  "error": {
    "message": "Invalid value for 'temperature': expected a number between 0 and 2.",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "invalid_value"
  }
}
`}
}

// OpenAIServerError is the 500 OpenAI sends when it fails internally.
func OpenAIServerError() Rule {
	return Rule{Status: http.StatusInternalServerError, Body: `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`}
}

func writeJSON(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(body))
}

func modelInPath(p string) string {
	i := strings.Index(p, "models/")
	if i < 0 {
		return ""
	}
	m := p[i+len("models/"):]
	if j := strings.IndexAny(m, ":/"); j >= 0 {
		m = m[:j]
	}
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// capture records what the fake sent.
type capture struct {
	http.ResponseWriter
	status int
	buf    []byte
}

func (c *capture) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.buf = append(c.buf, b...)
	return c.ResponseWriter.Write(b)
}

func (c *capture) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
