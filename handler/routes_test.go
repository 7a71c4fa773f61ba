package handler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/store"
)

// Tests of where each route goes, with which key and which body.

const testBoundary = "----keypoolTestBoundary7MA4YWxkTrZu0gW"

// part is one multipart part: a plain field, or a file when filename is set.
type part struct {
	name, filename, contentType string
	data                        []byte
}

// multipartBody builds a multipart/form-data body by hand, so that the
// test knows every byte of it.
func multipartBody(parts ...part) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + testBoundary + "\r\n")
		if p.filename != "" {
			b.WriteString(`Content-Disposition: form-data; name="` + p.name + `"; filename="` + p.filename + "\"\r\n")
			b.WriteString("Content-Type: " + p.contentType + "\r\n")
		} else {
			b.WriteString(`Content-Disposition: form-data; name="` + p.name + "\"\r\n")
		}
		b.WriteString("\r\n")
		b.Write(p.data)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + testBoundary + "--\r\n")
	return b.Bytes()
}

// audioFile is binary "audio": every byte value, CRLFs, things that look
// like multipart delimiters and like a model field, and a provider prefix.
func audioFile() []byte {
	var b bytes.Buffer
	b.Write([]byte{0x49, 0x44, 0x33, 0x04, 0x00})
	for i := 0; i < 256; i++ {
		b.WriteByte(byte(i))
	}
	b.WriteString("\r\n--not-the-boundary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nopenai/whisper-1\r\n")
	b.WriteString("\r\n\r\n--" + testBoundary[:10] + " openai/whisper-1 groq/x \x00\xff")
	return b.Bytes()
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (e *testEnv) multipart(target string, body []byte) *responseRecorder {
	e.t.Helper()
	return e.serve(http.MethodPost, target, string(body),
		"Authorization", "Bearer "+testAuthKey, "Content-Type", "multipart/form-data; boundary="+testBoundary)
}

func TestOpenAIRoutes(t *testing.T) {
	e := newEnv(t, "AUTH_KEY_PASSTHROUGH", "1") // the unknown paths below pass through
	e.addKeys("openai", "sk-openai-key-0000001")
	e.addKeys("groq", "gsk_groq_key_00000001")
	audio := audioFile()
	upload := func(model string) []byte {
		parts := []part{{name: "file", filename: "a.mp3", contentType: "audio/mpeg", data: audio}}
		if model != "" {
			parts = append(parts, part{name: "model", data: []byte(model)})
		}
		return multipartBody(parts...)
	}
	tests := []struct {
		method, path string
		body         []byte // JSON unless multipart
		multipart    bool
		wantPath     string
		wantKey      string
		wantModel    string // in the upstream request
	}{
		{"POST", "/v1/chat/completions", []byte(`{"model":"groq/llama-3.1-8b-instant","messages":[]}`), false,
			"/openai/v1/chat/completions", "gsk_groq_key_00000001", "llama-3.1-8b-instant"},
		{"POST", "/v1/completions", []byte(`{"model":"gpt-3.5-turbo-instruct","prompt":"x"}`), false,
			"/v1/completions", "sk-openai-key-0000001", "gpt-3.5-turbo-instruct"},
		{"POST", "/v1/embeddings", []byte(`{"model":"groq/nomic-embed","input":"x"}`), false,
			"/openai/v1/embeddings", "gsk_groq_key_00000001", "nomic-embed"},
		{"POST", "/v1/images/generations", []byte(`{"model":"dall-e-3","prompt":"a cat"}`), false,
			"/v1/images/generations", "sk-openai-key-0000001", "dall-e-3"},
		{"POST", "/v1/images/generations", []byte(`{"prompt":"no model: the provider's default"}`), false,
			"/v1/images/generations", "sk-openai-key-0000001", ""},
		{"POST", "/v1/audio/speech", []byte(`{"model":"tts-1","input":"hi","voice":"alloy"}`), false,
			"/v1/audio/speech", "sk-openai-key-0000001", "tts-1"},
		{"POST", "/v1/audio/transcriptions", upload("groq/whisper-large-v3"), true,
			"/openai/v1/audio/transcriptions", "gsk_groq_key_00000001", "whisper-large-v3"},
		{"POST", "/v1/audio/translations", upload("whisper-1"), true,
			"/v1/audio/translations", "sk-openai-key-0000001", "whisper-1"},
		{"POST", "/v1/rerank", []byte(`{"model":"groq/rerank-1","query":"q","documents":["a"]}`), false,
			"/openai/v1/rerank", "gsk_groq_key_00000001", "rerank-1"},
		{"POST", "/v1/responses", []byte(`{"model":"gpt-4o-mini","input":"hi"}`), false,
			"/v1/responses", "sk-openai-key-0000001", "gpt-4o-mini"},
		{"POST", "/v1/moderations", []byte(`{"input":"x"}`), false,
			"/v1/moderations", "sk-openai-key-0000001", ""},
		{"POST", "/v1/moderations", []byte(`{"model":"groq/mod-1","input":"x"}`), false,
			"/openai/v1/moderations", "gsk_groq_key_00000001", "mod-1"},
		{"POST", "/v1/foo", []byte(`{"model":"groq/bar","x":1}`), false,
			"/openai/v1/foo", "gsk_groq_key_00000001", "bar"},
		{"GET", "/v1/foo/bar?limit=2", nil, false,
			"/v1/foo/bar", "sk-openai-key-0000001", ""},
		{"GET", "/v1/models/gpt-4o-mini", nil, false,
			"/v1/models/gpt-4o-mini", "sk-openai-key-0000001", "gpt-4o-mini"},
		{"DELETE", "/v1/files/file-abc", nil, false,
			"/v1/files/file-abc", "sk-openai-key-0000001", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			before := len(e.requests())
			var w *responseRecorder
			if tc.multipart {
				w = e.multipart(tc.path, tc.body)
			} else {
				w = e.proxy(tc.method, tc.path, string(tc.body))
			}
			wantServed(t, w, "1")
			reqs := e.requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("%d upstream requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tc.method || r.Path != tc.wantPath {
				t.Errorf("upstream %s %s, want %s %s", r.Method, r.Path, tc.method, tc.wantPath)
			}
			if r.Key != tc.wantKey || r.Header.Get("Authorization") != "Bearer "+tc.wantKey {
				t.Errorf("upstream key %q (Authorization %q), want %q as bearer", r.Key, r.Header.Get("Authorization"), tc.wantKey)
			}
			if r.Model != tc.wantModel {
				t.Errorf("upstream model %q, want %q", r.Model, tc.wantModel)
			}
			if tc.multipart {
				if got := gjson.Get(w.Body.String(), "file_sha256").String(); got != sha(audio) {
					t.Errorf("uploaded file changed on the way: sha256 %s, want %s", got, sha(audio))
				}
			}
		})
	}
	if q := e.requests(); len(q) == 0 {
		t.Fatal("no requests")
	}

	// Routes that must name a model answer 400 without one.
	for _, rest := range []string{"/chat/completions", "/completions", "/embeddings", "/responses",
		"/audio/speech", "/audio/transcriptions", "/audio/translations", "/rerank"} {
		t.Run("no model "+rest, func(t *testing.T) {
			before := e.fetches.Load()
			var w *responseRecorder
			if strings.HasPrefix(rest, "/audio/t") {
				w = e.multipart("/v1"+rest, upload(""))
			} else {
				w = e.proxy(http.MethodPost, "/v1"+rest, `{"input":"x","messages":[]}`)
			}
			er := wantError(t, w, http.StatusBadRequest, "invalid_request")
			if er.Error.Param == nil || *er.Error.Param != "model" {
				t.Errorf("param %v, want model", er.Error.Param)
			}
			if e.fetches.Load() != before {
				t.Errorf("upstream called without a model")
			}
		})
	}
	// An empty model counts as none.
	wantError(t, e.proxy(http.MethodPost, "/v1/chat/completions", `{"model":"","messages":[]}`), http.StatusBadRequest, "invalid_request")
}

// TestMultipartRetryKeepsBody: an upload retried on another key goes out
// byte for byte the same; only the model field loses its provider prefix.
func TestMultipartRetryKeepsBody(t *testing.T) {
	for _, path := range []string{"/v1/audio/transcriptions", "/v1/audio/translations"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t)
			ids := e.addKeys("openai", "sk-broken-key-000001", "sk-working-key-00002")
			e.up.SetRule("sk-broken-key-000001", fakeupstream.OpenAIServerError())
			audio := audioFile()
			body := multipartBody(
				part{name: "prompt", data: []byte("openai/whisper-1 is the model")},
				part{name: "file", filename: "openai/whisper-1.mp3", contentType: "audio/mpeg", data: audio},
				part{name: "model", data: []byte("openai/whisper-1")},
				part{name: "response_format", data: []byte("json")},
			)
			want := bytes.Replace(body, []byte("name=\"model\"\r\n\r\nopenai/whisper-1\r\n--"+testBoundary),
				[]byte("name=\"model\"\r\n\r\nwhisper-1\r\n--"+testBoundary), 1)
			if bytes.Equal(want, body) {
				t.Fatal("test body has no model field to rewrite")
			}
			w := e.multipart(path, body)
			if got := wantServed(t, w, "2"); got != idStr(ids[1]) {
				t.Errorf("served by %s, want %d", got, ids[1])
			}
			reqs := e.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d upstream requests, want 2", len(reqs))
			}
			for i, r := range reqs {
				if !bytes.Equal(r.Body, want) {
					t.Errorf("attempt %d body differs from the client's with the model rewritten:\n got %q\nwant %q", i+1, r.Body, want)
				}
				if ct := r.Header.Get("Content-Type"); ct != "multipart/form-data; boundary="+testBoundary {
					t.Errorf("attempt %d Content-Type %q", i+1, ct)
				}
				if r.Model != "whisper-1" {
					t.Errorf("attempt %d model %q, want whisper-1", i+1, r.Model)
				}
			}
			if got := gjson.Get(w.Body.String(), "file_sha256").String(); got != sha(audio) {
				t.Errorf("file sha256 %s, want %s", got, sha(audio))
			}
			if got := gjson.Get(w.Body.String(), "body_sha256").String(); got != sha(want) {
				t.Errorf("body sha256 %s, want %s", got, sha(want))
			}
			// The first key's streak is recorded under the bare model.
			if k, _ := e.key(ids[0]); len(k.Models) != 1 || k.Models[0].Model != "whisper-1" {
				t.Errorf("broken key models %+v, want whisper-1", k.Models)
			}
		})
	}
}

func TestAliases(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-openai-key-0000001")
	groq := e.addKeys("groq", "gsk_groq_key_00000001")
	e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant","whisper-fast":"groq/whisper-large-v3","smart":"openai/gpt-4o"}}`)

	t.Run("json", func(t *testing.T) {
		body := "{\"messages\":[{\"role\":\"user\",\"content\":\"fast? \\\"fast\\\" ☃\"}],\n  \"model\" : \"fast\", \"metadata\":{\"model\":\"fast\"},\"n\":1}"
		want := strings.Replace(body, `"model" : "fast"`, `"model" : "llama-3.1-8b-instant"`, 1)
		w := e.proxy(http.MethodPost, "/v1/chat/completions", body)
		if got := wantServed(t, w, "1"); got != idStr(groq[0]) {
			t.Errorf("served by %s, want the groq key", got)
		}
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/openai/v1/chat/completions" || r.Key != "gsk_groq_key_00000001" {
			t.Errorf("upstream %s with key %q, want groq", r.Path, r.Key)
		}
		if string(r.Body) != want {
			t.Errorf("upstream body:\n got %q\nwant %q", r.Body, want)
		}
	})
	t.Run("alias to the default provider", func(t *testing.T) {
		wantServed(t, e.chat("smart"), "1")
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/v1/chat/completions" || r.Key != "sk-openai-key-0000001" || r.Model != "gpt-4o" {
			t.Errorf("upstream %s key %q model %q", r.Path, r.Key, r.Model)
		}
	})
	t.Run("multipart", func(t *testing.T) {
		audio := audioFile()
		body := multipartBody(
			part{name: "file", filename: "fast.mp3", contentType: "audio/mpeg", data: audio},
			part{name: "model", data: []byte("whisper-fast")},
		)
		want := bytes.Replace(body, []byte("\r\n\r\nwhisper-fast\r\n"), []byte("\r\n\r\nwhisper-large-v3\r\n"), 1)
		w := e.multipart("/v1/audio/transcriptions", body)
		wantServed(t, w, "1")
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/openai/v1/audio/transcriptions" || r.Key != "gsk_groq_key_00000001" {
			t.Errorf("upstream %s with key %q, want groq", r.Path, r.Key)
		}
		if !bytes.Equal(r.Body, want) {
			t.Errorf("upstream body:\n got %q\nwant %q", r.Body, want)
		}
		if got := gjson.Get(w.Body.String(), "file_sha256").String(); got != sha(audio) {
			t.Errorf("file sha256 %s, want %s", got, sha(audio))
		}
		if got := gjson.Get(w.Body.String(), "model").String(); got != "whisper-large-v3" {
			t.Errorf("upstream saw model %q", got)
		}
	})
	t.Run("state under the target model", func(t *testing.T) {
		e.up.SetRule("gsk_groq_key_00000001", fakeupstream.OpenAIRateLimited("llama-3.1-8b-instant", 30))
		defer e.up.ClearRule("gsk_groq_key_00000001")
		wantError(t, e.chat("fast"), http.StatusTooManyRequests, "rate_limited")
		if k, _ := e.key(groq[0]); len(k.Models) != 1 || k.Models[0].Model != "llama-3.1-8b-instant" {
			t.Errorf("groq key models %+v, want llama-3.1-8b-instant", k.Models)
		}
	})
	t.Run("removed alias", func(t *testing.T) {
		e.putSettings(`{"aliases":null}`)
		e.setNow(t0.Add(time.Minute))
		wantServed(t, e.chat("fast"), "1")
		r := e.requests()[len(e.requests())-1]
		if r.Key != "sk-openai-key-0000001" || r.Model != "fast" {
			t.Errorf("without the alias: key %q model %q, want the default provider with the name as is", r.Key, r.Model)
		}
	})
}

// TestListModels: GET /v1/models is keypool's own answer, the models the
// pool can serve.
func TestListModels(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.addKeys("openai", "sk-openai-key-0000001")          // fetched live
	e.addKeys("google-ai-studio", "AIzaSyModelsKey00001") // fetched live, "models/" prefix
	e.addKeys("groq", "gsk_groq_key_00000001")            // stored list
	blocked := e.addKeys("deepseek", "sk-deepseek-key-000001")
	if _, err := e.db.Exec(`UPDATE keys SET status = 'blocked' WHERE id = ?`, blocked[0]); err != nil {
		t.Fatal(err)
	}
	exhausted := e.addKeys("mistral", "mistral-key-00000000001")
	if _, err := e.db.Exec(`UPDATE keys SET status = 'exhausted' WHERE id = ?`, exhausted[0]); err != nil {
		t.Fatal(err)
	}
	models := store.On(e.db, nil).Models()
	if err := models.Replace(ctx, "groq", []string{"llama-3.1-8b-instant", "whisper-large-v3"}, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := models.Replace(ctx, "deepseek", []string{"deepseek-chat"}, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := models.Replace(ctx, "mistral", []string{"mistral-small"}, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant","cheap":"deepseek/deepseek-chat"},` +
		`"free_models":["groq/free-one","openai/free-*","gpt-oss-*","openai/gpt-free"]}`)

	w := e.proxy(http.MethodGet, "/v1/models", "")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, body %s", w.Code, w.Body.String())
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created *int64 `json:"created"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	decode(t, w, &list)
	if list.Object != "list" {
		t.Errorf("object %q, want list", list.Object)
	}
	want := map[string]string{
		"fast":                              "groq",
		"gpt-4o-mini":                       "openai",
		"gpt-free":                          "openai",
		"groq/free-one":                     "groq",
		"groq/llama-3.1-8b-instant":         "groq",
		"groq/whisper-large-v3":             "groq",
		"google-ai-studio/gemini-2.0-flash": "google-ai-studio",
		"google-ai-studio/gemini-2.5-pro":   "google-ai-studio",
		"openai/gpt-4o-mini":                "openai",
		"openai/gpt-free":                   "openai",
		"openai/text-embedding-3-small":     "openai",
		"text-embedding-3-small":            "openai",
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.Created == nil {
			t.Errorf("model %+v: want object model and a created time", m)
		}
		if owner, ok := want[m.ID]; !ok {
			t.Errorf("unexpected model %q (owned by %s)", m.ID, m.OwnedBy)
		} else if owner != m.OwnedBy {
			t.Errorf("model %q owned by %q, want %q", m.ID, m.OwnedBy, owner)
		}
	}
	if len(list.Data) != len(want) {
		t.Errorf("%d models %v, want %d", len(list.Data), ids, len(want))
	}
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			t.Errorf("ids not sorted and unique: %v", ids)
			break
		}
	}
	// The live lists were fetched once each, with a pool key, and stored.
	var fetched []string
	for _, r := range e.requests() {
		fetched = append(fetched, r.Method+" "+r.Path+" "+r.Key)
	}
	if strings.Join(fetched, "; ") != "GET /v1beta/openai/models AIzaSyModelsKey00001; GET /v1/models sk-openai-key-0000001" {
		t.Errorf("upstream requests %v, want one model list fetch each for google-ai-studio and openai", fetched)
	}
	stored, err := models.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(stored["openai"].Models, ","); got != "gpt-4o-mini,text-embedding-3-small" {
		t.Errorf("stored openai models %q", got)
	}
	if got := strings.Join(stored["google-ai-studio"].Models, ","); got != "gemini-2.0-flash,gemini-2.5-pro" {
		t.Errorf("stored google-ai-studio models %q", got)
	}

	// Later calls read the stored lists: no upstream call, same answer.
	for _, at := range []time.Duration{time.Second, time.Hour} {
		e.setNow(t0.Add(at))
		w2 := e.proxy(http.MethodGet, "/v1/models", "")
		if w2.Code != http.StatusOK || w2.Body.String() != w.Body.String() {
			t.Errorf("at t0+%v: status %d, answer changed:\n%s\nwas\n%s", at, w2.Code, w2.Body.String(), w.Body.String())
		}
	}
	if n := len(e.requests()); n != 2 {
		t.Errorf("%d upstream requests after 3 listings, want 2", n)
	}

	// DEFAULT_PROVIDER decides which ids are bare.
	e.set("DEFAULT_PROVIDER", "groq")
	e.setNow(t0.Add(2 * time.Hour))
	w = e.proxy(http.MethodGet, "/v1/models", "")
	body := w.Body.String()
	for _, id := range []string{`"llama-3.1-8b-instant"`, `"free-one"`, `"openai/gpt-4o-mini"`} {
		if !strings.Contains(body, `"id":`+id) {
			t.Errorf("DEFAULT_PROVIDER=groq: %s missing from %s", id, body)
		}
	}
	if strings.Contains(body, `"id":"gpt-4o-mini"`) {
		t.Errorf("DEFAULT_PROVIDER=groq: bare openai id listed: %s", body)
	}

	// Client auth is required.
	wantError(t, e.serve(http.MethodGet, "/v1/models", ""), http.StatusUnauthorized, "missing_api_key")
}

func TestListModelsEmpty(t *testing.T) {
	e := newEnv(t)
	w := e.proxy(http.MethodGet, "/v1/models", "")
	if w.Code != http.StatusOK || w.Body.String() != `{"object":"list","data":[]}` {
		t.Errorf("empty pool: status %d body %s", w.Code, w.Body.String())
	}
	// A provider whose model list cannot be fetched is listed without
	// models, and asked again next time.
	e.addKeys("openai", "sk-openai-key-0000001")
	e.up.SetRule("sk-openai-key-0000001", fakeupstream.OpenAIServerError())
	e.setNow(t0.Add(time.Minute))
	w = e.proxy(http.MethodGet, "/v1/models", "")
	if w.Code != http.StatusOK || w.Body.String() != `{"object":"list","data":[]}` {
		t.Errorf("failed fetch: status %d body %s", w.Code, w.Body.String())
	}
	if k, evs := e.key(1); k.Status != store.StatusActive || len(evs) != 0 || len(k.Models) != 0 {
		t.Errorf("model list fetch blamed the key: %+v %+v", k, evs)
	}
	e.up.ClearRule("sk-openai-key-0000001")
	e.setNow(t0.Add(2 * time.Minute))
	w = e.proxy(http.MethodGet, "/v1/models", "")
	if !strings.Contains(w.Body.String(), `"id":"gpt-4o-mini"`) {
		t.Errorf("after the upstream recovered: %s", w.Body.String())
	}
}

func TestCompat(t *testing.T) {
	body := "{\"model\":\"groq/llama-3.1-8b-instant\",\n \"messages\":[{\"role\":\"user\",\"content\":\"groq/x ☃\"}]}"
	t.Run("direct", func(t *testing.T) {
		e := newEnv(t, "CF_AIG_TOKEN", "cf-aig-secret-token")
		e.addKeys("groq", "gsk_groq_key_00000001")
		w := e.proxy(http.MethodPost, "/api/compat/chat/completions?x=1&key="+testAuthKey, body)
		wantServed(t, w, "1")
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/openai/v1/chat/completions" || r.Query != "x=1" {
			t.Errorf("upstream %s?%s, want groq's OpenAI-compatible URL", r.Path, r.Query)
		}
		want := strings.Replace(body, `"groq/llama-3.1-8b-instant"`, `"llama-3.1-8b-instant"`, 1)
		if string(r.Body) != want {
			t.Errorf("upstream body:\n got %q\nwant %q", r.Body, want)
		}
		if r.Header.Get("Authorization") != "Bearer gsk_groq_key_00000001" {
			t.Errorf("Authorization %q", r.Header.Get("Authorization"))
		}
		if r.Header.Get("Cf-Aig-Authorization") != "" {
			t.Errorf("gateway token sent straight to the provider")
		}
	})
	t.Run("gateway", func(t *testing.T) {
		e := newEnv(t, "CF_ACCOUNT_ID", "acct123", "AI_GATEWAY", "my-gw", "CF_AIG_TOKEN", "cf-aig-secret-token")
		e.set("AI_GATEWAY_URL", e.up.URL+"/gateway")
		e.set("GROQ_BASE_URL", "http://127.0.0.1:1")
		e.set("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
		e.addKeys("groq", "gsk_groq_key_00000001")
		e.addKeys("anthropic", "sk-ant-anthropic-key-01")
		w := e.proxy(http.MethodPost, "/api/compat/chat/completions", body)
		wantServed(t, w, "1")
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/gateway/acct123/my-gw/compat/chat/completions" {
			t.Errorf("upstream path %q, want the gateway's compat endpoint", r.Path)
		}
		if string(r.Body) != body {
			t.Errorf("body changed on the gateway route:\n got %q\nwant %q", r.Body, body)
		}
		if r.Header.Get("Authorization") != "Bearer gsk_groq_key_00000001" {
			t.Errorf("Authorization %q, want the groq key as bearer", r.Header.Get("Authorization"))
		}
		if r.Header.Get("Cf-Aig-Authorization") != "Bearer cf-aig-secret-token" {
			t.Errorf("cf-aig-authorization %q", r.Header.Get("Cf-Aig-Authorization"))
		}
		// Anthropic's key goes as a bearer token too on the compat route.
		w = e.proxy(http.MethodPost, "/api/compat/chat/completions", `{"model":"anthropic/claude-3-5-haiku-latest","messages":[]}`)
		wantServed(t, w, "1")
		r = e.requests()[len(e.requests())-1]
		if r.Header.Get("Authorization") != "Bearer sk-ant-anthropic-key-01" || r.Header.Get("X-Api-Key") != "" ||
			r.Model != "anthropic/claude-3-5-haiku-latest" {
			t.Errorf("anthropic via compat: Authorization %q x-api-key %q model %q", r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Model)
		}
		// An alias resolves to "provider/model" for the gateway.
		e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant"}}`)
		wantServed(t, e.proxy(http.MethodPost, "/api/compat/chat/completions", `{"model":"fast"}`), "1")
		if r := e.requests()[len(e.requests())-1]; string(r.Body) != `{"model":"groq/llama-3.1-8b-instant"}` {
			t.Errorf("alias via gateway: body %q", r.Body)
		}
	})
	t.Run("model must name its provider", func(t *testing.T) {
		e := newEnv(t)
		e.addKeys("openai", "sk-openai-key-0000001")
		for _, b := range []string{`{"model":"gpt-4o-mini"}`, `{"model":"nope/gpt-4o-mini"}`, `{"messages":[]}`, `{"model":""}`, `{"model":1}`} {
			er := wantError(t, e.proxy(http.MethodPost, "/api/compat/chat/completions", b), http.StatusBadRequest, "invalid_request")
			if er.Error.Param == nil || *er.Error.Param != "model" {
				t.Errorf("%s: param %v, want model", b, er.Error.Param)
			}
		}
		if e.fetches.Load() != 0 {
			t.Errorf("upstream called for a compat request without a provider")
		}
		// With the prefix it is fine, also for the default provider.
		wantServed(t, e.proxy(http.MethodPost, "/api/compat/chat/completions", `{"model":"openai/gpt-4o-mini"}`), "1")
		if r := e.requests()[0]; r.Model != "gpt-4o-mini" || r.Path != "/v1/chat/completions" {
			t.Errorf("openai via compat: path %s model %q", r.Path, r.Model)
		}
	})
}

func TestWorkersAI(t *testing.T) {
	e := newEnv(t, "CF_ACCOUNT_ID", "acct-42")
	e.addKeys("workers-ai", "cf-workers-ai-token-000001")
	w := e.proxy(http.MethodPost, "/api/workers-ai/@cf/meta/llama-3.1-8b-instruct", `{"prompt":"hi"}`)
	wantServed(t, w, "1")
	r := e.requests()[len(e.requests())-1]
	if r.Path != "/client/v4/accounts/acct-42/ai/run/@cf/meta/llama-3.1-8b-instruct" {
		t.Errorf("native path %q, want the account filled in", r.Path)
	}
	if r.Header.Get("Authorization") != "Bearer cf-workers-ai-token-000001" {
		t.Errorf("Authorization %q", r.Header.Get("Authorization"))
	}
	// The OpenAI-compatible route fills it in too.
	wantServed(t, e.chat("workers-ai/@cf/meta/llama-3.1-8b-instruct"), "1")
	r = e.requests()[len(e.requests())-1]
	if r.Path != "/client/v4/accounts/acct-42/ai/v1/chat/completions" || r.Model != "@cf/meta/llama-3.1-8b-instruct" {
		t.Errorf("OpenAI route: path %q model %q", r.Path, r.Model)
	}
}

func TestElevenLabs(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("elevenlabs", "sk_elevenlabs_key_000001")
	limited := fakeupstream.Rule{Status: http.StatusTooManyRequests, Models: []string{"eleven_multilingual_v2"},
		Header: map[string]string{"Retry-After": "30"},
		Body:   `{"detail":{"status":"too_many_concurrent_requests","message":"Too many concurrent requests."}}`}
	e.up.SetRule("sk_elevenlabs_key_000001", limited)
	path := "/api/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM?output_format=mp3_44100_128"

	w := e.proxy(http.MethodPost, path, `{"text":"hi","model_id":"eleven_multilingual_v2"}`)
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	r := e.requests()[len(e.requests())-1]
	if r.Path != "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM" || r.Query != "output_format=mp3_44100_128" {
		t.Errorf("upstream %s?%s", r.Path, r.Query)
	}
	if r.Header.Get("Xi-Api-Key") != "sk_elevenlabs_key_000001" || r.Header.Get("Authorization") != "" {
		t.Errorf("xi-api-key %q Authorization %q, want the key in xi-api-key only", r.Header.Get("Xi-Api-Key"), r.Header.Get("Authorization"))
	}
	k, _ := e.key(ids[0])
	if len(k.Models) != 1 || k.Models[0].Model != "eleven_multilingual_v2" || k.Models[0].State != store.ModelCooling {
		t.Errorf("models %+v, want eleven_multilingual_v2 cooling", k.Models)
	}
	// Another model_id is served by the same key.
	w = e.proxy(http.MethodPost, path, `{"text":"hi","model_id":"eleven_turbo_v2_5"}`)
	wantServed(t, w, "1")
	if ct := w.Header().Get("Content-Type"); ct != "audio/mpeg" || !bytes.Equal(w.Body.Bytes(), fakeupstream.SpeechAudio()) {
		t.Errorf("audio answer changed: %q, %d bytes", ct, w.Body.Len())
	}
	// ElevenLabs has no OpenAI-compatible API.
	wantError(t, e.chat("elevenlabs/eleven_multilingual_v2"), http.StatusBadRequest, "invalid_request")
}

// TestUpstreamPathEscaping: the client's path reaches the provider as the
// client wrote it, and can never climb out of the provider's API prefix:
// the runtime's fetch resolves "." and ".." segments, so "..%2F" would
// otherwise take a Workers AI token to the rest of the Cloudflare API.
func TestUpstreamPathEscaping(t *testing.T) {
	// Full pass-through: the escaping of paths keypool does not know.
	e := newEnv(t, "CF_ACCOUNT_ID", "acct-42", "CF_AIG_TOKEN", "cf-aig-secret-token", "AUTH_KEY_PASSTHROUGH", "1")
	e.addKeys("workers-ai", "cf-workers-ai-token-000001")
	e.addKeys("openai", "sk-openai-key-0000001")
	var sent string
	e.fetch = func(r *http.Request) (*http.Response, error) {
		sent = r.URL.String()
		return http.DefaultClient.Do(r)
	}
	refused := []string{
		"/api/workers-ai/..%2F..%2F..%2F..%2Fuser%2Ftokens%2Fverify",
		"/api/workers-ai/@cf/..%2F..%2F..%2Fuser",
		"/api/workers-ai/..%5C..%5C..%5Cuser",
		"/api/workers-ai/%2e%2e/%2E%2E/user",
		"/api/workers-ai/.%2Fx",
		"/api/openai/v1/..",
		"/api/compat/..%2F..%2Fother-gateway%2Fcompat%2Fchat%2Fcompletions",
		"/v1/..%2F..%2Fdashboard",
		"/v1/chat/..%2F..%2Fx",
	}
	for _, p := range refused {
		t.Run(p, func(t *testing.T) {
			before := e.fetches.Load()
			wantError(t, e.proxy(http.MethodPost, p, `{"model":"openai/gpt-4o-mini"}`), http.StatusBadRequest, "invalid_request")
			if e.fetches.Load() != before {
				t.Errorf("upstream called: %s", sent)
			}
		})
	}
	// Unauthenticated clients get 401 first, not a hint about paths.
	wantError(t, e.serve(http.MethodGet, "/api/workers-ai/..%2Fx", ""), http.StatusUnauthorized, "missing_api_key")

	forwarded := []struct {
		path, wantURL, wantPath string
	}{
		{"/v1/foo%09bar", "/v1/foo%09bar", "/v1/foo\tbar"},
		{"/v1/files/a%3Fx=1", "/v1/files/a%3Fx=1", "/v1/files/a?x=1"},
		{"/v1/files/a%23frag", "/v1/files/a%23frag", "/v1/files/a#frag"},
		{"/v1/files/a%25zz", "/v1/files/a%25zz", "/v1/files/a%zz"},
		{"/v1/files/%252e%252e/x", "/v1/files/%252e%252e/x", "/v1/files/%2e%2e/x"},
		{"/v1/files/..hidden/a.b/...", "/v1/files/..hidden/a.b/...", "/v1/files/..hidden/a.b/..."},
		{"/v1/files/caf%C3%A9%20x", "/v1/files/caf%C3%A9%20x", "/v1/files/café x"},
		{"/api/workers-ai/@cf/meta/llama-3.1-8b-instruct", "/client/v4/accounts/acct-42/ai/run/@cf/meta/llama-3.1-8b-instruct",
			"/client/v4/accounts/acct-42/ai/run/@cf/meta/llama-3.1-8b-instruct"},
	}
	for _, tc := range forwarded {
		t.Run(tc.path, func(t *testing.T) {
			wantServed(t, e.proxy(http.MethodGet, tc.path, ""), "1")
			if want := e.up.URL + tc.wantURL; sent != want {
				t.Errorf("upstream URL %q, want %q", sent, want)
			}
			r := e.requests()[len(e.requests())-1]
			if r.Path != tc.wantPath || r.Query != "" {
				t.Errorf("upstream path %q query %q, want %q", r.Path, r.Query, tc.wantPath)
			}
		})
	}
}

// TestModelListsRefreshed: the cron refreshes model lists older than a
// day, and an admin change shows in /v1/models at once.
func TestModelListsRefreshed(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.addKeys("openai", "sk-openai-key-0000001")
	e.addKeys("groq", "gsk_groq_key_00000001")
	models := store.On(e.db, nil).Models()
	if err := models.Replace(ctx, "openai", []string{"old-model"}, t0.Add(-25*time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := models.Replace(ctx, "groq", []string{"fresh-model"}, t0.Add(-time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	// The keys are not due for their health check: only lists are fetched.
	if _, err := e.db.ExecContext(ctx, `UPDATE keys SET next_check_at = ?`, t0.Add(time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := e.h.Scheduled(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := e.requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/models" || reqs[0].Key != "sk-openai-key-0000001" {
		t.Fatalf("cron fetched %+v, want only the stale openai list", reqs)
	}
	all, err := models.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(all["openai"].Models, ","); got != "gpt-4o-mini,text-embedding-3-small" || all["openai"].UpdatedAt != t0.UnixMilli() {
		t.Errorf("openai list %q updated %d, want the fetched list at t0", got, all["openai"].UpdatedAt)
	}
	if got := strings.Join(all["groq"].Models, ","); got != "fresh-model" {
		t.Errorf("groq list %q, want it kept", got)
	}

	// /v1/models is cached, but an admin change drops the cache.
	body := e.proxy(http.MethodGet, "/v1/models", "").Body.String()
	if strings.Contains(body, "mistral/") {
		t.Fatalf("mistral listed before it has keys: %s", body)
	}
	if err := models.Replace(ctx, "mistral", []string{"mistral-small"}, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if w := e.admin(http.MethodPost, "/admin/api/keys", `{"provider":"mistral","keys":"mistral-key-00000000001"}`); w.Code != http.StatusCreated {
		t.Fatalf("adding a key: %d %s", w.Code, w.Body.String())
	}
	if body := e.proxy(http.MethodGet, "/v1/models", "").Body.String(); !strings.Contains(body, `"id":"mistral/mistral-small"`) {
		t.Errorf("new provider not listed at once: %s", body)
	}
	e.putSettings(`{"aliases":{"quick":"mistral/mistral-small"}}`)
	if body := e.proxy(http.MethodGet, "/v1/models", "").Body.String(); !strings.Contains(body, `"id":"quick"`) {
		t.Errorf("new alias not listed at once: %s", body)
	}
}
