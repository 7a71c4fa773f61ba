package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/provider"
)

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
