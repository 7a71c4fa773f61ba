package handler

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// A key a request took out of rotation stays out of this isolate's
// fresh reads until its state reaches D1: the write runs in waitUntil,
// after the response, and the next request may read D1 before it lands
// (seen in e2e as "invalid key called 2 times upstream, want 1").
func TestTakenOutKeyStaysOutUntilWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule fakeupstream.Rule
	}{
		{"blocked", fakeupstream.OpenAIInvalidKey("")},
		{"cooling", fakeupstream.Rule{Status: 429, Header: map[string]string{"Retry-After": "120"},
			Body: `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			bad, good := "sk-held-out-bad-0000000001", "sk-held-out-good-000000002"
			e.addKeys("openai", bad, good)
			e.up.SetRule(bad, tc.rule)
			var mu sync.Mutex
			var queued []func()
			h := New(Deps{Config: e.h.d.Config, DB: e.h.d.DB, Fetch: e.h.d.Fetch, Now: e.h.d.Now, IntN: e.h.d.IntN,
				Defer: func(f func()) { mu.Lock(); queued = append(queued, f); mu.Unlock() }})
			for i := 0; i < 3; i++ {
				w := httptest.NewRecorder()
				r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions",
					strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
				r.Header.Set("Authorization", "Bearer "+testAuthKey)
				r.Header.Set("Content-Type", "application/json")
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					t.Fatalf("request %d: %d %s", i, w.Code, w.Body.String())
				}
				// A fresh read every time, as when the cache has expired.
				h.pool.ForgetCache()
			}
			calls := 0
			for _, q := range e.up.Requests() {
				if q.Key == bad {
					calls++
				}
			}
			if calls != 1 {
				t.Errorf("the %s key was called %d times before its state was written, want 1", tc.name, calls)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, f := range queued {
				f()
			}
		})
	}
}
