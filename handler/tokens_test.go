package handler

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/seal"
)

// tokenJSON is a token as the admin API shows it.
type tokenJSON struct {
	ID            int64    `json:"id"`
	Name          string   `json:"name"`
	Prefix        string   `json:"prefix"`
	Providers     []string `json:"providers"`
	Models        []string `json:"models"`
	ExpiresAt     int64    `json:"expires_at"`
	RPM           int64    `json:"rpm"`
	RequestsDay   int64    `json:"requests_day"`
	RequestsTotal int64    `json:"requests_total"`
	TokensDay     int64    `json:"tokens_day"`
	TokensTotal   int64    `json:"tokens_total"`
	Disabled      bool     `json:"disabled"`
	Endpoints     string   `json:"endpoints"`
	Used          struct {
		Requests    int64 `json:"requests"`
		Tokens      int64 `json:"tokens"`
		Day         int64 `json:"day"`
		DayRequests int64 `json:"day_requests"`
		DayTokens   int64 `json:"day_tokens"`
	} `json:"used"`
	LastUsedAt int64  `json:"last_used_at"`
	CreatedAt  int64  `json:"created_at"`
	UpdatedAt  int64  `json:"updated_at"`
	Token      string `json:"token"`
}

// newToken creates a client token through the admin API.
func (e *testEnv) newToken(body string) tokenJSON {
	e.t.Helper()
	w := e.admin(http.MethodPost, "/admin/api/tokens", body)
	if w.Code != http.StatusCreated {
		e.t.Fatalf("POST /admin/api/tokens %s: %d %s", body, w.Code, w.Body.String())
	}
	var tok tokenJSON
	decode(e.t, w, &tok)
	if tok.Token == "" || tok.ID <= 0 {
		e.t.Fatalf("created token without secret or id: %s", w.Body.String())
	}
	return tok
}

// tokenChat posts a chat completion for model with a client token.
func (e *testEnv) tokenChat(token, model string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.serve(http.MethodPost, "/v1/chat/completions",
		`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer "+token, "Content-Type", "application/json")
}

func idPath(id int64) string { return "/admin/api/tokens/" + strconv.FormatInt(id, 10) }

func TestTokenCreate(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-token-test-0000000001")
	w := e.admin(http.MethodPost, "/admin/api/tokens",
		`{"name":" ci bot ","providers":["openai","groq"],"models":["gpt-*"],"rpm":10,"requests_day":100,"requests_total":1000,"tokens_day":5,"tokens_total":6,"expires_in_days":30}`)
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body.String())
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", w.Header().Get("Cache-Control"))
	}
	var tok tokenJSON
	decode(t, w, &tok)
	secret := tok.Token
	if len(secret) != 35 || !strings.HasPrefix(secret, "kp-") {
		t.Fatalf("token %q: want kp- and 32 characters", secret)
	}
	if tok.Prefix != secret[:7]+"…" || tok.Name != "ci bot" || strings.Join(tok.Providers, ",") != "openai,groq" ||
		strings.Join(tok.Models, ",") != "gpt-*" || tok.RPM != 10 || tok.RequestsDay != 100 || tok.RequestsTotal != 1000 ||
		tok.TokensDay != 5 || tok.TokensTotal != 6 || tok.Disabled || tok.ExpiresAt != t0.Add(30*24*time.Hour).UnixMilli() ||
		tok.CreatedAt != t0.UnixMilli() {
		t.Errorf("created token %+v", tok)
	}

	// Shown once: later reads show the prefix only.
	for _, target := range []string{idPath(tok.ID), "/admin/api/tokens"} {
		w := e.admin(http.MethodGet, target, "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", target, w.Code)
		}
		body := w.Body.String()
		if strings.Contains(body, secret[7:]) || gjson.Get(body, "token").Exists() || gjson.Get(body, "tokens.0.token").Exists() {
			t.Errorf("GET %s shows the token: %s", target, body)
		}
		if !strings.Contains(body, `"prefix":"`+secret[:7]+`…"`) {
			t.Errorf("GET %s: no prefix: %s", target, body)
		}
	}

	// D1 holds the hash, not the token.
	var hash, prefix string
	if err := e.db.QueryRow(`SELECT hash, prefix FROM tokens WHERE id = ?`, tok.ID).Scan(&hash, &prefix); err != nil {
		t.Fatal(err)
	}
	if hash != seal.HashToken(secret) || prefix != secret[:7] {
		t.Errorf("stored hash %q prefix %q", hash, prefix)
	}
	if n := e.count(`SELECT COUNT(*) FROM tokens WHERE name || hash || prefix || providers || models LIKE ?`, "%"+secret[7:]+"%"); n != 0 {
		t.Errorf("the token is stored in the clear")
	}

	// It works on the proxy (scopes allow gpt-4o-mini on openai).
	wantServed(t, e.tokenChat(secret, "gpt-4o-mini"), "1")
	// Another token's secret differs.
	if other := e.newToken(`{"name":"other"}`); other.Token == secret {
		t.Errorf("two tokens with the same secret")
	}
	// A token that looks like one but is unknown.
	wantError(t, e.tokenChat(seal.NewToken(), "gpt-4o-mini"), http.StatusUnauthorized, "invalid_api_key")
	wantError(t, e.tokenChat(secret+"x", "gpt-4o-mini"), http.StatusUnauthorized, "invalid_api_key")
	wantError(t, e.tokenChat(hash, "gpt-4o-mini"), http.StatusUnauthorized, "invalid_api_key")
}

func TestTokenScopes(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-scope-openai-000000001")
	e.addKeys("groq", "gsk_scope-groq-0000000001")
	e.addKeys("google-ai-studio", "AIzaScopeGoogle0000000001")
	e.putSettings(`{"aliases":{"fast":"groq/llama-3.1-8b-instant","smart":"openai/gpt-4o"}}`)

	tests := []struct {
		name  string
		token string // the create body
		model string
		code  string // "" when served
	}{
		{"providers: allowed", `{"name":"p","providers":["groq"]}`, "groq/llama-3.1-8b-instant", ""},
		{"providers: default provider denied", `{"name":"p","providers":["groq"]}`, "gpt-4o-mini", "provider_not_allowed"},
		{"providers: prefixed denied", `{"name":"p","providers":["groq"]}`, "openai/gpt-4o-mini", "provider_not_allowed"},
		{"providers: alias to an allowed one", `{"name":"p","providers":["groq"]}`, "fast", ""},
		{"providers: alias to another", `{"name":"p","providers":["groq"]}`, "smart", "provider_not_allowed"},
		{"providers: several", `{"name":"p","providers":["groq","openai"]}`, "gpt-4o-mini", ""},
		{"models: wildcard allows", `{"name":"m","models":["gemini-*"]}`, "google-ai-studio/gemini-2.0-flash", ""},
		{"models: wildcard denies", `{"name":"m","models":["gemini-*"]}`, "gpt-4o", "model_not_allowed"},
		{"models: wildcard is a prefix", `{"name":"m","models":["gemini-*"]}`, "google-ai-studio/learnlm-gemini-x", "model_not_allowed"},
		{"models: provider form allows", `{"name":"m","models":["groq/llama-*"]}`, "groq/llama-3.1-8b-instant", ""},
		{"models: provider form, other model", `{"name":"m","models":["groq/llama-*"]}`, "groq/mixtral-8x7b", "model_not_allowed"},
		{"models: provider form, other provider", `{"name":"m","models":["groq/llama-*"]}`, "openai/llama-3", "model_not_allowed"},
		{"models: alias resolves first", `{"name":"m","models":["groq/llama-*"]}`, "fast", ""},
		{"models: exact", `{"name":"m","models":["gpt-4o"]}`, "gpt-4o", ""},
		{"models: exact is exact", `{"name":"m","models":["gpt-4o"]}`, "gpt-4o-mini", "model_not_allowed"},
		{"models: several", `{"name":"m","models":["gpt-4o","*-mini"]}`, "gpt-4o-mini", ""},
		{"models: star", `{"name":"m","models":["*"]}`, "groq/anything", ""},
		{"both: model allowed, provider not", `{"name":"b","providers":["openai"],"models":["llama-*"]}`, "groq/llama-3.1-8b-instant", "provider_not_allowed"},
		{"both: provider allowed, model not", `{"name":"b","providers":["groq"],"models":["llama-*"]}`, "groq/gemma-7b", "model_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := e.newToken(tc.token)
			before := e.fetches.Load()
			w := e.tokenChat(tok.Token, tc.model)
			if tc.code == "" {
				if w.Code != http.StatusOK {
					t.Fatalf("status %d, want 200; %s", w.Code, w.Body.String())
				}
				return
			}
			wantError(t, w, http.StatusForbidden, tc.code)
			if n := e.fetches.Load() - before; n != 0 {
				t.Errorf("%d upstream calls for a denied request", n)
			}
		})
	}

	// The native routes check the scope too.
	tok := e.newToken(`{"name":"native","providers":["groq"]}`)
	w := e.serve(http.MethodPost, "/api/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`,
		"Authorization", "Bearer "+tok.Token, "Content-Type", "application/json")
	wantError(t, w, http.StatusForbidden, "provider_not_allowed")
	w = e.serve(http.MethodPost, "/api/groq/chat/completions", `{"model":"llama-3.1-8b-instant","messages":[]}`,
		"Authorization", "Bearer "+tok.Token, "Content-Type", "application/json")
	if w.Code != http.StatusOK {
		t.Errorf("native groq call: %d %s", w.Code, w.Body.String())
	}

	// AUTH_KEY stays unrestricted.
	for _, m := range []string{"gpt-4o-mini", "groq/llama-3.1-8b-instant", "google-ai-studio/gemini-2.0-flash", "smart"} {
		if w := e.chat(m); w.Code != http.StatusOK {
			t.Errorf("AUTH_KEY, %s: %d %s", m, w.Code, w.Body.String())
		}
	}
}

func TestTokenStates(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-state-openai-00000001")

	// Expired at creation.
	past := e.newToken(`{"name":"past","expires_at":` + strconv.FormatInt(t0.UnixMilli()-1, 10) + `}`)
	wantError(t, e.tokenChat(past.Token, "gpt-4o-mini"), http.StatusUnauthorized, "token_expired")

	// Expires in a day.
	day := e.newToken(`{"name":"day","expires_in_days":1}`)
	wantServed(t, e.tokenChat(day.Token, "gpt-4o-mini"), "1")
	e.advance(24*time.Hour - time.Millisecond)
	wantServed(t, e.tokenChat(day.Token, "gpt-4o-mini"), "1")
	e.advance(time.Millisecond)
	wantError(t, e.tokenChat(day.Token, "gpt-4o-mini"), http.StatusUnauthorized, "token_expired")
	// Extended by the admin: works again at once.
	if w := e.admin(http.MethodPatch, idPath(day.ID), `{"expires_at":0}`); w.Code != http.StatusOK {
		t.Fatal(w.Body.String())
	}
	wantServed(t, e.tokenChat(day.Token, "gpt-4o-mini"), "1")

	// Disabled and enabled: applied at once, though the token is cached.
	tok := e.newToken(`{"name":"toggle"}`)
	for i := 0; i < 2; i++ {
		wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	}
	steps := []struct {
		patch string
		code  string
	}{
		{`{"disabled":true}`, "token_disabled"},
		{`{"name":"still off"}`, "token_disabled"},
		{`{"disabled":false}`, ""},
		{`{"disabled":true,"rpm":3}`, "token_disabled"},
		{`{"disabled":false}`, ""},
	}
	for _, s := range steps {
		w := e.admin(http.MethodPatch, idPath(tok.ID), s.patch)
		if w.Code != http.StatusOK {
			t.Fatalf("PATCH %s: %d %s", s.patch, w.Code, w.Body.String())
		}
		if strings.Contains(w.Body.String(), tok.Token[7:]) {
			t.Errorf("PATCH answer shows the token")
		}
		w = e.tokenChat(tok.Token, "gpt-4o-mini")
		if s.code == "" {
			wantServed(t, w, "1")
		} else {
			wantError(t, w, http.StatusUnauthorized, s.code)
		}
	}

	// Deleted: refused at once.
	if w := e.admin(http.MethodDelete, idPath(tok.ID), ""); w.Code != http.StatusOK {
		t.Fatal(w.Body.String())
	}
	wantError(t, e.tokenChat(tok.Token, "gpt-4o-mini"), http.StatusUnauthorized, "invalid_api_key")
	if w := e.admin(http.MethodGet, idPath(tok.ID), ""); w.Code != http.StatusNotFound {
		t.Errorf("GET a deleted token: %d", w.Code)
	}

}

// Quotas and rate limits, whatever the usage flush interval (the counters
// live in the isolate until written, and in D1 after).
func TestTokenRequestsDay(t *testing.T) {
	for _, flush := range []string{"0", "5", "3600"} {
		t.Run("USAGE_FLUSH_SECONDS="+flush, func(t *testing.T) {
			e := newEnv(t, "USAGE_FLUSH_SECONDS", flush)
			e.addKeys("openai", "sk-quota-openai-00000001")
			tok := e.newToken(`{"name":"q","requests_day":3}`)
			for day := 0; day < 3; day++ {
				for i := 1; i <= 3; i++ {
					if w := e.tokenChat(tok.Token, "gpt-4o-mini"); w.Code != http.StatusOK {
						t.Fatalf("day %d request %d: %d %s", day, i, w.Code, w.Body.String())
					}
				}
				w := e.tokenChat(tok.Token, "gpt-4o-mini")
				wantError(t, w, http.StatusTooManyRequests, "quota_exceeded")
				// Until the next UTC midnight.
				now := e.clock()
				midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
				if got, want := w.Header().Get("Retry-After"), strconv.FormatInt(int64(midnight.Sub(now)/time.Second), 10); got != want {
					t.Errorf("day %d: Retry-After %q, want %q", day, got, want)
				}
				// Still refused a moment before midnight, for a whole second.
				e.setNow(midnight.Add(-500 * time.Millisecond))
				w = e.tokenChat(tok.Token, "gpt-4o-mini")
				wantError(t, w, http.StatusTooManyRequests, "quota_exceeded")
				if got := w.Header().Get("Retry-After"); got != "1" {
					t.Errorf("day %d: Retry-After %q half a second before midnight, want 1", day, got)
				}
				// The next day: three more.
				e.setNow(midnight.Add(time.Duration(day) * time.Hour))
			}
			// AUTH_KEY is not limited.
			for i := 0; i < 5; i++ {
				if w := e.chat("gpt-4o-mini"); w.Code != http.StatusOK {
					t.Fatalf("AUTH_KEY: %d", w.Code)
				}
			}
		})
	}
}

func TestTokenRequestsTotal(t *testing.T) {
	for _, flush := range []string{"0", "5"} {
		t.Run("USAGE_FLUSH_SECONDS="+flush, func(t *testing.T) {
			e := newEnv(t, "USAGE_FLUSH_SECONDS", flush)
			e.addKeys("openai", "sk-total-openai-00000001")
			tok := e.newToken(`{"name":"q","requests_total":2}`)
			other := e.newToken(`{"name":"other","requests_total":2}`)
			for i := 0; i < 2; i++ {
				wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
			}
			w := e.tokenChat(tok.Token, "gpt-4o-mini")
			wantError(t, w, http.StatusTooManyRequests, "quota_exceeded")
			if ra := w.Header().Get("Retry-After"); ra != "" {
				t.Errorf("Retry-After %q for a total quota, want none (it never resets)", ra)
			}
			// Another day does not help.
			e.advance(48 * time.Hour)
			wantError(t, e.tokenChat(tok.Token, "gpt-4o-mini"), http.StatusTooManyRequests, "quota_exceeded")
			// Each token has its own count.
			wantServed(t, e.tokenChat(other.Token, "gpt-4o-mini"), "1")
			// Raised by the admin: works again.
			if w := e.admin(http.MethodPatch, idPath(tok.ID), `{"requests_total":3}`); w.Code != http.StatusOK {
				t.Fatal(w.Body.String())
			}
			wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
			wantError(t, e.tokenChat(tok.Token, "gpt-4o-mini"), http.StatusTooManyRequests, "quota_exceeded")
		})
	}
}

func TestTokenRPM(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-rpm-openai-000000001")
	tok := e.newToken(`{"name":"r","rpm":2}`)
	free := e.newToken(`{"name":"free"}`)
	wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	e.advance(20 * time.Second)
	wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	e.advance(10 * time.Second)
	before := e.fetches.Load()
	w := e.tokenChat(tok.Token, "gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if got := w.Header().Get("Retry-After"); got != "30" {
		t.Errorf("Retry-After %q, want 30 (the first request leaves the minute in 30 s)", got)
	}
	if e.fetches.Load() != before {
		t.Errorf("a rate-limited request went upstream")
	}
	// Others are not limited by it.
	for i := 0; i < 5; i++ {
		wantServed(t, e.tokenChat(free.Token, "gpt-4o-mini"), "1")
	}
	// 60 s after the first request, one slot is free; refused requests
	// took none.
	e.advance(30 * time.Second)
	wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	w = e.tokenChat(tok.Token, "gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if got := w.Header().Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After %q, want 20", got)
	}
	e.advance(60 * time.Second)
	for i := 0; i < 2; i++ {
		wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	}
	wantError(t, e.tokenChat(tok.Token, "gpt-4o-mini"), http.StatusTooManyRequests, "rate_limited")
}

func TestTokenUsageWritten(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-usage-openai-00000001")
	tok := e.newToken(`{"name":"u"}`)
	other := e.newToken(`{"name":"idle"}`)
	type row struct{ used, day, dayReq, last int64 }
	read := func(id int64) row {
		t.Helper()
		var r row
		if err := e.db.QueryRow(`SELECT used_requests, day, day_requests, last_used_at FROM tokens WHERE id = ?`, id).
			Scan(&r.used, &r.day, &r.dayReq, &r.last); err != nil {
			t.Fatal(err)
		}
		return r
	}
	today := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	e.advance(time.Second)
	wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	if got, want := read(tok.ID), (row{2, today, 2, t0.Add(time.Second).UnixMilli()}); got != want {
		t.Errorf("after 2 requests: %+v, want %+v", got, want)
	}
	// A request refused by the scope counts nothing.
	if w := e.admin(http.MethodPatch, idPath(tok.ID), `{"providers":["groq"]}`); w.Code != http.StatusOK {
		t.Fatal(w.Body.String())
	}
	wantError(t, e.tokenChat(tok.Token, "gpt-4o-mini"), http.StatusForbidden, "provider_not_allowed")
	if w := e.admin(http.MethodPatch, idPath(tok.ID), `{"providers":[]}`); w.Code != http.StatusOK {
		t.Fatal(w.Body.String())
	}
	// The next day.
	e.setNow(t0.Add(14 * time.Hour))
	wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	if got, want := read(tok.ID), (row{3, today + 86_400_000, 1, t0.Add(14 * time.Hour).UnixMilli()}); got != want {
		t.Errorf("next day: %+v, want %+v", got, want)
	}
	if got := read(other.ID); got != (row{}) {
		t.Errorf("an unused token has counters: %+v", got)
	}
	// The admin API shows them.
	var shown tokenJSON
	decode(t, e.admin(http.MethodGet, idPath(tok.ID), ""), &shown)
	if shown.Used.Requests != 3 || shown.Used.DayRequests != 1 || shown.Used.Day != today+86_400_000 || shown.LastUsedAt != t0.Add(14*time.Hour).UnixMilli() {
		t.Errorf("shown usage %+v last %d", shown.Used, shown.LastUsedAt)
	}
	// AUTH_KEY use is no token's.
	e.chat("gpt-4o-mini")
	if n := e.count(`SELECT SUM(used_requests) FROM tokens`); n != 3 {
		t.Errorf("tokens count %d requests, want 3", n)
	}
}

// Use pending in the isolate when the day changes belongs to the old day:
// it counts in the totals, not against the new day's quota.
func TestTokenPendingUseAtMidnight(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "3600")
	e.addKeys("openai", "sk-midnight-openai-0001")
	tok := e.newToken(`{"name":"m","requests_day":2,"requests_total":4}`)
	e.setNow(time.Date(2025, 6, 1, 23, 59, 0, 0, time.UTC))
	for i := 0; i < 2; i++ {
		wantServed(t, e.tokenChat(tok.Token, "gpt-4o-mini"), "1")
	}
	w := e.tokenChat(tok.Token, "gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "quota_exceeded")
	if msg := gjson.Get(w.Body.String(), "error.message").String(); !strings.Contains(msg, "daily") {
		t.Errorf("want the daily quota named: %s", msg)
	}
	// A minute later, a new day: two more (the first request of the
	// day before was written, the second is still pending).
	e.setNow(time.Date(2025, 6, 2, 0, 0, 1, 0, time.UTC))
	for i := 0; i < 2; i++ {
		if w := e.tokenChat(tok.Token, "gpt-4o-mini"); w.Code != http.StatusOK {
			t.Fatalf("new day, request %d: %d %s", i+1, w.Code, w.Body.String())
		}
	}
	// Four in all: the total quota, which counts the pending use of both
	// days, is the one reached.
	w = e.tokenChat(tok.Token, "gpt-4o-mini")
	wantError(t, w, http.StatusTooManyRequests, "quota_exceeded")
	if msg := gjson.Get(w.Body.String(), "error.message").String(); !strings.Contains(msg, "total") {
		t.Errorf("want the total quota named: %s", msg)
	}
	e.setNow(time.Date(2025, 6, 3, 0, 0, 1, 0, time.UTC))
	wantError(t, e.tokenChat(tok.Token, "gpt-4o-mini"), http.StatusTooManyRequests, "quota_exceeded")
	// Written (a served request flushes), everything adds up, and the day
	// counters are the last day's.
	e.chat("gpt-4o-mini")
	var used, day, dayReq int64
	if err := e.db.QueryRow(`SELECT used_requests, day, day_requests FROM tokens WHERE id = ?`, tok.ID).Scan(&used, &day, &dayReq); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC).UnixMilli(); used != 4 || day != want || dayReq != 2 {
		t.Errorf("stored used %d day %d day_requests %d, want 4, %d, 2", used, day, dayReq, want)
	}
}

func TestTokenBadInput(t *testing.T) {
	e := newEnv(t)
	tok := e.newToken(`{"name":"good"}`)
	bad := []struct {
		name, body, param string
	}{
		{"name missing", `{}`, "name"},
		{"name empty", `{"name":""}`, "name"},
		{"name blank", `{"name":"   "}`, "name"},
		{"name not a string", `{"name":5}`, "name"},
		{"name too long", `{"name":"` + strings.Repeat("n", 101) + `"}`, "name"},
		{"providers unknown", `{"name":"x","providers":["nope"]}`, "providers"},
		{"providers not an array", `{"name":"x","providers":"openai"}`, "providers"},
		{"providers item not a string", `{"name":"x","providers":[1]}`, "providers"},
		{"models not an array", `{"name":"x","models":"gpt-*"}`, "models"},
		{"models object", `{"name":"x","models":{"a":"b"}}`, "models"},
		{"models empty item", `{"name":"x","models":[""]}`, "models"},
		{"models item not a string", `{"name":"x","models":[true]}`, "models"},
		{"rpm negative", `{"name":"x","rpm":-1}`, "rpm"},
		{"rpm fractional", `{"name":"x","rpm":1.5}`, "rpm"},
		{"rpm string", `{"name":"x","rpm":"5"}`, "rpm"},
		{"requests_day negative", `{"name":"x","requests_day":-3}`, "requests_day"},
		{"requests_total string", `{"name":"x","requests_total":"10"}`, "requests_total"},
		{"tokens_day null", `{"name":"x","tokens_day":null}`, "tokens_day"},
		{"tokens_total negative", `{"name":"x","tokens_total":-1}`, "tokens_total"},
		{"expires_at negative", `{"name":"x","expires_at":-5}`, "expires_at"},
		{"expires_in_days 0", `{"name":"x","expires_in_days":0}`, "expires_in_days"},
		{"expires_in_days negative", `{"name":"x","expires_in_days":-1}`, "expires_in_days"},
		{"expires_in_days too many", `{"name":"x","expires_in_days":40000}`, "expires_in_days"},
		{"expires_in_days string", `{"name":"x","expires_in_days":"3"}`, "expires_in_days"},
		{"disabled yes", `{"name":"x","disabled":"yes"}`, "disabled"},
		{"disabled 1", `{"name":"x","disabled":1}`, "disabled"},
	}
	for _, tc := range bad {
		t.Run("create "+tc.name, func(t *testing.T) {
			before := e.count(`SELECT COUNT(*) FROM tokens`)
			w := e.admin(http.MethodPost, "/admin/api/tokens", tc.body)
			er := wantError(t, w, http.StatusBadRequest, "invalid_request")
			if er.Error.Param == nil || *er.Error.Param != tc.param || !strings.Contains(er.Error.Message, tc.param) {
				t.Errorf("param %v message %q, want %q named", er.Error.Param, er.Error.Message, tc.param)
			}
			if e.count(`SELECT COUNT(*) FROM tokens`) != before {
				t.Errorf("a token was created")
			}
		})
		if tc.param == "name" && tc.name == "name missing" {
			continue // a patch may leave the name out
		}
		t.Run("patch "+tc.name, func(t *testing.T) {
			w := e.admin(http.MethodPatch, idPath(tok.ID), tc.body)
			er := wantError(t, w, http.StatusBadRequest, "invalid_request")
			if er.Error.Param == nil || *er.Error.Param != tc.param {
				t.Errorf("param %v, want %q", er.Error.Param, tc.param)
			}
			var name string
			var rpm int64
			if err := e.db.QueryRow(`SELECT name, rpm FROM tokens WHERE id = ?`, tok.ID).Scan(&name, &rpm); err != nil || name != "good" || rpm != 0 {
				t.Errorf("a refused patch changed the token: %q %d %v", name, rpm, err)
			}
		})
	}
	for _, body := range []string{``, `[]`, `"x"`, `{"name":`} {
		wantError(t, e.admin(http.MethodPost, "/admin/api/tokens", body), http.StatusBadRequest, "invalid_request")
		wantError(t, e.admin(http.MethodPatch, idPath(tok.ID), body), http.StatusBadRequest, "invalid_request")
	}

	// A valid patch changes only what it names.
	w := e.admin(http.MethodPatch, idPath(tok.ID), `{"rpm":7,"models":["a-*"]}`)
	var got tokenJSON
	decode(t, w, &got)
	if w.Code != http.StatusOK || got.Name != "good" || got.RPM != 7 || strings.Join(got.Models, ",") != "a-*" || got.Token != "" {
		t.Errorf("patch: %d %s", w.Code, w.Body.String())
	}

	// Unknown ids.
	for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
		w := e.admin(m, "/admin/api/tokens/999", `{"rpm":1}`)
		wantError(t, w, http.StatusNotFound, "not_found")
	}
	for _, target := range []string{"/admin/api/tokens/0", "/admin/api/tokens/-1", "/admin/api/tokens/x"} {
		wantError(t, e.admin(http.MethodGet, target, ""), http.StatusBadRequest, "invalid_request")
	}
	wantError(t, e.admin(http.MethodPut, idPath(tok.ID), `{}`), http.StatusMethodNotAllowed, "method_not_allowed")
}
