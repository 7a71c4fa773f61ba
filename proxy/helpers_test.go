package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/config"
)

func TestIsJSON(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"", true},
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON", true},
		{"application/vnd.api+json", true},
		{"text/plain", false},
		{"multipart/form-data; boundary=xyz", false},
		{"application/x-www-form-urlencoded", false},
		{"application/octet-stream", false},
	}
	for _, tc := range tests {
		if got := isJSON(tc.ct); got != tc.want {
			t.Errorf("isJSON(%q) = %v, want %v", tc.ct, got, tc.want)
		}
	}
}

func TestModelFromPath(t *testing.T) {
	tests := []struct{ path, want string }{
		{"v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash"},
		{"v1beta/models/gemini-1.5-pro:streamGenerateContent", "gemini-1.5-pro"},
		{"v1beta/models/text-embedding-004:batchEmbedContents", "text-embedding-004"},
		{"v1/models/gpt-4o", "gpt-4o"},
		{"v1/models/gpt-4o/versions", "gpt-4o"},
		{"v1beta/models/gemini-pro?alt=sse", "gemini-pro"},
		{"v1beta/models", ""},
		{"v1beta/models/", ""},
		{"v1/messages", ""},
		{"chat/completions", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := modelFromPath(tc.path); got != tc.want {
			t.Errorf("modelFromPath(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestReplaceString(t *testing.T) {
	tests := []struct {
		name string
		body string
		bare string
		want string
	}{
		{
			name: "simple",
			body: `{"model":"groq/llama-3.1-8b-instant","messages":[]}`,
			bare: "llama-3.1-8b-instant",
			want: `{"model":"llama-3.1-8b-instant","messages":[]}`,
		},
		{
			name: "odd spacing and escapes elsewhere kept byte for byte",
			body: "{\n  \"messages\" : [{\"role\":\"user\",\"content\":\"say \\\"model\\\": \\\"x\\\" \\u00e9 \\ud83d\\ude00 ☃ 日本\"}],\n\t\"model\"  :  \"groq\\/llama\" ,\"n\":1 , \"stop\":[\"\\n\"]}\n",
			bare: "llama",
			want: "{\n  \"messages\" : [{\"role\":\"user\",\"content\":\"say \\\"model\\\": \\\"x\\\" \\u00e9 \\ud83d\\ude00 ☃ 日本\"}],\n\t\"model\"  :  \"llama\" ,\"n\":1 , \"stop\":[\"\\n\"]}\n",
		},
		{
			name: "multibyte text before the model",
			body: `{"messages":[{"content":"日本語のテキスト ✓"}],"model":"groq/m-1","temperature":0.5}`,
			bare: "m-1",
			want: `{"messages":[{"content":"日本語のテキスト ✓"}],"model":"m-1","temperature":0.5}`,
		},
		{
			name: "nested model key untouched",
			body: `{"metadata":{"model":"keep/me"},"model":"siliconflow/Qwen/Qwen2.5-7B-Instruct"}`,
			bare: "Qwen/Qwen2.5-7B-Instruct",
			want: `{"metadata":{"model":"keep/me"},"model":"Qwen/Qwen2.5-7B-Instruct"}`,
		},
		{
			name: "unicode escape in the model value",
			body: `{"model":"groq/mod\u00e9l","x":"\u00e9"}`,
			bare: "modél",
			want: `{"model":"modél","x":"\u00e9"}`,
		},
		{
			name: "bare needing escapes",
			body: `{"model":"groq/a\"b<c","y":2}`,
			bare: `a"b<c`,
			want: `{"model":"a\"b\u003cc","y":2}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			orig := append([]byte(nil), body...)
			m := gjson.GetBytes(body, "model")
			if !m.Exists() {
				t.Fatalf("test body has no model")
			}
			got := replaceString(body, m, tc.bare)
			if string(got) != tc.want {
				t.Errorf("replaceString:\n got %q\nwant %q", got, tc.want)
			}
			if !bytes.Equal(body, orig) {
				t.Errorf("replaceString modified its input")
			}
			if !gjson.ValidBytes(got) {
				t.Errorf("result is not valid JSON: %s", got)
			}
			if gm := gjson.GetBytes(got, "model").String(); gm != tc.bare {
				t.Errorf("model in result = %q, want %q", gm, tc.bare)
			}
		})
	}
	// A result that does not point into the body leaves it unchanged.
	body := []byte(`{"model":"groq/x"}`)
	if got := replaceString(body, gjson.Result{}, "x"); string(got) != string(body) {
		t.Errorf("replaceString with an empty result = %q, want the body unchanged", got)
	}
	if got := replaceString(body, gjson.Result{Index: 100, Raw: `"groq/x"`}, "x"); string(got) != string(body) {
		t.Errorf("replaceString with an out-of-range result = %q, want the body unchanged", got)
	}
}

func TestUpstreamQuery(t *testing.T) {
	tests := []struct {
		raw  string
		want url.Values // nil: expect ""
	}{
		{"", nil},
		{"key=abc", nil},
		{"key=abc&key=def", nil},
		{"alt=sse", url.Values{"alt": {"sse"}}},
		{"key=abc&alt=sse", url.Values{"alt": {"sse"}}},
		{"alt=sse&key=abc&pageSize=5", url.Values{"alt": {"sse"}, "pageSize": {"5"}}},
		{"q=a%20b%26c&key=x", url.Values{"q": {"a b&c"}}},
		{"ids=1&ids=2", url.Values{"ids": {"1", "2"}}},
		{"keys=1&apikey=2", url.Values{"keys": {"1"}, "apikey": {"2"}}},
	}
	for _, tc := range tests {
		got := upstreamQuery(&url.URL{Path: "/x", RawQuery: tc.raw})
		if tc.want == nil {
			if got != "" {
				t.Errorf("upstreamQuery(%q) = %q, want \"\"", tc.raw, got)
			}
			continue
		}
		if !strings.HasPrefix(got, "?") {
			t.Errorf("upstreamQuery(%q) = %q, want a leading ?", tc.raw, got)
			continue
		}
		vals, err := url.ParseQuery(got[1:])
		if err != nil {
			t.Errorf("upstreamQuery(%q) = %q: not a query: %v", tc.raw, got, err)
			continue
		}
		if vals.Encode() != tc.want.Encode() {
			t.Errorf("upstreamQuery(%q) = %q, want %q", tc.raw, got, "?"+tc.want.Encode())
		}
	}
}

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

// names lists h's header names, sorted.
func names(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// testConfig is a fixed configuration of vars.
func testConfig(vars map[string]string) func() *config.Config {
	c := config.Parse(func(name string) string { return vars[name] })
	return func() *config.Config { return &c }
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
