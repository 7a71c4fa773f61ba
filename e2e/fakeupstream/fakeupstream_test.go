package fakeupstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func send(t *testing.T, method, url string, header map[string]string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func chat(t *testing.T, s *Server, path, key, model string) int {
	t.Helper()
	st, _, _ := send(t, "POST", s.URL+path, map[string]string{"Authorization": "Bearer " + key},
		[]byte(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
	return st
}

func TestTimes(t *testing.T) {
	s := start(t)
	r := OpenAIServerError()
	r.Times = 2
	s.SetRule("k1", r)
	var got []int
	for i := 0; i < 4; i++ {
		got = append(got, chat(t, s, "/v1/chat/completions", "k1", "m"))
	}
	if want := []int{500, 500, 200, 200}; !equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	// Requests the rule's Models filter skips do not use up its Times.
	r = OpenAIRateLimited("limited", 5)
	r.Times = 1
	s.SetRule("k2", r)
	got = []int{chat(t, s, "/v1/chat/completions", "k2", "other"), chat(t, s, "/v1/chat/completions", "k2", "limited"), chat(t, s, "/v1/chat/completions", "k2", "limited")}
	if want := []int{200, 429, 200}; !equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	// SetRule restarts the count.
	s.SetRule("k2", r)
	if st := chat(t, s, "/v1/chat/completions", "k2", "limited"); st != 429 {
		t.Errorf("after SetRule again: %d, want 429", st)
	}
	// Without Times the rule never wears out.
	s.SetRule("k3", OpenAIServerError())
	for i := 0; i < 3; i++ {
		if st := chat(t, s, "/v1/chat/completions", "k3", "m"); st != 500 {
			t.Errorf("request %d: %d, want 500", i, st)
		}
	}
}

func TestPaths(t *testing.T) {
	s := start(t)
	r := OpenAIServerError()
	r.Paths = []string{"/embeddings", "/audio/"}
	s.SetRule("k", r)
	if st := chat(t, s, "/v1/chat/completions", "k", "m"); st != 200 {
		t.Errorf("chat: %d, want 200", st)
	}
	if st := chat(t, s, "/v1/embeddings", "k", "m"); st != 500 {
		t.Errorf("embeddings: %d, want 500", st)
	}
	if st := chat(t, s, "/v1/audio/speech", "k", "m"); st != 500 {
		t.Errorf("speech: %d, want 500", st)
	}
}

func TestMultipartEcho(t *testing.T) {
	s := start(t)
	file := bytes.Repeat([]byte{0, 1, 2, 0xFF, '\r', '\n', '-', '-'}, 1000)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("model", "whisper-1")
	fw, _ := mw.CreateFormFile("file", "a.mp3")
	fw.Write(file)
	mw.WriteField("language", "en")
	mw.Close()
	raw := body.Bytes()

	for _, path := range []string{"/v1/audio/transcriptions", "/openai/v1/audio/translations"} {
		st, _, b := send(t, "POST", s.URL+path, map[string]string{"Authorization": "Bearer k", "Content-Type": mw.FormDataContentType()}, raw)
		if st != 200 {
			t.Fatalf("%s: %d %s", path, st, b)
		}
		j := gjson.ParseBytes(b)
		if j.Get("text").String() != "fake transcript" || j.Get("model").String() != "whisper-1" ||
			j.Get("file_sha256").String() != hexSum(file) || j.Get("body_sha256").String() != hexSum(raw) {
			t.Errorf("%s: %s", path, b)
		}
		reqs := s.Requests()
		if q := reqs[len(reqs)-1]; q.Model != "whisper-1" || !bytes.Equal(q.Body, raw) {
			t.Errorf("%s: recorded model %q, body intact %v", path, q.Model, bytes.Equal(q.Body, raw))
		}
	}

	// A rule limited to the multipart model applies.
	r := OpenAIModelNotFound("whisper-1")
	s.SetRule("k2", r)
	if st, _, _ := send(t, "POST", s.URL+"/v1/audio/transcriptions", map[string]string{"Authorization": "Bearer k2", "Content-Type": mw.FormDataContentType()}, raw); st != 404 {
		t.Errorf("rule on multipart model: %d, want 404", st)
	}

	for name, c := range map[string]struct{ ct, body string }{
		"truncated":     {mw.FormDataContentType(), string(raw[:len(raw)/2])},
		"not multipart": {"application/json", `{"model":"whisper-1"}`},
		"no file":       {"multipart/form-data; boundary=xx", "--xx\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--xx--\r\n"},
	} {
		st, _, b := send(t, "POST", s.URL+"/v1/audio/transcriptions", map[string]string{"Authorization": "Bearer k", "Content-Type": c.ct}, []byte(c.body))
		if st != 400 || gjson.GetBytes(b, "error.type").String() != "invalid_request_error" || gjson.GetBytes(b, "error.message").String() == "" {
			t.Errorf("%s: %d %s", name, st, b)
		}
	}
}

func TestRoutes(t *testing.T) {
	s := start(t)
	auth := map[string]string{"Authorization": "Bearer k"}
	for _, c := range []struct {
		method, path, body, ctype, check, want string
	}{
		{"POST", "/v1/embeddings", `{"model":"emb"}`, "application/json", "model", "emb"},
		{"POST", "/v1/embeddings", `{"model":"emb"}`, "application/json", "data.0.embedding.#", "3"},
		{"POST", "/v1/images/generations", `{"model":"dall-e-3"}`, "application/json", "data.0.url", "https://example.invalid/fake.png"},
		{"POST", "/v1/rerank", `{"model":"rr"}`, "application/json", "results.0.relevance_score", "0.9"},
		{"POST", "/v1/responses", `{"model":"gpt-4o"}`, "application/json", "output.0.content.0.text", "Hello from the fake upstream."},
		{"GET", "/v1/models", ``, "application/json", "data.0.id", "gpt-4o-mini"},
		{"GET", "/v1beta/openai/models", ``, "application/json", "data.1.id", "models/gemini-2.5-pro"},
		{"POST", "/v1beta/models/gemini-2.0-flash:generateContent", `{}`, "application/json", "modelVersion", "gemini-2.0-flash"},
		{"POST", "/v1/messages", `{"model":"claude"}`, "application/json", "content.0.type", "text"},
		{"POST", "/v1/audio/speech", `{"model":"tts-1"}`, "audio/mpeg", "", ""},
		{"POST", "/v1/text-to-speech/voice123", `{"model_id":"eleven_multilingual_v2"}`, "audio/mpeg", "", ""},
	} {
		st, h, b := send(t, c.method, s.URL+c.path, auth, []byte(c.body))
		if st != 200 || h.Get("Content-Type") != c.ctype {
			t.Errorf("%s %s: %d %s", c.method, c.path, st, h.Get("Content-Type"))
			continue
		}
		if c.check == "" {
			if !bytes.Equal(b, SpeechAudio()) || len(b) != SpeechAudioSize {
				t.Errorf("%s: %d audio bytes", c.path, len(b))
			}
			continue
		}
		if !json.Valid(b) || gjson.GetBytes(b, c.check).String() != c.want {
			t.Errorf("%s %s: %s", c.method, c.path, b)
		}
	}
	// ElevenLabs' key header is read.
	st, _, _ := send(t, "POST", s.URL+"/v1/text-to-speech/v", map[string]string{"xi-api-key": "xi"}, []byte(`{}`))
	reqs := s.Requests()
	if q := reqs[len(reqs)-1]; st != 200 || q.Key != "xi" {
		t.Errorf("elevenlabs: %d key %q", st, q.Key)
	}
	for _, h := range []string{"api-key", "x-api-key", "x-goog-api-key"} {
		send(t, "POST", s.URL+"/v1/chat/completions", map[string]string{h: "hk"}, []byte(`{"model":"m"}`))
		reqs := s.Requests()
		if q := reqs[len(reqs)-1]; q.Key != "hk" || q.Status != 200 {
			t.Errorf("%s: key %q status %d", h, q.Key, q.Status)
		}
	}
}

func TestConstructors(t *testing.T) {
	rules := map[string]Rule{
		"GeminiDailyQuota":               GeminiDailyQuota("gemini-2.5-pro"),
		"GeminiMinuteQuota":              GeminiMinuteQuota("gemini-2.0-flash", "26s"),
		"GeminiInvalidKey":               GeminiInvalidKey(),
		"GeminiModelNotFound":            GeminiModelNotFound("gemini-9"),
		"GeminiOverloaded":               GeminiOverloaded(),
		"OpenAIInvalidKey":               OpenAIInvalidKey("sk-ab***cd"),
		"OpenAIRateLimited":              OpenAIRateLimited("gpt-4o", 20),
		"OpenAIBadRequest":               OpenAIBadRequest("gpt-4o"),
		"OpenAIServerError":              OpenAIServerError(),
		"OpenAIInsufficientQuota":        OpenAIInsufficientQuota(),
		"OpenAIModelNotFound":            OpenAIModelNotFound("gpt-9"),
		"OpenAIRateLimitedNoHint":        OpenAIRateLimitedNoHint("gpt-4o"),
		"DeepSeekInsufficientBalance":    DeepSeekInsufficientBalance(),
		"SiliconFlowInsufficientBalance": SiliconFlowInsufficientBalance(),
		"SiliconFlowModelForbidden":      SiliconFlowModelForbidden("Qwen/QwQ-32B"),
		"SiliconFlowDailyLimit":          SiliconFlowDailyLimit("Qwen/QwQ-32B"),
		"SiliconFlowInvalidKey":          SiliconFlowInvalidKey(),
		"AnthropicInvalidKey":            AnthropicInvalidKey(),
		"AnthropicRateLimited":           AnthropicRateLimited(30),
		"AnthropicOverloaded":            AnthropicOverloaded(),
		"AnthropicLowCredit":             AnthropicLowCredit(),
	}
	for name, r := range rules {
		if !json.Valid([]byte(r.Body)) {
			t.Errorf("%s: body is not JSON: %s", name, r.Body)
		}
		if r.Status < 400 {
			t.Errorf("%s: status %d", name, r.Status)
		}
	}

	d := gjson.Parse(GeminiDailyQuota("gemini-2.5-pro").Body)
	if d.Get("error.code").Int() != 429 || d.Get("error.details.0.violations.0.quotaId").String() != "GenerateRequestsPerDayPerProjectPerModel-FreeTier" ||
		d.Get("error.details.0.violations.0.quotaDimensions.model").String() != "gemini-2.5-pro" ||
		d.Get("error.details.2.retryDelay").String() != "26s" ||
		!strings.HasSuffix(d.Get("error.message").String(), "limit: 50\nPlease retry in 26.451688064s.") {
		t.Errorf("daily quota body: %s", d.Raw)
	}
	if !strings.HasPrefix(d.Raw, "{\n  \"error\": {\n    \"code\": 429,") {
		t.Errorf("daily quota not pretty-printed like Google: %q", d.Raw[:40])
	}
	m := gjson.Parse(GeminiMinuteQuota("gemini-2.0-flash", "7s").Body)
	if m.Get("error.details.0.violations.0.quotaId").String() != "GenerateRequestsPerMinutePerProjectPerModel-FreeTier" ||
		m.Get("error.details.0.violations.0.quotaValue").String() != "10" ||
		m.Get("error.details.2.retryDelay").String() != "7s" ||
		!strings.Contains(m.Get("error.message").String(), "limit: 10\nPlease retry in 7.") {
		t.Errorf("minute quota body: %s", m.Raw)
	}
	if got := gjson.Parse(SiliconFlowInvalidKey().Body); got.Type != gjson.String || got.String() != "Invalid token" {
		t.Errorf("siliconflow invalid key body %s", SiliconFlowInvalidKey().Body)
	}
	if msg := gjson.Get(OpenAIModelNotFound("gpt-9").Body, "error.message").String(); msg != "The model `gpt-9` does not exist or you do not have access to it." {
		t.Errorf("model not found message %q", msg)
	}
	nh := OpenAIRateLimitedNoHint("")
	if len(nh.Header) != 0 || len(nh.Models) != 0 || strings.Contains(strings.ToLower(nh.Body), "try again in") {
		t.Errorf("no-hint rate limit has a hint: %+v", nh)
	}

	// The fake sends them as scripted, headers included.
	s := start(t)
	s.SetRule("ant", AnthropicRateLimited(30))
	st, h, b := send(t, "POST", s.URL+"/v1/messages", map[string]string{"x-api-key": "ant"}, []byte(`{"model":"claude"}`))
	if st != 429 || h.Get("Retry-After") != "30" || string(b) != AnthropicRateLimited(30).Body {
		t.Errorf("anthropic rate limit: %d %v %s", st, h, b)
	}
	s.SetRule("ov", AnthropicOverloaded())
	if st, _, _ := send(t, "POST", s.URL+"/v1/messages", map[string]string{"x-api-key": "ov"}, []byte(`{}`)); st != 529 {
		t.Errorf("anthropic overloaded: %d", st)
	}
}

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
