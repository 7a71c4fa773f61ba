package handler

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/settings"
)

// Password guessing, session revocation and the guest summary under
// attack (issue 12, findings 3, 5, 7 and 9).

func TestParallelWrongLoginsAllThrottled(t *testing.T) {
	e := newEnv(t)
	statuses := make([]int, 60)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.send(accReq{method: http.MethodPost, target: "/admin/login",
				body: loginBody("wrong-" + strconv.Itoa(i)), ip: "203.0.113.60"}).Code
		}()
	}
	wg.Wait()
	n := map[int]int{}
	for _, s := range statuses {
		n[s]++
	}
	if n[http.StatusUnauthorized] != loginMaxFailures || n[http.StatusTooManyRequests] != 60-loginMaxFailures {
		t.Errorf("60 parallel wrong logins: %v, want %d×401 and %d×429", n, loginMaxFailures, 60-loginMaxFailures)
	}
}

// An IPv6 client cannot rotate its address within its /64 to escape.
func TestThrottleIPv6Slash64(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= loginMaxFailures; i++ {
		w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody("wrong"), ip: "2001:db8:7:7::" + strconv.Itoa(i)})
		wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	}
	w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword), ip: "2001:db8:7:7:abcd::1"})
	wantError(t, w, http.StatusTooManyRequests, "login_throttled")
	if w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword), ip: "2001:db8:7:8::1"}); w.Code != http.StatusOK {
		t.Errorf("another /64: %d %s", w.Code, w.Body.String())
	}
}

func TestBearerGuessesThrottledAndAudited(t *testing.T) {
	e := newEnv(t)
	const ip = "203.0.113.50"
	bearer := func(pw, path string) *httptest.ResponseRecorder {
		return e.send(accReq{method: http.MethodGet, target: path, ip: ip, hdr: []string{"Authorization", "Bearer " + pw}})
	}
	for i := 1; i <= loginMaxFailures; i++ {
		wantError(t, bearer("guess-"+strconv.Itoa(i), "/admin/api/keys"), http.StatusUnauthorized, "invalid_admin_password")
	}
	for i := 0; i < 3; i++ {
		w := bearer("guess-more", "/admin/api/providers")
		wantError(t, w, http.StatusTooManyRequests, "login_throttled")
		if w.Header().Get("Retry-After") != "900" {
			t.Errorf("Retry-After %q, want 900", w.Header().Get("Retry-After"))
		}
	}
	// The right password too, as a bearer token or a login: the answer
	// must not tell a guesser it found it.
	wantError(t, bearer(testAdminPassword, "/admin/api/keys"), http.StatusTooManyRequests, "login_throttled")
	wantError(t, e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword), ip: ip}),
		http.StatusTooManyRequests, "login_throttled")
	// Audited up to the attempt that tripped the throttle, never with the
	// guess.
	if n := e.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'admin.auth.fail' AND ip = ? AND actor = 'anonymous'`, ip); n != loginMaxFailures+1 {
		t.Errorf("%d admin.auth.fail rows, want %d", n, loginMaxFailures+1)
	}
	if n := e.count(`SELECT COUNT(*) FROM audit_log WHERE detail LIKE '%guess%' OR target LIKE '%guess%'`); n != 0 {
		t.Errorf("%d audit rows hold a guess", n)
	}
	if n := e.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'admin.auth.fail' AND detail LIKE 'bearer GET /admin/api/keys; failure 1%'`); n != 1 {
		t.Errorf("the first failure's audit row does not name the route and count: %d", n)
	}
	// After the window, the right bearer works again.
	e.advance(loginWindow)
	if w := bearer(testAdminPassword, "/admin/api/keys"); w.Code != http.StatusOK {
		t.Errorf("after the window: %d %s", w.Code, w.Body.String())
	}
	// The guest summary's admin check counts too.
	const ip2 = "203.0.113.51"
	for i := 0; i < loginMaxFailures; i++ {
		e.summary(accReq{ip: ip2, hdr: []string{"Authorization", "Bearer guess"}})
	}
	w := e.summary(accReq{ip: ip2, hdr: []string{"Authorization", "Bearer " + testAdminPassword}})
	wantError(t, w, http.StatusForbidden, "guest_page_private")
}

func TestShortAdminPassword(t *testing.T) {
	short := "fifteen-chars-x" // 15
	e := newEnv(t, "ADMIN_PASSWORD", short)
	for _, w := range []*httptest.ResponseRecorder{
		e.serve(http.MethodGet, "/admin/api/providers", "", "Authorization", "Bearer "+short),
		e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(short)}),
	} {
		er := wantError(t, w, http.StatusServiceUnavailable, "admin_password_too_short")
		if !strings.Contains(er.Error.Message, "16 characters") || !strings.Contains(er.Error.Message, "ADMIN_PASSWORD") {
			t.Errorf("message %q does not say ADMIN_PASSWORD needs 16 characters", er.Error.Message)
		}
	}
	e.set("KEYPOOL_DEBUG", "1")
	e.set("ADMIN_PASSWORD", "sixteen-chars-xy")
	if w := e.serve(http.MethodGet, "/admin/api/providers", "", "Authorization", "Bearer sixteen-chars-xy"); w.Code != http.StatusOK {
		t.Errorf("a 16-character password: %d %s", w.Code, w.Body.String())
	}
}

func TestLoginBodyCapped(t *testing.T) {
	e := newEnv(t)
	e.putSettings(`{"access_mode":"restricted","guest_password":"` + testGuestPassword + `"}`)
	big := loginBody(strings.Repeat("x", loginBodyLimit))
	for _, target := range []string{"/admin/login", "/guest/login"} {
		for i := 1; i <= loginMaxFailures; i++ {
			wantError(t, e.send(accReq{method: http.MethodPost, target: target, body: big, ip: "203.0.113.70"}),
				http.StatusRequestEntityTooLarge, "body_too_large")
		}
		wantError(t, e.send(accReq{method: http.MethodPost, target: target, body: big, ip: "203.0.113.70"}),
			http.StatusTooManyRequests, "login_throttled")
	}
	// A body at the limit is read.
	pw := loginBody(testAdminPassword)
	atLimit := pw[:len(pw)-1] + strings.Repeat(" ", loginBodyLimit-len(pw)) + "}"
	if w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: atLimit, ip: "203.0.113.71"}); w.Code != http.StatusOK {
		t.Errorf("a %d-byte login: %d %s", len(atLimit), w.Code, w.Body.String())
	}
}

// secondIsolate is another isolate of the same worker: same D1 and vars,
// its own Shared memory.
func (e *testEnv) secondIsolate(queries *atomic.Int64) *Handler {
	return New(Deps{Config: e.h.d.Config, DB: e.h.d.DB, Fetch: e.h.d.Fetch, Defer: e.h.d.Defer, Now: e.h.d.Now, Queries: queries})
}

func TestLogoutRevokesCopiedCookie(t *testing.T) {
	e := newEnv(t)
	var queries atomic.Int64
	other := e.secondIsolate(&queries)
	s1, s2 := e.adminLogin(""), e.adminLogin("")
	get := func(h *Handler, s adminSession) int {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/admin/api/providers", nil)
		r.AddCookie(s.cookie)
		h.ServeHTTP(w, r)
		return w.Code
	}
	if get(other, s1) != http.StatusOK {
		t.Fatalf("the session in the other isolate")
	}
	before := queries.Load()
	for i := 0; i < 20; i++ {
		get(other, s1)
	}
	if n := queries.Load() - before; n != 0 {
		t.Errorf("20 session requests within CACHE_SECONDS cost %d D1 queries, want 0", n)
	}
	w := e.send(accReq{method: http.MethodPost, target: "/admin/logout", cookies: []*http.Cookie{s1.cookie}})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"sessions_ended":true`) {
		t.Fatalf("logout: %d %s", w.Code, w.Body.String())
	}
	// This isolate: at once, for the copy and for the other session.
	for name, s := range map[string]adminSession{"copied cookie": s1, "other session": s2} {
		if c := get(e.h, s); c != http.StatusUnauthorized {
			t.Errorf("%s after logout: %d, want 401", name, c)
		}
	}
	// The other isolate: within CACHE_SECONDS.
	if c := get(other, s1); c != http.StatusOK {
		t.Errorf("other isolate before its cache expires: %d (expected the cached generation)", c)
	}
	e.advance(5 * time.Second)
	if c := get(other, s1); c != http.StatusUnauthorized {
		t.Errorf("other isolate after CACHE_SECONDS: %d, want 401", c)
	}
	// A login made now works in both, the other isolate's cache being
	// older than the new session.
	s3 := e.adminLogin("")
	if get(e.h, s3) != http.StatusOK || get(other, s3) != http.StatusOK {
		t.Errorf("a new session after the logout: %d / %d", get(e.h, s3), get(other, s3))
	}
	// A logout without a valid session ends nothing.
	w = e.send(accReq{method: http.MethodPost, target: "/admin/logout"})
	if !strings.Contains(w.Body.String(), `"sessions_ended":false`) || get(e.h, s3) != http.StatusOK {
		t.Errorf("an anonymous logout: %s; session %d", w.Body.String(), get(e.h, s3))
	}
}

func TestLogOutEverywhere(t *testing.T) {
	e := newEnv(t)
	e.putSettings(`{"access_mode":"restricted","guest_password":"` + testGuestPassword + `"}`)
	gw := e.send(accReq{method: http.MethodPost, target: "/guest/login", body: loginBody(testGuestPassword)})
	guest := findCookie(gw, guestCookie)
	s1, s2 := e.adminLogin(""), e.adminLogin("")
	// A guest's logout ends no other guest's session.
	e.send(accReq{method: http.MethodPost, target: "/admin/logout", cookies: []*http.Cookie{guest}})
	if w := e.summary(accReq{cookies: []*http.Cookie{guest}}); w.Code != http.StatusOK {
		t.Fatalf("guest session after a guest logout: %d", w.Code)
	}
	// Needs the CSRF token like any change.
	wantError(t, e.send(accReq{method: http.MethodPost, target: "/admin/api/sessions/revoke", cookies: []*http.Cookie{s1.cookie}}),
		http.StatusForbidden, "csrf")
	w := e.send(s1.req(http.MethodPost, "/admin/api/sessions/revoke", ""))
	if w.Code != http.StatusOK {
		t.Fatalf("log out everywhere: %d %s", w.Code, w.Body.String())
	}
	for _, s := range []adminSession{s1, s2} {
		wantError(t, e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{s.cookie}}),
			http.StatusUnauthorized, "invalid_admin_password")
	}
	wantError(t, e.summary(accReq{cookies: []*http.Cookie{guest}}), http.StatusUnauthorized, "guest_login_required")
	if n := e.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'POST /admin/api/sessions/revoke' AND actor = 'session'`); n != 1 {
		t.Errorf("log out everywhere audited %d times, want 1", n)
	}
	// The bearer password still works; a new login too.
	if w := e.admin(http.MethodGet, "/admin/api/keys", ""); w.Code != http.StatusOK {
		t.Errorf("bearer after log out everywhere: %d", w.Code)
	}
	s3 := e.adminLogin("")
	if w := e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{s3.cookie}}); w.Code != http.StatusOK {
		t.Errorf("a new session: %d", w.Code)
	}
}

func TestGuestSummaryAbsurdPaging(t *testing.T) {
	e := newEnv(t)
	guestPool(t, e)
	e.putSettings(`{"access_mode":"open"}`)
	for _, q := range []string{"page=18446744073709553&page_size=500", "page=9223372036854775807&page_size=500",
		"page=9223372036854775807&page_size=9223372036854775807", "page=-9223372036854775808", "page=99999999999999999999",
		"page_size=0", "page=3&page_size=2"} {
		w := e.summary(accReq{target: "/guest/api/summary?" + q})
		if w.Code != http.StatusOK {
			t.Errorf("?%s: %d %s", q, w.Code, w.Body.String())
		}
	}
	if s := decodeSummary(t, e.summary(accReq{target: "/guest/api/summary?page=3&page_size=2"})); len(s.Keys) != 1 || s.Keys[0].ID != 5 {
		t.Errorf("page 3 of 2: %+v", s.Keys)
	}
}

func TestGuestSummaryCached(t *testing.T) {
	e := newEnv(t)
	guestPool(t, e)
	e.putSettings(`{"access_mode":"open"}`)
	var queries atomic.Int64
	other := e.secondIsolate(&queries)
	get := func() guestSummaryJSON {
		w := httptest.NewRecorder()
		other.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/guest/api/summary?page_size=2&page=2", nil))
		return decodeSummary(t, w)
	}
	first := get()
	before := queries.Load()
	for i := 0; i < 20; i++ {
		get()
	}
	if n := queries.Load() - before; n != 0 {
		t.Errorf("20 summaries within CACHE_SECONDS cost %d D1 queries, want 0", n)
	}
	if _, err := e.db.Exec(`UPDATE keys SET status = 'blocked' WHERE id = 3`); err != nil {
		t.Fatal(err)
	}
	if s := get(); s.Keys[0].Status != first.Keys[0].Status || len(s.Keys) != 2 {
		t.Errorf("within CACHE_SECONDS: %+v, want the cached %+v", s.Keys, first.Keys)
	}
	e.advance(5 * time.Second)
	if s := get(); s.Keys[0].ID != 3 || s.Keys[0].Status != "blocked" {
		t.Errorf("after CACHE_SECONDS: %+v, want key 3 blocked", s.Keys)
	}
}

func TestRevealRefusedWhenOpen(t *testing.T) {
	for _, steps := range [][]string{
		{`{"access_mode":"open","guest_reveal_keys":true}`},
		{`{"access_mode":"open"}`, `{"guest_reveal_keys":true}`},
		{`{"access_mode":"restricted","guest_password":"` + testGuestPassword + `","guest_reveal_keys":true}`, `{"access_mode":"open"}`},
	} {
		e := newEnv(t)
		for _, s := range steps[:len(steps)-1] {
			e.putSettings(s)
		}
		w := e.admin(http.MethodPut, "/admin/api/settings", steps[len(steps)-1])
		er := wantError(t, w, http.StatusBadRequest, "invalid_request")
		if er.Error.Param == nil || *er.Error.Param != settings.GuestReveal || !strings.Contains(er.Error.Message, "guest_reveal_keys") {
			t.Errorf("%v: %+v, want the error to name guest_reveal_keys", steps, er.Error)
		}
		// Nothing changed; the two can be set apart in the other order.
		if got := e.admin(http.MethodGet, "/admin/api/settings", "").Body.String(); strings.Contains(got, `"access_mode":"open","guest_password_set":true,"guest_reveal_keys":true`) {
			t.Errorf("%v: stored anyway: %s", steps, got)
		}
	}
	e := newEnv(t)
	e.putSettings(`{"access_mode":"open"}`)
	e.putSettings(`{"access_mode":"restricted","guest_password":"` + testGuestPassword + `","guest_reveal_keys":true}`)
	e.putSettings(`{"access_mode":"open","guest_reveal_keys":false}`)
}

// The debug query count leaves out the stats request's own throttle
// check, so reading it does not change it; other bearer requests count
// theirs (one query each).
func TestDebugStatsExcludesItsOwnQueries(t *testing.T) {
	e := newEnv(t, "KEYPOOL_DEBUG", "1")
	var queries atomic.Int64
	h := e.secondIsolate(&queries)
	get := func(path string) string {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Authorization", "Bearer "+testAdminPassword)
		h.ServeHTTP(w, r)
		return w.Body.String()
	}
	first := get("/admin/api/debug/stats")
	get("/admin/api/providers")
	second, third := get("/admin/api/debug/stats"), get("/admin/api/debug/stats")
	q := func(s string) int64 { return gjson.Get(s, "d1_queries").Int() }
	if q(first) != 0 || q(second) != 1 || q(third) != 1 {
		t.Errorf("stats, providers, stats, stats: %s, %s, %s; want 0, 1, 1", first, second, third)
	}
}
