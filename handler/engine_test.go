package handler

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// Tests of the rotation engine as the proxy drives it: what each kind of
// upstream failure does to the key that got it, and what the client sees.

// modelRow is one key_models row.
type modelRow struct {
	KeyID  int64
	Model  string
	State  string
	Until  int64
	Streak int64
}

// modelRows reads every key_models row, by key then model.
func (e *testEnv) modelRows() []modelRow {
	e.t.Helper()
	rows, err := e.db.QueryContext(context.Background(),
		`SELECT key_id, model, state, until, streak FROM key_models ORDER BY key_id, model`)
	if err != nil {
		e.t.Fatalf("reading key_models: %v", err)
	}
	defer rows.Close()
	var out []modelRow
	for rows.Next() {
		var r modelRow
		if err := rows.Scan(&r.KeyID, &r.Model, &r.State, &r.Until, &r.Streak); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// count runs a COUNT(*) query.
func (e *testEnv) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// putSettings changes the run-time settings and checks that it worked.
func (e *testEnv) putSettings(body string) {
	e.t.Helper()
	w := e.admin(http.MethodPut, "/admin/api/settings", body)
	if w.Code != http.StatusOK {
		e.t.Fatalf("PUT settings %s: status %d, body %s", body, w.Code, w.Body.String())
	}
}

// wantKeysUntouched checks that keys have no state, no model state and no
// events.
func wantKeysUntouched(t *testing.T, e *testEnv, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		k, evs := e.key(id)
		if k.Status != store.StatusActive || len(k.Models) != 0 || len(evs) != 0 {
			t.Errorf("key %d: status %q models %+v events %+v, want active with no state", id, k.Status, k.Models, evs)
		}
	}
}

func idStr(id int64) string { return strconv.FormatInt(id, 10) }

type responseRecorder = httptest.ResponseRecorder

func TestModelNotFoundOnOneKey(t *testing.T) {
	gemini404 := fakeupstream.GeminiModelNotFound("gemini-9-ultra")
	tests := []struct {
		name     string
		prov     string
		secrets  [2]string
		rule     fakeupstream.Rule
		model    string // as keypool records it
		request  func(e *testEnv) *responseRecorder
		otherReq func(e *testEnv) *responseRecorder // another model
	}{
		{
			name: "openai 404 model_not_found", prov: "openai",
			secrets: [2]string{"sk-nomodel-key-00001", "sk-hasmodel-key-0002"},
			rule:    fakeupstream.OpenAIModelNotFound("gpt-4o-mini"), model: "gpt-4o-mini",
			request:  func(e *testEnv) *responseRecorder { return e.chat("gpt-4o-mini") },
			otherReq: func(e *testEnv) *responseRecorder { return e.chat("gpt-4o") },
		},
		{
			name: "gemini native 404 NOT_FOUND", prov: "google-ai-studio",
			secrets: [2]string{"AIzaSyNoModelKey00001", "AIzaSyHasModelKey0002"},
			rule:    gemini404, model: "gemini-9-ultra",
			request: func(e *testEnv) *responseRecorder {
				return e.proxy(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-9-ultra:generateContent", `{"contents":[]}`)
			},
			otherReq: func(e *testEnv) *responseRecorder {
				return e.proxy(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ids := e.addKeys(tc.prov, tc.secrets[0], tc.secrets[1])
			e.up.SetRule(tc.secrets[0], tc.rule)

			w := tc.request(e)
			if got := wantServed(t, w, "2"); got != idStr(ids[1]) {
				t.Errorf("served by key %s, want %d", got, ids[1])
			}
			k, evs := e.key(ids[0])
			if k.Status != store.StatusActive {
				t.Errorf("key A status %q, want active (blocked for one model only)", k.Status)
			}
			if len(k.Models) != 1 || k.Models[0].Model != tc.model || k.Models[0].State != store.ModelBlocked {
				t.Errorf("key A models %+v, want %s blocked", k.Models, tc.model)
			}
			if len(evs) != 1 || evs[0].To != store.ModelBlocked || evs[0].Model != tc.model || evs[0].Status != 404 {
				t.Errorf("key A events %+v, want one block of %s with status 404", evs, tc.model)
			}
			wantKeysUntouched(t, e, ids[1])

			// Key A still serves other models...
			w = tc.otherReq(e)
			if got := wantServed(t, w, "1"); got != idStr(ids[0]) {
				t.Errorf("other model served by key %s, want key A %d", got, ids[0])
			}
			// ...but is not tried for the blocked one again.
			before := len(e.requests())
			w = tc.request(e)
			if got := wantServed(t, w, "1"); got != idStr(ids[1]) {
				t.Errorf("served by key %s, want %d", got, ids[1])
			}
			for _, r := range e.requests()[before:] {
				if r.Key == tc.secrets[0] {
					t.Errorf("key blocked for %s was tried again", tc.model)
				}
			}
		})
	}
}

func TestModelNotFoundOnEveryKey(t *testing.T) {
	tests := []struct {
		name, maxAttempts string
		keys              int
		wantAttempts      int
	}{
		{"two keys", "", 2, 2},
		{"three keys", "", 3, 3},
		{"more keys than attempts", "3", 5, 3},
		{"one key", "", 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "MAX_ATTEMPTS", tc.maxAttempts)
			var secrets []string
			for i := 0; i < tc.keys; i++ {
				secrets = append(secrets, "sk-every-key-0000"+strconv.Itoa(i))
			}
			ids := e.addKeys("openai", secrets...)
			rule := fakeupstream.OpenAIModelNotFound("gpt-9")
			rule.Header = map[string]string{"X-Request-Id": "req_404"}
			for _, s := range secrets {
				e.up.SetRule(s, rule)
			}
			for round := 1; round <= 2; round++ {
				before := len(e.requests())
				w := e.chat("gpt-9")
				if w.Code != http.StatusNotFound {
					t.Fatalf("round %d: status %d, want the upstream's 404; body %s", round, w.Code, w.Body.String())
				}
				if w.Body.String() != rule.Body {
					t.Errorf("round %d: body changed:\n got %q\nwant %q", round, w.Body.String(), rule.Body)
				}
				if got := w.Header().Get("X-Keypool-Attempts"); got != strconv.Itoa(tc.wantAttempts) {
					t.Errorf("round %d: X-Keypool-Attempts %q, want %d", round, got, tc.wantAttempts)
				}
				if w.Header().Get("X-Request-Id") != "req_404" {
					t.Errorf("round %d: upstream headers not relayed", round)
				}
				// The model does not exist: no key is to blame, and the next
				// request asks the upstream again.
				if n := len(e.requests()) - before; n != tc.wantAttempts {
					t.Errorf("round %d: %d upstream calls, want %d", round, n, tc.wantAttempts)
				}
				if rows := e.modelRows(); len(rows) != 0 {
					t.Errorf("round %d: key state written: %+v", round, rows)
				}
				if n := e.count(`SELECT COUNT(*) FROM key_events`); n != 0 {
					t.Errorf("round %d: %d key events, want 0", round, n)
				}
			}
			for _, id := range ids {
				if k, _ := e.key(id); k.Status != store.StatusActive {
					t.Errorf("key %d status %q, want active", id, k.Status)
				}
			}
		})
	}
}

func TestExhaustedKeyServesFreeModels(t *testing.T) {
	tests := []struct {
		name, prov, secret string
		rule               fakeupstream.Rule
		status             int64
	}{
		{"deepseek 402", "deepseek", "sk-deepseek-key-000001", fakeupstream.DeepSeekInsufficientBalance(), 402},
		{"openai 429 insufficient_quota", "openai", "sk-openai-key-0000001", fakeupstream.OpenAIInsufficientQuota(), 429},
		{"siliconflow 403 30001", "siliconflow", "sk-siliconflow-key-001", fakeupstream.SiliconFlowInsufficientBalance(), 403},
		{"anthropic 400 credit balance", "anthropic", "sk-ant-anthropic-key-01", fakeupstream.AnthropicLowCredit(), 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ids := e.addKeys(tc.prov, tc.secret)
			e.up.SetRule(tc.secret, tc.rule)

			w := e.chat(tc.prov + "/paid-model")
			wantError(t, w, http.StatusServiceUnavailable, "no_available_key")
			k, evs := e.key(ids[0])
			if k.Status != store.StatusExhausted || k.StatusReason == "" {
				t.Errorf("key status %q (%q), want exhausted with a reason", k.Status, k.StatusReason)
			}
			if len(evs) != 1 || evs[0].From != store.StatusActive || evs[0].To != store.StatusExhausted ||
				evs[0].Status != tc.status || evs[0].Model != "" || evs[0].Excerpt == "" {
				t.Errorf("events %+v, want one active→exhausted with status %d and an excerpt", evs, tc.status)
			}
			if len(k.Models) != 0 {
				t.Errorf("model states %+v, want none (the whole key is exhausted)", k.Models)
			}

			// The key has money again for nothing but free models.
			e.up.ClearRule(tc.secret)
			e.putSettings(`{"free_models":["` + tc.prov + `/free-*"]}`)
			before := len(e.requests())
			w = e.chat(tc.prov + "/free-model")
			if got := wantServed(t, w, "1"); got != idStr(ids[0]) {
				t.Errorf("free model served by key %s, want the exhausted key %d", got, ids[0])
			}
			if r := e.requests()[len(e.requests())-1]; r.Model != "free-model" || r.Key != tc.secret {
				t.Errorf("upstream got model %q key %q", r.Model, r.Key)
			}
			w = e.chat(tc.prov + "/paid-model")
			wantError(t, w, http.StatusServiceUnavailable, "no_available_key")
			if n := len(e.requests()) - before; n != 1 {
				t.Errorf("%d upstream calls, want 1 (none for the paid model)", n)
			}
			if k, _ := e.key(ids[0]); k.Status != store.StatusExhausted {
				t.Errorf("serving a free model changed the status to %q", k.Status)
			}
			// A whitelist for another provider does not apply.
			e.putSettings(`{"free_models":["groq/free-*"]}`)
			wantError(t, e.chat(tc.prov+"/free-model"), http.StatusServiceUnavailable, "no_available_key")
			// A pattern without a provider applies to every provider.
			e.putSettings(`{"free_models":["*-model:free"]}`)
			wantServed(t, e.chat(tc.prov+"/x-model:free"), "1")
		})
	}
}

func TestModelPermissionBlocksModel(t *testing.T) {
	tests := []struct {
		name, prov, secret string
		model              string // bare
		rule               fakeupstream.Rule
	}{
		{"siliconflow 403 30011", "siliconflow", "sk-siliconflow-key-001", "Qwen/QwQ-32B",
			fakeupstream.SiliconFlowModelForbidden("Qwen/QwQ-32B")},
		{"openai 403 model access", "openai", "sk-openai-key-0000001", "o1-pro", fakeupstream.Rule{
			Status: http.StatusForbidden, Models: []string{"o1-pro"},
			Body: `{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","param":null,"code":null}}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ids := e.addKeys(tc.prov, tc.secret)
			e.up.SetRule(tc.secret, tc.rule)

			wantError(t, e.chat(tc.prov+"/"+tc.model), http.StatusServiceUnavailable, "no_available_key")
			k, evs := e.key(ids[0])
			if k.Status != store.StatusActive {
				t.Errorf("key status %q, want active (only the model is blocked)", k.Status)
			}
			if len(k.Models) != 1 || k.Models[0].Model != tc.model || k.Models[0].State != store.ModelBlocked || k.Models[0].Until != 0 {
				t.Errorf("models %+v, want %s blocked", k.Models, tc.model)
			}
			if len(evs) != 1 || evs[0].To != store.ModelBlocked || evs[0].Model != tc.model || evs[0].Status != 403 {
				t.Errorf("events %+v, want one block of %s with status 403", evs, tc.model)
			}
			// The key still serves another model.
			if got := wantServed(t, e.chat(tc.prov+"/other-model"), "1"); got != idStr(ids[0]) {
				t.Errorf("other model served by %s, want %d", got, ids[0])
			}
			// The blocked model is not asked for again, even much later.
			e.setNow(t0.Add(48 * time.Hour))
			before := len(e.requests())
			wantError(t, e.chat(tc.prov+"/"+tc.model), http.StatusServiceUnavailable, "no_available_key")
			if n := len(e.requests()) - before; n != 0 {
				t.Errorf("%d upstream calls for a blocked model, want 0", n)
			}
		})
	}
}

func TestClientErrorsRelayed(t *testing.T) {
	tests := []struct {
		name, prov, secret, path, body string
		rule                           fakeupstream.Rule
	}{
		{"openai 400 invalid_value", "openai", "sk-openai-key-0000001", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","temperature":7}`, fakeupstream.OpenAIBadRequest("gpt-4o-mini")},
		{"openai 400 context length", "openai", "sk-openai-key-0000001", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[]}`, fakeupstream.Rule{Status: 400,
				Body: `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 200000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`}},
		{"anthropic 400 invalid_request_error", "anthropic", "sk-ant-anthropic-key-01", "/api/anthropic/v1/messages",
			`{"model":"claude-3-5-haiku-latest","messages":[]}`, fakeupstream.Rule{Status: 400,
				Body: `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`}},
		{"gemini 400 INVALID_ARGUMENT", "google-ai-studio", "AIzaSyGeminiKey000001", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent",
			`{"contents":"x"}`, fakeupstream.Rule{Status: 400,
				Body: "{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"Invalid JSON payload received. Unknown name \\\"contents\\\": Proto field is not repeating, cannot start list.\",\n    \"status\": \"INVALID_ARGUMENT\"\n  }\n}\n"}},
		{"gemini 400 region", "google-ai-studio", "AIzaSyGeminiKey000001", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent",
			`{"contents":[]}`, fakeupstream.Rule{Status: 400,
				Body: `{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}`}},
		{"mistral 422", "mistral", "mistral-key-00000000001", "/v1/chat/completions",
			`{"model":"mistral/mistral-small","messages":"x"}`, fakeupstream.Rule{Status: 422,
				Body: `{"object":"error","message":{"detail":[{"type":"list_type","loc":["body","messages"],"msg":"Input should be a valid list"}]},"type":"invalid_request_message_error","param":null,"code":null}`}},
		{"openai 413", "openai", "sk-openai-key-0000001", "/v1/audio/speech",
			`{"model":"tts-1","input":"x"}`, fakeupstream.Rule{Status: 413, Body: "<html>Request Entity Too Large</html>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ids := e.addKeys(tc.prov, tc.secret, tc.secret+"-spare")
			e.up.SetRule(tc.secret, tc.rule)
			e.up.SetRule(tc.secret+"-spare", tc.rule)
			w := e.proxy(http.MethodPost, tc.path, tc.body)
			if w.Code != tc.rule.Status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.rule.Status, w.Body.String())
			}
			if w.Body.String() != tc.rule.Body {
				t.Errorf("body changed:\n got %q\nwant %q", w.Body.String(), tc.rule.Body)
			}
			if w.Header().Get("X-Keypool-Attempts") != "1" || w.Header().Get("X-Keypool-Key") != idStr(ids[0]) {
				t.Errorf("X-Keypool-Attempts %q X-Keypool-Key %q, want 1 and %d",
					w.Header().Get("X-Keypool-Attempts"), w.Header().Get("X-Keypool-Key"), ids[0])
			}
			if n := e.fetches.Load(); n != 1 {
				t.Errorf("%d upstream calls, want 1 (the client's error is not retried)", n)
			}
			wantKeysUntouched(t, e, ids...)
		})
	}
}

// TestStorm: many keys failing at once is the upstream's fault. Once
// STORM_KEYS distinct keys have failed, the client is told to come back,
// the cooldowns given on the way are lifted, and no key is blamed.
func TestStorm(t *testing.T) {
	e := newEnv(t, "STORM_KEYS", "3", "MAX_ATTEMPTS", "5")
	secrets := []string{"sk-storm-key-000001", "sk-storm-key-000002", "sk-storm-key-000003", "sk-storm-key-000004"}
	ids := e.addKeys("openai", secrets...)
	for _, s := range secrets {
		e.up.SetRule(s, fakeupstream.OpenAIRateLimitedNoHint(""))
	}
	noBlocks := func(when string) {
		t.Helper()
		for _, id := range ids {
			if k, _ := e.key(id); k.Status != store.StatusActive {
				t.Errorf("%s: key %d status %q, want active", when, id, k.Status)
			}
		}
		if n := e.count(`SELECT COUNT(*) FROM key_models WHERE state = 'blocked'`); n != 0 {
			t.Errorf("%s: %d blocked key-models, want 0", when, n)
		}
	}

	w := e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusTooManyRequests, "upstream_storm")
	if er.Error.Type != "rate_limit_error" || !strings.Contains(er.Error.Message, "openai") {
		t.Errorf("storm error %+v", er.Error)
	}
	if got := w.Header().Get("Retry-After"); got != "10" {
		t.Errorf("Retry-After %q, want 10 (STORM_HOLD_SECONDS default)", got)
	}
	if got := w.Header().Get("X-Keypool-Attempts"); got != "3" {
		t.Errorf("X-Keypool-Attempts %q, want 3 (the storm is declared at the 3rd key)", got)
	}
	if n := e.fetches.Load(); n != 3 {
		t.Errorf("%d upstream calls, want 3", n)
	}
	// The first two keys were cooled on the way; the storm lifted that.
	if rows := e.modelRows(); len(rows) != 0 {
		t.Errorf("key_models after the storm: %+v, want none", rows)
	}
	for _, id := range ids[:2] {
		_, evs := e.key(id)
		if len(evs) != 2 || evs[0].From != store.ModelCooling || evs[0].To != store.StatusActive ||
			!strings.Contains(evs[0].Reason, "storm") || evs[1].To != store.ModelCooling {
			t.Errorf("key %d events %+v, want a cooldown then its lift", id, evs)
		}
	}
	for _, id := range ids[2:] {
		if _, evs := e.key(id); len(evs) != 0 {
			t.Errorf("key %d events %+v, want none", id, evs)
		}
	}
	noBlocks("after the storm began")

	// Within the hold: no upstream call at all, for any model.
	e.setNow(t0.Add(4 * time.Second))
	for _, model := range []string{"gpt-4o-mini", "gpt-4o"} {
		w = e.chat(model)
		wantError(t, w, http.StatusTooManyRequests, "upstream_storm")
		if got := w.Header().Get("Retry-After"); got != "6" {
			t.Errorf("Retry-After %q during the hold, want 6", got)
		}
		if got := w.Header().Get("X-Keypool-Attempts"); got != "0" {
			t.Errorf("X-Keypool-Attempts %q during the hold, want 0", got)
		}
	}
	if n := e.fetches.Load(); n != 3 {
		t.Errorf("%d upstream calls during the hold, want none", n-3)
	}
	// Another provider is not affected.
	e.addKeys("groq", "gsk_storm_other_000001")
	wantServed(t, e.chat("groq/llama-3.1-8b-instant"), "1")
	noBlocks("during the hold")

	// After the hold, with the upstream healthy again: served, storm over.
	for _, s := range secrets {
		e.up.ClearRule(s)
	}
	e.setNow(t0.Add(11 * time.Second))
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	if s := e.h.pool.Storm("openai"); s.Since != 0 || s.Until != 0 || len(s.Keys) != 0 {
		t.Errorf("storm state after a success: %+v, want calm", s)
	}
	noBlocks("after the storm")
	if rows := e.modelRows(); len(rows) != 0 {
		t.Errorf("key_models after the storm: %+v, want none", rows)
	}

	// A single later 429 is an ordinary cooldown again, not a storm.
	e.up.SetRule(secrets[1], fakeupstream.OpenAIRateLimitedNoHint(""))
	e.setNow(t0.Add(12 * time.Second))
	w = e.chat("gpt-4o")
	if w.Code != http.StatusOK {
		t.Fatalf("after the storm: status %d, body %s", w.Code, w.Body.String())
	}
}

func TestStormServerErrors(t *testing.T) {
	e := newEnv(t, "STORM_KEYS", "3")
	secrets := []string{"sk-storm5-key-00001", "sk-storm5-key-00002", "sk-storm5-key-00003"}
	ids := e.addKeys("openai", secrets...)
	for _, s := range secrets {
		e.up.SetRule(s, fakeupstream.OpenAIServerError())
	}
	w := e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusServiceUnavailable, "upstream_storm")
	if er.Error.Type != "server_error" {
		t.Errorf("type %q, want server_error", er.Error.Type)
	}
	if w.Header().Get("Retry-After") != "10" || w.Header().Get("X-Keypool-Attempts") != "3" {
		t.Errorf("Retry-After %q X-Keypool-Attempts %q, want 10 and 3", w.Header().Get("Retry-After"), w.Header().Get("X-Keypool-Attempts"))
	}
	// No key is out of rotation for it.
	for _, r := range e.modelRows() {
		if r.State != store.ModelCooling || r.Until > t0.UnixMilli() {
			t.Errorf("key-model %+v out of rotation after a 5xx storm", r)
		}
	}
	e.setNow(t0.Add(time.Second))
	before := e.fetches.Load()
	wantError(t, e.chat("gpt-4o-mini"), http.StatusServiceUnavailable, "upstream_storm")
	if e.fetches.Load() != before {
		t.Errorf("upstream called during the hold")
	}
	for _, id := range ids {
		if k, evs := e.key(id); k.Status != store.StatusActive || len(evs) != 0 {
			t.Errorf("key %d: status %q events %+v", id, k.Status, evs)
		}
	}
	// STORM_HOLD_SECONDS sets the hold.
	e2 := newEnv(t, "STORM_KEYS", "2", "STORM_HOLD_SECONDS", "25")
	e2.addKeys("openai", secrets[:2]...)
	for _, s := range secrets[:2] {
		e2.up.SetRule(s, fakeupstream.OpenAIServerError())
	}
	w = e2.chat("gpt-4o-mini")
	wantError(t, w, http.StatusServiceUnavailable, "upstream_storm")
	if got := w.Header().Get("Retry-After"); got != "25" {
		t.Errorf("Retry-After %q with STORM_HOLD_SECONDS=25", got)
	}
}

// TestServerErrorStreak: a first 5xx only moves on; each further one in a
// row rests the key-model longer (5 s, 10 s, ...).
func TestServerErrorStreak(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-flaky-key-000001")
	e.up.SetRule("sk-flaky-key-000001", fakeupstream.OpenAIServerError())
	at := t0
	for i, want := range []time.Duration{0, 5 * time.Second, 10 * time.Second, 20 * time.Second} {
		e.setNow(at)
		wantError(t, e.chat("gpt-4o-mini"), http.StatusBadGateway, "upstream_error")
		rows := e.modelRows()
		if len(rows) != 1 || rows[0].Until != at.Add(want).UnixMilli() || rows[0].Streak != int64(i+1) {
			t.Fatalf("after 5xx #%d: %+v, want until t0%+v streak %d", i+1, rows, at.Add(want).Sub(t0), i+1)
		}
		_, evs := e.key(ids[0])
		if wantEvents := i; len(evs) != wantEvents {
			t.Errorf("after 5xx #%d: %d events, want %d (none for the first)", i+1, len(evs), wantEvents)
		}
		at = at.Add(want + time.Second)
	}
	// A success forgets the streak.
	e.up.ClearRule("sk-flaky-key-000001")
	e.setNow(at)
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	if rows := e.modelRows(); len(rows) != 0 {
		t.Errorf("rows after a success: %+v", rows)
	}
}

// TestGrowingCooldowns: 429s without a hint on the same key-model, request
// after request, double the cooldown; a success starts again from the
// default.
func TestGrowingCooldowns(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-grow-key-0000001")
	e.up.SetRule("sk-grow-key-0000001", fakeupstream.OpenAIRateLimitedNoHint("gpt-4o-mini"))
	at := t0
	step := func(want time.Duration, streak int64) {
		t.Helper()
		e.setNow(at)
		w := e.chat("gpt-4o-mini")
		wantError(t, w, http.StatusTooManyRequests, "rate_limited")
		if got, wantRA := w.Header().Get("Retry-After"), strconv.Itoa(int(want/time.Second)); got != wantRA {
			t.Errorf("at t0%+v: Retry-After %q, want %s", at.Sub(t0), got, wantRA)
		}
		rows := e.modelRows()
		if len(rows) != 1 || rows[0].KeyID != ids[0] || rows[0].State != store.ModelCooling ||
			rows[0].Until != at.Add(want).UnixMilli() || rows[0].Streak != streak {
			t.Fatalf("at t0%+v: rows %+v, want cooling for %v, streak %d", at.Sub(t0), rows, want, streak)
		}
		at = at.Add(want + time.Second)
	}
	step(60*time.Second, 1)
	step(120*time.Second, 2)
	step(240*time.Second, 3)

	// A success removes the row; the next 429 starts from 60 s again.
	e.up.ClearRule("sk-grow-key-0000001")
	e.setNow(at)
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	if rows := e.modelRows(); len(rows) != 0 {
		t.Fatalf("rows after a success: %+v, want none", rows)
	}
	at = at.Add(time.Second)
	e.up.SetRule("sk-grow-key-0000001", fakeupstream.OpenAIRateLimitedNoHint("gpt-4o-mini"))
	step(60*time.Second, 1)
	step(120*time.Second, 2)

	// A key-model that behaved for rotation.StreakMemory starts afresh.
	at = at.Add(rotation.StreakMemory)
	step(60*time.Second, 3)
}

// TestWaitForCooldown: with wait_for_cooldown_seconds, a request that finds
// every key cooling waits for the first one back instead of answering 429.
func TestWaitForCooldown(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-wait-key-0000001")
	rule := fakeupstream.OpenAIRateLimited("gpt-4o-mini", 2)
	rule.Times = 1
	e.up.SetRule("sk-wait-key-0000001", rule)

	// Setting 0 (the default): a 429 with Retry-After.
	w := e.chat("gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q, want 2", got)
	}
	e.putSettings(`{"wait_for_cooldown_seconds":0}`)
	w = e.chat("gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q with setting 0, want 2", got)
	}
	// A wait shorter than the cooldown does not help: 429 at once.
	e.putSettings(`{"wait_for_cooldown_seconds":1}`)
	start := time.Now()
	wantError(t, e.chat("gpt-4o-mini"), http.StatusTooManyRequests, "rate_limited")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("waited %v for a cooldown longer than the setting", d)
	}

	// Setting 5: the request waits the 2 s and is served.
	e.putSettings(`{"wait_for_cooldown_seconds":5}`)
	e.followRealTime()
	before := len(e.requests())
	start = time.Now()
	w = e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "1"); got != idStr(ids[0]) {
		t.Errorf("served by %s, want %d", got, ids[0])
	}
	if d := time.Since(start); d < 1900*time.Millisecond || d > 4*time.Second {
		t.Errorf("request took %v, want about the 2 s left of the cooldown", d)
	}
	if n := len(e.requests()) - before; n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
}

// TestWaitForCooldownWithinRequest: the key that answers 429 with a short
// Retry-After is waited for within the same request.
func TestWaitForCooldownWithinRequest(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-wait-key-0000002")
	e.putSettings(`{"wait_for_cooldown_seconds":5}`)
	rule := fakeupstream.OpenAIRateLimited("gpt-4o-mini", 1)
	rule.Times = 1
	e.up.SetRule("sk-wait-key-0000002", rule)
	e.followRealTime()
	start := time.Now()
	w := e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "2"); got != idStr(ids[0]) {
		t.Errorf("served by %s, want %d", got, ids[0])
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("request took %v, want the 1 s cooldown waited", d)
	}
	// The key served after its cooldown: it is not left cooling, and its
	// 429 is counted.
	if k, _ := e.key(ids[0]); len(k.Models) != 0 || k.Requests != 2 || k.Failures != 1 || k.Successes != 1 {
		t.Errorf("key after serving: models %+v requests %d failures %d successes %d, want no state and 2/1/1",
			k.Models, k.Requests, k.Failures, k.Successes)
	}
}

// TestRetryBudget: no attempt starts once RETRY_BUDGET_SECONDS have passed
// since the request began.
func TestRetryBudget(t *testing.T) {
	tests := []struct {
		budget string
		want   int
	}{
		{"3", 2}, // calls at 0 s and 2 s; at 4 s the budget is spent
		{"5", 3}, // 0, 2, 4 s
		{"1", 1}, // 0 s; at 2 s it is spent
		{"", 5},  // the default (30 s) does not bind; MAX_ATTEMPTS does
	}
	for _, tc := range tests {
		t.Run("RETRY_BUDGET_SECONDS="+tc.budget, func(t *testing.T) {
			e := newEnv(t, "RETRY_BUDGET_SECONDS", tc.budget, "MAX_ATTEMPTS", "5", "STORM_KEYS", "100")
			var secrets []string
			for i := 0; i < 6; i++ {
				secrets = append(secrets, "sk-budget-key-0000"+strconv.Itoa(i))
			}
			e.addKeys("openai", secrets...)
			for _, s := range secrets {
				e.up.SetRule(s, fakeupstream.OpenAIServerError())
			}
			// Each upstream call takes 2 s.
			e.fetch = func(r *http.Request) (*http.Response, error) {
				e.advance(2 * time.Second)
				return http.DefaultClient.Do(r)
			}
			w := e.chat("gpt-4o-mini")
			wantError(t, w, http.StatusBadGateway, "upstream_error")
			if n := e.fetches.Load(); n != int64(tc.want) {
				t.Errorf("%d upstream calls, want %d", n, tc.want)
			}
			if got := w.Header().Get("X-Keypool-Attempts"); got != strconv.Itoa(tc.want) {
				t.Errorf("X-Keypool-Attempts %q, want %d", got, tc.want)
			}
		})
	}
}

// TestGeminiDailyQuota: a daily quota rests the key-model until Google's
// reset, midnight Pacific time, whatever RetryInfo says.
func TestGeminiDailyQuota(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
	}{
		{"summer (PDT)", t0},
		{"winter (PST)", time.Date(2025, 1, 15, 3, 0, 0, 0, time.UTC)},
		{"just before a Pacific midnight", time.Date(2025, 6, 2, 6, 59, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.setNow(tc.now)
			ids := e.addKeys("google-ai-studio", "AIzaSyDailyKey000001", "AIzaSyDailyKey000002")
			e.up.SetRule("AIzaSyDailyKey000001", fakeupstream.GeminiDailyQuota("gemini-2.0-flash"))
			w := e.proxy(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`)
			if got := wantServed(t, w, "2"); got != idStr(ids[1]) {
				t.Errorf("served by %s, want %d", got, ids[1])
			}
			reset := rotation.DailyReset("google-ai-studio", tc.now)
			if reset.Sub(tc.now) <= 0 || reset.Sub(tc.now) > 24*time.Hour {
				t.Fatalf("DailyReset %v is not within a day of %v", reset, tc.now)
			}
			k, evs := e.key(ids[0])
			if len(k.Models) != 1 || k.Models[0].Model != "gemini-2.0-flash" || k.Models[0].State != store.ModelCooling ||
				k.Models[0].Until != reset.UnixMilli() {
				t.Errorf("models %+v, want gemini-2.0-flash cooling until %v (%d)", k.Models, reset, reset.UnixMilli())
			}
			if len(evs) != 1 || !strings.Contains(evs[0].Reason, "daily") {
				t.Errorf("events %+v, want one daily-quota cooldown", evs)
			}
			// Not a storm symptom: the other key's state is untouched.
			wantKeysUntouched(t, e, ids[1])
			// Through the OpenAI-compatible route too.
			e2 := newEnv(t)
			e2.setNow(tc.now)
			id2 := e2.addKeys("google-ai-studio", "AIzaSyDailyKey000003")
			e2.up.SetRule("AIzaSyDailyKey000003", fakeupstream.GeminiDailyQuota("gemini-2.0-flash"))
			w = e2.chat("google-ai-studio/gemini-2.0-flash")
			wantError(t, w, http.StatusTooManyRequests, "rate_limited")
			if k, _ := e2.key(id2[0]); len(k.Models) != 1 || k.Models[0].Until != reset.UnixMilli() {
				t.Errorf("OpenAI route: models %+v, want cooling until %d", k.Models, reset.UnixMilli())
			}
			wantRA := (reset.UnixMilli() - tc.now.UnixMilli() + 999) / 1000
			if got := w.Header().Get("Retry-After"); got != strconv.FormatInt(wantRA, 10) {
				t.Errorf("Retry-After %q, want %d", got, wantRA)
			}
		})
	}
}

// TestWaitForCooldownRespectsBudget: a request does not wait for a key it
// could not try again within RETRY_BUDGET_SECONDS; it answers 429 at once.
func TestWaitForCooldownRespectsBudget(t *testing.T) {
	e := newEnv(t, "RETRY_BUDGET_SECONDS", "1")
	e.addKeys("openai", "sk-wait-key-0000003")
	e.putSettings(`{"wait_for_cooldown_seconds":5}`)
	rule := fakeupstream.OpenAIRateLimited("gpt-4o-mini", 2)
	rule.Times = 1
	e.up.SetRule("sk-wait-key-0000003", rule)
	e.followRealTime()
	start := time.Now()
	w := e.chat("gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("answered after %v, want at once (the budget does not allow a retry)", d)
	}
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q, want 2", got)
	}
	// The budget does not bind a request that has not tried a key yet: it
	// waits for a key cooling since an earlier request.
	start = time.Now()
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	if d := time.Since(start); d < time.Second {
		t.Errorf("served after %v, want the cooldown waited", d)
	}
}

// TestStormAcrossRequests: the failures that make a storm may come from
// several requests; the cooldowns the earlier ones gave are lifted too.
func TestStormAcrossRequests(t *testing.T) {
	e := newEnv(t, "STORM_KEYS", "4")
	secrets := []string{"sk-wide-key-0000001", "sk-wide-key-0000002", "sk-wide-key-0000003", "sk-wide-key-0000004", "sk-wide-key-0000005"}
	for _, s := range secrets {
		e.up.SetRule(s, fakeupstream.OpenAIRateLimitedNoHint(""))
	}
	// Two keys first: both rate limited, no storm yet.
	ids := e.addKeys("openai", secrets[:2]...)
	w := e.chat("gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if n := len(e.modelRows()); n != 2 {
		t.Fatalf("%d cooling rows after the first request, want 2", n)
	}
	ids = append(ids, e.addKeys("openai", secrets[2:]...)...)
	e.setNow(t0.Add(5 * time.Second))
	w = e.chat("gpt-4o")
	wantError(t, w, http.StatusTooManyRequests, "upstream_storm")
	if rows := e.modelRows(); len(rows) != 0 {
		t.Errorf("rows after the storm %+v, want every cooldown lifted", rows)
	}
	for _, id := range ids[:2] {
		if _, evs := e.key(id); len(evs) != 2 || !strings.Contains(evs[0].Reason, "storm") {
			t.Errorf("key %d events %+v, want a cooldown and its lift", id, evs)
		}
	}
	// The lifted keys are candidates again at once once the storm is over.
	for _, s := range secrets {
		e.up.ClearRule(s)
	}
	served := map[string]bool{}
	for i := range secrets {
		e.setNow(t0.Add(16*time.Second + time.Duration(i)*time.Millisecond))
		served[wantServed(t, e.chat("gpt-4o-mini"), "1")] = true
	}
	if len(served) != len(secrets) {
		t.Errorf("%d requests served by keys %v, want every key once (none left cooling)", len(secrets), served)
	}
}

// countingBody counts the upstream bodies closed.
type countingBody struct {
	io.ReadCloser
	closed func()
}

func (b countingBody) Close() error {
	b.closed()
	return b.ReadCloser.Close()
}

// TestUpstreamBodiesClosed: every upstream answer's body is closed,
// whichever answer reaches the client.
func TestUpstreamBodiesClosed(t *testing.T) {
	notFound := fakeupstream.OpenAIModelNotFound("gpt-4o-mini")
	tests := []struct {
		name   string
		rules  []fakeupstream.Rule // per key; Status 0: served normally
		status int
	}{
		{"404 then 200", []fakeupstream.Rule{notFound, {}}, 200},
		{"404 then 400", []fakeupstream.Rule{notFound, fakeupstream.OpenAIBadRequest("gpt-4o-mini")}, 400},
		{"404 everywhere", []fakeupstream.Rule{notFound, notFound, notFound}, 404},
		{"404, 401, 200", []fakeupstream.Rule{notFound, fakeupstream.OpenAIInvalidKey(""), {}}, 200},
		{"500 then 200", []fakeupstream.Rule{fakeupstream.OpenAIServerError(), {}}, 200},
		{"429 everywhere", []fakeupstream.Rule{fakeupstream.OpenAIRateLimited("gpt-4o-mini", 9), fakeupstream.OpenAIRateLimited("gpt-4o-mini", 9)}, 429},
		{"404 then a storm", []fakeupstream.Rule{notFound, fakeupstream.OpenAIServerError(), fakeupstream.OpenAIServerError()}, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "STORM_KEYS", "2")
			for i, r := range tc.rules {
				secret := "sk-close-key-00000" + strconv.Itoa(i)
				e.addKeys("openai", secret)
				if r.Status != 0 {
					e.up.SetRule(secret, r)
				}
			}
			var mu sync.Mutex
			opened, closed := 0, 0
			e.fetch = func(r *http.Request) (*http.Response, error) {
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					return nil, err
				}
				mu.Lock()
				opened++
				mu.Unlock()
				resp.Body = countingBody{resp.Body, func() { mu.Lock(); closed++; mu.Unlock() }}
				return resp, nil
			}
			w := e.chat("gpt-4o-mini")
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if opened == 0 || closed < opened {
				t.Errorf("%d upstream bodies opened, %d closed", opened, closed)
			}
		})
	}
}

// TestNoModelStateWithoutModel: a "model" error on a request that names no
// model must not block the key for model "" (which every such request
// shares); GET /v1/models/<id> concerns the model in its path.
func TestNoModelStateWithoutModel(t *testing.T) {
	e := newEnv(t, "AUTH_KEY_PASSTHROUGH", "1") // /v1/files and /v1/moderations-like paths pass through
	ids := e.addKeys("openai", "sk-orga-key-0000001", "sk-orgb-key-0000002")
	ft := "ft:gpt-4o-mini:org-b::abc123"
	e.up.SetRule("sk-orga-key-0000001", fakeupstream.Rule{Status: 404, Paths: []string{"/v1/models/" + ft},
		Body: `{"error":{"message":"The model '` + ft + `' does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"}}`})

	// The fine-tuned model belongs to org B's key: served by it, and org
	// A's key is blocked for that model only.
	w := e.proxy(http.MethodGet, "/v1/models/"+ft, "")
	if got := wantServed(t, w, "2"); got != idStr(ids[1]) {
		t.Errorf("served by %s, want %d", got, ids[1])
	}
	if rows := e.modelRows(); len(rows) != 1 || rows[0].KeyID != ids[0] || rows[0].Model != ft || rows[0].State != store.ModelBlocked {
		t.Errorf("rows %+v, want key %d blocked for %s", rows, ids[0], ft)
	}
	// Org A's key still serves requests without a model.
	served := map[string]bool{}
	for i := 0; i < 4; i++ {
		e.setNow(t0.Add(time.Duration(i+1) * time.Second))
		served[wantServed(t, e.proxy(http.MethodGet, "/v1/files", ""), "1")] = true
	}
	if !served[idStr(ids[0])] {
		t.Errorf("key %d never served a request without a model: %v", ids[0], served)
	}

	// A "model" error on a request without one goes to the client as is.
	rule := fakeupstream.Rule{Status: 403, Paths: []string{"/v1/moderations"},
		Body: `{"error":{"message":"You are not allowed to use this model","type":"invalid_request_error","param":null,"code":null}}`}
	e.up.SetRule("sk-orga-key-0000001", rule)
	e.up.SetRule("sk-orgb-key-0000002", rule)
	before := len(e.requests())
	w = e.proxy(http.MethodPost, "/v1/moderations", `{"input":"x"}`)
	if w.Code != 403 || w.Body.String() != rule.Body || len(e.requests())-before != 1 {
		t.Errorf("status %d body %s after %d calls, want the upstream's 403 after 1", w.Code, w.Body.String(), len(e.requests())-before)
	}
	for _, r := range e.modelRows() {
		if r.Model == "" {
			t.Errorf("state for model \"\": %+v", r)
		}
	}
	for _, id := range ids {
		if k, _ := e.key(id); k.Status != store.StatusActive {
			t.Errorf("key %d status %q", id, k.Status)
		}
	}
}
