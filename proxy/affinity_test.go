package proxy

import (
	"net/http"
	"testing"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// TestConversation: the turns of one conversation share an identity;
// other conversations, clients and models do not; a session the client
// names wins over the body; a body with no conversation has none.
func TestConversation(t *testing.T) {
	openai, _ := provider.Lookup("openai")
	const (
		turn1 = `{"model":"gpt-x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}`
		turn3 = `{"model":"gpt-x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"},` +
			`{"role":"assistant","content":"hi"},{"role":"user","content":"more"}]}`
		other      = `{"model":"gpt-x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"goodbye"}]}`
		otherSys   = `{"model":"gpt-x","messages":[{"role":"system","content":"be long"},{"role":"user","content":"hello"}]}`
		anthropic  = `{"model":"c","system":"s","messages":[{"role":"user","content":"hello"}]}`
		anthropic2 = `{"model":"c","system":"s","messages":[{"role":"user","content":"hello"},{"role":"assistant","content":"x"},{"role":"user","content":"y"}]}`
		gemini1    = `{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}`
		gemini2    = `{"contents":[{"role":"user","parts":[{"text":"hello"}]},{"role":"model","parts":[{"text":"x"}]}]}`
		cacheKey1  = `{"model":"gpt-x","prompt_cache_key":"conv-9","messages":[{"role":"user","content":"a"}]}`
		cacheKey2  = `{"model":"gpt-x","prompt_cache_key":"conv-9","messages":[{"role":"user","content":"b"}]}`
	)
	tok := func(id int64) client { return client{tok: &store.Token{ID: id}} }
	id := func(body string, c client, model string, h http.Header) uint64 {
		if h == nil {
			h = http.Header{}
		}
		return conversation(h, upstreamCall{prov: openai, model: model, body: []byte(body), client: c}, true)
	}
	session := http.Header{"X-Keypool-Session": {"s-1"}}
	for _, tc := range []struct {
		name string
		a, b uint64
		same bool
	}{
		{"turns of one chat", id(turn1, tok(1), "gpt-x", nil), id(turn3, tok(1), "gpt-x", nil), true},
		{"another first message", id(turn1, tok(1), "gpt-x", nil), id(other, tok(1), "gpt-x", nil), false},
		{"another system prompt", id(turn1, tok(1), "gpt-x", nil), id(otherSys, tok(1), "gpt-x", nil), false},
		{"another client token", id(turn1, tok(1), "gpt-x", nil), id(turn1, tok(2), "gpt-x", nil), false},
		{"another model", id(turn1, tok(1), "gpt-x", nil), id(turn1, tok(1), "gpt-y", nil), false},
		{"turns of one Anthropic conversation", id(anthropic, tok(1), "c", nil), id(anthropic2, tok(1), "c", nil), true},
		{"turns of one Gemini conversation", id(gemini1, tok(1), "g", nil), id(gemini2, tok(1), "g", nil), true},
		{"X-Keypool-Session over the body", id(turn1, tok(1), "gpt-x", session), id(other, tok(1), "gpt-x", session), true},
		{"prompt_cache_key over the messages", id(cacheKey1, tok(1), "gpt-x", nil), id(cacheKey2, tok(1), "gpt-x", nil), true},
	} {
		if (tc.a == tc.b) != tc.same || tc.a == 0 || tc.b == 0 {
			t.Errorf("%s: %x vs %x, want same %v (and both set)", tc.name, tc.a, tc.b, tc.same)
		}
	}
	for _, body := range []string{"", `{"model":"m"}`, `not json`} {
		if got := id(body, tok(1), "m", nil); got != 0 {
			t.Errorf("%q: identity %x, want none", body, got)
		}
	}
	// A body that is not JSON (an upload) is not read; a named session
	// still counts.
	openaiCall := upstreamCall{prov: openai, model: "whisper-1", body: []byte(`{"messages":[{"role":"user","content":"x"}]}`), client: tok(1)}
	if got := conversation(http.Header{}, openaiCall, false); got != 0 {
		t.Errorf("a non-JSON body read for its conversation: %x", got)
	}
	if got := conversation(session, openaiCall, false); got == 0 {
		t.Errorf("X-Keypool-Session on a non-JSON body: no identity")
	}
}
