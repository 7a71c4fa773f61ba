//go:build e2e

package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// scopeCall is one request of the endpoint-scope attack.
type scopeCall struct {
	method, path, body string
	upstream           string // the path's end as the fake upstream sees it (through the suite's AI Gateway)
}

// scopeAttacks reach a pool key's account, not a model: stored data,
// files, batches, fine-tuning, and endpoints that mint temporary provider
// credentials which then bypass every quota.
var scopeAttacks = []scopeCall{
	{"GET", "/v1/files", "", "/openai/files"},
	{"POST", "/v1/batches", `{"input_file_id":"file-abc","endpoint":"/v1/chat/completions","completion_window":"24h"}`, "/openai/batches"},
	{"POST", "/v1/fine_tuning/jobs", `{"model":"gpt-4o-mini","training_file":"file-abc"}`, "/openai/fine_tuning/jobs"},
	{"POST", "/v1/realtime/sessions", `{"model":"gpt-4o-realtime-preview"}`, "/openai/realtime/sessions"},
	{"POST", "/api/google-ai-studio/v1alpha/auth_tokens", `{"uses":1}`, "/google-ai-studio/v1alpha/auth_tokens"},
	{"GET", "/api/google-ai-studio/v1beta/files", "", "/google-ai-studio/v1beta/files"},
	{"GET", "/v1/responses/resp_abc123", "", "/openai/responses/resp_abc123"},
	{"DELETE", "/v1/responses/resp_abc123", "", "/openai/responses/resp_abc123"},
	{"GET", "/v1/chat/completions", "", "/openai/chat/completions"},
	{"POST", "/api/openai/realtime/sessions", `{"model":"gpt-4o-realtime-preview"}`, "/openai/realtime/sessions"},
	{"POST", "/api/google-ai-studio/v1beta/cachedContents", `{"model":"models/gemini-2.0-flash"}`, "/google-ai-studio/v1beta/cachedContents"},
}

// scopeTricks dress a non-inference path up as an inference one.
var scopeTricks = []struct {
	scopeCall
	status int
	code   string
}{
	{scopeCall{"POST", "/v1/chat/completions/", `{"model":"gpt-4o-mini"}`, ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"GET", "/v1//files", "", ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"GET", "/v1/FILES", "", ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"POST", "/v1/Chat/Completions", `{"model":"gpt-4o-mini"}`, ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"GET", "/v1/models/gpt-4o-mini%5Cfiles", "", ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"GET", "/v1/models/x%5C..%5C..%5Cfiles", "", ""}, 400, "invalid_request"},
	{scopeCall{"POST", "/v1/chat%2Fcompletions%2F..%2F..%2Ffiles", "", ""}, 400, "invalid_request"},
	{scopeCall{"POST", "/api/google-ai-studio/v1beta/models/x%2F..%2F..%2Ffiles:generateContent", `{}`, ""}, 400, "invalid_request"},
	{scopeCall{"POST", "/api/google-ai-studio/v1beta/tunedModels/x:generateContent", `{}`, ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:batchGenerateContent", `{}`, ""}, 403, "endpoint_not_allowed"},
	{scopeCall{"POST", "/api/compat/files", `{"model":"openai/gpt-4o-mini"}`, ""}, 403, "endpoint_not_allowed"},
}

// scopeInference must keep working for a token with the default scope.
var scopeInference = []scopeCall{
	{"POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, "/openai/chat/completions"},
	{"POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, "/openai/embeddings"},
	{"POST", "/v1/responses", `{"model":"gpt-4o-mini","input":"hi"}`, "/openai/responses"},
	{"POST", "/v1/images/generations", `{"model":"dall-e-3","prompt":"a cat"}`, "/openai/images/generations"},
	{"GET", "/v1/models/gpt-4o-mini", "", "/openai/models/gpt-4o-mini"},
	{"POST", "/api/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, "/openai/chat/completions"},
	{"POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`,
		"/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent"},
	{"GET", "/api/google-ai-studio/v1beta/models", "", "/google-ai-studio/v1beta/models"},
	{"POST", "/api/compat/chat/completions", `{"model":"openai/gpt-4o-mini","messages":[]}`, "/compat/chat/completions"},
}

// TestAttackScope: a client token with the default endpoint scope (and
// AUTH_KEY without AUTH_KEY_PASSTHROUGH) cannot reach a pool key's
// files, batches, fine-tuning, stored responses or credential-minting
// endpoints — the upstream never sees those requests — while a token with
// full pass-through can, and inference keeps working for both.
func TestAttackScope(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			okey, gkey := "sk-scope"+randomHex(12), "AIza"+randomHex(16)
			w.importKeys(t, "openai", okey)
			w.importKeys(t, "google-ai-studio", gkey)
			def := w.newToken(t, `{"name":"default scope"}`, "inference")
			all := w.newToken(t, `{"name":"pass-through","endpoints":"all"}`, "all")

			for _, c := range scopeAttacks {
				w.scopeRefused(t, "default token", def, c, 403, "endpoint_not_allowed")
				w.scopeRefused(t, "AUTH_KEY", w.token, c, 403, "endpoint_not_allowed")
			}
			for _, c := range scopeTricks {
				w.scopeRefused(t, "default token", def, c.scopeCall, c.status, c.code)
			}
			for _, c := range scopeAttacks {
				w.scopeServed(t, "pass-through token", all, c, okey, gkey)
			}
			for _, c := range scopeInference {
				w.scopeServed(t, "default token", def, c, okey, gkey)
				w.scopeServed(t, "AUTH_KEY", w.token, c, okey, gkey)
			}

			// Given full pass-through by the admin, the default token gets in.
			id := w.adminCall(t, "GET", "/admin/api/tokens", "").json().Get(`tokens.#(name=="default scope").id`).String()
			if r := w.adminCall(t, "PATCH", "/admin/api/tokens/"+id, `{"endpoints":"all"}`); r.status != 200 ||
				r.json().Get("endpoints").String() != "all" {
				t.Fatalf("patch endpoints: %d %s", r.status, r.body)
			}
			w.scopeServed(t, "patched token", def, scopeAttacks[0], okey, gkey)
		})
	}
}

// newToken creates a client token and checks the endpoint scope it shows.
func (w *worker) newToken(t *testing.T, body, endpoints string) string {
	t.Helper()
	r := w.adminCall(t, "POST", "/admin/api/tokens", body)
	if r.status != http.StatusCreated || !strings.HasPrefix(r.json().Get("token").String(), "kp-") {
		t.Fatalf("create token %s: %d %s", body, r.status, r.body)
	}
	if got := r.json().Get("endpoints").String(); got != endpoints {
		t.Errorf("token %s: endpoints %q, want %q", body, got, endpoints)
	}
	return r.json().Get("token").String()
}

// scopeRefused sends c with tok and wants it refused in the OpenAI error
// format, and never seen upstream.
func (w *worker) scopeRefused(t *testing.T, who, tok string, c scopeCall, status int, code string) {
	t.Helper()
	id := randomHex(6)
	r := w.do(t, c.method, c.path, map[string]string{"Authorization": "Bearer " + tok, "X-Test-Id": id}, c.body)
	for _, q := range w.up.Requests() {
		if q.Header.Get("X-Test-Id") == id {
			t.Errorf("%s %s %s: answered %d, and the upstream saw it (%s with a pool key)", who, c.method, c.path, r.status, q.Path)
		}
	}
	if r.status != status {
		t.Errorf("%s %s %s: %d, want %d: %.200s", who, c.method, c.path, r.status, status, r.body)
		return
	}
	e := checkOpenAIError(t, r, status)
	if e.Get("code").String() != code {
		t.Errorf("%s %s %s: code %q, want %q: %s", who, c.method, c.path, e.Get("code").String(), code, r.body)
	}
	if code == "endpoint_not_allowed" && !strings.Contains(e.Get("message").String(), c.method+" ") {
		t.Errorf("%s %s %s: message does not name the call: %s", who, c.method, c.path, e.Get("message").String())
	}
	t.Logf("%-18s %-6s %-75s → %d %s", who, c.method, c.path, r.status, code)
}

// scopeServed sends c with tok and wants the upstream's 200, the request
// having reached it with a pool key.
func (w *worker) scopeServed(t *testing.T, who, tok string, c scopeCall, okey, gkey string) {
	t.Helper()
	id := randomHex(6)
	r := w.do(t, c.method, c.path, map[string]string{"Authorization": "Bearer " + tok, "X-Test-Id": id}, c.body)
	if r.status != http.StatusOK {
		t.Errorf("%s %s %s: %d, want 200: %s", who, c.method, c.path, r.status, r.body)
		return
	}
	q := findRequest(t, w.up, id)
	if !strings.HasSuffix(q.Path, c.upstream) || q.Method != c.method || (q.Key != okey && q.Key != gkey) {
		t.Errorf("%s %s %s: upstream saw %s %s with key %q", who, c.method, c.path, q.Method, q.Path, mask(q.Key+"....."))
	}
}
