// Package fakeupstream plays the AI providers keypool talks to, on
// 127.0.0.1, for tests and benchmarks: OpenAI-compatible chat completions
// (JSON and SSE), embeddings, images, audio (speech, transcriptions and
// translations), rerank, responses and model lists; Gemini, Anthropic and
// ElevenLabs native paths; with per-key scripted failures that use each
// provider's real status codes, headers and error bodies. It records every
// request it receives.
package fakeupstream

import (
	"io"
	"net"
	"net/http"
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
	// Paths limits the rule to requests whose path contains one of these
	// substrings; others are served normally. Empty means every path.
	Paths []string
	// Times, when > 0, applies the rule to the first Times requests of the
	// key that match Models and Paths only; later ones are served normally
	// ("fails once, then works"). The count restarts with each SetRule.
	Times int
	// Delay holds the answer's headers back this long (a hung upstream).
	Delay time.Duration
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
	// Slow streams (SlowHeader): when the first event was written and when
	// the fake stopped writing; Gone: it stopped because the client's
	// connection was closed (or a write to it failed) before the end.
	Began, Ended time.Time
	Gone         bool
}

// Server is a running fake upstream.
type Server struct {
	URL string // http://127.0.0.1:port

	srv *http.Server
	ln  net.Listener

	mu    sync.Mutex
	rules map[string]Rule
	used  map[string]int // per key: requests its rule has answered
	reqs  []Request
	gates map[string]chan struct{}
	// prompts: per key, the prompt prefixes it was sent (cachedChat).
	prompts map[string]map[uint64]bool
	open    int // WebSocket sessions open
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
		used:  map[string]int{},
		gates: map[string]chan struct{}{},

		prompts: map[string]map[uint64]bool{},
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// SetRule scripts the answers for key, replacing any earlier rule for it
// (and restarting its Times count).
func (s *Server) SetRule(key string, r Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules[key] = r
	delete(s.used, key)
}

// ClearRule makes key answer normally again (e.g. a key that recovered).
func (s *Server) ClearRule(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rules, key)
	delete(s.used, key)
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
	in := readIncoming(r)
	cw := &capture{ResponseWriter: w}
	upgraded := false
	defer func() {
		if upgraded { // recorded at the upgrade
			return
		}
		in.rec.Status, in.rec.Sent = cw.status, cw.buf
		s.mu.Lock()
		s.reqs = append(s.reqs, in.rec)
		s.mu.Unlock()
	}()
	rule, applies, gate := s.scripted(&in.rec, r.Header.Get("X-Fake-Gate"))
	if applies {
		if rule.Delay > 0 {
			select {
			case <-time.After(rule.Delay):
			case <-r.Context().Done():
				return
			}
		}
		writeStatus(cw, rule.Status, rule.Header, rule.Body)
		return
	}
	if in.rec.Key == "" {
		writeStatus(cw, http.StatusUnauthorized, nil, OpenAIInvalidKey("").Body)
		return
	}
	if sel := accountSelector(r.Header); sel.Status != 0 {
		// OpenAI refuses an organisation or project header that does not
		// name the key's own, before it looks at the request.
		writeStatus(cw, sel.Status, nil, sel.Body)
		return
	}
	if isSocket(r) {
		upgraded = s.socket(w, r, in.rec)
		return
	}
	accountHeaders(cw.Header(), r.URL.Path)
	if s.slowStream(cw, r, &in.rec, in.body) || s.largeAnswer(cw, r, &in.rec) {
		return
	}
	s.answer(cw, r, in, gate)
}

// incoming is a request as the fake read it.
type incoming struct {
	rec     Request
	body    []byte
	form    *multipartForm // an audio upload's
	formErr error
}

func readIncoming(r *http.Request) incoming {
	body, _ := io.ReadAll(r.Body)
	in := incoming{body: body, rec: Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, Key: RequestKey(r),
		Model: gjson.GetBytes(body, "model").String(),
	}}
	if r.Method == http.MethodPost && isAudioUpload(r.URL.Path) {
		in.form, in.formErr = parseMultipart(r.Header.Get("Content-Type"), body)
		in.rec.Model = ""
		if in.form != nil {
			in.rec.Model = in.form.model
		}
	}
	if in.rec.Model == "" {
		in.rec.Model = modelInPath(r.URL.Path)
	}
	if in.rec.Model == "" { // ElevenLabs names it model_id
		in.rec.Model = gjson.GetBytes(body, "model_id").String()
	}
	return in
}

// scripted is the rule scripted for rec's key, whether it applies to this
// request (counting it against the rule's Times), and the gate named.
func (s *Server) scripted(rec *Request, gateName string) (Rule, bool, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rule, scripted := s.rules[rec.Key]
	applies := scripted && rule.matches(rec.Model, rec.Path)
	if applies && rule.Times > 0 {
		if s.used[rec.Key] >= rule.Times {
			applies = false
		} else {
			s.used[rec.Key]++
		}
	}
	return rule, applies, s.gates[gateName]
}

// writeStatus sends a JSON answer with status and extra headers.
func writeStatus(w http.ResponseWriter, status int, header map[string]string, body string) {
	w.Header().Set("Content-Type", "application/json")
	for k, v := range header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// answer is the provider's success for the path.
func (s *Server) answer(cw *capture, r *http.Request, in incoming, gate chan struct{}) {
	post := r.Method == http.MethodPost
	model := in.rec.Model
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, EchoHeadersPath):
		echoHeaders(cw, r)
	case strings.HasSuffix(p, "/chat/completions"):
		switch {
		case model == BigStreamModel:
			bigStream(cw)
		case gjson.GetBytes(in.body, "stream").Bool():
			s.stream(cw, model, gate, gjson.GetBytes(in.body, "stream_options.include_usage").Bool())
		case strings.HasPrefix(model, CacheModelPrefix):
			writeJSON(cw, s.cachedChat(in.rec.Key, model, in.body))
		default:
			writeJSON(cw, ChatCompletion(model))
		}
	case post && strings.HasSuffix(p, "/embeddings"):
		writeJSON(cw, Embedding(model))
	case post && strings.HasSuffix(p, "/images/generations"):
		writeJSON(cw, ImageGeneration)
	case post && strings.HasSuffix(p, "/audio/speech"), post && strings.Contains(p, "/v1/text-to-speech/"):
		writeAudio(cw)
	case post && isAudioUpload(p):
		if in.formErr != nil {
			writeStatus(cw, http.StatusBadRequest, nil, openAIError(in.formErr.Error(), "invalid_request_error", "file", ""))
			return
		}
		writeJSON(cw, Transcription(in.form.model, in.form.fileSHA256, sha256Hex(in.body)))
	case post && strings.HasSuffix(p, "/rerank"):
		writeJSON(cw, Rerank(model))
	case post && strings.HasSuffix(p, "/responses"):
		writeJSON(cw, Response(model))
	case strings.HasSuffix(p, "/models") && r.Method == http.MethodGet:
		if strings.Contains(p, "/v1beta/openai/") {
			writeJSON(cw, GeminiOpenAIModels)
		} else {
			writeJSON(cw, OpenAIModels)
		}
	case strings.Contains(p, ":generateContent"):
		if a, ok := geminiJSONAnswer(model, in.body); ok {
			writeJSON(cw, a)
			return
		}
		writeJSON(cw, GeminiGenerateContent(model))
	case strings.HasSuffix(p, "/messages"):
		writeJSON(cw, AnthropicMessage(model))
	default:
		writeJSON(cw, `{"ok":true,"path":"`+r.URL.Path+`"}`)
	}
}
