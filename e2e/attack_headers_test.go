//go:build e2e

package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestAttackHeaders attacks the pool with headers, as a client holding a
// small token would: organisation and project selectors that make OpenAI
// answer 401 must block no key; the upstream never sees them; answers
// never name the account behind a key and are served as sandboxed,
// unsniffable data; only the allowed AI Gateway options reach the gateway.
func TestAttackHeaders(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			t.Run("org-headers-block-no-key", w.testOrgHeaderAttack)
			t.Run("response-headers", w.testResponseHeaders)
			t.Run("gateway-headers", w.testGatewayHeaders)
		})
	}
}

// poolKeys is the size of the openai pool the header attack runs against.
const poolKeys = 10

// testOrgHeaderAttack sends OpenAI-Organization and OpenAI-Project headers
// with a limited token against a pool of 10 openai keys.
func (w *worker) testOrgHeaderAttack(t *testing.T) {
	keys := make([]string, poolKeys)
	for i := range keys {
		keys[i] = "sk-hdr" + randomHex(12)
	}
	w.importKeys(t, "openai", keys...)
	r := w.adminCall(t, "POST", "/admin/api/tokens",
		`{"name":"header attacker","providers":["openai"],"models":["gpt-4o-mini"],"requests_day":20}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create token: %d %s", r.status, r.body)
	}
	tok := r.json().Get("token").String()
	attacks := []map[string]string{
		{"OpenAI-Organization": "org-attacker000000000000"},
		{"OpenAI-Project": "proj_attacker00000000000"},
		{"openai-organization": "org-x", "OpenAI-Project": "proj_x"},
	}
	before := len(w.up.Requests())
	for i := 0; i < 10; i++ {
		h := map[string]string{"Authorization": "Bearer " + tok}
		for k, v := range attacks[i%len(attacks)] {
			h[k] = v
		}
		r := w.do(t, "POST", "/v1/chat/completions", h, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
		// Without the header, the provider serves the request.
		if r.status != http.StatusOK {
			t.Errorf("attack %d: status %d, want 200 (the selector dropped): %s", i, r.status, r.body)
		}
	}
	for _, q := range w.up.Requests()[before:] {
		for _, name := range []string{"OpenAI-Organization", "OpenAI-Project"} {
			if q.Header.Get(name) != "" {
				t.Errorf("the upstream received %s: %q", name, q.Header.Get(name))
			}
		}
	}
	changed := w.changedKeys(t, keys)
	t.Logf("keys that changed state after the header attack: %d of %d", changed, poolKeys)
	if changed != 0 {
		t.Errorf("%d of %d keys changed state after the header attack, want 0", changed, poolKeys)
	}
	if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`); r.status != http.StatusOK {
		t.Errorf("AUTH_KEY after the attack: %d %s", r.status, r.body)
	}

	// Should such a refusal reach keypool all the same (every key answers
	// it here), or a 401 keypool does not recognise, the client gets the
	// provider's answer from the first key and no key is blamed.
	refusals := []fakeupstream.Rule{fakeupstream.OpenAIMismatchedOrganization(), fakeupstream.OpenAIMismatchedProject(),
		{Status: http.StatusUnauthorized, Body: `{"error":{"message":"Something about your request.","type":"invalid_request_error","param":null,"code":"unheard_of"}}`}}
	for i, rule := range refusals {
		for _, k := range keys {
			w.up.SetRule(k, rule)
		}
		r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + tok},
			`{"model":"gpt-4o-mini","messages":[]}`)
		if r.status != http.StatusUnauthorized || string(r.body) != rule.Body || r.header.Get("X-Keypool-Attempts") != "1" {
			t.Errorf("refusal %d: %d after %s attempts, %s; want the provider's 401 after 1 attempt", i, r.status,
				r.header.Get("X-Keypool-Attempts"), r.body)
		}
	}
	for _, k := range keys {
		w.up.ClearRule(k)
	}
	changed = w.changedKeys(t, keys)
	t.Logf("keys that changed state after the provider's 401s about the request: %d of %d", changed, poolKeys)
	if changed != 0 {
		t.Errorf("%d of %d keys changed state after 401s about the request, want 0", changed, poolKeys)
	}
}

// changedKeys counts the keys (of secrets) that are no longer active or
// carry a per-model state, once the writes after the responses landed.
func (w *worker) changedKeys(t *testing.T, secrets []string) int {
	t.Helper()
	// State changes are written with waitUntil after each response; a
	// request answered after them has let them finish.
	time.Sleep(time.Second)
	want := map[string]bool{}
	for _, s := range secrets {
		want[mask(s)] = true
	}
	r := w.adminCall(t, "GET", "/admin/api/keys?provider=openai", "")
	if r.status != http.StatusOK {
		t.Fatalf("list keys: %d %s", r.status, r.body)
	}
	n := 0
	for _, k := range r.json().Get("keys").Array() {
		if want[k.Get("key").String()] && (k.Get("status").String() != "active" || len(k.Get("models").Array()) > 0) {
			n++
		}
	}
	return n
}

// testResponseHeaders: answers of every kind keep the provider's
// harmless headers, lose those naming the account, and carry nosniff and
// a sandbox CSP, keypool's own errors included.
func (w *worker) testResponseHeaders(t *testing.T) {
	akey := "sk-ant-" + randomHex(16)
	w.importKeys(t, "anthropic", akey)
	answers := map[string]response{
		"openai chat": w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`),
		"openai stream": w.call(t, "POST", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","stream":true,"messages":[]}`),
		"anthropic native": w.do(t, "POST", "/api/anthropic/v1/messages", map[string]string{"x-api-key": w.token},
			`{"model":"claude-3-5-haiku-latest","max_tokens":10,"messages":[]}`),
	}
	for name, r := range answers {
		if r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
	}
	for _, name := range []string{"openai chat", "openai stream"} {
		h := answers[name].header
		if h.Get("X-Request-Id") == "" || h.Get("X-Ratelimit-Remaining-Requests") == "" || h.Get("Openai-Processing-Ms") == "" {
			t.Errorf("%s: the provider's request id, rate limits or processing time were dropped: %v", name, h)
		}
	}
	if answers["anthropic native"].header.Get("Request-Id") == "" {
		t.Errorf("anthropic native: request-id dropped: %v", answers["anthropic native"].header)
	}
	answers["keypool's 401"] = w.do(t, "POST", "/v1/chat/completions", nil, `{"model":"gpt-4o-mini","messages":[]}`)
	answers["keypool's 400"] = w.call(t, "POST", "/v1/chat/completions", `{"messages":[]}`)
	answers["keypool's 404"] = w.call(t, "GET", "/api/no-such-provider/x", "")
	for name, r := range answers {
		for _, bad := range []string{"Openai-Organization", "Openai-Project", "Anthropic-Organization-Id", "Set-Cookie"} {
			if v := r.header.Get(bad); v != "" {
				t.Errorf("%s: %s reached the client: %q", name, bad, v)
			}
		}
		for _, secret := range []string{fakeupstream.FakeOrganization, fakeupstream.FakeProject, fakeupstream.FakeAnthropicOrgID} {
			for k, vs := range r.header {
				if strings.Contains(strings.Join(vs, " "), secret) {
					t.Errorf("%s: header %s names the account: %q", name, k, vs)
				}
			}
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Content-Security-Policy") != "sandbox" {
			t.Errorf("%s: X-Content-Type-Options %q, Content-Security-Policy %q, want nosniff and sandbox",
				name, r.header.Get("X-Content-Type-Options"), r.header.Get("Content-Security-Policy"))
		}
	}
}

// testGatewayHeaders: of the cf-aig-* options a client sends, only the
// cache controls reach the AI Gateway, until the gateway_headers setting
// allows another one; a client's cf-aig-metadata then joins keypool's own
// entries (token and key ids), which every gateway request carries.
func (w *worker) testGatewayHeaders(t *testing.T) {
	w.importKeys(t, "google-ai-studio", "AIza"+randomHex(16))
	sent := map[string]string{
		"cf-aig-cache-ttl": "60", "cf-aig-skip-cache": "true",
		"cf-aig-collect-log": "false", "cf-aig-custom-cost": `{"per_token_in":0,"per_token_out":0}`,
		"cf-aig-cache-key": "shared-key", "cf-aig-metadata": `{"user":"x"}`,
		"cf-aig-authorization": "Bearer client-chosen",
	}
	send := func() fakeupstream.Request {
		model := "gemini-hdr-" + randomHex(4)
		h := map[string]string{"x-goog-api-key": w.token}
		for k, v := range sent {
			h[k] = v
		}
		r := w.do(t, "POST", "/api/google-ai-studio/v1beta/models/"+model+":generateContent", h, `{"contents":[{"parts":[{"text":"hi"}]}]}`)
		if r.status != http.StatusOK {
			t.Fatalf("gemini via the gateway: %d %s", r.status, r.body)
		}
		for _, q := range w.up.Requests() {
			if q.Model == model {
				return q
			}
		}
		t.Fatalf("request for %s never reached the gateway", model)
		return fakeupstream.Request{}
	}
	check := func(q fakeupstream.Request, clientMetadata bool, allowed ...string) {
		t.Helper()
		md := gjson.Parse(q.Header.Get("Cf-Aig-Metadata"))
		if md.Get("keypool_key").Int() <= 0 || md.Get("keypool_token_name").String() != "AUTH_KEY" || md.Get("user").Exists() != clientMetadata {
			t.Errorf("cf-aig-metadata at the gateway: %s; want keypool's entries, the client's only if allowed (%v)", md.Raw, clientMetadata)
		}
		got := map[string]string{}
		for k := range q.Header {
			if lk := strings.ToLower(k); strings.HasPrefix(lk, "cf-aig-") && lk != "cf-aig-authorization" && lk != "cf-aig-metadata" {
				got[lk] = q.Header.Get(k)
			}
		}
		if len(got) != len(allowed) {
			t.Errorf("cf-aig-* headers at the gateway: %v, want only %v", got, allowed)
		}
		for _, a := range allowed {
			if got[a] != sent[a] {
				t.Errorf("%s at the gateway: %q, want %q", a, got[a], sent[a])
			}
		}
		if q.Header.Get("Cf-Aig-Authorization") != "Bearer "+w.gwTok {
			t.Errorf("cf-aig-authorization at the gateway: %q, want keypool's own", q.Header.Get("Cf-Aig-Authorization"))
		}
	}
	check(send(), false, "cf-aig-cache-ttl", "cf-aig-skip-cache")
	r := w.adminCall(t, "PUT", "/admin/api/settings", `{"gateway_headers":["cf-aig-metadata"]}`)
	if r.status != http.StatusOK || !gjson.GetBytes(r.body, "gateway_headers").IsArray() {
		t.Fatalf("set gateway_headers: %d %s", r.status, r.body)
	}
	check(send(), true, "cf-aig-cache-ttl", "cf-aig-skip-cache")
	for _, bad := range []string{`["cf-aig-authorization"]`, `["x-custom"]`, `"cf-aig-metadata"`} {
		r := w.adminCall(t, "PUT", "/admin/api/settings", `{"gateway_headers":`+bad+`}`)
		if r.status != http.StatusBadRequest || r.json().Get("error.param").String() != "gateway_headers" {
			t.Errorf("gateway_headers %s: %d %s, want 400 naming the setting", bad, r.status, r.body)
		}
	}
}
