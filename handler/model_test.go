package handler

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/checks"
	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/provider"
)

// TestJSONModelFields: only the top level of a JSON body names the model;
// a field given twice there, or spelled so that some parser may read it
// as the model, is refused naming the field; nested "model" keys are
// other things (a message's, a tool's) and pass.
func TestJSONModelFields(t *testing.T) {
	big := `{"messages":[{"role":"user","content":"` + strings.Repeat(`x \"model\":\"o1\" {[`, 50000) + `"}],"model":"gpt-4o-mini"}`
	tests := []struct {
		name, body string
		model      string // want, when accepted
		param      string // want refused naming param ("-": refused naming none)
	}{
		{"plain", `{"model":"gpt-4o-mini","messages":[]}`, "gpt-4o-mini", ""},
		{"repeated", `{"model":"gpt-4o-mini","model":"o1-pro"}`, "", "model"},
		{"repeated after other fields", `{"model":"gpt-4o-mini","messages":[{"content":"hi"}],"stream":true,"model":"o1-pro"}`, "", "model"},
		{"repeated, same value", `{"model":"a","model":"a"}`, "", "model"},
		{"escaped spelling", `{"model":"gpt-4o-mini","mod\u0065l":"o1-pro"}`, "", "model"},
		{"escaped spelling alone", `{"\u006dodel":"o1-pro"}`, "", "model"},
		{"other letter case", `{"model":"gpt-4o-mini","Model":"o1-pro"}`, "", "model"},
		{"upper case alone", `{"MODEL":"o1-pro"}`, "", "model"},
		{"model_id repeated", `{"model_id":"a","model_id":"b"}`, "", "model_id"},
		{"model_id escaped", `{"model_id":"a","model\u005fid":"b"}`, "", "model_id"},
		{"not a string", `{"model":42}`, "", "model"},
		{"null", `{"model":null}`, "", "model"},
		{"nested model keys pass", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","model":"o1-pro"}],"metadata":{"model":"x","Model":"y"},"tools":[{"model":"z"}]}`, "gpt-4o-mini", ""},
		{"model in a string", `{"prompt":"\"model\":\"o1-pro\"","model":"gpt-4o-mini"}`, "gpt-4o-mini", ""},
		{"escaped quotes and backslashes", `{"a":"\\\"","model":"m\"1\\"}`, "m\"1\\", ""},
		{"large body, model last", big, "gpt-4o-mini", ""},
		{"white space everywhere", " \r\n{ \"model\" :\t\"m\" , \"n\" : [ 1 , { } ] } \n", "m", ""},
		{"BOM", "\xef\xbb\xbf{\"model\":\"a\",\"model\":\"b\"}", "", "model"},
		{"literals", `{"t":true,"f":false,"n":null,"x":-1.5e3,"y":NaN,"model":"m"}`, "m", ""},
		{"empty object", `{}`, "", ""},
		{"top-level array: no model", `[{"model":"a"},{"model":"b"}]`, "", ""},
		{"top-level string: no model", `"model"`, "", ""},
		{"truncated", `{"model":"gpt-4o-mini","stream":true,"stream_options":{`, "", "-"},
		{"unterminated string", `{"model":"gpt-4o-mini`, "", "-"},
		{"missing value", `{"model":`, "", "-"},
		{"mismatched brackets hide a key", `{"a":[1},"model":"o1-pro"]}`, "", "-"},
		{"a second object", `{"model":"a"}{"model":"b"}`, "", "-"},
		{"trailing comma", `{"model":"a",}`, "", "-"},
		{"key not a string", `{model:"a"}`, "", "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, bad := readBodyModels("application/json", []byte(tc.body))
			if tc.param == "" {
				if bad.Status != 0 {
					t.Fatalf("refused: %+v", bad)
				}
				if m.model.value != tc.model {
					t.Errorf("model %q, want %q", m.model.value, tc.model)
				}
				return
			}
			want := tc.param
			if want == "-" {
				want = ""
			}
			if bad.Status != http.StatusBadRequest || bad.Param != want || bad.Type != "invalid_request_error" {
				t.Errorf("got %+v, want 400 naming %q", bad, want)
			}
		})
	}
}

// TestJSONModelRewrite: the model is rewritten in place, at the field the
// scan found, every other byte kept.
func TestJSONModelRewrite(t *testing.T) {
	body := []byte(`{"messages":[{"model":"nested"}],"model":"openai/gpt-4o-mini","n":1}`)
	m, bad := readBodyModels("", body)
	if bad.Status != 0 {
		t.Fatal(bad)
	}
	got := string(m.model.rewrite(body, "gpt-\"4o\""))
	if want := `{"messages":[{"model":"nested"}],"model":"gpt-\"4o\"","n":1}`; got != want {
		t.Errorf("rewritten %s, want %s", got, want)
	}
}

// TestMultipartModelFields: two model parts, or a model sent as a file,
// are refused; one is read and trimmed.
func TestMultipartModelFields(t *testing.T) {
	ct := "multipart/form-data; boundary=" + testBoundary
	file := part{name: "file", filename: "a.wav", contentType: "audio/wav", data: []byte("RIFF model")}
	tests := []struct {
		name  string
		body  []byte
		model string
		param string
	}{
		{"one", multipartBody(part{name: "model", data: []byte(" whisper-1 ")}, file), "whisper-1", ""},
		{"two", multipartBody(part{name: "model", data: []byte("whisper-1")}, file, part{name: "model", data: []byte("gpt-4o-transcribe")}), "", "model"},
		{"two, same value", multipartBody(part{name: "model", data: []byte("a")}, part{name: "model", data: []byte("a")}), "", "model"},
		{"as a file", multipartBody(part{name: "model", filename: "m.txt", contentType: "text/plain", data: []byte("o1")}), "", "model"},
		{"plain and file", multipartBody(part{name: "model", data: []byte("a")}, part{name: "model", filename: "m", contentType: "text/plain", data: []byte("b")}), "", "model"},
		{"other letter case", multipartBody(part{name: "model", data: []byte("a")}, part{name: "Model", data: []byte("b")}), "", "model"},
		{"model_id twice", multipartBody(part{name: "model_id", data: []byte("a")}, part{name: "model_id", data: []byte("b")}), "", "model_id"},
		{"unreadable disposition", []byte("--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"model\"; name=\"x\"\r\n\r\no1\r\n--" + testBoundary + "--\r\n"), "", "model"},
		{"too long", multipartBody(part{name: "model", data: []byte(strings.Repeat("w", 257))}), "", "model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, bad := readBodyModels(ct, tc.body)
			if tc.param == "" {
				if bad.Status != 0 || m.model.value != tc.model {
					t.Errorf("model %q %+v, want %q", m.model.value, bad, tc.model)
				}
				return
			}
			if bad.Status != http.StatusBadRequest || bad.Param != tc.param {
				t.Errorf("got %+v, want 400 naming %q", bad, tc.param)
			}
		})
	}
}

// TestModelNameCap: a model is at most 256 bytes of printable characters,
// wherever it comes from; the refusal does not echo it.
func TestModelNameCap(t *testing.T) {
	ok := []string{"", "gpt-4o-mini", strings.Repeat("m", 256), "@cf/meta/llama-3.1-8b-instruct", "accounts/x/models/é-ü 1"}
	for _, s := range ok {
		if bad := checkModelName("model", s); bad.Status != 0 {
			t.Errorf("%q refused: %s", s, bad.Message)
		}
	}
	refused := []string{strings.Repeat("m", 257), "gpt\x00", "gpt\n4o", "a\tb", "\xff", "a\u200bb", "\u202egpt"}
	for _, s := range refused {
		bad := checkModelName("model_id", s)
		if bad.Status != http.StatusBadRequest || bad.Param != "model_id" || strings.Contains(bad.Message, s) {
			t.Errorf("%q: %+v, want 400 naming model_id without the model", s, bad)
		}
	}

	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-cap-key-000000001")
	e.addKeys("google-ai-studio", "AIzaSyCapKey0000001")
	huge := strings.Repeat("m", 1<<20)
	cases := []struct{ what, method, path, body string }{
		{"1 MiB model", "POST", "/v1/chat/completions", `{"model":"` + huge + `","messages":[]}`},
		{"escaped control character", "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini\u0007","messages":[]}`},
		{"long model in /v1/models/<id>", "GET", "/v1/models/" + strings.Repeat("m", 300), ""},
		{"long model in a Gemini path", "POST", "/api/google-ai-studio/v1beta/models/" + strings.Repeat("g", 300) + ":generateContent", `{}`},
		{"long model on /api/compat", "POST", "/api/compat/chat/completions", `{"model":"openai/` + strings.Repeat("m", 300) + `"}`},
	}
	for _, c := range cases {
		w := e.proxy(c.method, c.path, c.body)
		if a := wantError(t, w, http.StatusBadRequest, "invalid_request"); a.Error.Param == nil || *a.Error.Param != "model" {
			t.Errorf("%s: param %v, want model", c.what, a.Error.Param)
		}
		if w.Body.Len() > 1024 {
			t.Errorf("%s: a %d-byte answer", c.what, w.Body.Len())
		}
	}
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls for refused models", n)
	}
	if rows := e.rollups("m"); len(rows) != 0 {
		t.Errorf("refused models counted: %+v", rows)
	}
}

// TestDuplicateModelRefusedBeforeUpstream: through the handler, with a
// token scoped to gpt-4o-mini, a repeated model is refused on every
// route, and no upstream call, key state or rollup follows.
func TestDuplicateModelRefusedBeforeUpstream(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-dup-key-000000001", "sk-dup-key-000000002")
	_, secret := e.usageTokenNew(`{"name":"mini","models":["gpt-4o-mini"]}`)
	dup := `{"model":"gpt-4o-mini","messages":[],"model":"o1-pro"}`
	for _, path := range []string{"/v1/chat/completions", "/api/openai/chat/completions"} {
		wantError(t, e.serve(http.MethodPost, path, dup, withToken(secret)...), http.StatusBadRequest, "invalid_request")
	}
	wantError(t, e.serve(http.MethodPost, "/api/compat/chat/completions", `{"model":"openai/gpt-4o-mini","model":"openai/o1-pro"}`,
		withToken(secret)...), http.StatusBadRequest, "invalid_request")
	mp := multipartBody(part{name: "model", data: []byte("gpt-4o-mini")}, part{name: "model", data: []byte("whisper-1")})
	wantError(t, e.serve(http.MethodPost, "/v1/audio/transcriptions", string(mp), "Authorization", "Bearer "+secret,
		"Content-Type", "multipart/form-data; boundary="+testBoundary), http.StatusBadRequest, "invalid_request")
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls", n)
	}
	if n := e.count(`SELECT COUNT(*) FROM key_models`); n != 0 {
		t.Errorf("%d key_models rows", n)
	}
	// The same token's own model passes.
	wantServed(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...), "1")
}

// TestNativeModelSource: on /api/<provider>/... the model is read where
// the provider reads it; a body naming another one is refused.
func TestNativeModelSource(t *testing.T) {
	lookup := func(name string) provider.Provider {
		p, ok := provider.Lookup(name)
		if !ok {
			t.Fatalf("no provider %s", name)
		}
		return p
	}
	gemini, eleven, wai, openai := lookup("google-ai-studio"), lookup("elevenlabs"), lookup("workers-ai"), lookup("openai")
	gen := "v1beta/models/gemini-2.5-pro:generateContent"
	tests := []struct {
		name  string
		prov  provider.Provider
		rest  string
		body  string
		model string
		param string
	}{
		{"gemini: the path", gemini, gen, `{"contents":[]}`, "gemini-2.5-pro", ""},
		{"gemini: same model in the body", gemini, gen, `{"model":"models/gemini-2.5-pro","contents":[]}`, "gemini-2.5-pro", ""},
		{"gemini: other model in the body", gemini, gen, `{"model":"gemini-2.0-flash","contents":[]}`, "", "model"},
		{"gemini: body only (cachedContents)", gemini, "v1beta/cachedContents", `{"model":"models/gemini-2.0-flash"}`, "gemini-2.0-flash", ""},
		{"gemini: model_id is not Gemini's", gemini, gen, `{"model_id":"x"}`, "gemini-2.5-pro", ""},
		{"elevenlabs: model_id", eleven, "v1/text-to-speech/voice1", `{"text":"hi","model_id":"eleven_turbo_v2"}`, "eleven_turbo_v2", ""},
		{"elevenlabs: model equal to model_id", eleven, "v1/text-to-speech/voice1", `{"model":"eleven_turbo_v2","model_id":"eleven_turbo_v2"}`, "eleven_turbo_v2", ""},
		{"elevenlabs: model differs from model_id", eleven, "v1/text-to-speech/voice1", `{"model":"eleven_v3","model_id":"eleven_turbo_v2"}`, "", "model"},
		{"elevenlabs: model without model_id", eleven, "v1/text-to-speech/voice1", `{"model":"eleven_v3"}`, "", "model"},
		{"elevenlabs: model_id twice", eleven, "v1/text-to-speech/voice1", `{"model_id":"a","model_id":"b"}`, "", "model_id"},
		{"elevenlabs: multipart model_id", eleven, "v1/speech-to-text", "", "scribe_v1", ""},
		{"workers ai: the path", wai, "@cf/meta/llama-3.1-8b-instruct", `{"prompt":"hi"}`, "@cf/meta/llama-3.1-8b-instruct", ""},
		{"workers ai: other model in the body", wai, "@cf/meta/llama-3.1-8b-instruct", `{"model":"@cf/meta/llama-3.3-70b"}`, "", "model"},
		{"openai: the body", openai, "v1/chat/completions", `{"model":"gpt-4o-mini"}`, "gpt-4o-mini", ""},
		{"openai: repeated", openai, "v1/chat/completions", `{"model":"gpt-4o-mini","model":"o1-pro"}`, "", "model"},
		{"openai: path and another body model", openai, "v1/models/gpt-4o-mini", `{"model":"o1-pro"}`, "", "model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := "application/json", []byte(tc.body)
			if tc.body == "" {
				ct = "multipart/form-data; boundary=" + testBoundary
				body = multipartBody(part{name: "model_id", data: []byte("scribe_v1")},
					part{name: "file", filename: "a.mp3", contentType: "audio/mpeg", data: []byte("ID3")})
			}
			m, bad := nativeModel(tc.prov, tc.rest, ct, body)
			if tc.param == "" {
				if bad.Status != 0 || m != tc.model {
					t.Errorf("model %q %+v, want %q", m, bad, tc.model)
				}
				return
			}
			if bad.Status != http.StatusBadRequest || bad.Param != tc.param {
				t.Errorf("got %q %+v, want 400 naming %q", m, bad, tc.param)
			}
		})
	}
}

// TestNativeModelScopeAndState: the token's scope and the key's per-model
// state concern the model the provider acts on: Gemini's path.
func TestNativeModelScopeAndState(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	ids := e.addKeys("google-ai-studio", "AIzaSyScopeKey00001")
	_, secret := e.usageTokenNew(`{"name":"flash","models":["gemini-2.0-flash"]}`)
	hdr := []string{"x-goog-api-key", secret, "Content-Type", "application/json"}
	// The body names the allowed model, the path the one Gemini runs.
	wantError(t, e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.5-pro:generateContent",
		`{"model":"gemini-2.0-flash","contents":[]}`, hdr...), http.StatusBadRequest, "invalid_request")
	wantError(t, e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.5-pro:generateContent",
		`{"contents":[]}`, hdr...), http.StatusForbidden, "model_not_allowed")
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls", n)
	}
	// A 429 for the path's model cools the key for that model.
	e.up.SetRule("AIzaSyScopeKey00001", fakeupstream.GeminiMinuteQuota("gemini-2.0-flash", "20s"))
	e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`, hdr...)
	k, _ := e.key(ids[0])
	if len(k.Models) != 1 || k.Models[0].Model != "gemini-2.0-flash" {
		t.Errorf("key models %+v, want gemini-2.0-flash cooling", k.Models)
	}
}

// TestRefusedModelLabel: a request keypool refuses is counted under a
// fixed label, not under the model the client named.
func TestRefusedModelLabel(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-label-key-0000001")
	_, secret := e.usageTokenNew(`{"name":"mini","models":["gpt-4o-mini"]}`)
	for i := 0; i < 20; i++ {
		model := strconv.Itoa(i) + strings.Repeat("z", 250)
		wantError(t, e.serve(http.MethodPost, "/v1/chat/completions", `{"model":"`+model+`"}`, withToken(secret)...),
			http.StatusForbidden, "model_not_allowed")
	}
	rows := e.rollups("m")
	if len(rows) != 1 || rows[0].Model != refusedModel || rows[0].Requests != 20 || rows[0].Rejected != 20 {
		t.Errorf("rollups %+v, want one %q row of 20 rejected requests", rows, refusedModel)
	}
}

// TestCacheBoundedByDistinctModels: served requests for many distinct
// models leave the cache within its bound, and the counters intact.
func TestCacheBoundedByDistinctModels(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "3600", "CACHE_SECONDS", "300")
	e.addKeys("openai", "sk-bound-key-0000001")
	n := pool.CacheEntries + 100
	for i := 0; i < n; i++ {
		wantServed(t, e.chat("gpt-bound-"+strconv.Itoa(i)+strings.Repeat("x", 200)), "1")
	}
	e.set("KEYPOOL_DEBUG", "1")
	w := e.admin(http.MethodGet, "/admin/api/debug/stats", "")
	s := gjson.Parse(w.Body.String())
	entries, size := s.Get("cache_entries").Int(), s.Get("cache_bytes").Int()
	if !s.Get("cache_entries").Exists() || entries > pool.CacheEntries || size > pool.CacheBytes {
		t.Errorf("after %d distinct models: %s", n, w.Body.String())
	}
	t.Logf("cache after %d distinct models: %d entries, %d bytes", n, entries, size)
	// The pending counts reached D1 early (too many rollup groups), and
	// every request is in them once the rest is flushed.
	if rows := e.rollups("m"); len(rows) == 0 {
		t.Errorf("no rollups written before USAGE_FLUSH_SECONDS with %d groups pending", n)
	}
	e.h.flushNow()
	total := int64(0)
	for _, r := range e.rollups("m") {
		total += r.Requests
	}
	if total != int64(n) {
		t.Errorf("rollups count %d requests, want %d", total, n)
	}
}

// TestModelListRefreshTriesAnotherKey: a model list refresh that one key
// gets a 529 (or 5xx, 429, network error) for is tried with another.
func TestModelListRefreshTriesAnotherKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule fakeupstream.Rule
	}{
		{"anthropic 529", fakeupstream.AnthropicOverloaded()},
		{"anthropic 429", fakeupstream.AnthropicRateLimited(5)},
		{"anthropic 500", fakeupstream.Rule{Status: 500, Body: `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.addKeys("anthropic", "sk-ant-list-key-00001", "sk-ant-list-key-00002")
			e.up.SetRule("sk-ant-list-key-00001", tc.rule)
			w := e.proxy(http.MethodGet, "/v1/models", "")
			if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"anthropic/gpt-4o-mini"`) {
				t.Errorf("/v1/models: %d %s, want the list fetched with the second key", w.Code, w.Body.String())
			}
			var keys []string
			for _, r := range e.requests() {
				if strings.HasSuffix(r.Path, "/models") {
					keys = append(keys, r.Key)
				}
			}
			if len(keys) != 2 || keys[0] == keys[1] {
				t.Errorf("model list fetched with keys %v, want both, once each", keys)
			}
		})
	}
	t.Run("network error", func(t *testing.T) {
		e := newEnv(t)
		e.addKeys("anthropic", "sk-ant-list-key-00001", "sk-ant-list-key-00002")
		calls := 0
		e.fetch = func(r *http.Request) (*http.Response, error) {
			calls++
			if calls == 1 {
				return nil, errNetwork
			}
			return http.DefaultClient.Do(r)
		}
		if w := e.proxy(http.MethodGet, "/v1/models", ""); !strings.Contains(w.Body.String(), `"anthropic/gpt-4o-mini"`) {
			t.Errorf("/v1/models after a network error: %d %s", w.Code, w.Body.String())
		}
	})
	t.Run("bounded", func(t *testing.T) {
		e := newEnv(t)
		var secrets []string
		for i := 0; i < 6; i++ {
			s := "sk-ant-list-key-0000" + strconv.Itoa(i)
			secrets = append(secrets, s)
			e.up.SetRule(s, fakeupstream.AnthropicOverloaded())
		}
		e.addKeys("anthropic", secrets...)
		e.proxy(http.MethodGet, "/v1/models", "")
		if n := e.fetches.Load(); n != checks.ModelListTries {
			t.Errorf("%d fetches with every key overloaded, want %d", n, checks.ModelListTries)
		}
	})
}

var errNetwork = &netError{}

type netError struct{}

func (*netError) Error() string { return "connection reset by peer" }

// FuzzTopLevelKeys: on any body encoding/json accepts as an object, the
// one-pass scan finds exactly the top-level keys a decoder walks, with
// the same values; on anything else it never panics.
func FuzzTopLevelKeys(f *testing.F) {
	for _, s := range []string{`{"model":"a","model":"b"}`, `{"a":{"model":[1,{"x":"}"}]},"b":"\"{"}`, ` {"mod\u0065l" : null } `,
		`{"a":[}`, `[1]`, `{"a":1,}`, `{}`, "{\"\xff\":1}", `{"a":"\\"}`, `{"a":-0.5e+3,"b":true}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got []string
		err := forEachTopLevel(body, func(key []byte, start, end int) bool {
			got = append(got, string([]rune(gjson.Parse(`"`+string(key)+`"`).String()))+"="+string(body[start:end]))
			return true
		})
		want, isObject := decoderKeys(body)
		if !isObject {
			return
		}
		if err != nil {
			t.Fatalf("valid object refused: %v", err)
		}
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("keys %q, want %q", got, want)
		}
	})
}

// decoderKeys walks a valid JSON object's top level with encoding/json.
func decoderKeys(body []byte) ([]string, bool) {
	if !json.Valid(body) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		out = append(out, tok.(string)+"="+string(raw))
	}
	return out, true
}
