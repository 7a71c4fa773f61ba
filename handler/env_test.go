package handler

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/config"
	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// The test environment: a full Handler on real SQLite with the real
// migrations, talking over HTTP to a fake upstream on 127.0.0.1, with a
// fixed clock, deterministic key selection and synchronous deferred work.

const (
	testAdminPassword = "admin-password-0123456789"
	testAuthKey       = "kp-client-token-abcdef123456"
	testKeypoolSecret = "keypool-secret-for-tests-0123456789"
)

// t0 is the fixed clock every test starts at.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

type testEnv struct {
	t  *testing.T
	h  *Handler
	db *sql.DB
	up *fakeupstream.Server

	mu   sync.Mutex
	vars map[string]string
	now  time.Time
	// pick answers IntN; the first candidate (least recently used, then
	// lowest id) when nil.
	pick      func(n int) int
	intnCalls []int
	// fetch replaces the real HTTP call when set.
	fetch    func(*http.Request) (*http.Response, error)
	fetches  atomic.Int64
	deferred atomic.Int64
	// followSince, when set, makes the clock follow real time: now plus
	// the real time elapsed since followSince (see followRealTime).
	followSince time.Time
}

// newEnv builds the handler. vars are name/value pairs applied on top of
// the defaults (admin password, client token, every provider's base URL
// pointing at the fake); an empty value unsets the variable.
func newEnv(t *testing.T, vars ...string) *testEnv {
	t.Helper()
	up, err := fakeupstream.Start()
	if err != nil {
		t.Fatalf("starting the fake upstream: %v", err)
	}
	t.Cleanup(func() { up.Close() })
	e := &testEnv{t: t, up: up, now: t0, db: sqlitetest.Open(t)}
	e.vars = map[string]string{"ADMIN_PASSWORD": testAdminPassword, "AUTH_KEY": testAuthKey, "KEYPOOL_SECRET": testKeypoolSecret}
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		e.vars[p.BaseURLVar()] = up.URL
	}
	if len(vars)%2 != 0 {
		t.Fatalf("newEnv: odd number of var arguments")
	}
	for i := 0; i < len(vars); i += 2 {
		e.set(vars[i], vars[i+1])
	}
	e.h = New(Deps{
		// Parsed on every read, so that e.set applies at once.
		Config: func() *config.Config {
			c := config.Parse(func(name string) string {
				e.mu.Lock()
				defer e.mu.Unlock()
				return e.vars[name]
			})
			return &c
		},
		DB: func() (*sql.DB, error) { return e.db, nil },
		Fetch: func(r *http.Request) (*http.Response, error) {
			e.fetches.Add(1)
			e.mu.Lock()
			f := e.fetch
			e.mu.Unlock()
			if f != nil {
				return f(r)
			}
			return http.DefaultClient.Do(r)
		},
		Defer: func(f func()) {
			e.deferred.Add(1)
			f()
		},
		Now: func() time.Time {
			e.mu.Lock()
			defer e.mu.Unlock()
			if !e.followSince.IsZero() {
				return e.now.Add(time.Since(e.followSince))
			}
			return e.now
		},
		IntN: func(n int) int {
			e.mu.Lock()
			e.intnCalls = append(e.intnCalls, n)
			p := e.pick
			e.mu.Unlock()
			if p != nil {
				return p(n)
			}
			return 0
		},
	})
	// The rotation tests choose keys through IntN; prompt-cache affinity
	// (on by default for providers that cache prompts) would choose by
	// the conversation instead. Off here; the affinity tests turn it on.
	off := `{`
	for i, name := range provider.Names() {
		if i > 0 {
			off += ","
		}
		off += `"` + name + `":false`
	}
	if err := store.On(e.db, nil).Settings().Set(context.Background(), map[string]string{settings.PromptAffinity: off + "}"}, 0); err != nil {
		t.Fatalf("turning affinity off: %v", err)
	}
	return e
}

func (e *testEnv) set(name, value string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if value == "" {
		delete(e.vars, name)
		return
	}
	e.vars[name] = value
}

func (e *testEnv) setNow(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = t
	if !e.followSince.IsZero() {
		e.followSince = time.Now()
	}
}

// advance moves the clock forward by d.
func (e *testEnv) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// followRealTime makes the clock run with real time from its current
// reading on (for code that sleeps, such as waiting for a cooldown).
func (e *testEnv) followRealTime() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.followSince = time.Now()
}

// clock reads the handler's clock.
func (e *testEnv) clock() time.Time { return e.h.d.Now() }

// serve sends one request through the handler. hdr are name/value pairs.
func (e *testEnv) serve(method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

// proxy calls a proxy route with the client token and a JSON body.
func (e *testEnv) proxy(method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	h := []string{"Authorization", "Bearer " + testAuthKey}
	if body != "" {
		h = append(h, "Content-Type", "application/json")
	}
	return e.serve(method, target, body, append(h, hdr...)...)
}

// chat posts a chat completion for model.
func (e *testEnv) chat(model string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.proxy(http.MethodPost, "/v1/chat/completions",
		`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
}

// admin calls an admin route with the admin password.
func (e *testEnv) admin(method, target, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	h := []string{"Authorization", "Bearer " + testAdminPassword}
	if body != "" {
		h = append(h, "Content-Type", "application/json")
	}
	return e.serve(method, target, body, h...)
}

// addKeys puts secrets into the pool directly and returns their ids.
func (e *testEnv) addKeys(prov string, secrets ...string) []int64 {
	e.t.Helper()
	added, dups, err := store.On(e.db, nil).Keys().Add(context.Background(), prov, "", secrets, t0.UnixMilli())
	if err != nil || len(dups) > 0 || len(added) != len(secrets) {
		e.t.Fatalf("adding keys: added %d of %d, duplicates %v, err %v", len(added), len(secrets), dups, err)
	}
	ids := make([]int64, len(added))
	for i, k := range added {
		ids[i] = k.ID
	}
	return ids
}

// key reads a key and its events from the store.
func (e *testEnv) key(id int64) (store.Key, []store.Event) {
	e.t.Helper()
	k, evs, err := store.On(e.db, nil).Keys().Get(context.Background(), id, 50)
	if err != nil {
		e.t.Fatalf("reading key %d: %v", id, err)
	}
	return k, evs
}

// requests returns what the fake upstream received.
func (e *testEnv) requests() []fakeupstream.Request { return e.up.Requests() }

// apiErr is the OpenAI error format.
type apiErr struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// wantError checks that w is an OpenAI-format error with status and code.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status int, code string) apiErr {
	t.Helper()
	var e apiErr
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, w.Body.String())
	}
	if e.Error.Code != code {
		t.Errorf("error code %q, want %q; body %s", e.Error.Code, code, w.Body.String())
	}
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("error without message or type: %s", w.Body.String())
	}
	return e
}

// decode parses a JSON body into v.
func decode(t *testing.T, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, w.Body.String())
	}
}

// wantServed checks a 200 relay after attempts tries and returns the id of
// the key that served it.
func wantServed(t *testing.T, w *httptest.ResponseRecorder, attempts string) string {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", w.Code, w.Body.String())
	}
	if got := w.Header().Get("X-Keypool-Attempts"); got != attempts {
		t.Errorf("X-Keypool-Attempts %q, want %q", got, attempts)
	}
	return w.Header().Get("X-Keypool-Key")
}

// fixedConfig is the configuration of vars, parsed once.
func fixedConfig(vars map[string]string) func() *config.Config {
	c := config.Parse(func(name string) string { return vars[name] })
	return func() *config.Config { return &c }
}
