package handler

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/proxy"
)

// nonInference are calls a token without full pass-through may not make:
// method, path, body.
var nonInference = [][3]string{
	{"GET", "/v1/files", ""},
	{"POST", "/v1/batches", `{"input_file_id":"file-abc","endpoint":"/v1/chat/completions","completion_window":"24h"}`},
	{"POST", "/v1/fine_tuning/jobs", `{"model":"gpt-4o-mini","training_file":"file-abc"}`},
	{"POST", "/v1/realtime/sessions", `{"model":"gpt-4o-realtime-preview"}`},
	{"GET", "/v1/chat/completions", ""},
	{"GET", "/v1/responses/resp_abc", ""},
	{"DELETE", "/v1/responses/resp_abc", ""},
	{"POST", "/v1/chat/completions/", `{"model":"gpt-4o-mini"}`},
	{"POST", "/v1//files", ""},
	{"POST", "/v1/Chat/Completions", `{"model":"gpt-4o-mini"}`},
	{"GET", "/api/openai/files", ""},
	{"POST", "/api/openai/v1/chat/completions", `{"model":"gpt-4o-mini"}`},
	{"POST", "/api/google-ai-studio/v1alpha/auth_tokens", `{}`},
	{"GET", "/api/google-ai-studio/v1beta/files", ""},
	{"POST", "/api/google-ai-studio/v1beta/cachedContents", `{"model":"models/gemini-2.0-flash"}`},
	{"POST", "/api/google-ai-studio/v1beta/tunedModels/x:generateContent", `{}`},
	{"GET", "/api/siliconflow/v1/user/info", ""},
	{"POST", "/api/anthropic/v1/messages/batches", `{"requests":[]}`},
	{"POST", "/api/compat/files", `{"model":"openai/gpt-4o-mini"}`},
}

// inference are calls every client may make.
var inference = [][3]string{
	{"POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`},
	{"POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"x"}`},
	{"POST", "/v1/responses", `{"model":"gpt-4o-mini","input":"hi"}`},
	{"GET", "/v1/models/gpt-4o-mini", ""},
	{"POST", "/api/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`},
	{"POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`},
	{"POST", "/api/compat/chat/completions", `{"model":"openai/gpt-4o-mini","messages":[]}`},
}

func endpointEnv(t *testing.T, vars ...string) *testEnv {
	e := newEnv(t, vars...)
	e.addKeys("openai", "sk-scope-openai-000001")
	e.addKeys("google-ai-studio", "AIza-scope-gemini-000001")
	e.addKeys("siliconflow", "sk-scope-sflow-000001")
	e.addKeys("anthropic", "sk-ant-scope-000001")
	return e
}

// refusedEndpoint checks a 403 endpoint_not_allowed that names the path
// and never reached the upstream.
func refusedEndpoint(t *testing.T, e *testEnv, c [3]string, cred string) {
	t.Helper()
	before := e.fetches.Load()
	w := e.serve(c[0], c[1], c[2], "Authorization", "Bearer "+cred, "Content-Type", "application/json")
	er := wantError(t, w, http.StatusForbidden, "endpoint_not_allowed")
	if er.Error.Type != "permission_error" || !strings.Contains(er.Error.Message, c[0]+" "+c[1]) {
		t.Errorf("%s %s: type %q, message %q does not name the call", c[0], c[1], er.Error.Type, er.Error.Message)
	}
	if n := e.fetches.Load() - before; n != 0 {
		t.Errorf("%s %s: refused, yet %d upstream calls", c[0], c[1], n)
	}
}

func servedEndpoint(t *testing.T, e *testEnv, c [3]string, cred string) {
	t.Helper()
	before := len(e.requests())
	w := e.serve(c[0], c[1], c[2], "Authorization", "Bearer "+cred, "Content-Type", "application/json")
	if w.Code != http.StatusOK {
		t.Errorf("%s %s: %d, want 200: %s", c[0], c[1], w.Code, w.Body.String())
	}
	if n := len(e.requests()) - before; n != 1 {
		t.Errorf("%s %s: %d upstream requests, want 1", c[0], c[1], n)
	}
}

func TestEndpointScopeTokens(t *testing.T) {
	e := endpointEnv(t)
	def := e.newToken(`{"name":"default"}`)
	if def.Endpoints != "inference" {
		t.Errorf("a new token's endpoints %q, want inference", def.Endpoints)
	}
	all := e.newToken(`{"name":"all","endpoints":"all"}`)
	if all.Endpoints != "all" {
		t.Errorf("endpoints %q, want all", all.Endpoints)
	}
	for _, c := range nonInference {
		refusedEndpoint(t, e, c, def.Token)
	}
	for _, c := range inference {
		servedEndpoint(t, e, c, def.Token)
		servedEndpoint(t, e, c, all.Token)
	}
	for _, c := range nonInference {
		if c[1] == "/api/compat/files" || c[1] == "/v1//files" {
			continue // pass-through, and then the route's own answer
		}
		servedEndpoint(t, e, c, all.Token)
	}

	// A change applies at once, both ways.
	if w := e.admin(http.MethodPatch, idPath(all.ID), `{"endpoints":"inference"}`); w.Code != http.StatusOK ||
		gjson.Get(w.Body.String(), "endpoints").String() != "inference" {
		t.Fatalf("patch to inference: %d %s", w.Code, w.Body.String())
	}
	refusedEndpoint(t, e, nonInference[0], all.Token)
	if w := e.admin(http.MethodPatch, idPath(def.ID), `{"endpoints":"all"}`); w.Code != http.StatusOK {
		t.Fatalf("patch to all: %d %s", w.Code, w.Body.String())
	}
	servedEndpoint(t, e, nonInference[0], def.Token)
}

// A refused endpoint uses none of the token's quota and counts as a
// rejected request of that token.
func TestEndpointScopeQuotaAndUsage(t *testing.T) {
	e := endpointEnv(t, "USAGE_FLUSH_SECONDS", "300")
	tok := e.newToken(`{"name":"one","requests_total":1}`)
	refusedEndpoint(t, e, nonInference[0], tok.Token)
	refusedEndpoint(t, e, nonInference[3], tok.Token)
	var rejected int64
	for _, r := range e.h.pool.TakeRollups() {
		if r.TokenID == tok.ID {
			if r.Model != proxy.RefusedModel || r.KeyID != 0 {
				t.Errorf("refused call recorded under model %q key %d", r.Model, r.KeyID)
			}
			rejected += r.Rejected
		}
	}
	if rejected != 2 {
		t.Errorf("rejected count %d, want 2", rejected)
	}
	servedEndpoint(t, e, inference[0], tok.Token)
	wantError(t, e.serve(inference[0][0], inference[0][1], inference[0][2], "Authorization", "Bearer "+tok.Token,
		"Content-Type", "application/json"), http.StatusTooManyRequests, "quota_exceeded")
}

// AUTH_KEY has the default scope unless AUTH_KEY_PASSTHROUGH=1.
func TestEndpointScopeAuthKey(t *testing.T) {
	e := endpointEnv(t)
	for _, c := range nonInference[:4] {
		refusedEndpoint(t, e, c, testAuthKey)
	}
	w := e.proxy(http.MethodGet, "/v1/files", "")
	if er := wantError(t, w, http.StatusForbidden, "endpoint_not_allowed"); !strings.Contains(er.Error.Message, "AUTH_KEY_PASSTHROUGH=1") {
		t.Errorf("message %q does not say how AUTH_KEY gets full pass-through", er.Error.Message)
	}
	for _, c := range inference {
		servedEndpoint(t, e, c, testAuthKey)
	}
	for _, v := range []string{"0", "yes", ""} {
		e.set("AUTH_KEY_PASSTHROUGH", v)
		refusedEndpoint(t, e, nonInference[0], testAuthKey)
	}
	for _, v := range []string{"1", "true"} {
		e.set("AUTH_KEY_PASSTHROUGH", v)
		for _, c := range nonInference[:4] {
			servedEndpoint(t, e, c, testAuthKey)
		}
	}
}

// Through AI Gateway the native paths are judged alike.
func TestEndpointScopeGateway(t *testing.T) {
	e := endpointEnv(t, "CF_ACCOUNT_ID", "acct-1", "AI_GATEWAY", "gw", "AI_GATEWAY_URL", "")
	e.set("AI_GATEWAY_URL", e.up.URL+"/v1")
	tok := e.newToken(`{"name":"gw"}`)
	refusedEndpoint(t, e, [3]string{"POST", "/api/google-ai-studio/v1alpha/auth_tokens", `{}`}, tok.Token)
	refusedEndpoint(t, e, [3]string{"GET", "/api/openai/files", ""}, tok.Token)
	servedEndpoint(t, e, [3]string{"POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`}, tok.Token)
	if r := e.requests()[len(e.requests())-1]; !strings.HasSuffix(r.Path, "/gw/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent") {
		t.Errorf("not sent through the gateway: %s", r.Path)
	}
}

func TestEndpointsField(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{`{"name":"x","endpoints":"everything"}`, `{"name":"x","endpoints":true}`,
		`{"name":"x","endpoints":["all"]}`, `{"name":"x","endpoints":"ALL"}`, `{"name":"x","endpoints":""}`} {
		w := e.admin(http.MethodPost, "/admin/api/tokens", body)
		er := wantError(t, w, http.StatusBadRequest, "invalid_request")
		if er.Error.Param == nil || *er.Error.Param != "endpoints" {
			t.Errorf("%s: param %v, want endpoints", body, er.Error.Param)
		}
	}
	tok := e.newToken(`{"name":"x"}`)
	w := e.admin(http.MethodPatch, idPath(tok.ID), `{"endpoints":"some"}`)
	if er := wantError(t, w, http.StatusBadRequest, "invalid_request"); er.Error.Param == nil || *er.Error.Param != "endpoints" {
		t.Errorf("patch: param %v, want endpoints", er.Error.Param)
	}
	// A patch that does not name it keeps it.
	all := e.newToken(`{"name":"y","endpoints":"all"}`)
	e.admin(http.MethodPatch, idPath(all.ID), `{"rpm":5}`)
	w = e.admin(http.MethodGet, "/admin/api/tokens", "")
	for _, x := range gjson.Get(w.Body.String(), "tokens").Array() {
		want := map[int64]string{tok.ID: "inference", all.ID: "all"}[x.Get("id").Int()]
		if got := x.Get("endpoints").String(); got != want {
			t.Errorf("token %d listed with endpoints %q, want %q", x.Get("id").Int(), got, want)
		}
	}
	w = e.admin(http.MethodGet, "/admin/api/tokens/"+strconv.FormatInt(all.ID, 10), "")
	if got := gjson.Get(w.Body.String(), "endpoints").String(); got != "all" {
		t.Errorf("GET token: endpoints %q", got)
	}
}
