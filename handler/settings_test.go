package handler

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

const defaultSettings = `{"free_models":[],"aliases":{},"wait_for_cooldown_seconds":0,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`

func TestSettingsAPI(t *testing.T) {
	e := newEnv(t)
	e.putSettings(`{"prompt_affinity":null}`) // newEnv turns it off
	get := func() string {
		t.Helper()
		w := e.admin(http.MethodGet, "/admin/api/settings", "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET settings: status %d body %s", w.Code, w.Body.String())
		}
		return w.Body.String()
	}
	if got := get(); got != defaultSettings {
		t.Errorf("defaults %s, want %s", got, defaultSettings)
	}

	valid := []struct {
		name, put, want string
	}{
		{"aliases", `{"aliases":{"fast":"groq/llama-3.1-8b-instant","b":"openai/gpt-4o"}}`,
			`{"free_models":[],"aliases":{"b":"openai/gpt-4o","fast":"groq/llama-3.1-8b-instant"},"wait_for_cooldown_seconds":0,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"free models, others kept", `{"free_models":["openai/free-*"," gpt-oss-* "]}`,
			`{"free_models":["openai/free-*","gpt-oss-*"],"aliases":{"b":"openai/gpt-4o","fast":"groq/llama-3.1-8b-instant"},"wait_for_cooldown_seconds":0,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"wait", `{"wait_for_cooldown_seconds":30,"check_models":{}}`,
			`{"free_models":["openai/free-*","gpt-oss-*"],"aliases":{"b":"openai/gpt-4o","fast":"groq/llama-3.1-8b-instant"},"wait_for_cooldown_seconds":30,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"wait as a string", `{"wait_for_cooldown_seconds":"7"}`,
			`{"free_models":["openai/free-*","gpt-oss-*"],"aliases":{"b":"openai/gpt-4o","fast":"groq/llama-3.1-8b-instant"},"wait_for_cooldown_seconds":7,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"several at once", `{"wait_for_cooldown_seconds":3,"aliases":{"x":"mistral/mistral-small"}}`,
			`{"free_models":["openai/free-*","gpt-oss-*"],"aliases":{"x":"mistral/mistral-small"},"wait_for_cooldown_seconds":3,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"empty object changes nothing", `{}`,
			`{"free_models":["openai/free-*","gpt-oss-*"],"aliases":{"x":"mistral/mistral-small"},"wait_for_cooldown_seconds":3,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"empty list", `{"free_models":[]}`,
			`{"free_models":[],"aliases":{"x":"mistral/mistral-small"},"wait_for_cooldown_seconds":3,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"prompt affinity per provider", `{"prompt_affinity":{"openai":false,"groq":true}}`,
			`{"free_models":[],"aliases":{"x":"mistral/mistral-small"},"wait_for_cooldown_seconds":3,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":true,"mistral":false,"openai":false,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
		{"null resets", `{"aliases":null,"wait_for_cooldown_seconds":null,"prompt_affinity":null}`,
			`{"free_models":[],"aliases":{},"wait_for_cooldown_seconds":0,"check_models":{},"access_mode":"private","guest_password_set":false,"guest_reveal_keys":false,"page_size":50,"forward_headers":[],"gateway_headers":[],"request_log_sample":0.01,"prompt_affinity":{"anthropic":true,"azure-openai":true,"cerebras":false,"cohere":false,"deepseek":true,"elevenlabs":false,"google-ai-studio":true,"grok":true,"groq":false,"mistral":false,"openai":true,"openrouter":false,"perplexity-ai":false,"siliconflow":false,"workers-ai":false}}`},
	}
	for _, tc := range valid {
		t.Run("PUT "+tc.name, func(t *testing.T) {
			w := e.admin(http.MethodPut, "/admin/api/settings", tc.put)
			if w.Code != http.StatusOK || w.Body.String() != tc.want {
				t.Errorf("PUT %s: status %d\n got %s\nwant %s", tc.put, w.Code, w.Body.String(), tc.want)
			}
			if got := get(); got != tc.want {
				t.Errorf("GET after PUT %s:\n got %s\nwant %s", tc.put, got, tc.want)
			}
		})
	}

	e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant"},"free_models":["openai/free-*"],"wait_for_cooldown_seconds":2,"check_models":{}}`)
	saved := get()
	bad := []struct {
		name, put, param string
	}{
		{"alias to an unknown provider", `{"aliases":{"fast":"nope/llama"}}`, "aliases"},
		{"alias without a provider", `{"aliases":{"fast":"llama"}}`, "aliases"},
		{"alias without a model", `{"aliases":{"fast":"groq/"}}`, "aliases"},
		{"alias not a string", `{"aliases":{"fast":5}}`, "aliases"},
		{"alias with an empty name", `{"aliases":{"":"groq/x"}}`, "aliases"},
		{"aliases not an object", `{"aliases":["groq/x"]}`, "aliases"},
		{"free models not an array", `{"free_models":"openai/free-*"}`, "free_models"},
		{"free model not a string", `{"free_models":["a",1]}`, "free_models"},
		{"free model empty", `{"free_models":["  "]}`, "free_models"},
		{"wait too long", `{"wait_for_cooldown_seconds":99,"check_models":{}}`, "wait_for_cooldown_seconds"},
		{"wait negative", `{"wait_for_cooldown_seconds":-1}`, "wait_for_cooldown_seconds"},
		{"wait fractional", `{"wait_for_cooldown_seconds":1.5}`, "wait_for_cooldown_seconds"},
		{"wait not a number", `{"wait_for_cooldown_seconds":true}`, "wait_for_cooldown_seconds"},
		{"affinity for an unknown provider", `{"prompt_affinity":{"nope":true}}`, "prompt_affinity"},
		{"affinity not a boolean", `{"prompt_affinity":{"openai":"off"}}`, "prompt_affinity"},
		{"affinity not an object", `{"prompt_affinity":true}`, "prompt_affinity"},
		{"sample over 1", `{"request_log_sample":1.5}`, "request_log_sample"},
		{"sample negative", `{"request_log_sample":-0.1}`, "request_log_sample"},
		{"sample not a number", `{"request_log_sample":"all"}`, "request_log_sample"},
		{"unknown setting", `{"colour":"blue"}`, "colour"},
		{"good field then a bad one", `{"wait_for_cooldown_seconds":5,"aliases":{"x":"nope/y"}}`, "aliases"},
		{"bad field then a good one", `{"free_models":{},"wait_for_cooldown_seconds":5,"check_models":{}}`, "free_models"},
	}
	for _, tc := range bad {
		t.Run("PUT "+tc.name, func(t *testing.T) {
			w := e.admin(http.MethodPut, "/admin/api/settings", tc.put)
			er := wantError(t, w, http.StatusBadRequest, "invalid_request")
			if er.Error.Param == nil || *er.Error.Param != tc.param {
				t.Errorf("param %v, want %q", er.Error.Param, tc.param)
			}
			if !strings.Contains(er.Error.Message, tc.param) {
				t.Errorf("message %q does not name %s", er.Error.Message, tc.param)
			}
			if got := get(); got != saved {
				t.Errorf("settings changed by a refused PUT:\n got %s\nwant %s", got, saved)
			}
		})
	}
	for _, body := range []string{``, `[]`, `"x"`, `{"aliases":`, `null`} {
		wantError(t, e.admin(http.MethodPut, "/admin/api/settings", body), http.StatusBadRequest, "invalid_request")
	}
	if got := get(); got != saved {
		t.Errorf("settings changed by refused PUTs: %s", got)
	}

	// PATCH is the same as PUT; other methods are refused.
	w := e.admin(http.MethodPatch, "/admin/api/settings", `{"wait_for_cooldown_seconds":4,"check_models":{}}`)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"wait_for_cooldown_seconds":4`) {
		t.Errorf("PATCH: status %d body %s", w.Code, w.Body.String())
	}
	for _, m := range []string{http.MethodPost, http.MethodDelete} {
		w := e.admin(m, "/admin/api/settings", `{}`)
		wantError(t, w, http.StatusMethodNotAllowed, "method_not_allowed")
		if w.Header().Get("Allow") != "GET, PUT, PATCH" {
			t.Errorf("%s: Allow %q", m, w.Header().Get("Allow"))
		}
	}

	// Admin auth is required; the client token is not enough.
	for _, auth := range []string{"", "Bearer " + testAuthKey, "Bearer wrong"} {
		for _, m := range []string{http.MethodGet, http.MethodPut} {
			w := e.serve(m, "/admin/api/settings", `{"wait_for_cooldown_seconds":9,"check_models":{}}`, "Authorization", auth)
			wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
		}
	}
	if got := get(); strings.Contains(got, `"wait_for_cooldown_seconds":9`) {
		t.Errorf("unauthenticated PUT saved: %s", got)
	}
}

// TestSettingsApplyAtOnce: a change through the API applies to the next
// request of this isolate, without waiting for the settings cache.
func TestSettingsApplyAtOnce(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-openai-key-0000001")
	e.addKeys("groq", "gsk_groq_key_00000001")
	wantServed(t, e.chat("fast"), "1") // reads and caches the settings
	e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant"}}`)
	wantServed(t, e.chat("fast"), "1")
	if r := e.requests()[len(e.requests())-1]; r.Key != "gsk_groq_key_00000001" {
		t.Errorf("alias not applied at once: served with key %q", r.Key)
	}
	// A change made elsewhere (another isolate) applies once the cache
	// expires.
	if _, err := e.db.Exec(`DELETE FROM settings`); err != nil {
		t.Fatal(err)
	}
	wantServed(t, e.chat("fast"), "1")
	if r := e.requests()[len(e.requests())-1]; r.Key != "gsk_groq_key_00000001" {
		t.Errorf("settings cache not used within CACHE_SECONDS")
	}
	e.setNow(t0.Add(6 * time.Second))
	wantServed(t, e.chat("fast"), "1")
	if r := e.requests()[len(e.requests())-1]; r.Key != "sk-openai-key-0000001" {
		t.Errorf("settings not read again after CACHE_SECONDS: served with key %q", r.Key)
	}
}
