package handler

import (
	"bytes"
	"net/url"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

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
