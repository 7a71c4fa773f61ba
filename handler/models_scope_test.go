package handler

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/store"
)

// TestModelsScopedToToken: /v1/models lists only what the caller's token
// may use; AUTH_KEY sees everything.
func TestModelsScopedToToken(t *testing.T) {
	e := newEnv(t, "CACHE_SECONDS", "60")
	e.addKeys("openai", "sk-scope-openai-000001")
	e.addKeys("groq", "gsk_scope_groq_0000001")
	models := store.On(e.db, nil).Models()
	if err := models.Replace(t.Context(), "openai", []string{"gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo"}, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := models.Replace(t.Context(), "groq", []string{"llama-3.1-8b-instant"}, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant","smart":"openai/gpt-4o"}}`)
	ids := func(token string) string {
		t.Helper()
		w := e.serve(http.MethodGet, "/v1/models", "", "Authorization", "Bearer "+token)
		if w.Code != http.StatusOK {
			t.Fatalf("/v1/models: %d %s", w.Code, w.Body.String())
		}
		var out []string
		for _, m := range gjson.Get(w.Body.String(), "data").Array() {
			out = append(out, m.Get("id").String())
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	all := ids(testAuthKey)
	for _, want := range []string{"fast", "gpt-3.5-turbo", "groq/llama-3.1-8b-instant", "openai/gpt-4o", "smart"} {
		if !strings.Contains(","+all+",", ","+want+",") {
			t.Errorf("AUTH_KEY list %q lacks %q", all, want)
		}
	}
	tests := []struct {
		token, want string
	}{
		{`{"name":"openai only","providers":["openai"]}`, "gpt-3.5-turbo,gpt-4o,gpt-4o-mini,openai/gpt-3.5-turbo,openai/gpt-4o,openai/gpt-4o-mini,smart"},
		{`{"name":"gpt-4o family","models":["gpt-4o*"]}`, "gpt-4o,gpt-4o-mini,openai/gpt-4o,openai/gpt-4o-mini,smart"},
		{`{"name":"groq llama","models":["groq/llama-*"]}`, "fast,groq/llama-3.1-8b-instant"},
	}
	for _, tc := range tests {
		tok := e.newToken(tc.token)
		// Twice: the second answer comes from the cache, scoped as well.
		for i := 0; i < 2; i++ {
			if got := ids(tok.Token); got != tc.want {
				t.Errorf("%s (read %d): %q, want %q", tc.token, i+1, got, tc.want)
			}
		}
	}
}
