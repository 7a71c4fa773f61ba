package handler

import (
	"net/http"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestHeld404Counted: a key that answered "no such model" before the
// request ended otherwise (the client's own error from the next key, or a
// storm) made a request like any other: it is counted in the key's
// traffic, and blamed for nothing.
func TestHeld404Counted(t *testing.T) {
	tests := []struct {
		name   string
		second fakeupstream.Rule
		status int
		vars   []string
	}{
		{"404 then the client's 400", fakeupstream.OpenAIBadRequest("gpt-4o-mini"), http.StatusBadRequest, nil},
		{"404 then a storm", fakeupstream.OpenAIServerError(), http.StatusServiceUnavailable, []string{"STORM_KEYS", "2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.vars...)
			ids := e.addKeys("openai", "sk-held-key-0000001", "sk-held-key-0000002", "sk-held-key-0000003")
			e.up.SetRule("sk-held-key-0000001", fakeupstream.OpenAIModelNotFound("gpt-4o-mini"))
			e.up.SetRule("sk-held-key-0000002", tc.second)
			e.up.SetRule("sk-held-key-0000003", tc.second)
			if w := e.chat("gpt-4o-mini"); w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body.String())
			}
			k, evs := e.key(ids[0])
			if k.Requests != 1 || k.Failures != 1 || len(k.Models) != 0 || len(evs) != 0 {
				t.Errorf("404 key: requests %d failures %d models %+v events %+v, want 1 failed request and no state",
					k.Requests, k.Failures, k.Models, evs)
			}
		})
	}
}

// TestCooldownFromTheAnswer: a key-model's rest runs from the 429 that
// called for it, not from when the request ended (here 5 s later, after
// the next key's slow answer): Retry-After and the stored cooldown agree.
func TestCooldownFromTheAnswer(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-from-key-0000001", "sk-from-key-0000002")
	e.up.SetRule("sk-from-key-0000001", fakeupstream.OpenAIRateLimitedNoHint("gpt-4o-mini"))
	e.fetch = func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Authorization") == "Bearer sk-from-key-0000002" {
			e.advance(5 * time.Second)
		}
		return http.DefaultClient.Do(r)
	}
	wantServed(t, e.chat("gpt-4o-mini"), "2")
	rows := e.modelRows()
	if len(rows) != 1 || rows[0].KeyID != ids[0] || rows[0].Until != t0.Add(60*time.Second).UnixMilli() {
		t.Errorf("rows %+v, want key %d cooling until t0+60s", rows, ids[0])
	}
}
