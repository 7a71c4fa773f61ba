package handler

import (
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// names lists h's header names, sorted.
func names(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOrgHeaderAttackInProcess: a client's organisation and project
// headers never reach the provider, and a provider's 401 about them (or
// one keypool cannot read) goes back to the client after one key, with
// every key left as it was.
func TestOrgHeaderAttackInProcess(t *testing.T) {
	e := newEnv(t)
	var secrets []string
	for i := 0; i < 10; i++ {
		secrets = append(secrets, "sk-org-attack-"+strings.Repeat(string(rune('a'+i)), 12))
	}
	e.addKeys("openai", secrets...)
	body := `{"model":"gpt-4o-mini","messages":[]}`
	for _, h := range [][]string{{"OpenAI-Organization", "org-x"}, {"OpenAI-Project", "proj_x"}, {"openai-organization", "org-y"}} {
		if w := e.proxy(http.MethodPost, "/v1/chat/completions", body, h...); w.Code != http.StatusOK {
			t.Errorf("with %s: %d %s, want 200 (the header dropped)", h[0], w.Code, w.Body)
		}
	}
	for _, q := range e.up.Requests() {
		if q.Header.Get("OpenAI-Organization") != "" || q.Header.Get("OpenAI-Project") != "" {
			t.Errorf("the provider received a selector: %v", q.Header)
		}
	}
	for _, rule := range []fakeupstream.Rule{fakeupstream.OpenAIMismatchedOrganization(),
		{Status: http.StatusForbidden, Body: `{"error":{"message":"Something new.","type":"invalid_request_error","code":"new"}}`}} {
		for _, s := range secrets {
			e.up.SetRule(s, rule)
		}
		w := e.proxy(http.MethodPost, "/v1/chat/completions", body)
		if w.Code != rule.Status || w.Body.String() != rule.Body || w.Header().Get("X-Keypool-Attempts") != "1" {
			t.Errorf("provider's %d: %d after %s attempts, %s", rule.Status, w.Code, w.Header().Get("X-Keypool-Attempts"), w.Body)
		}
	}
	keys := gjson.Parse(e.admin(http.MethodGet, "/admin/api/keys?provider=openai", "").Body.String()).Get("keys").Array()
	for _, k := range keys {
		if k.Get("status").String() != "active" || len(k.Get("models").Array()) != 0 {
			t.Errorf("key %s changed state: %s", k.Get("key"), k.Raw)
		}
	}
	if len(keys) != len(secrets) {
		t.Fatalf("%d keys listed, want %d", len(keys), len(secrets))
	}
}

// TestProxyAnswersSandboxed: keypool's own answers on proxy routes carry
// nosniff and a sandbox CSP as the provider's do; admin answers are not
// touched.
func TestProxyAnswersSandboxed(t *testing.T) {
	e := newEnv(t)
	for _, w := range []*httptest.ResponseRecorder{
		e.serve(http.MethodPost, "/v1/chat/completions", `{"model":"gpt-4o-mini"}`), // no token
		e.proxy(http.MethodPost, "/v1/chat/completions", `{"messages":[]}`),         // no model
		e.proxy(http.MethodGet, "/api/no-such-provider/x", ""),
		e.proxy(http.MethodPost, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`), // no key
	} {
		if w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("Content-Security-Policy") != "sandbox" {
			t.Errorf("%d %s: headers %v, want nosniff and a sandbox CSP", w.Code, w.Body, w.Header())
		}
	}
	if csp := e.admin(http.MethodGet, "/admin/api/settings", "").Header().Get("Content-Security-Policy"); csp != "" {
		t.Errorf("admin answer got CSP %q", csp)
	}
}
