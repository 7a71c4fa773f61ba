package handler

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/checks"
	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/proxy"
)

// TestDuplicateModelRefusedBeforeUpstream: through the handler, with a
// token scoped to gpt-4o-mini, a repeated model is refused on every
// route, and no upstream call, key state or rollup follows.
func TestDuplicateModelRefusedBeforeUpstream(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-dup-key-000000001", "sk-dup-key-000000002")
	_, secret := e.usageTokenNew(`{"name":"mini","models":["gpt-4o-mini"]}`)
	dup := `{"model":"gpt-4o-mini","messages":[],"model":"o1-pro"}`
	for _, path := range []string{"/v1/chat/completions", "/api/openai/chat/completions"} {
		wantError(t, e.serve(http.MethodPost, path, dup, withToken(secret)...), http.StatusBadRequest, "invalid_request")
	}
	wantError(t, e.serve(http.MethodPost, "/api/compat/chat/completions", `{"model":"openai/gpt-4o-mini","model":"openai/o1-pro"}`,
		withToken(secret)...), http.StatusBadRequest, "invalid_request")
	mp := multipartBody(part{name: "model", data: []byte("gpt-4o-mini")}, part{name: "model", data: []byte("whisper-1")})
	wantError(t, e.serve(http.MethodPost, "/v1/audio/transcriptions", string(mp), "Authorization", "Bearer "+secret,
		"Content-Type", "multipart/form-data; boundary="+testBoundary), http.StatusBadRequest, "invalid_request")
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls", n)
	}
	if n := e.count(`SELECT COUNT(*) FROM key_models`); n != 0 {
		t.Errorf("%d key_models rows", n)
	}
	// The same token's own model passes.
	wantServed(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...), "1")
}

// TestNativeModelScopeAndState: the token's scope and the key's per-model
// state concern the model the provider acts on: Gemini's path.
func TestNativeModelScopeAndState(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	ids := e.addKeys("google-ai-studio", "AIzaSyScopeKey00001")
	_, secret := e.usageTokenNew(`{"name":"flash","models":["gemini-2.0-flash"]}`)
	hdr := []string{"x-goog-api-key", secret, "Content-Type", "application/json"}
	// The body names the allowed model, the path the one Gemini runs.
	wantError(t, e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.5-pro:generateContent",
		`{"model":"gemini-2.0-flash","contents":[]}`, hdr...), http.StatusBadRequest, "invalid_request")
	wantError(t, e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.5-pro:generateContent",
		`{"contents":[]}`, hdr...), http.StatusForbidden, "model_not_allowed")
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls", n)
	}
	// A 429 for the path's model cools the key for that model.
	e.up.SetRule("AIzaSyScopeKey00001", fakeupstream.GeminiMinuteQuota("gemini-2.0-flash", "20s"))
	e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`, hdr...)
	k, _ := e.key(ids[0])
	if len(k.Models) != 1 || k.Models[0].Model != "gemini-2.0-flash" {
		t.Errorf("key models %+v, want gemini-2.0-flash cooling", k.Models)
	}
}

// TestRefusedModelLabel: a request keypool refuses is counted under a
// fixed label, not under the model the client named.
func TestRefusedModelLabel(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-label-key-0000001")
	_, secret := e.usageTokenNew(`{"name":"mini","models":["gpt-4o-mini"]}`)
	for i := 0; i < 20; i++ {
		model := strconv.Itoa(i) + strings.Repeat("z", 250)
		wantError(t, e.serve(http.MethodPost, "/v1/chat/completions", `{"model":"`+model+`"}`, withToken(secret)...),
			http.StatusForbidden, "model_not_allowed")
	}
	rows := e.rollups("m")
	if len(rows) != 1 || rows[0].Model != proxy.RefusedModel || rows[0].Requests != 20 || rows[0].Rejected != 20 {
		t.Errorf("rollups %+v, want one %q row of 20 rejected requests", rows, proxy.RefusedModel)
	}
}

// TestCacheBoundedByDistinctModels: served requests for many distinct
// models leave the cache within its bound, and the counters intact.
func TestCacheBoundedByDistinctModels(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "3600", "CACHE_SECONDS", "300")
	e.addKeys("openai", "sk-bound-key-0000001")
	n := pool.CacheEntries + 100
	for i := 0; i < n; i++ {
		wantServed(t, e.chat("gpt-bound-"+strconv.Itoa(i)+strings.Repeat("x", 200)), "1")
	}
	e.set("KEYPOOL_DEBUG", "1")
	w := e.admin(http.MethodGet, "/admin/api/debug/stats", "")
	s := gjson.Parse(w.Body.String())
	entries, size := s.Get("cache_entries").Int(), s.Get("cache_bytes").Int()
	if !s.Get("cache_entries").Exists() || entries > pool.CacheEntries || size > pool.CacheBytes {
		t.Errorf("after %d distinct models: %s", n, w.Body.String())
	}
	t.Logf("cache after %d distinct models: %d entries, %d bytes", n, entries, size)
	// The pending counts reached D1 early (too many rollup groups), and
	// every request is in them once the rest is flushed.
	if rows := e.rollups("m"); len(rows) == 0 {
		t.Errorf("no rollups written before USAGE_FLUSH_SECONDS with %d groups pending", n)
	}
	e.h.proxy().FlushNow()
	total := int64(0)
	for _, r := range e.rollups("m") {
		total += r.Requests
	}
	if total != int64(n) {
		t.Errorf("rollups count %d requests, want %d", total, n)
	}
}

// TestModelListRefreshTriesAnotherKey: a model list refresh that one key
// gets a 529 (or 5xx, 429, network error) for is tried with another.
func TestModelListRefreshTriesAnotherKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule fakeupstream.Rule
	}{
		{"anthropic 529", fakeupstream.AnthropicOverloaded()},
		{"anthropic 429", fakeupstream.AnthropicRateLimited(5)},
		{"anthropic 500", fakeupstream.Rule{Status: 500, Body: `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.addKeys("anthropic", "sk-ant-list-key-00001", "sk-ant-list-key-00002")
			e.up.SetRule("sk-ant-list-key-00001", tc.rule)
			w := e.proxy(http.MethodGet, "/v1/models", "")
			if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"anthropic/gpt-4o-mini"`) {
				t.Errorf("/v1/models: %d %s, want the list fetched with the second key", w.Code, w.Body.String())
			}
			var keys []string
			for _, r := range e.requests() {
				if strings.HasSuffix(r.Path, "/models") {
					keys = append(keys, r.Key)
				}
			}
			if len(keys) != 2 || keys[0] == keys[1] {
				t.Errorf("model list fetched with keys %v, want both, once each", keys)
			}
		})
	}
	t.Run("network error", func(t *testing.T) {
		e := newEnv(t)
		e.addKeys("anthropic", "sk-ant-list-key-00001", "sk-ant-list-key-00002")
		calls := 0
		e.fetch = func(r *http.Request) (*http.Response, error) {
			calls++
			if calls == 1 {
				return nil, errNetwork
			}
			return http.DefaultClient.Do(r)
		}
		if w := e.proxy(http.MethodGet, "/v1/models", ""); !strings.Contains(w.Body.String(), `"anthropic/gpt-4o-mini"`) {
			t.Errorf("/v1/models after a network error: %d %s", w.Code, w.Body.String())
		}
	})
	t.Run("bounded", func(t *testing.T) {
		e := newEnv(t)
		var secrets []string
		for i := 0; i < 6; i++ {
			s := "sk-ant-list-key-0000" + strconv.Itoa(i)
			secrets = append(secrets, s)
			e.up.SetRule(s, fakeupstream.AnthropicOverloaded())
		}
		e.addKeys("anthropic", secrets...)
		e.proxy(http.MethodGet, "/v1/models", "")
		if n := e.fetches.Load(); n != checks.ModelListTries {
			t.Errorf("%d fetches with every key overloaded, want %d", n, checks.ModelListTries)
		}
	})
}

var errNetwork = &netError{}

type netError struct{}

func (*netError) Error() string { return "connection reset by peer" }

// TestModelNameCapServed: a model name keypool refuses (too long, control
// characters) is refused on every route before any upstream call, and not
// counted.
func TestModelNameCapServed(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-cap-key-000000001")
	e.addKeys("google-ai-studio", "AIzaSyCapKey0000001")
	huge := strings.Repeat("m", 1<<20)
	cases := []struct{ what, method, path, body string }{
		{"1 MiB model", "POST", "/v1/chat/completions", `{"model":"` + huge + `","messages":[]}`},
		{"escaped control character", "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini\u0007","messages":[]}`},
		{"long model in /v1/models/<id>", "GET", "/v1/models/" + strings.Repeat("m", 300), ""},
		{"long model in a Gemini path", "POST", "/api/google-ai-studio/v1beta/models/" + strings.Repeat("g", 300) + ":generateContent", `{}`},
		{"long model on /api/compat", "POST", "/api/compat/chat/completions", `{"model":"openai/` + strings.Repeat("m", 300) + `"}`},
	}
	for _, c := range cases {
		w := e.proxy(c.method, c.path, c.body)
		if a := wantError(t, w, http.StatusBadRequest, "invalid_request"); a.Error.Param == nil || *a.Error.Param != "model" {
			t.Errorf("%s: param %v, want model", c.what, a.Error.Param)
		}
		if w.Body.Len() > 1024 {
			t.Errorf("%s: a %d-byte answer", c.what, w.Body.Len())
		}
	}
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls for refused models", n)
	}
	if rows := e.rollups("m"); len(rows) != 0 {
		t.Errorf("refused models counted: %+v", rows)
	}
}
