package fakeupstream

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestStreamIncludeUsage: a streamed chat completion ends with OpenAI's
// usage-only chunk exactly when the request asks
// stream_options.include_usage, and is unchanged otherwise.
func TestStreamIncludeUsage(t *testing.T) {
	s := start(t)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"no stream_options", `{"model":"m","stream":true,"messages":[]}`, StreamChunks("m")},
		{"include_usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, StreamChunks("m")},
		{"other options", `{"model":"m","stream":true,"stream_options":{"x":1}}`, StreamChunks("m")},
		{"include_usage true", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, StreamChunksWithUsage("m")},
		{"include_usage among others", `{"stream_options":{"x":1,"include_usage":true},"model":"m","stream":true}`, StreamChunksWithUsage("m")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, hdr, b := send(t, "POST", s.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer k"}, []byte(tc.body))
			if st != 200 || hdr.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%d %s", st, hdr.Get("Content-Type"))
			}
			if want := strings.Join(tc.want, ""); string(b) != want {
				t.Errorf("stream:\n got %q\nwant %q", b, want)
			}
		})
	}
	// The usage chunk has OpenAI's shape.
	c := strings.TrimSuffix(strings.TrimPrefix(StreamUsageChunk("m"), "data: "), "\n\n")
	if !gjson.Valid(c) || gjson.Get(c, "object").String() != "chat.completion.chunk" || !gjson.Get(c, "choices").IsArray() ||
		len(gjson.Get(c, "choices").Array()) != 0 || gjson.Get(c, "usage.prompt_tokens").Int() != 5 ||
		gjson.Get(c, "usage.completion_tokens").Int() != 7 || gjson.Get(c, "usage.total_tokens").Int() != 12 {
		t.Errorf("usage chunk %s", c)
	}
	// StreamChunks is not changed by StreamChunksWithUsage.
	if got := StreamChunks("m"); len(got) != 4 || got[3] != "data: [DONE]\n\n" {
		t.Errorf("StreamChunks = %q", got)
	}
	if got := StreamChunksWithUsage("m"); len(got) != 5 || got[3] != StreamUsageChunk("m") || got[4] != "data: [DONE]\n\n" {
		t.Errorf("StreamChunksWithUsage = %q", got)
	}
}

// TestPromptCache: a key reports cached the leading messages it was sent
// before for the model; another key, or another model, starts cold.
func TestPromptCache(t *testing.T) {
	s := &Server{prompts: map[string]map[uint64]bool{}}
	turn1 := `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"a"}]}`
	turn2 := `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}`
	cached := func(key, model, body string) int64 {
		return gjson.Get(s.cachedChat(key, model, []byte(body)), "usage.prompt_tokens_details.cached_tokens").Int()
	}
	for _, tc := range []struct {
		name, key, model, body string
		want                   int64
	}{
		{"first turn, cold", "k1", "cache-m", turn1, 0},
		{"second turn, same key: the first turn's prompt", "k1", "cache-m", turn2, 2 * PromptTokensPerMessage},
		{"second turn on another key: cold", "k2", "cache-m", turn2, 0},
		{"another model: cold", "k1", "cache-n", turn2, 0},
		{"the same prompt again: all but the last message", "k1", "cache-m", turn2, 3 * PromptTokensPerMessage},
	} {
		if got := cached(tc.key, tc.model, tc.body); got != tc.want {
			t.Errorf("%s: cached %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestGeminiJSONAnswer: a request for JSON gets text that parses and fits
// its schema (every property, the first enum value); others do not.
func TestGeminiJSONAnswer(t *testing.T) {
	body := `{"generationConfig":{"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":` +
		`{"reasoning":{"type":"string"},"model_choice":{"type":"string","enum":["flash","pro"]},"n":{"type":"integer"},"tags":{"type":"array"}},` +
		`"required":["reasoning","model_choice"]}}}`
	a, ok := geminiJSONAnswer("gemini-x", []byte(body))
	text := gjson.Get(a, "candidates.0.content.parts.0.text").String()
	if !ok || !gjson.Valid(text) || gjson.Get(text, "model_choice").String() != "flash" || !gjson.Get(text, "reasoning").Exists() {
		t.Fatalf("answer %v %s (text %s)", ok, a, text)
	}
	if _, ok := geminiJSONAnswer("gemini-x", []byte(`{"contents":[]}`)); ok {
		t.Errorf("a plain request got a JSON answer")
	}
}
