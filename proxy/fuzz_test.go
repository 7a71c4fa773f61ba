package proxy

import (
	"bytes"
	"mime/multipart"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/settings"
)

// FuzzMultipartField: multipartField never panics on any body and
// boundary, and when it finds the field, the range lies inside the body and
// is the value of a part named so (checked against mime/multipart when the
// body parses).
func FuzzMultipartField(f *testing.F) {
	f.Add(multipartBody(part{name: "file", filename: "a.mp3", contentType: "audio/mpeg", data: audioFile()},
		part{name: "model", data: []byte("openai/whisper-1")}), testBoundary, "model")
	f.Add(multipartBody(part{name: "model", data: []byte("")}), testBoundary, "model")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx\r\n--b--"), "b", "model")
	f.Add([]byte("--b\r\n\r\n\r\n--b"), "b", "")
	f.Add([]byte("--b--"), "b", "model")
	f.Add([]byte("--b"), "b", "model")
	f.Add([]byte("--b\r\n--b\r\n--b"), "b", "model")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=model\r\n\r\n\r\n--b"), "b", "model")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nx\r\n--b--"), "b", "model")
	f.Add([]byte(""), "", "model")
	f.Fuzz(func(t *testing.T, body []byte, boundary, name string) {
		start, end, ok := multipartField(body, boundary, name)
		if !ok {
			if start != 0 || end != 0 {
				t.Errorf("not found, yet start %d end %d", start, end)
			}
			return
		}
		if start < 0 || start > end || end > len(body) {
			t.Fatalf("range [%d:%d] outside a body of %d bytes", start, end, len(body))
		}
		if boundary == "" {
			t.Fatalf("found a field without a boundary")
		}
		// The value is followed by the next delimiter.
		if !bytes.HasPrefix(body[end:], []byte("\r\n--"+boundary)) {
			t.Errorf("value [%d:%d] not followed by a delimiter", start, end)
		}
		// Replacing the range keeps every other byte.
		out := replaceRange(body, start, end, "X")
		if !bytes.Equal(out[:start], body[:start]) || !bytes.Equal(out[start+1:], body[end:]) {
			t.Errorf("replaceRange changed bytes outside the field")
		}
	})
}

// FuzzRequestModel: requestModel never panics, whatever the content type
// and body; it resolves to a known provider (or the default), and keeps
// the body when the model does not change.
func FuzzRequestModel(f *testing.F) {
	mp := "multipart/form-data; boundary=" + testBoundary
	f.Add("application/json", []byte(`{"model":"groq/llama-3.1-8b-instant","messages":[]}`), false)
	f.Add("application/json", []byte(`{"model":"fast"}`), true)
	f.Add("application/json", []byte(`{"model":"openai/gpt-4o-mini"}`), true)
	f.Add("", []byte(`{"model":42}`), false)
	f.Add("", []byte(`{"model":"a\"b\u00e9"`), false)
	f.Add("", []byte(`[{"model":"groq/x"}]`), false)
	f.Add("application/json", []byte(`{"model":`), true)
	f.Add("text/plain", []byte(`{"model":"groq/x"}`), false)
	f.Add(mp, multipartBody(part{name: "model", data: []byte("groq/whisper-large-v3")}), false)
	f.Add(mp, multipartBody(part{name: "model", data: []byte(" fast ")}), true)
	f.Add("multipart/form-data; boundary=", []byte("--\r\n"), false)
	f.Add("multipart/form-data", []byte("x"), false)
	f.Add("", []byte("{\"model\":\"openai/\xff\"}"), false)
	f.Add("multipart/form-data; boundary=\"a b\"", []byte("--a b\r\nContent-Disposition: form-data; name=model\r\n\r\ngroq/x\r\n--a b--"), true)
	h := &Proxy{Config: testConfig(nil)}
	set := settings.Settings{
		Aliases:    map[string]string{"fast": "groq/llama-3.1-8b-instant", "w": "openai/whisper-1"},
		FreeModels: []string{"openai/free-*"},
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte, compat bool) {
		orig := append([]byte(nil), body...)
		m, bad := h.requestModel(contentType, body, set, compat)
		if !bytes.Equal(body, orig) {
			t.Fatalf("requestModel modified the caller's body")
		}
		if bad.Status != 0 {
			// A broken JSON object is refused as a whole (no field named).
			brokenJSON := bad.Param == "" && strings.Contains(bad.Message, "not valid JSON")
			if bad.Status != 400 || bad.Param != "model" && bad.Param != "model_id" && !brokenJSON {
				t.Errorf("error %+v, want a 400 about the model", bad)
			}
			return
		}
		if _, ok := provider.Lookup(m.prov); !ok {
			t.Errorf("provider %q is not known", m.prov)
		}
		if m.name == "" && !bytes.Equal(m.body, body) {
			t.Errorf("body changed for a request without a model")
		}
		if compat && m.name == "" {
			return
		}
		if !compat && m.model == m.name && !bytes.Equal(m.body, body) {
			t.Errorf("body changed although the model %q did not", m.name)
		}
		if isJSON(contentType) && multipartBoundary(contentType) == "" && !bytes.Equal(m.body, body) {
			// Only the model value changed: it now reads as the new model.
			want := m.model
			if compat {
				want = m.prov + "/" + m.model
			}
			// (Invalid UTF-8 in a model name is written as U+FFFD.)
			if got := gjson.GetBytes(m.body, "model").String(); got != want && gjson.ValidBytes(body) && utf8.ValidString(want) {
				t.Errorf("rewritten body has model %q, want %q", got, want)
			}
		}
		if strings.Contains(m.model, "\x00") && !strings.Contains(m.name, "\x00") && !strings.Contains(set.Aliases[m.name], "\x00") {
			t.Errorf("model %q invented", m.model)
		}
	})
}

// TestMultipartFieldAgreesWithMime: on well-formed bodies, the field found
// is the one mime/multipart reads.
func TestMultipartFieldAgreesWithMime(t *testing.T) {
	tests := []struct {
		name  string
		body  []byte
		field string
		want  string
		found bool
	}{
		{"model after file", multipartBody(part{name: "file", filename: "a", contentType: "x/y", data: audioFile()},
			part{name: "model", data: []byte("whisper-1")}), "model", "whisper-1", true},
		{"model first", multipartBody(part{name: "model", data: []byte("m")}, part{name: "x", data: []byte("y")}), "model", "m", true},
		{"empty value", multipartBody(part{name: "model", data: nil}), "model", "", true},
		{"value with CRLF", multipartBody(part{name: "model", data: []byte("a\r\nb")}), "model", "a\r\nb", true},
		{"file named model is not the field", multipartBody(part{name: "model", filename: "m.txt", contentType: "text/plain", data: []byte("f")}), "model", "", false},
		{"prefix of another name", multipartBody(part{name: "model_id", data: []byte("m")}), "model", "", false},
		{"absent", multipartBody(part{name: "prompt", data: []byte("model")}), "model", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start, end, ok := multipartField(tc.body, testBoundary, tc.field)
			if ok != tc.found || (ok && string(tc.body[start:end]) != tc.want) {
				t.Fatalf("multipartField = %q, %v; want %q, %v", tc.body[start:end], ok, tc.want, tc.found)
			}
			// mime/multipart agrees.
			r := multipart.NewReader(bytes.NewReader(tc.body), testBoundary)
			form, err := r.ReadForm(1 << 20)
			if err != nil {
				t.Fatal(err)
			}
			vs := form.Value[tc.field]
			if tc.found && (len(vs) != 1 || vs[0] != tc.want) {
				t.Errorf("mime/multipart reads %q", vs)
			}
			if !tc.found && len(vs) != 0 {
				t.Errorf("mime/multipart finds %q", vs)
			}
		})
	}
}
