package handler

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// Without AUTH_KEY, no token is unrestricted: what the client sends must
// be a token the admin created; the old AUTH_KEY value is just wrong.
func TestProxyWithoutAuthKey(t *testing.T) {
	e := newEnv(t, "AUTH_KEY", "")
	e.addKeys("openai", "sk-test-key-0001")
	for _, path := range []string{"/v1/models", "/api/openai/models"} {
		wantError(t, e.proxy(http.MethodGet, path, ""), http.StatusUnauthorized, "invalid_api_key")
	}
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls without a valid token, want 0", n)
	}
}

// Without KEYPOOL_SECRET keypool serves and stores no key, and says why.
func TestNoKeypoolSecret(t *testing.T) {
	e := newEnv(t, "KEYPOOL_SECRET", "")
	for _, w := range []*httptest.ResponseRecorder{
		e.chat("gpt-4o-mini"),
		e.admin(http.MethodPost, "/admin/api/keys", `{"provider":"openai","keys":"sk-test-key-0001"}`),
		e.admin(http.MethodGet, "/admin/api/keys", ""),
	} {
		er := wantError(t, w, http.StatusServiceUnavailable, "not_configured")
		if !strings.Contains(er.Error.Message, "KEYPOOL_SECRET") {
			t.Errorf("message %q does not name KEYPOOL_SECRET", er.Error.Message)
		}
	}
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls without KEYPOOL_SECRET, want 0", n)
	}
}

func TestProxyClientAuth(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-test-key-0001")

	t.Run("missing", func(t *testing.T) {
		w := e.serve(http.MethodGet, "/v1/models", "")
		wantError(t, w, http.StatusUnauthorized, "missing_api_key")
	})
	wrong := []struct {
		name string
		hdr  []string
		path string
	}{
		{"wrong bearer", []string{"Authorization", "Bearer nope"}, "/v1/models"},
		{"admin password is not a client token", []string{"Authorization", "Bearer " + testAdminPassword}, "/v1/models"},
		{"wrong x-api-key", []string{"x-api-key", "nope"}, "/v1/models"},
		{"wrong query key", nil, "/v1/models?key=nope"},
		{"token prefix", []string{"Authorization", "Bearer " + testAuthKey[:len(testAuthKey)-1]}, "/v1/models"},
		{"token with suffix", []string{"Authorization", "Bearer " + testAuthKey + "x"}, "/v1/models"},
		{"wrong native", []string{"x-goog-api-key", "nope"}, "/api/google-ai-studio/v1beta/models"},
		// The first credential found decides: a wrong bearer is not rescued
		// by a right key elsewhere.
		{"wrong header, right query", []string{"Authorization", "Bearer nope"}, "/v1/models?key=" + testAuthKey},
	}
	for _, tc := range wrong {
		t.Run(tc.name, func(t *testing.T) {
			w := e.serve(http.MethodGet, tc.path, "", tc.hdr...)
			wantError(t, w, http.StatusUnauthorized, "invalid_api_key")
		})
	}
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls for unauthenticated requests, want 0", n)
	}

	// Every accepted form works, and the token never goes upstream. GET
	// /v1/models is keypool's own answer; /v1/models/<id> is forwarded.
	ok := []struct {
		name string
		hdr  []string
		path string
	}{
		{"bearer", []string{"Authorization", "Bearer " + testAuthKey}, "/v1/models/gpt-4o-mini"},
		{"bearer lower case", []string{"Authorization", "bearer " + testAuthKey}, "/v1/models/gpt-4o-mini"},
		{"x-api-key", []string{"x-api-key", testAuthKey}, "/v1/models/gpt-4o-mini"},
		{"x-goog-api-key", []string{"x-goog-api-key", testAuthKey}, "/v1/models/gpt-4o-mini"},
		{"api-key", []string{"api-key", testAuthKey}, "/v1/models/gpt-4o-mini"},
		{"xi-api-key", []string{"xi-api-key", testAuthKey}, "/v1/models/gpt-4o-mini"},
		{"query key", nil, "/v1/models/gpt-4o-mini?key=" + testAuthKey},
		{"every form at once", []string{"Authorization", "Bearer " + testAuthKey, "x-api-key", testAuthKey,
			"x-goog-api-key", testAuthKey, "api-key", testAuthKey, "xi-api-key", testAuthKey}, "/v1/models/gpt-4o-mini?key=" + testAuthKey},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.requests())
			w := e.serve(http.MethodGet, tc.path, "", tc.hdr...)
			wantServed(t, w, "1")
			reqs := e.requests()
			if len(reqs) != before+1 {
				t.Fatalf("%d upstream requests, want 1", len(reqs)-before)
			}
			got := reqs[len(reqs)-1]
			if got.Path != "/v1/models/gpt-4o-mini" {
				t.Errorf("upstream path %q, want /v1/models/gpt-4o-mini", got.Path)
			}
			if got.Key != "sk-test-key-0001" {
				t.Errorf("upstream key %q, want the pool key", got.Key)
			}
			if a := got.Header.Get("Authorization"); a != "Bearer sk-test-key-0001" {
				t.Errorf("upstream Authorization %q, want the pool key", a)
			}
			if strings.Contains(got.Query, testAuthKey) || strings.Contains(got.Query, "key=") {
				t.Errorf("client token in upstream query %q", got.Query)
			}
			for name, vs := range got.Header {
				for _, v := range vs {
					if strings.Contains(v, testAuthKey) {
						t.Errorf("client token forwarded upstream in %s: %q", name, v)
					}
				}
			}
		})
	}
}

func TestUpstream401BlocksKey(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-revoked-key-000001", "sk-good-key-0000002")
	// The provider echoes the full key in its answer; the history must not.
	e.up.SetRule("sk-revoked-key-000001", fakeupstream.OpenAIInvalidKey("sk-revoked-key-000001"))

	w := e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "2"); got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("served by key %s, want %d", got, ids[1])
	}
	k, evs := e.key(ids[0])
	if k.Status != store.StatusBlocked {
		t.Errorf("revoked key status %q, want blocked", k.Status)
	}
	if k.Failures != 1 || k.Requests != 1 || k.Successes != 0 {
		t.Errorf("revoked key counters requests=%d successes=%d failures=%d, want 1/0/1", k.Requests, k.Successes, k.Failures)
	}
	if len(evs) != 1 {
		t.Fatalf("revoked key has %d events, want 1: %+v", len(evs), evs)
	}
	ev := evs[0]
	if ev.From != store.StatusActive || ev.To != store.StatusBlocked || ev.Status != 401 || ev.At != t0.UnixMilli() || ev.Model != "" {
		t.Errorf("event %+v, want active→blocked, status 401, at t0, no model", ev)
	}
	if !strings.Contains(ev.Reason, "401") {
		t.Errorf("event reason %q does not mention 401", ev.Reason)
	}
	if strings.Contains(ev.Excerpt, "sk-revoked-key-000001") {
		t.Errorf("event excerpt contains the full secret: %q", ev.Excerpt)
	}
	if !strings.Contains(ev.Excerpt, "Incorrect API key provided") {
		t.Errorf("event excerpt %q lacks the upstream message", ev.Excerpt)
	}
	good, goodEvs := e.key(ids[1])
	if good.Status != store.StatusActive || good.Successes != 1 || len(goodEvs) != 0 {
		t.Errorf("good key: status %q successes %d events %d, want active/1/0", good.Status, good.Successes, len(goodEvs))
	}

	// The blocked key is out of rotation for every model.
	before := len(e.requests())
	for _, model := range []string{"gpt-4o-mini", "gpt-4o"} {
		w := e.chat(model)
		if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[1], 10) {
			t.Errorf("%s served by key %s, want %d", model, got, ids[1])
		}
	}
	for _, r := range e.requests()[before:] {
		if r.Key == "sk-revoked-key-000001" {
			t.Errorf("blocked key used again for %s", r.Model)
		}
	}
}

func TestUpstream429CoolsKeyModel(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-limited-key-00001", "sk-spare-key-000002")
	e.up.SetRule("sk-limited-key-00001", fakeupstream.OpenAIRateLimited("gpt-4o-mini", 30))

	w := e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "2"); got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("served by key %s, want %d", got, ids[1])
	}
	k, evs := e.key(ids[0])
	if k.Status != store.StatusActive {
		t.Errorf("rate-limited key status %q, want active (429 is per model)", k.Status)
	}
	if len(k.Models) != 1 {
		t.Fatalf("rate-limited key has %d model states, want 1: %+v", len(k.Models), k.Models)
	}
	m := k.Models[0]
	wantUntil := t0.Add(30 * time.Second).UnixMilli()
	if m.Model != "gpt-4o-mini" || m.State != store.ModelCooling || m.Until != wantUntil || m.Streak != 1 {
		t.Errorf("model state %+v, want gpt-4o-mini cooling until %d streak 1", m, wantUntil)
	}
	if len(evs) != 1 || evs[0].To != store.ModelCooling || evs[0].Model != "gpt-4o-mini" || evs[0].Status != 429 {
		t.Errorf("events %+v, want one cooling event for gpt-4o-mini with status 429", evs)
	}

	// The same key still serves another model...
	w = e.chat("gpt-4o")
	if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[0], 10) {
		t.Errorf("gpt-4o served by key %s, want the rate-limited key %d", got, ids[0])
	}
	// ...but not the model it is cooling for.
	before := len(e.requests())
	w = e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("gpt-4o-mini served by key %s, want %d", got, ids[1])
	}
	if n := len(e.requests()) - before; n != 1 {
		t.Errorf("%d upstream calls for gpt-4o-mini while a key cools, want 1", n)
	}

	// Once the cooldown has passed, the key is a candidate again.
	e.up.ClearRule("sk-limited-key-00001")
	e.setNow(t0.Add(31 * time.Second))
	w = e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[0], 10) {
		t.Errorf("after the cooldown, served by key %s, want %d", got, ids[0])
	}
}

func TestUpstream400ReturnedUnchanged(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-first-key-000001", "sk-second-key-00002")
	rule := fakeupstream.OpenAIBadRequest("gpt-4o-mini")
	rule.Header = map[string]string{"X-Request-Id": "req_abc", "Set-Cookie": "__cf_bm=x; path=/"}
	e.up.SetRule("sk-first-key-000001", rule)

	w := e.chat("gpt-4o-mini")
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400; body %s", w.Code, w.Body.String())
	}
	if w.Body.String() != rule.Body {
		t.Errorf("body changed:\n got %q\nwant %q", w.Body.String(), rule.Body)
	}
	if w.Header().Get("X-Keypool-Attempts") != "1" || w.Header().Get("X-Keypool-Key") != strconv.FormatInt(ids[0], 10) {
		t.Errorf("X-Keypool-Attempts %q X-Keypool-Key %q, want 1 and %d",
			w.Header().Get("X-Keypool-Attempts"), w.Header().Get("X-Keypool-Key"), ids[0])
	}
	if w.Header().Get("X-Request-Id") != "req_abc" {
		t.Errorf("upstream header X-Request-Id not relayed")
	}
	if w.Header().Get("Set-Cookie") != "" {
		t.Errorf("upstream Set-Cookie relayed: %q", w.Header().Get("Set-Cookie"))
	}
	if n := e.fetches.Load(); n != 1 {
		t.Errorf("%d upstream calls, want 1 (a 400 is not retried)", n)
	}
	k, evs := e.key(ids[0])
	if k.Status != store.StatusActive || len(k.Models) != 0 || len(evs) != 0 || k.Failures != 0 || k.Successes != 1 {
		t.Errorf("key blamed for a 400: status %q models %+v events %+v failures %d successes %d",
			k.Status, k.Models, evs, k.Failures, k.Successes)
	}
}

func TestUpstream5xxRetriedWithSameBody(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-broken-key-00001", "sk-working-key-0002")
	e.up.SetRule("sk-broken-key-00001", fakeupstream.OpenAIServerError())
	body := "{\"model\":\"gpt-4o-mini\",  \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo ☃ 日本 \\\"q\\\"\"}],\n\"temperature\":0.70}"

	w := e.proxy(http.MethodPost, "/v1/chat/completions", body)
	if got := wantServed(t, w, "2"); got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("served by key %s, want %d", got, ids[1])
	}
	if w.Body.String() != fakeupstream.ChatCompletion("gpt-4o-mini") {
		t.Errorf("body %q, want the upstream's answer", w.Body.String())
	}
	reqs := e.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d upstream requests, want 2", len(reqs))
	}
	for i, want := range []string{"sk-broken-key-00001", "sk-working-key-0002"} {
		if reqs[i].Key != want {
			t.Errorf("attempt %d used key %q, want %q", i+1, reqs[i].Key, want)
		}
		if !bytes.Equal(reqs[i].Body, []byte(body)) {
			t.Errorf("attempt %d body:\n got %q\nwant %q", i+1, reqs[i].Body, body)
		}
		if cl := reqs[i].Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
			t.Errorf("attempt %d Content-Length %q, want %d", i+1, cl, len(body))
		}
	}
	// A first 5xx only moves on: the key-model's streak is counted (a
	// cooling row that ends at once), with no cooldown and no event.
	k, evs := e.key(ids[0])
	if k.Status != store.StatusActive || len(evs) != 0 {
		t.Errorf("5xx key changed state: status %q events %+v", k.Status, evs)
	}
	if len(k.Models) != 1 || k.Models[0].Model != "gpt-4o-mini" || k.Models[0].State != store.ModelCooling ||
		k.Models[0].Until != t0.UnixMilli() || k.Models[0].Streak != 1 {
		t.Errorf("5xx key models %+v, want gpt-4o-mini cooling until t0 (no cooldown) with streak 1", k.Models)
	}
	if k.Failures != 1 || k.Requests != 1 {
		t.Errorf("5xx key counters requests=%d failures=%d, want 1/1", k.Requests, k.Failures)
	}
}

func TestAllKeysFailing5xx(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-broken-key-00001", "sk-broken-key-00002")
	e.up.SetRule("sk-broken-key-00001", fakeupstream.OpenAIServerError())
	e.up.SetRule("sk-broken-key-00002", fakeupstream.OpenAIServerError())
	w := e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusBadGateway, "upstream_error")
	if !strings.Contains(er.Error.Message, "HTTP 500") || !strings.Contains(er.Error.Message, "openai") {
		t.Errorf("message %q does not name the provider and the last status", er.Error.Message)
	}
	if got := w.Header().Get("X-Keypool-Attempts"); got != "2" {
		t.Errorf("X-Keypool-Attempts %q, want 2", got)
	}
}

func TestNetworkErrorRetried(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-unlucky-key-0001", "sk-lucky-key-000002")
	calls := 0
	e.fetch = func(r *http.Request) (*http.Response, error) {
		calls++
		if calls == 1 {
			return nil, errors.New("dial tcp: connection reset")
		}
		return http.DefaultClient.Do(r)
	}
	w := e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "2"); got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("served by key %s, want %d", got, ids[1])
	}
	k, evs := e.key(ids[0])
	if k.Status != store.StatusActive || k.Failures != 1 || len(evs) != 0 {
		t.Errorf("key after a network error: status %q failures %d events %+v", k.Status, k.Failures, evs)
	}
	if len(k.Models) != 1 || k.Models[0].State != store.ModelCooling || k.Models[0].Until != t0.UnixMilli() || k.Models[0].Streak != 1 {
		t.Errorf("key models after a network error %+v, want a streak of 1 and no cooldown", k.Models)
	}

	e.fetch = func(*http.Request) (*http.Response, error) { return nil, errors.New("no route to host") }
	w = e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusBadGateway, "upstream_error")
	if !strings.Contains(er.Error.Message, "network error") {
		t.Errorf("message %q does not say network error", er.Error.Message)
	}
}

func TestAllKeysRateLimited(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-limited-key-00001", "sk-limited-key-00002")
	e.up.SetRule("sk-limited-key-00001", fakeupstream.OpenAIRateLimited("gpt-4o-mini", 30))
	e.up.SetRule("sk-limited-key-00002", fakeupstream.OpenAIRateLimited("gpt-4o-mini", 20))

	// Both keys answer 429 within the request.
	w := e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	if got := w.Header().Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After %q, want 20 (the first key back)", got)
	}
	if got := w.Header().Get("X-Keypool-Attempts"); got != "2" {
		t.Errorf("X-Keypool-Attempts %q, want 2", got)
	}
	if !strings.Contains(er.Error.Message, "gpt-4o-mini") {
		t.Errorf("message %q does not name the model", er.Error.Message)
	}
	for _, id := range ids {
		k, _ := e.key(id)
		if len(k.Models) != 1 || k.Models[0].State != store.ModelCooling {
			t.Errorf("key %d models %+v, want cooling", id, k.Models)
		}
	}

	// Ten seconds later every key is still cooling: no upstream call, and
	// the client is told when to come back.
	e.setNow(t0.Add(10 * time.Second))
	before := e.fetches.Load()
	w = e.chat("gpt-4o-mini")
	if n := e.fetches.Load() - before; n != 0 {
		t.Errorf("%d upstream calls while every key cools, want 0", n)
	}
	if got := w.Header().Get("Retry-After"); got != "10" {
		t.Errorf("Retry-After %q while every key cools, want 10", got)
	}
	if got := w.Header().Get("X-Keypool-Attempts"); got != "0" {
		t.Errorf("X-Keypool-Attempts %q while every key cools, want 0", got)
	}
	// README: "503 ... naming the provider and model, or 429 when the keys
	// are rate limited". Every key is rate limited for this model here, as
	// in the request before, which got a 429.
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"code":"rate_limited"`) {
		t.Errorf("while every key cools: status %d, want 429 rate_limited; body %s", w.Code, w.Body.String())
	}

	// Another model is unaffected.
	w = e.chat("gpt-4o")
	wantServed(t, w, "1")

	// After the shorter cooldown the second key is back.
	e.up.ClearRule("sk-limited-key-00002")
	e.setNow(t0.Add(21 * time.Second))
	w = e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("served by key %s, want %d", got, ids[1])
	}
}

func TestNoKeys(t *testing.T) {
	e := newEnv(t)
	w := e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusServiceUnavailable, "no_available_key")
	if !strings.Contains(er.Error.Message, "openai") || !strings.Contains(er.Error.Message, `"gpt-4o-mini"`) {
		t.Errorf("message %q does not name provider and model", er.Error.Message)
	}
	if w.Header().Get("Retry-After") != "" {
		t.Errorf("Retry-After %q with no cooling key", w.Header().Get("Retry-After"))
	}
	if w.Header().Get("X-Keypool-Attempts") != "0" {
		t.Errorf("X-Keypool-Attempts %q, want 0", w.Header().Get("X-Keypool-Attempts"))
	}
	if e.fetches.Load() != 0 {
		t.Errorf("upstream called with no keys")
	}

	// Keys of another provider do not count.
	e.addKeys("groq", "gsk_test_key_000001")
	w = e.chat("gpt-4o-mini")
	wantError(t, w, http.StatusServiceUnavailable, "no_available_key")

	// Only blocked keys: still 503.
	e.addKeys("openai", "sk-revoked-key-000001")
	e.up.SetRule("sk-revoked-key-000001", fakeupstream.OpenAIInvalidKey(""))
	w = e.chat("gpt-4o-mini")
	er = wantError(t, w, http.StatusServiceUnavailable, "no_available_key")
	if w.Header().Get("X-Keypool-Attempts") != "1" {
		t.Errorf("X-Keypool-Attempts %q, want 1", w.Header().Get("X-Keypool-Attempts"))
	}
	w = e.chat("gpt-4o-mini")
	wantError(t, w, http.StatusServiceUnavailable, "no_available_key")
	if e.fetches.Load() != 1 {
		t.Errorf("%d upstream calls, want 1 (the blocked key is not tried again)", e.fetches.Load())
	}
}

func TestMaxAttempts(t *testing.T) {
	tests := []struct {
		value string
		want  int
	}{
		{"", 3},
		{"1", 1},
		{"2", 2},
		{"5", 5},
		{"0", 3},   // out of range: default
		{"99", 3},  // out of range: default
		{"two", 3}, // not a number: default
	}
	secrets := []string{"sk-failing-key-00001", "sk-failing-key-00002", "sk-failing-key-00003",
		"sk-failing-key-00004", "sk-failing-key-00005", "sk-failing-key-00006"}
	for _, tc := range tests {
		t.Run("MAX_ATTEMPTS="+tc.value, func(t *testing.T) {
			// STORM_KEYS high: five keys failing at once would be a storm.
			e := newEnv(t, "MAX_ATTEMPTS", tc.value, "STORM_KEYS", "100")
			e.addKeys("openai", secrets...)
			for _, s := range secrets {
				e.up.SetRule(s, fakeupstream.OpenAIServerError())
			}
			w := e.chat("gpt-4o-mini")
			wantError(t, w, http.StatusBadGateway, "upstream_error")
			if n := e.fetches.Load(); n != int64(tc.want) {
				t.Errorf("%d upstream calls, want %d", n, tc.want)
			}
			if got := w.Header().Get("X-Keypool-Attempts"); got != strconv.Itoa(tc.want) {
				t.Errorf("X-Keypool-Attempts %q, want %d", got, tc.want)
			}
			seen := map[string]bool{}
			for _, r := range e.requests() {
				if seen[r.Key] {
					t.Errorf("key %s tried twice in one request", r.Key)
				}
				seen[r.Key] = true
			}
		})
	}
}

func TestMaxBodyBytes(t *testing.T) {
	e := newEnv(t, "MAX_BODY_BYTES", "1024")
	e.addKeys("openai", "sk-test-key-0001")
	// A JSON body of exactly n bytes.
	bodyOf := func(n int) string {
		head, tail := `{"model":"gpt-4o-mini","messages":[],"pad":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}

	w := e.proxy(http.MethodPost, "/v1/chat/completions", bodyOf(1025))
	er := wantError(t, w, http.StatusRequestEntityTooLarge, "body_too_large")
	if !strings.Contains(er.Error.Message, "1024") {
		t.Errorf("message %q does not state the limit", er.Error.Message)
	}
	w = e.proxy(http.MethodPost, "/api/openai/chat/completions", bodyOf(4096))
	wantError(t, w, http.StatusRequestEntityTooLarge, "body_too_large")
	if n := e.fetches.Load(); n != 0 {
		t.Fatalf("%d upstream calls for oversized bodies, want 0", n)
	}

	w = e.proxy(http.MethodPost, "/v1/chat/completions", bodyOf(1024))
	wantServed(t, w, "1")
	if reqs := e.requests(); len(reqs) != 1 || len(reqs[0].Body) != 1024 {
		t.Errorf("a body at the limit was not forwarded whole")
	}
}

func TestCooldownWithoutHint(t *testing.T) {
	bare429 := fakeupstream.Rule{Status: http.StatusTooManyRequests,
		Body: `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`}
	hinted := bare429
	hinted.Header = map[string]string{"Retry-After": "7"}
	hintedMs := bare429
	hintedMs.Header = map[string]string{"Retry-After-Ms": "2500"}
	tests := []struct {
		name     string
		cooldown string
		rule     fakeupstream.Rule
		want     time.Duration
	}{
		{"COOLDOWN_SECONDS used without a hint", "120", bare429, 120 * time.Second},
		{"default without a hint", "", bare429, 60 * time.Second},
		{"invalid COOLDOWN_SECONDS falls back to the default", "-5", bare429, 60 * time.Second},
		{"Retry-After wins over COOLDOWN_SECONDS", "120", hinted, 7 * time.Second},
		{"retry-after-ms wins over COOLDOWN_SECONDS", "120", hintedMs, 2500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "COOLDOWN_SECONDS", tc.cooldown)
			ids := e.addKeys("openai", "sk-limited-key-00001")
			e.up.SetRule("sk-limited-key-00001", tc.rule)
			w := e.chat("gpt-4o-mini")
			wantError(t, w, http.StatusTooManyRequests, "rate_limited")
			wantRetry := strconv.FormatInt(int64((tc.want+time.Second-1)/time.Second), 10)
			if got := w.Header().Get("Retry-After"); got != wantRetry {
				t.Errorf("Retry-After %q, want %s", got, wantRetry)
			}
			k, _ := e.key(ids[0])
			if len(k.Models) != 1 {
				t.Fatalf("model states %+v, want one", k.Models)
			}
			if want := t0.Add(tc.want).UnixMilli(); k.Models[0].Until != want {
				t.Errorf("cooling until %d (t0%+dms), want t0+%v", k.Models[0].Until, k.Models[0].Until-t0.UnixMilli(), tc.want)
			}
		})
	}
}

func TestFetchPanicBecomes500(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-test-key-0001")
	e.fetch = func(*http.Request) (*http.Response, error) { panic("fetch exploded") }
	w := e.chat("gpt-4o-mini")
	er := wantError(t, w, http.StatusInternalServerError, "internal_error")
	if er.Error.Type != "server_error" {
		t.Errorf("type %q, want server_error", er.Error.Type)
	}
	if er.Error.Param != nil {
		t.Errorf("param %q, want null", *er.Error.Param)
	}
	if strings.Contains(w.Body.String(), "fetch exploded") {
		t.Errorf("panic value leaked to the client: %s", w.Body.String())
	}
	// The handler keeps serving.
	e.fetch = nil
	wantServed(t, e.chat("gpt-4o-mini"), "1")
}

func TestDebugPanicRoute(t *testing.T) {
	e := newEnv(t)
	// Off unless KEYPOOL_DEBUG=1.
	wantError(t, e.admin(http.MethodGet, "/admin/api/debug/panic", ""), http.StatusNotFound, "not_found")
	e.set("KEYPOOL_DEBUG", "1")
	wantError(t, e.admin(http.MethodGet, "/admin/api/debug/panic", ""), http.StatusInternalServerError, "internal_error")
	// Still behind the admin password.
	wantError(t, e.serve(http.MethodGet, "/admin/api/debug/panic", ""), http.StatusUnauthorized, "invalid_admin_password")
}

func TestProviderPrefixRouting(t *testing.T) {
	e := newEnv(t)
	openaiIDs := e.addKeys("openai", "sk-openai-key-00001")
	groqIDs := e.addKeys("groq", "gsk_groq_key_000001")
	e.up.SetRule("gsk_groq_key_000001", fakeupstream.OpenAIRateLimited("llama-3.1-8b-instant", 15))
	body := `{"messages":[{"role":"user","content":"日本 \"groq/x\""}], "model" : "groq/llama-3.1-8b-instant","stream":false}`

	w := e.proxy(http.MethodPost, "/v1/chat/completions?foo=bar&key=ignored", body)
	wantError(t, w, http.StatusTooManyRequests, "rate_limited")
	reqs := e.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d upstream requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/openai/v1/chat/completions" {
		t.Errorf("upstream path %q, want /openai/v1/chat/completions", r.Path)
	}
	if r.Query != "foo=bar" {
		t.Errorf("upstream query %q, want foo=bar", r.Query)
	}
	if r.Key != "gsk_groq_key_000001" || r.Header.Get("Authorization") != "Bearer gsk_groq_key_000001" {
		t.Errorf("upstream key %q / Authorization %q, want the groq key as bearer", r.Key, r.Header.Get("Authorization"))
	}
	want := strings.Replace(body, `"groq/llama-3.1-8b-instant"`, `"llama-3.1-8b-instant"`, 1)
	if string(r.Body) != want {
		t.Errorf("upstream body:\n got %q\nwant %q", r.Body, want)
	}
	// The key state is recorded under the bare model name.
	k, _ := e.key(groqIDs[0])
	if len(k.Models) != 1 || k.Models[0].Model != "llama-3.1-8b-instant" {
		t.Errorf("groq key models %+v, want cooling for llama-3.1-8b-instant", k.Models)
	}
	if ok, _ := e.key(openaiIDs[0]); ok.Requests != 0 {
		t.Errorf("openai key used for a groq model")
	}

	// An unknown prefix is part of the model name, for the default provider.
	e.up.ClearRule("gsk_groq_key_000001")
	w = e.chat("ft:gpt-4o/custom")
	wantServed(t, w, "1")
	last := e.requests()[len(e.requests())-1]
	if last.Path != "/v1/chat/completions" || last.Key != "sk-openai-key-00001" || last.Model != "ft:gpt-4o/custom" {
		t.Errorf("unknown prefix: path %q key %q model %q", last.Path, last.Key, last.Model)
	}

	// DEFAULT_PROVIDER decides for a bare name (once the cooldown is over).
	e.set("DEFAULT_PROVIDER", "groq")
	e.setNow(t0.Add(16 * time.Second))
	w = e.chat("llama-3.1-8b-instant")
	wantServed(t, w, "1")
	last = e.requests()[len(e.requests())-1]
	if last.Path != "/openai/v1/chat/completions" || last.Key != "gsk_groq_key_000001" {
		t.Errorf("DEFAULT_PROVIDER=groq: path %q key %q", last.Path, last.Key)
	}
}

func TestOpenAIRouteValidation(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-test-key-0001")
	tests := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"invalid JSON", "/v1/chat/completions", `{"model":`, http.StatusBadRequest, "invalid_request"},
		{"model not a string", "/v1/chat/completions", `{"model":42}`, http.StatusBadRequest, "invalid_request"},
		{"model missing", "/v1/chat/completions", `{"messages":[]}`, http.StatusBadRequest, "invalid_request"},
		{"model missing for embeddings", "/v1/embeddings", `{"input":"x"}`, http.StatusBadRequest, "invalid_request"},
		{"unknown default provider", "/v1/chat/completions", `{"model":"m"}`, http.StatusNotFound, "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.status == http.StatusNotFound {
				e.set("DEFAULT_PROVIDER", "nope")
				defer e.set("DEFAULT_PROVIDER", "")
			}
			wantError(t, e.proxy(http.MethodPost, tc.path, tc.body), tc.status, tc.code)
		})
	}
	if n := e.fetches.Load(); n != 0 {
		t.Errorf("%d upstream calls for invalid requests, want 0", n)
	}
}

func TestStreamRelayed(t *testing.T) {
	e := newEnv(t)
	e.addKeys("openai", "sk-test-key-0001")
	w := e.proxy(http.MethodPost, "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[]}`)
	wantServed(t, w, "1")
	if ct := w.Header().Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	if want := strings.Join(fakeupstream.StreamChunks("gpt-4o-mini"), ""); w.Body.String() != want {
		t.Errorf("streamed body:\n got %q\nwant %q", w.Body.String(), want)
	}
}

func TestNativeDirect(t *testing.T) {
	e := newEnv(t, "CF_AIG_TOKEN", "")
	e.addKeys("anthropic", "sk-ant-test-key-0001")
	gIDs := e.addKeys("google-ai-studio", "AIzaSyTestKey000001")

	t.Run("anthropic", func(t *testing.T) {
		body := `{"model":"claude-3-5-haiku-latest","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
		w := e.proxy(http.MethodPost, "/api/anthropic/v1/messages", body, "Authorization", "", "x-api-key", testAuthKey)
		wantServed(t, w, "1")
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/v1/messages" {
			t.Errorf("upstream path %q, want /v1/messages", r.Path)
		}
		if r.Header.Get("X-Api-Key") != "sk-ant-test-key-0001" {
			t.Errorf("x-api-key %q, want the pool key", r.Header.Get("X-Api-Key"))
		}
		if r.Header.Get("Authorization") != "" {
			t.Errorf("Authorization %q sent to anthropic", r.Header.Get("Authorization"))
		}
		if r.Header.Get("Anthropic-Version") != "2023-06-01" {
			t.Errorf("anthropic-version %q, want the default", r.Header.Get("Anthropic-Version"))
		}
		if string(r.Body) != body {
			t.Errorf("body changed on the native route: %q", r.Body)
		}
	})
	t.Run("anthropic version kept", func(t *testing.T) {
		w := e.proxy(http.MethodPost, "/api/anthropic/v1/messages", `{"model":"claude-x"}`, "anthropic-version", "2099-01-01")
		wantServed(t, w, "1")
		r := e.requests()[len(e.requests())-1]
		if r.Header.Get("Anthropic-Version") != "2099-01-01" {
			t.Errorf("anthropic-version %q, want the client's", r.Header.Get("Anthropic-Version"))
		}
	})
	t.Run("gemini with query key", func(t *testing.T) {
		e.up.SetRule("AIzaSyTestKey000001", fakeupstream.Rule{Status: 429, Body: `{}`,
			Header: map[string]string{"Retry-After": "5"}, Models: []string{"gemini-2.0-flash"}})
		defer e.up.ClearRule("AIzaSyTestKey000001")
		w := e.serve(http.MethodPost, "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent?alt=sse&key="+testAuthKey,
			`{"contents":[{"parts":[{"text":"hi"}]}]}`, "Content-Type", "application/json")
		wantError(t, w, http.StatusTooManyRequests, "rate_limited")
		r := e.requests()[len(e.requests())-1]
		if r.Path != "/v1beta/models/gemini-2.0-flash:generateContent" || r.Query != "alt=sse" {
			t.Errorf("upstream %s?%s, want /v1beta/models/gemini-2.0-flash:generateContent?alt=sse", r.Path, r.Query)
		}
		if r.Header.Get("X-Goog-Api-Key") != "AIzaSyTestKey000001" || r.Header.Get("Authorization") != "" {
			t.Errorf("x-goog-api-key %q Authorization %q, want the pool key in x-goog-api-key only",
				r.Header.Get("X-Goog-Api-Key"), r.Header.Get("Authorization"))
		}
		// The model came from the path.
		k, _ := e.key(gIDs[0])
		if len(k.Models) != 1 || k.Models[0].Model != "gemini-2.0-flash" {
			t.Errorf("gemini key models %+v, want cooling for gemini-2.0-flash", k.Models)
		}
	})
}

func TestNativeGateway(t *testing.T) {
	e := newEnv(t, "CF_ACCOUNT_ID", "acct123", "AI_GATEWAY", "my-gw", "CF_AIG_TOKEN", "cf-aig-secret-token")
	e.set("AI_GATEWAY_URL", e.up.URL+"/gateway/")
	// Prove the gateway, not the provider's origin, is used.
	e.set("OPENAI_BASE_URL", "http://127.0.0.1:1")
	e.set("GOOGLE_AI_STUDIO_BASE_URL", "http://127.0.0.1:1")
	e.addKeys("openai", "sk-test-key-0001")
	e.addKeys("google-ai-studio", "AIzaSyTestKey000001")

	tests := []struct {
		name, path, body string
		wantPath         string
		wantQuery        string
		keyHeader        string
		keyValue         string
	}{
		{"openai", "/api/openai/chat/completions?key=" + testAuthKey, `{"model":"gpt-4o-mini","messages":[]}`,
			"/gateway/acct123/my-gw/openai/chat/completions", "", "Authorization", "Bearer sk-test-key-0001"},
		{"gemini", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent?alt=sse", `{"contents":[]}`,
			"/gateway/acct123/my-gw/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", "alt=sse", "X-Goog-Api-Key", "AIzaSyTestKey000001"},
		// The OpenAI-compatible routes go through the gateway too.
		{"openai /v1", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`,
			"/gateway/acct123/my-gw/openai/chat/completions", "", "Authorization", "Bearer sk-test-key-0001"},
		{"gemini /v1", "/v1/embeddings", `{"model":"google-ai-studio/text-embedding-004","input":"hi"}`,
			"/gateway/acct123/my-gw/google-ai-studio/v1beta/openai/embeddings", "", "Authorization", "Bearer AIzaSyTestKey000001"},
		{"compat", "/api/compat/chat/completions", `{"model":"google-ai-studio/gemini-2.0-flash","messages":[]}`,
			"/gateway/acct123/my-gw/compat/chat/completions", "", "Authorization", "Bearer AIzaSyTestKey000001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := e.proxy(http.MethodPost, tc.path, tc.body, "cf-aig-cache-ttl", "60", "cf-ray", "abc123")
			wantServed(t, w, "1")
			r := e.requests()[len(e.requests())-1]
			if r.Path != tc.wantPath || r.Query != tc.wantQuery {
				t.Errorf("upstream %s?%s, want %s?%s", r.Path, r.Query, tc.wantPath, tc.wantQuery)
			}
			if got := r.Header.Get(tc.keyHeader); got != tc.keyValue {
				t.Errorf("%s %q, want %q", tc.keyHeader, got, tc.keyValue)
			}
			if got := r.Header.Get("Cf-Aig-Authorization"); got != "Bearer cf-aig-secret-token" {
				t.Errorf("cf-aig-authorization %q, want Bearer cf-aig-secret-token", got)
			}
			if r.Header.Get("Cf-Aig-Cache-Ttl") != "60" {
				t.Errorf("cf-aig-cache-ttl not forwarded")
			}
			if r.Header.Get("Cf-Ray") != "" {
				t.Errorf("cf-ray forwarded")
			}
			md := r.Header.Get("Cf-Aig-Metadata")
			if want := `{"keypool_token":0,"keypool_token_name":"AUTH_KEY","keypool_key":` + w.Header().Get("X-Keypool-Key") + `}`; md != want {
				t.Errorf("cf-aig-metadata %s, want %s", md, want)
			}
		})
	}

	// Without AI_GATEWAY_URL the public gateway is the target.
	e.set("AI_GATEWAY_URL", "")
	var got string
	e.fetch = func(r *http.Request) (*http.Response, error) {
		got = r.URL.String()
		return nil, errors.New("offline")
	}
	e.proxy(http.MethodPost, "/api/openai/chat/completions", `{"model":"gpt-4o-mini"}`)
	if want := "https://gateway.ai.cloudflare.com/v1/acct123/my-gw/openai/chat/completions"; got != want {
		t.Errorf("default gateway URL %q, want %q", got, want)
	}
}

// The AI Gateway token is a Cloudflare credential: it belongs on requests
// that go through the gateway, never on ones sent straight to a provider.
func TestGatewayTokenOnlySentToGateway(t *testing.T) {
	tests := []struct {
		name string
		vars []string
		path string
		key  [2]string // provider, secret
	}{
		{"provider not on the gateway", []string{"CF_ACCOUNT_ID", "acct123", "AI_GATEWAY", "my-gw"},
			"/api/siliconflow/v1/chat/completions", [2]string{"siliconflow", "sk-sf-test-key-0001"}},
		{"gateway not configured", nil,
			"/api/openai/chat/completions", [2]string{"openai", "sk-test-key-0001"}},
		{"OpenAI-compatible route, provider not on the gateway", []string{"CF_ACCOUNT_ID", "acct123", "AI_GATEWAY", "my-gw", "DEFAULT_PROVIDER", "siliconflow"},
			"/v1/chat/completions", [2]string{"siliconflow", "sk-sf-test-key-0001"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, append([]string{"CF_AIG_TOKEN", "cf-aig-secret-token"}, tc.vars...)...)
			e.addKeys(tc.key[0], tc.key[1])
			w := e.proxy(http.MethodPost, tc.path, `{"model":"some-model","messages":[]}`)
			wantServed(t, w, "1")
			r := e.requests()[len(e.requests())-1]
			if r.Key != tc.key[1] {
				t.Fatalf("upstream key %q, want %q", r.Key, tc.key[1])
			}
			for name, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, "cf-aig-secret-token") {
						t.Errorf("gateway token sent straight to the provider (%s) in %s: %q", r.Path, name, v)
					}
				}
			}
		})
	}
}

func TestUnknownProvider(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/api/nope/v1/chat/completions", "/api/nope", "/api/"} {
		w := e.proxy(http.MethodPost, path, `{"model":"x"}`)
		er := wantError(t, w, http.StatusNotFound, "not_found")
		if !strings.Contains(er.Error.Message, "unknown provider") || !strings.Contains(er.Error.Message, "google-ai-studio") {
			t.Errorf("%s: message %q does not list the known providers", path, er.Error.Message)
		}
	}
	// Unauthenticated clients learn nothing about providers.
	wantError(t, e.serve(http.MethodGet, "/api/nope/x", ""), http.StatusUnauthorized, "missing_api_key")
	if e.fetches.Load() != 0 {
		t.Errorf("upstream called for an unknown provider")
	}
}

func TestUnknownRoute(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/", "/v1", "/favicon.ico", "/admin", "/admin/api"} {
		wantError(t, e.serve(http.MethodGet, path, ""), http.StatusNotFound, "not_found")
	}
}

func TestKeySelection(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-select-key-00001", "sk-select-key-00002", "sk-select-key-00003",
		"sk-select-key-00004", "sk-select-key-00005", "sk-select-key-00006")
	// IntN chooses among at most the four least recently used keys.
	e.pick = func(n int) int { return n - 1 }
	w := e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[3], 10) {
		t.Errorf("served by key %s, want %d (the last of the 4 least recently used)", got, ids[3])
	}
	if len(e.intnCalls) != 1 || e.intnCalls[0] != 4 {
		t.Errorf("IntN called with %v, want [4]", e.intnCalls)
	}
	// Least recently used first: the key just used goes to the back.
	e.setNow(t0.Add(time.Second))
	e.pick = nil
	w = e.chat("gpt-4o-mini")
	if got := wantServed(t, w, "1"); got != strconv.FormatInt(ids[0], 10) {
		t.Errorf("served by key %s, want %d", got, ids[0])
	}
	// Usage counters are coalesced: the first request wrote at once, the
	// second (1 s later) waits for USAGE_FLUSH_SECONDS (5 s by default).
	if k, _ := e.key(ids[0]); k.Requests != 0 || e.deferred.Load() != 1 {
		t.Errorf("counters written before the flush interval: requests %d, %d deferred writes", k.Requests, e.deferred.Load())
	}
	e.setNow(t0.Add(6 * time.Second))
	third := wantServed(t, e.chat("gpt-4o-mini"), "1")
	var total int64
	for _, id := range ids {
		k, _ := e.key(id)
		total += k.Requests
	}
	if k, _ := e.key(ids[0]); total != 3 || k.LastUsedAt < t0.Add(time.Second).UnixMilli() || k.Successes < 1 {
		t.Errorf("after the flush: %d requests counted (want 3); key %d last_used_at %d (third served by %s)", total, ids[0], k.LastUsedAt, third)
	}
	if e.deferred.Load() != 2 {
		t.Errorf("%d deferred writes for 3 requests, want 2 (coalesced)", e.deferred.Load())
	}
}

func TestUsageFlushEveryRequest(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	ids := e.addKeys("openai", "sk-flush-key-00001")
	for i := 1; i <= 3; i++ {
		e.setNow(t0.Add(time.Duration(i) * time.Millisecond))
		wantServed(t, e.chat("gpt-4o-mini"), "1")
		if k, _ := e.key(ids[0]); k.Requests != int64(i) || k.LastUsedAt != t0.Add(time.Duration(i)*time.Millisecond).UnixMilli() {
			t.Fatalf("after request %d: requests %d last_used_at %d", i, k.Requests, k.LastUsedAt)
		}
	}
}

// TestCandidatesCached: within CACHE_SECONDS the warm path reads no D1;
// this instance's own cooldowns apply at once; an admin change drops the
// cache.
func TestCandidatesCached(t *testing.T) {
	e := newEnv(t)
	var queries atomic.Int64
	e.h.d.Queries = &queries
	ids := e.addKeys("openai", "sk-cache-key-00001", "sk-cache-key-00002")
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	before := queries.Load()
	for i := 0; i < 10; i++ {
		e.setNow(t0.Add(time.Duration(i) * 100 * time.Millisecond))
		wantServed(t, e.chat("gpt-4o-mini"), "1")
	}
	if n := queries.Load() - before; n != 0 {
		t.Errorf("%d D1 queries for 10 warm requests, want 0", n)
	}
	// A 429 on one key: the next requests avoid it without reading D1.
	e.up.SetRule("sk-cache-key-00001", fakeupstream.OpenAIRateLimited("gpt-4o-mini", 60))
	for i := 0; i < 6; i++ {
		w := e.chat("gpt-4o-mini")
		if got := w.Header().Get("X-Keypool-Key"); w.Code != http.StatusOK || got != strconv.FormatInt(ids[1], 10) {
			t.Fatalf("request %d: %d, served by %q, want the key that is not cooling", i, w.Code, got)
		}
	}
	// After the TTL, the store is read again.
	before = queries.Load()
	e.setNow(t0.Add(10 * time.Second))
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	if queries.Load() == before {
		t.Errorf("cache not refreshed after CACHE_SECONDS")
	}
}

func TestScheduledPrunesEndedCooldowns(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-cron-key-000001")
	ctx := context.Background()
	// Ended cooling rows keep the key-model's failure streak for
	// rotation.StreakMemory; only older ones are pruned.
	for _, row := range []struct {
		model, state string
		until        int64
	}{
		{"ended-long-ago", "cooling", t0.Add(-time.Hour).UnixMilli()},
		{"ended-at-memory", "cooling", t0.Add(-rotation.StreakMemory).UnixMilli()},
		{"ended-within-memory", "cooling", t0.Add(-rotation.StreakMemory + time.Millisecond).UnixMilli()},
		{"ends-now", "cooling", t0.UnixMilli()},
		{"ends-later", "cooling", t0.Add(time.Minute).UnixMilli()},
		{"blocked-model", "blocked", 0},
	} {
		if _, err := e.db.ExecContext(ctx,
			`INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, ?, ?, ?, '', 1, ?)`,
			ids[0], row.model, row.state, row.until, t0.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	left := func() string {
		t.Helper()
		k, _ := e.key(ids[0])
		var names []string
		for _, m := range k.Models {
			names = append(names, m.Model)
		}
		return strings.Join(names, ",")
	}
	steps := []struct {
		at   time.Time
		want string
	}{
		{t0, "blocked-model,ended-within-memory,ends-later,ends-now"},
		{t0.Add(2 * time.Minute), "blocked-model,ends-later,ends-now"},
		{t0.Add(rotation.StreakMemory - time.Millisecond), "blocked-model,ends-later,ends-now"},
		{t0.Add(rotation.StreakMemory), "blocked-model,ends-later"},
		{t0.Add(time.Minute + rotation.StreakMemory), "blocked-model"},
		{t0.Add(24*time.Hour - time.Millisecond), "blocked-model"},
		// A model block is lifted after a day: a permission may be granted
		// later, and a block that still holds is learnt again.
		{t0.Add(24*time.Hour + time.Millisecond), ""},
	}
	for _, st := range steps {
		e.setNow(st.at)
		if err := e.h.Scheduled(ctx); err != nil {
			t.Fatalf("Scheduled: %v", err)
		}
		if got := left(); got != st.want {
			t.Errorf("after the cron at t0%+v: model states %s, want %s", st.at.Sub(t0), got, st.want)
		}
	}

	// A missing database is logged, not returned (it would crash the worker).
	h := New(Deps{Config: fixedConfig(nil), DB: func() (*sql.DB, error) { return nil, errors.New("no D1") }})
	if err := h.Scheduled(ctx); err != nil {
		t.Errorf("Scheduled without a database returned %v, want nil", err)
	}
}
