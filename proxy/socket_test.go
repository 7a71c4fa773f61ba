package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// A session's model check: none for AUTH_KEY or a token without a model
// list; otherwise each response.create's model is matched as over HTTPS
// (bare or provider-prefixed patterns), and the refused ones are kept.
func TestSocketScope(t *testing.T) {
	openai, _ := provider.Lookup("openai")
	for _, c := range []client{{}, {tok: &store.Token{ID: 1}}, {tok: &store.Token{ID: 2, Providers: []string{"openai"}}}} {
		if allow, _ := socketScope(upstreamCall{prov: openai, client: c, socket: true}); allow != nil {
			t.Errorf("client %+v: a model check, want none", c.tok)
		}
	}
	tok := &store.Token{ID: 3, Models: []string{"gpt-5*", "openai/o4-mini"}}
	allow, refused := socketScope(upstreamCall{prov: openai, client: client{tok: tok}, socket: true})
	for model, ok := range map[string]bool{"gpt-5": true, "gpt-5.1-codex": true, "o4-mini": true, "gpt-4o": false, "": false} {
		why := allow(model)
		if (why == "") != ok {
			t.Errorf("model %q: refusal %q, want allowed %v", model, why, ok)
		}
		if !ok && !strings.Contains(why, "gpt-5*, openai/o4-mini") {
			t.Errorf("model %q: refusal %q does not say what is allowed", model, why)
		}
	}
	if *refused != 2 {
		t.Errorf("%d refused, want the two refused models", *refused)
	}
}

func TestIsSocket(t *testing.T) {
	for v, want := range map[string]bool{"websocket": true, "WebSocket": true, "": false, "h2c": false} {
		r, _ := http.NewRequest("GET", "http://x/v1/responses", nil)
		if v != "" {
			r.Header.Set("Upgrade", v)
		}
		if isSocket(r) != want {
			t.Errorf("Upgrade %q: isSocket %v", v, !want)
		}
	}
}
