// Package fakeupstream plays the AI providers keypool talks to, on
// 127.0.0.1, for tests and benchmarks: OpenAI-compatible chat completions
// (JSON and SSE), embeddings, images, audio (speech, transcriptions and
// translations), rerank, responses and model lists; Gemini, Anthropic and
// ElevenLabs native paths; with per-key scripted failures that use each
// provider's real status codes, headers and error bodies. It records every
// request it receives.
package fakeupstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
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
	defer func() {
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
	accountHeaders(cw.Header(), r.URL.Path)
	if s.slowStream(cw, r, &in.rec, in.body) {
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
		writeJSON(cw, GeminiGenerateContent(model))
	case strings.HasSuffix(p, "/messages"):
		writeJSON(cw, AnthropicMessage(model))
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

// StreamUsageChunk is the last event before "data: [DONE]" of a stream
// whose request asked for stream_options.include_usage: OpenAI's
// usage-only chunk (empty choices), with ChatCompletion's counts.
func StreamUsageChunk(model string) string {
	return `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1732233000,"model":"` + model +
		`","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}` + "\n\n"
}

// StreamChunksWithUsage are the events of a streamed chat completion
// whose request asked for stream_options.include_usage: StreamChunks with
// StreamUsageChunk before "data: [DONE]".
func StreamChunksWithUsage(model string) []string {
	c := StreamChunks(model)
	return append(c[:len(c)-1:len(c)-1], StreamUsageChunk(model), c[len(c)-1])
}

func (s *Server) stream(w *capture, model string, gate chan struct{}, includeUsage bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	chunks := StreamChunks(model)
	if includeUsage {
		chunks = StreamChunksWithUsage(model)
	}
	for i, c := range chunks {
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

// OpenAIMismatchedOrganization is OpenAI's answer to a request whose
// OpenAI-Organization header names an organisation the key does not
// belong to: a 401 about the header, not the key.
func OpenAIMismatchedOrganization() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{"error":{"message":"OpenAI-Organization header should match organization for API key","type":"invalid_request_error","param":null,"code":"mismatched_organization"}}`}
}

// OpenAIMismatchedProject is the same refusal for an OpenAI-Project
// header that names another project than the key's.
func OpenAIMismatchedProject() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{"error":{"message":"OpenAI-Project header should match project for API key","type":"invalid_request_error","param":null,"code":"mismatched_project"}}`}
}

// accountSelector is the fake's answer to a request that selects an
// organisation or project (Status 0: none selected). The fake's keys
// belong to no organisation a client could name, so any value mismatches.
func accountSelector(h http.Header) Rule {
	switch {
	case h.Get("OpenAI-Organization") != "":
		return OpenAIMismatchedOrganization()
	case h.Get("OpenAI-Project") != "":
		return OpenAIMismatchedProject()
	}
	return Rule{}
}

// Account-naming headers the real providers put on their answers, which
// keypool must not pass on: they tell a client which account is behind
// a pool key.
const (
	FakeOrganization   = "org-fakeorg0123456789"
	FakeProject        = "proj_fakeproject0123"
	FakeAnthropicOrgID = "5b6a3a7e-0f4c-4c8e-9d2a-8c1f0e7d6b5a"
)

// accountHeaders sets the headers a provider's answer carries: OpenAI's
// (and the compatible services') organisation, project, processing time,
// version, request id, rate limits and Cloudflare cookie; Anthropic's
// organisation id and request id.
func accountHeaders(h http.Header, path string) {
	switch {
	case strings.HasSuffix(path, "/messages"):
		h.Set("Anthropic-Organization-Id", FakeAnthropicOrgID)
		h.Set("Request-Id", "req_011fake")
		h.Set("Anthropic-Ratelimit-Requests-Remaining", "49")
	case strings.HasPrefix(path, "/v1beta/") && !strings.Contains(path, "/openai/"):
		h.Set("Server-Timing", "gfet4t7; dur=82")
	default:
		h.Set("Openai-Organization", FakeOrganization)
		h.Set("Openai-Project", FakeProject)
		h.Set("Openai-Processing-Ms", "12")
		h.Set("Openai-Version", "2020-10-01")
		h.Set("X-Request-Id", "req_fake0123")
		h.Set("X-Ratelimit-Limit-Requests", "10000")
		h.Set("X-Ratelimit-Remaining-Requests", "9999")
		h.Set("Set-Cookie", "__cf_bm=fakecookie; path=/; HttpOnly; Secure; SameSite=None")
	}
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

func (r Rule) matches(model, path string) bool {
	if len(r.Models) > 0 && !contains(r.Models, model) {
		return false
	}
	if len(r.Paths) == 0 {
		return true
	}
	for _, p := range r.Paths {
		if strings.Contains(path, p) {
			return true
		}
	}
	return false
}

// Answers the fake serves when no rule applies.

// OpenAIModels is the answer to GET …/models on OpenAI-compatible paths.
const OpenAIModels = `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}`

// GeminiOpenAIModels is the answer to GET …/v1beta/openai/models (Gemini's
// OpenAI-compatible API), whose ids carry Google's "models/" prefix.
const GeminiOpenAIModels = `{"object":"list","data":[{"id":"models/gemini-2.0-flash","object":"model","created":1,"owned_by":"google"},{"id":"models/gemini-2.5-pro","object":"model","created":1,"owned_by":"google"}]}`

// ImageGeneration is the answer to POST …/images/generations.
const ImageGeneration = `{"created":1732233000,"data":[{"url":"https://example.invalid/fake.png"}]}`

// Embedding is the answer to POST …/embeddings for model.
func Embedding(model string) string {
	return `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":"` + model + `","usage":{"prompt_tokens":3,"total_tokens":3}}`
}

// Rerank is the answer to POST …/rerank for model.
func Rerank(model string) string {
	return `{"id":"rerank-fake","results":[{"index":0,"relevance_score":0.9}],"model":"` + model + `"}`
}

// Response is the answer to POST …/responses (OpenAI Responses API).
func Response(model string) string {
	return `{"id":"resp_fake","object":"response","model":"` + model + `","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello from the fake upstream."}]}],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}`
}

// Transcription is the answer to POST …/audio/transcriptions and
// …/audio/translations: it echoes the multipart model field, the hex
// SHA-256 of the file part's content and of the whole raw request body, so
// a test can prove the upload reached the provider intact.
func Transcription(model, fileSHA256, bodySHA256 string) string {
	return `{"text":"fake transcript","model":"` + model + `","file_sha256":"` + fileSHA256 + `","body_sha256":"` + bodySHA256 + `"}`
}

// GeminiGenerateContent is the answer to Gemini's native
// POST …/models/<model>:generateContent.
func GeminiGenerateContent(model string) string {
	return `{"candidates":[{"content":{"parts":[{"text":"Hello from the fake Gemini."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},"modelVersion":"` + model + `"}`
}

// AnthropicMessage is the answer to Anthropic's POST …/v1/messages.
func AnthropicMessage(model string) string {
	return `{"id":"msg_fake","type":"message","role":"assistant","model":"` + model + `","content":[{"type":"text","text":"Hello from the fake Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":6}}`
}

// SpeechAudioSize is the length of SpeechAudio.
const SpeechAudioSize = 2048

// SpeechAudio returns the audio/mpeg bytes answered to POST …/audio/speech
// and ElevenLabs' POST …/v1/text-to-speech/<voice>: SpeechAudioSize
// deterministic bytes, starting like an MPEG-1 Layer III frame. It returns
// a fresh copy on each call.
func SpeechAudio() []byte {
	b := make([]byte, SpeechAudioSize)
	copy(b, []byte{0xFF, 0xFB, 0x90, 0x64})
	for i := 4; i < len(b); i++ {
		b[i] = byte(i*31 + 7)
	}
	return b
}

func writeAudio(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "audio/mpeg")
	w.Header().Set("Content-Length", strconv.Itoa(SpeechAudioSize))
	w.WriteHeader(http.StatusOK)
	w.Write(SpeechAudio())
}

func isAudioUpload(path string) bool {
	return strings.HasSuffix(path, "/audio/transcriptions") || strings.HasSuffix(path, "/audio/translations")
}

type multipartForm struct {
	model      string
	fileSHA256 string
}

// parseMultipart reads a multipart/form-data upload the way OpenAI's audio
// endpoints do: a "file" part and a "model" field. On error the form holds
// what was read before it.
func parseMultipart(contentType string, body []byte) (*multipartForm, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, errors.New("Invalid Content-Type: expected multipart/form-data with a boundary.")
	}
	f := &multipartForm{}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	gotFile := false
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return f, errors.New("Could not parse multipart form: " + err.Error())
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return f, errors.New("Could not parse multipart form: " + err.Error())
		}
		switch part.FormName() {
		case "file":
			f.fileSHA256, gotFile = sha256Hex(data), true
		case "model":
			f.model = string(data)
		}
	}
	if !gotFile {
		return f, errors.New("1 validation error for Request\nbody -> file\n  field required (type=value_error.missing)")
	}
	return f, nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// openAIError is an OpenAI-style error body; empty param or code are null.
func openAIError(message, typ, param, code string) string {
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": message, "type": typ, "param": str(param), "code": str(code),
	}})
	return string(b)
}

// pretty indents a compact JSON body the way the provider does (Google: two
// spaces, OpenAI: four) and ends it with a newline.
func pretty(compact, indent string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(compact), "", indent); err != nil {
		panic("fakeupstream: bad JSON in a canned body: " + err.Error())
	}
	b.WriteByte('\n')
	return b.String()
}

// Scripted failures, with the status codes, headers and bodies the
// providers really send. Use them with SetRule.

// geminiQuota is the 429 RESOURCE_EXHAUSTED the Gemini API
// (generativelanguage.googleapis.com) sends when a free-tier quota is used
// up: a google.rpc.QuotaFailure naming the quota, a Help link and a
// RetryInfo. Google sends no Retry-After header; the delay is only in the
// body (the message's is precise, RetryInfo's truncated to seconds).
func geminiQuota(model, quotaID, limit, retryDelay string) Rule {
	precise := retryDelay
	if d, err := time.ParseDuration(retryDelay); err == nil {
		precise = strconv.FormatFloat(d.Seconds()+0.451688064, 'f', -1, 64) + "s"
	}
	const metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
	return Rule{Status: http.StatusTooManyRequests, Models: []string{model}, Body: pretty(`{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: `+metric+`, limit: `+limit+`\nPlease retry in `+precise+`.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"`+metric+`","quotaId":"`+quotaID+`","quotaDimensions":{"location":"global","model":"`+model+`"},"quotaValue":"`+limit+`"}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"`+retryDelay+`"}]}}`, "  ")}
}

// GeminiDailyQuota is Gemini's answer once a free-tier key has used its
// requests per day for model (quota GenerateRequestsPerDayPerProjectPerModel-FreeTier,
// limit 50): 429 RESOURCE_EXHAUSTED, although a retry only helps tomorrow.
func GeminiDailyQuota(model string) Rule {
	return geminiQuota(model, "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "50", "26s")
}

// GeminiMinuteQuota is Gemini's answer once a free-tier key has used its
// requests per minute for model (quota GenerateRequestsPerMinutePerProjectPerModel-FreeTier,
// limit 10), with RetryInfo.retryDelay = retryDelay (e.g. "26s").
func GeminiMinuteQuota(model string, retryDelay string) Rule {
	return geminiQuota(model, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10", retryDelay)
}

// GeminiInvalidKey is Gemini's answer to a wrong or deleted key: 400
// INVALID_ARGUMENT with reason API_KEY_INVALID (not a 401).
func GeminiInvalidKey() Rule {
	return Rule{Status: http.StatusBadRequest, Body: pretty(`{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}`, "  ")}
}

// GeminiModelNotFound is Gemini's 404 NOT_FOUND for a model name it does
// not know (the request's fault, not the key's).
func GeminiModelNotFound(model string) Rule {
	return Rule{Status: http.StatusNotFound, Models: []string{model}, Body: pretty(`{"error":{"code":404,"message":"models/`+model+` is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.","status":"NOT_FOUND"}}`, "  ")}
}

// GeminiOverloaded is Gemini's 503 UNAVAILABLE when the model is
// overloaded (transient, not the key's fault).
func GeminiOverloaded() Rule {
	return Rule{Status: http.StatusServiceUnavailable, Body: pretty(`{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, "  ")}
}

// OpenAIInsufficientQuota is OpenAI's answer once the account is out of
// credit: a 429 like a rate limit, but with type and code
// insufficient_quota and no Retry-After (waiting does not help).
func OpenAIInsufficientQuota() Rule {
	return Rule{Status: http.StatusTooManyRequests, Body: pretty(`{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`, "    ")}
}

// OpenAIModelNotFound is OpenAI's 404 model_not_found for a model that
// does not exist or that the key's organization may not use.
func OpenAIModelNotFound(model string) Rule {
	return Rule{Status: http.StatusNotFound, Models: []string{model}, Body: pretty(`{"error":{"message":"The model `+"`"+model+"`"+` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}`, "    ")}
}

// OpenAIRateLimitedNoHint is an OpenAI rate_limit_exceeded 429 that gives
// no delay at all: no Retry-After or x-ratelimit-reset header and no
// "try again in" in the message, as OpenAI sometimes answers. It applies to
// model only, or to every model when model is empty.
func OpenAIRateLimitedNoHint(model string) Rule {
	r := Rule{Status: http.StatusTooManyRequests, Body: pretty(`{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "    ")}
	if model != "" {
		r.Models = []string{model}
	}
	return r
}

// DeepSeekInsufficientBalance is DeepSeek's 402 when the account has no
// balance left (api.deepseek.com error codes: 402 Insufficient Balance).
func DeepSeekInsufficientBalance() Rule {
	return Rule{Status: http.StatusPaymentRequired, Body: `{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}`}
}

// SiliconFlowInsufficientBalance is SiliconFlow's 403 code 30001 when the
// account balance cannot pay for the request.
func SiliconFlowInsufficientBalance() Rule {
	return Rule{Status: http.StatusForbidden, Body: `{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}`}
}

// SiliconFlowModelForbidden is SiliconFlow's 403 code 30011 for a paid
// model asked for with a free account's key.
func SiliconFlowModelForbidden(model string) Rule {
	return Rule{Status: http.StatusForbidden, Models: []string{model}, Body: `{"code":30011,"message":"The model is not available for free users. Please recharge to use it.","data":null}`}
}

// SiliconFlowDailyLimit is SiliconFlow's 429 code 50602 once a key has
// used its requests per day (RPD) for model.
func SiliconFlowDailyLimit(model string) Rule {
	return Rule{Status: http.StatusTooManyRequests, Models: []string{model}, Body: `{"code":50602,"message":"Request was rejected due to rate limiting. If you want more, please contact contact@siliconflow.cn. Details:RPD limit reached, limit: 1000, current: 1001","data":null}`}
}

// SiliconFlowInvalidKey is SiliconFlow's 401 for a wrong key: the body is
// a bare JSON string, not an object.
func SiliconFlowInvalidKey() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `"Invalid token"`}
}

// AnthropicInvalidKey is Anthropic's 401 authentication_error for a wrong
// x-api-key.
func AnthropicInvalidKey() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`}
}

// AnthropicRateLimited is Anthropic's 429 rate_limit_error with a
// retry-after of retryAfter seconds and the anthropic-ratelimit-requests-*
// headers showing the 50 RPM limit used up.
func AnthropicRateLimited(retryAfter int) Rule {
	return Rule{
		Status: http.StatusTooManyRequests,
		Header: map[string]string{
			"Retry-After":                            strconv.Itoa(retryAfter),
			"Anthropic-Ratelimit-Requests-Limit":     "50",
			"Anthropic-Ratelimit-Requests-Remaining": "0",
			"Anthropic-Ratelimit-Requests-Reset":     time.Now().Add(time.Duration(retryAfter) * time.Second).UTC().Format(time.RFC3339),
		},
		Body: `{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (5b6a3a7e-0f4c-4c8e-9d2a-8c1f0e7d6b5a) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."}}`,
	}
}

// AnthropicOverloaded is Anthropic's 529 overloaded_error (transient,
// not the key's fault).
func AnthropicOverloaded() Rule {
	return Rule{Status: 529, Body: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`}
}

// AnthropicLowCredit is Anthropic's answer once the account is out of
// credit: a 400 invalid_request_error, which only its message tells apart
// from a bad request.
func AnthropicLowCredit() Rule {
	return Rule{Status: http.StatusBadRequest, Body: `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}`}
}

// EchoHeadersPath ends the path of a route (under any prefix) that answers
// 200 with every request header named X-Echo-<Name> sent back as response
// header <Name>, value for value, and a Content-Length it states itself,
// for HEAD too (as real servers do; Go's server leaves it out otherwise).
const EchoHeadersPath = "/echo/headers"

func echoHeaders(w http.ResponseWriter, r *http.Request) {
	const body = `{"ok":true}`
	for name, vs := range r.Header {
		if out, ok := strings.CutPrefix(name, "X-Echo-"); ok {
			w.Header()[out] = vs
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write([]byte(body))
	}
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
