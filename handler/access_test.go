package handler

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// accReq is a request with the parts the access tests vary: the Host, the
// client IP Cloudflare reports, cookies and headers.
type accReq struct {
	method, target, body string
	host                 string // example.com when ""
	ip                   string // Cf-Connecting-Ip, none when ""
	cookies              []*http.Cookie
	hdr                  []string // name/value pairs
}

func (e *testEnv) send(a accReq) *httptest.ResponseRecorder {
	e.t.Helper()
	var req *http.Request
	if a.body != "" {
		req = httptest.NewRequest(a.method, a.target, strings.NewReader(a.body))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req = httptest.NewRequest(a.method, a.target, nil)
	}
	if a.host != "" {
		req.Host = a.host
	}
	if a.ip != "" {
		req.Header.Set("Cf-Connecting-Ip", a.ip)
	}
	for _, c := range a.cookies {
		req.AddCookie(c)
	}
	for i := 0; i+1 < len(a.hdr); i += 2 {
		req.Header.Set(a.hdr[i], a.hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

// adminSession is a logged-in admin: the session cookie and its CSRF token.
type adminSession struct {
	cookie *http.Cookie
	csrf   string
}

// req is a request made with the session and its CSRF token.
func (s adminSession) req(method, target, body string) accReq {
	return accReq{method: method, target: target, body: body, cookies: []*http.Cookie{s.cookie},
		hdr: []string{"X-Keypool-CSRF", s.csrf}}
}

func loginBody(password string) string {
	b, _ := json.Marshal(map[string]string{"password": password})
	return string(b)
}

// adminLogin logs in from ip and returns the session.
func (e *testEnv) adminLogin(ip string) adminSession {
	e.t.Helper()
	w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword), ip: ip})
	if w.Code != http.StatusOK {
		e.t.Fatalf("login: status %d body %s", w.Code, w.Body.String())
	}
	c := findCookie(w, adminCookie)
	if c == nil || c.Value == "" {
		e.t.Fatalf("login set no %s cookie: %q", adminCookie, w.Header().Values("Set-Cookie"))
	}
	csrf := gjson.Get(w.Body.String(), "csrf").String()
	if csrf == "" {
		e.t.Fatalf("login answered no csrf token: %s", w.Body.String())
	}
	return adminSession{cookie: &http.Cookie{Name: c.Name, Value: c.Value}, csrf: csrf}
}

func findCookie(w *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// setCookieLine returns the raw Set-Cookie header for name.
func setCookieLine(w *httptest.ResponseRecorder, name string) string {
	for _, v := range w.Header().Values("Set-Cookie") {
		if strings.HasPrefix(v, name+"=") {
			return v
		}
	}
	return ""
}

func cookieAttrs(line string) map[string]string {
	out := map[string]string{}
	for i, part := range strings.Split(line, ";") {
		if i == 0 {
			continue
		}
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		out[strings.ToLower(k)] = v
	}
	return out
}

func TestAdminLoginCookie(t *testing.T) {
	tests := []struct {
		name, host string
		secure     bool
	}{
		{"public host", "keypool.example.workers.dev", true},
		{"default host", "", true},
		{"public host with port", "keypool.example.com:443", true},
		{"localhost", "localhost", false},
		{"localhost with port", "localhost:8787", false},
		{"127.0.0.1", "127.0.0.1", false},
		{"127.0.0.1 with port", "127.0.0.1:8787", false},
		{"a name containing localhost", "localhost.evil.example", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword), host: tc.host})
			if w.Code != http.StatusOK {
				t.Fatalf("status %d body %s", w.Code, w.Body.String())
			}
			line := setCookieLine(w, adminCookie)
			if line == "" {
				t.Fatalf("no kp_admin cookie: %q", w.Header().Values("Set-Cookie"))
			}
			attrs := cookieAttrs(line)
			if _, ok := attrs["httponly"]; !ok {
				t.Errorf("cookie %q is not HttpOnly", line)
			}
			if attrs["samesite"] != "Strict" {
				t.Errorf("cookie %q: SameSite %q, want Strict", line, attrs["samesite"])
			}
			if attrs["path"] != "/" {
				t.Errorf("cookie %q: Path %q, want /", line, attrs["path"])
			}
			if attrs["max-age"] != "43200" {
				t.Errorf("cookie %q: Max-Age %q, want 43200 (12 hours)", line, attrs["max-age"])
			}
			if _, secure := attrs["secure"]; secure != tc.secure {
				t.Errorf("cookie %q: Secure %v, want %v", line, secure, tc.secure)
			}
			var out struct {
				CSRF      string `json:"csrf"`
				ExpiresAt int64  `json:"expires_at"`
			}
			decode(t, w, &out)
			if len(out.CSRF) < 32 || out.ExpiresAt != t0.Add(12*time.Hour).UnixMilli() {
				t.Errorf("answer %s: want a csrf token and expires_at 12 h on", w.Body.String())
			}
			if strings.Contains(w.Body.String(), testAdminPassword) || strings.Contains(line, testAdminPassword) {
				t.Errorf("the login answer contains the password")
			}
			if w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", w.Header().Get("Cache-Control"))
			}
			// The cookie authenticates a read.
			c := findCookie(w, adminCookie)
			r := e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{c}})
			if r.Code != http.StatusOK {
				t.Errorf("GET /admin/api/keys with the cookie: %d %s", r.Code, r.Body.String())
			}
		})
	}

	t.Run("SESSION_HOURS", func(t *testing.T) {
		e := newEnv(t, "SESSION_HOURS", "2")
		w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword)})
		if got := cookieAttrs(setCookieLine(w, adminCookie))["max-age"]; got != "7200" {
			t.Errorf("Max-Age %q, want 7200", got)
		}
	})

	t.Run("each login a new csrf token", func(t *testing.T) {
		e := newEnv(t)
		a, b := e.adminLogin(""), e.adminLogin("")
		if a.csrf == b.csrf || a.cookie.Value == b.cookie.Value {
			t.Errorf("two logins gave the same session")
		}
	})

	bad := []struct {
		name, body string
		vars       []string
		status     int
		code       string
	}{
		{"wrong password", loginBody("nope"), nil, http.StatusUnauthorized, "invalid_admin_password"},
		{"password prefix", loginBody(testAdminPassword[:10]), nil, http.StatusUnauthorized, "invalid_admin_password"},
		{"empty password", loginBody(""), nil, http.StatusUnauthorized, "invalid_admin_password"},
		{"no body", "", nil, http.StatusUnauthorized, "invalid_admin_password"},
		{"password not a string", `{"password":123}`, nil, http.StatusUnauthorized, "invalid_admin_password"},
		{"no admin password set", loginBody(""), []string{"ADMIN_PASSWORD", ""}, http.StatusServiceUnavailable, "not_configured"},
		{"no KEYPOOL_SECRET", loginBody(testAdminPassword), []string{"KEYPOOL_SECRET", ""}, http.StatusServiceUnavailable, "not_configured"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.vars...)
			w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: tc.body})
			wantError(t, w, tc.status, tc.code)
			if len(w.Header().Values("Set-Cookie")) != 0 {
				t.Errorf("a failed login set cookies: %q", w.Header().Values("Set-Cookie"))
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		e := newEnv(t)
		w := e.send(accReq{method: http.MethodGet, target: "/admin/login"})
		wantError(t, w, http.StatusMethodNotAllowed, "method_not_allowed")
	})
}

// A change made with a session needs its CSRF token; a read does not.
func TestAdminSessionCSRF(t *testing.T) {
	e := newEnv(t)
	s := e.adminLogin("")
	other := e.adminLogin("") // another session's token is not this one's
	ids := e.addKeys("openai", "sk-csrf-key-0000000001", "sk-csrf-key-0000000002")
	keyCount := func() int { return e.count(`SELECT COUNT(*) FROM keys`) }

	changes := []struct {
		name, method, target, body string
		status                     int
		changed                    func() bool
	}{
		{"add keys", http.MethodPost, "/admin/api/keys", `{"provider":"openai","keys":"sk-csrf-new-00000000001"}`,
			http.StatusCreated, func() bool { return keyCount() == 3 }},
		{"put settings", http.MethodPut, "/admin/api/settings", `{"wait_for_cooldown_seconds":4}`,
			http.StatusOK, func() bool {
				return e.count(`SELECT COUNT(*) FROM settings WHERE name = 'wait_for_cooldown_seconds'`) == 1
			}},
		{"patch key", http.MethodPatch, "/admin/api/keys/" + strconv.FormatInt(ids[0], 10), `{"status":"disabled"}`,
			http.StatusOK, func() bool { return e.count(`SELECT COUNT(*) FROM keys WHERE status = 'disabled'`) == 1 }},
		{"reveal key", http.MethodPost, "/admin/api/keys/" + strconv.FormatInt(ids[0], 10) + "/reveal", "",
			http.StatusOK, func() bool { return true }},
		{"create token", http.MethodPost, "/admin/api/tokens", `{"name":"csrf"}`,
			http.StatusCreated, func() bool { return e.count(`SELECT COUNT(*) FROM tokens`) == 1 }},
		{"delete key", http.MethodDelete, "/admin/api/keys/" + strconv.FormatInt(ids[1], 10), "",
			http.StatusOK, func() bool { return e.count(`SELECT COUNT(*) FROM keys WHERE id = ?`, ids[1]) == 0 }},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			base := accReq{method: tc.method, target: tc.target, body: tc.body, cookies: []*http.Cookie{s.cookie}}
			for _, csrf := range []struct {
				name string
				hdr  []string
			}{
				{"no header", nil},
				{"empty", []string{"X-Keypool-CSRF", ""}},
				{"wrong", []string{"X-Keypool-CSRF", strings.Repeat("0", len(s.csrf))}},
				{"another session's", []string{"X-Keypool-CSRF", other.csrf}},
				{"prefix", []string{"X-Keypool-CSRF", s.csrf[:len(s.csrf)-1]}},
				{"in another header", []string{"X-CSRF-Token", s.csrf}},
			} {
				a := base
				a.hdr = csrf.hdr
				auditBefore := e.count(`SELECT COUNT(*) FROM audit_log`)
				w := e.send(a)
				wantError(t, w, http.StatusForbidden, "csrf")
				if tc.name != "reveal key" && tc.changed() {
					t.Fatalf("%s: the change was made without the CSRF token", csrf.name)
				}
				if tc.name == "reveal key" && strings.Contains(w.Body.String(), "sk-csrf-key") {
					t.Errorf("%s: the key was revealed without the CSRF token", csrf.name)
				}
				if n := e.count(`SELECT COUNT(*) FROM audit_log`); n != auditBefore {
					t.Errorf("%s: a refused change was audited as made", csrf.name)
				}
			}
			w := e.send(s.req(tc.method, tc.target, tc.body))
			if w.Code != tc.status {
				t.Fatalf("with the CSRF token: status %d, want %d; %s", w.Code, tc.status, w.Body.String())
			}
			if !tc.changed() {
				t.Errorf("with the CSRF token: the change was not made")
			}
		})
	}
	// The header name is case-insensitive, as HTTP says.
	w := e.send(accReq{method: http.MethodPut, target: "/admin/api/settings", body: `{"page_size":20}`,
		cookies: []*http.Cookie{s.cookie}, hdr: []string{"x-keypool-csrf", s.csrf}})
	if w.Code != http.StatusOK {
		t.Errorf("lower-case header: %d %s", w.Code, w.Body.String())
	}
	// Reads need no CSRF token.
	for _, target := range []string{"/admin/api/keys", "/admin/api/settings", "/admin/api/tokens", "/admin/api/audit", "/admin/api/providers"} {
		w := e.send(accReq{method: http.MethodGet, target: target, cookies: []*http.Cookie{s.cookie}})
		if w.Code != http.StatusOK {
			t.Errorf("GET %s with the cookie: %d %s", target, w.Code, w.Body.String())
		}
	}
}

// tamper returns v with the character at i changed.
func tamper(v string, i int) string {
	b := []byte(v)
	switch {
	case b[i] >= '0' && b[i] <= '8', b[i] >= 'a' && b[i] < 'z', b[i] >= 'A' && b[i] < 'Z':
		b[i]++
	default:
		b[i] = '0'
	}
	return string(b)
}

func TestAdminSessionRejected(t *testing.T) {
	e := newEnv(t, "SESSION_HOURS", "2")
	s := e.adminLogin("")
	v := s.cookie.Value
	dot := strings.LastIndexByte(v, '.')
	parts := strings.Split(v[:dot], "~")
	if dot < 0 || len(parts) != 4 || parts[0] != "a" {
		t.Fatalf("cookie value %q: want role~expiry~generation~csrf.signature", v)
	}
	expiry := parts[1]
	read := func(value string) *httptest.ResponseRecorder {
		return e.send(accReq{method: http.MethodGet, target: "/admin/api/keys",
			cookies: []*http.Cookie{{Name: adminCookie, Value: value}}})
	}
	if w := read(v); w.Code != http.StatusOK {
		t.Fatalf("the session does not work: %d %s", w.Code, w.Body.String())
	}
	bad := []struct{ name, value string }{
		{"role changed", tamper(v, 0)},
		{"role guest", "g" + v[1:]},
		{"expiry changed", tamper(v, 2)},
		{"expiry later", "a~" + strconv.FormatInt(t0.Add(1000*time.Hour).Unix(), 10) + v[2+len(expiry):]},
		{"csrf changed", tamper(v, dot-1)},
		{"generation changed", tamper(v, 3+len(expiry))},
		{"signature first char", tamper(v, dot+1)},
		{"signature last char", tamper(v, len(v)-1)},
		{"signature cut", v[:len(v)-1]},
		{"signature dropped", v[:dot]},
		{"signature only", v[dot:]},
		{"empty", ""},
		{"garbage", "a~b~c.d"},
	}
	for _, tc := range bad {
		if tc.value == v {
			t.Fatalf("%s: not tampered", tc.name)
		}
		w := read(tc.value)
		wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
		if w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", tc.name)
		}
	}
	// The right cookie under another name is not a session.
	w := e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{{Name: guestCookie, Value: v}}})
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	// A wrong bearer password is not rescued by a good cookie.
	w = e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{s.cookie},
		hdr: []string{"Authorization", "Bearer nope"}})
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")

	// Expiry: SESSION_HOURS=2.
	e.advance(2*time.Hour - time.Second)
	if w := read(v); w.Code != http.StatusOK {
		t.Errorf("one second before expiry: %d", w.Code)
	}
	e.advance(time.Second)
	wantError(t, read(v), http.StatusUnauthorized, "invalid_admin_password")
	e.advance(24 * time.Hour)
	wantError(t, read(v), http.StatusUnauthorized, "invalid_admin_password")

	// A new password ends every session.
	e.setNow(t0)
	s2 := e.adminLogin("")
	if w := read(s2.cookie.Value); w.Code != http.StatusOK {
		t.Fatalf("fresh session: %d", w.Code)
	}
	e.set("ADMIN_PASSWORD", testAdminPassword+"-rotated")
	wantError(t, read(s2.cookie.Value), http.StatusUnauthorized, "invalid_admin_password")
	w = e.send(s2.req(http.MethodPut, "/admin/api/settings", `{"page_size":20}`))
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	// Back to the old password, the old session is good again (the
	// signature covers the password, not a server-side list).
	e.set("ADMIN_PASSWORD", testAdminPassword)
	if w := read(s2.cookie.Value); w.Code != http.StatusOK {
		t.Errorf("old password back: %d", w.Code)
	}
	// A new KEYPOOL_SECRET ends every session too.
	e.set("KEYPOOL_SECRET", testKeypoolSecret+"-rotated")
	wantError(t, read(s2.cookie.Value), http.StatusUnauthorized, "invalid_admin_password")
}

// A guest session is no admin session, whatever cookie name it comes in.
func TestGuestCookieIsNotAdmin(t *testing.T) {
	e := newEnv(t)
	const guestPassword = "guest-password-123"
	if w := e.admin(http.MethodPut, "/admin/api/settings", `{"access_mode":"restricted","guest_password":"`+guestPassword+`"}`); w.Code != http.StatusOK {
		t.Fatalf("settings: %d %s", w.Code, w.Body.String())
	}
	w := e.send(accReq{method: http.MethodPost, target: "/guest/login", body: loginBody(guestPassword)})
	g := findCookie(w, guestCookie)
	if w.Code != http.StatusOK || g == nil {
		t.Fatalf("guest login: %d %s", w.Code, w.Body.String())
	}
	for _, name := range []string{adminCookie, guestCookie} {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			w := e.send(accReq{method: m, target: "/admin/api/keys", body: `{"provider":"openai","keys":"sk-guest-0000000000001"}`,
				cookies: []*http.Cookie{{Name: name, Value: g.Value}}})
			wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
		}
	}
	// Even signed under the admin password's role letter, a guest payload
	// does not verify as admin: the role is part of what is signed.
	forged := "a" + g.Value[1:]
	w = e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{{Name: adminCookie, Value: forged}}})
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	if n := e.count(`SELECT COUNT(*) FROM keys`); n != 0 {
		t.Errorf("a guest added keys")
	}
	// The role is checked apart from the signature: even when the admin
	// password happens to be what guest sessions are signed with (the
	// guest password's stored fingerprint), a guest session is no admin's.
	var fp string
	if err := e.db.QueryRow(`SELECT value FROM settings WHERE name = 'guest_password'`).Scan(&fp); err != nil {
		t.Fatal(err)
	}
	e.set("ADMIN_PASSWORD", gjson.Parse(fp).String())
	w = e.send(accReq{method: http.MethodGet, target: "/admin/api/keys", cookies: []*http.Cookie{{Name: adminCookie, Value: g.Value}}})
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	w = e.send(accReq{method: http.MethodGet, target: "/guest/api/summary", cookies: []*http.Cookie{{Name: guestCookie, Value: g.Value}}})
	if w.Code != http.StatusOK {
		t.Errorf("the guest session itself: %d %s", w.Code, w.Body.String())
	}
}

// Scripts use the password as a bearer token, with no CSRF token.
func TestAdminBearerNeedsNoCSRF(t *testing.T) {
	e := newEnv(t)
	steps := []struct {
		method, target, body string
		status               int
	}{
		{http.MethodPost, "/admin/api/keys", `{"provider":"openai","keys":"sk-bearer-0000000000001"}`, http.StatusCreated},
		{http.MethodPut, "/admin/api/settings", `{"page_size":25}`, http.StatusOK},
		{http.MethodPatch, "/admin/api/keys/1", `{"label":"x"}`, http.StatusOK},
		{http.MethodPost, "/admin/api/tokens", `{"name":"t"}`, http.StatusCreated},
		{http.MethodDelete, "/admin/api/tokens/1", "", http.StatusOK},
		{http.MethodDelete, "/admin/api/keys/1", "", http.StatusOK},
	}
	for _, s := range steps {
		if w := e.admin(s.method, s.target, s.body); w.Code != s.status {
			t.Errorf("%s %s: %d, want %d; %s", s.method, s.target, w.Code, s.status, w.Body.String())
		}
	}
	for _, auth := range []string{"Bearer nope", "Bearer " + testAdminPassword + "x", "Basic " + testAdminPassword, testAdminPassword, "Bearer " + testAuthKey} {
		w := e.serve(http.MethodPost, "/admin/api/tokens", `{"name":"t"}`, "Authorization", auth)
		wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	}
}

func TestLoginThrottle(t *testing.T) {
	e := newEnv(t)
	const ip, other = "203.0.113.7", "198.51.100.9"
	login := func(ip, password string) *httptest.ResponseRecorder {
		return e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(password), ip: ip})
	}
	for i := 1; i <= loginMaxFailures; i++ {
		wantError(t, login(ip, "wrong-"+strconv.Itoa(i)), http.StatusUnauthorized, "invalid_admin_password")
		e.advance(time.Minute)
	}
	// 5 failures at t0 … t0+4m; now t0+5m: locked until t0+15m.
	for _, pw := range []string{testAdminPassword, "wrong-again"} {
		w := login(ip, pw)
		wantError(t, w, http.StatusTooManyRequests, "login_throttled")
		if got := w.Header().Get("Retry-After"); got != "600" {
			t.Errorf("Retry-After %q, want 600 (the window started 5 min ago)", got)
		}
		if findCookie(w, adminCookie) != nil {
			t.Errorf("a throttled login set a cookie")
		}
	}
	// Another address logs in.
	if w := login(other, testAdminPassword); w.Code != http.StatusOK {
		t.Errorf("another IP: %d %s", w.Code, w.Body.String())
	}
	// Without Cf-Connecting-Ip, the connection's address counts (not the
	// throttled one).
	if w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword)}); w.Code != http.StatusOK {
		t.Errorf("no Cf-Connecting-Ip: %d", w.Code)
	}
	e.advance(10*time.Minute - time.Second)
	w := login(ip, testAdminPassword)
	wantError(t, w, http.StatusTooManyRequests, "login_throttled")
	if got := w.Header().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q one second before the end, want 1", got)
	}
	e.advance(time.Second)
	if w := login(ip, testAdminPassword); w.Code != http.StatusOK {
		t.Fatalf("after the window: %d %s", w.Code, w.Body.String())
	}
	// A success clears the failures: four more are not enough to lock.
	for i := 0; i < loginMaxFailures-1; i++ {
		wantError(t, login(ip, "wrong"), http.StatusUnauthorized, "invalid_admin_password")
	}
	if w := login(ip, testAdminPassword); w.Code != http.StatusOK {
		t.Fatalf("after 4 failures: %d", w.Code)
	}
	for i := 0; i < loginMaxFailures; i++ {
		login(ip, "wrong")
	}
	wantError(t, login(ip, testAdminPassword), http.StatusTooManyRequests, "login_throttled")
	// The admin password as a bearer token is throttled there too.
	if w := e.serve(http.MethodGet, "/admin/api/keys", "", "Authorization", "Bearer "+testAdminPassword, "Cf-Connecting-Ip", ip); w.Code != http.StatusTooManyRequests {
		t.Errorf("bearer from a throttled IP: %d, want 429", w.Code)
	}
	// Each failure is in the audit log, without the password tried, up to
	// the one that tripped the throttle.
	if n := e.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'login.fail' AND ip = ?`, ip); n != 2*loginMaxFailures+loginMaxFailures {
		t.Errorf("%d login.fail rows, want %d", n, 2*loginMaxFailures+loginMaxFailures)
	}
	if n := e.count(`SELECT COUNT(*) FROM audit_log WHERE detail LIKE '%wrong%' OR target LIKE '%wrong%'`); n != 0 {
		t.Errorf("%d audit rows contain a password tried", n)
	}
}

func TestLogout(t *testing.T) {
	for _, host := range []string{"keypool.example.com", "localhost:8787"} {
		t.Run(host, func(t *testing.T) {
			e := newEnv(t)
			s := e.adminLogin("")
			w := e.send(accReq{method: http.MethodPost, target: "/admin/logout", host: host, cookies: []*http.Cookie{s.cookie}})
			if w.Code != http.StatusOK {
				t.Fatalf("logout: %d %s", w.Code, w.Body.String())
			}
			for _, name := range []string{adminCookie, guestCookie} {
				line := setCookieLine(w, name)
				attrs := cookieAttrs(line)
				if !strings.HasPrefix(line, name+"=;") || attrs["max-age"] != "0" || attrs["path"] != "/" {
					t.Errorf("logout Set-Cookie %q, want %s emptied with Max-Age=0 and Path=/", line, name)
				}
				if _, ok := attrs["httponly"]; !ok {
					t.Errorf("%q is not HttpOnly", line)
				}
				if _, secure := attrs["secure"]; secure != (host != "localhost:8787") {
					t.Errorf("%q: Secure %v on %s", line, secure, host)
				}
			}
			if c := findCookie(w, adminCookie); c == nil || c.MaxAge >= 0 {
				t.Errorf("the kp_admin cookie is not deleted: %+v", c)
			}
			wantError(t, e.send(accReq{method: http.MethodGet, target: "/admin/logout"}), http.StatusMethodNotAllowed, "method_not_allowed")
		})
	}
}

// auditRow is one row of audit_log.
type auditRow struct {
	ID                                int64
	At                                int64
	Actor, IP, Action, Target, Detail string
}

func (e *testEnv) auditRows() []auditRow {
	e.t.Helper()
	rows, err := e.db.Query(`SELECT id, at, actor, ip, action, target, detail FROM audit_log ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.ID, &a.At, &a.Actor, &a.IP, &a.Action, &a.Target, &a.Detail); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// Every change through the admin API is one audit row; reads are none.
func TestAuditEveryChange(t *testing.T) {
	e := newEnv(t)
	const ip = "192.0.2.44"
	s := e.adminLogin(ip)
	e.addKeys("openai", "sk-audit-key-000000001")
	bearer := func(method, target, body string) accReq {
		return accReq{method: method, target: target, body: body, hdr: []string{"Authorization", "Bearer " + testAdminPassword}}
	}
	changes := []struct {
		name   string
		req    accReq
		actor  string
		action string
		target string
		status int
	}{
		{"add keys (session)", s.req("POST", "/admin/api/keys", `{"provider":"openai","keys":"sk-audit-key-000000002"}`), "session", "POST /admin/api/keys", "", 201},
		{"add keys (password)", bearer("POST", "/admin/api/keys", `{"provider":"groq","keys":"gsk_audit-key-0000000003"}`), "password", "POST /admin/api/keys", "", 201},
		{"patch key", s.req("PATCH", "/admin/api/keys/2", `{"label":"x"}`), "session", "PATCH /admin/api/keys/{id}", "keys/2", 200},
		{"reveal key", s.req("POST", "/admin/api/keys/1/reveal", ""), "session", "POST /admin/api/keys/{id}/reveal", "keys/1", 200},
		{"put settings", bearer("PUT", "/admin/api/settings", `{"page_size":30}`), "password", "PUT /admin/api/settings", "", 200},
		{"patch settings", s.req("PATCH", "/admin/api/settings", `{"page_size":31}`), "session", "PATCH /admin/api/settings", "", 200},
		{"bad settings", s.req("PUT", "/admin/api/settings", `{"page_size":1}`), "session", "PUT /admin/api/settings", "", 400},
		{"create token", s.req("POST", "/admin/api/tokens", `{"name":"audited"}`), "session", "POST /admin/api/tokens", "", 201},
		{"patch token", bearer("PATCH", "/admin/api/tokens/1", `{"rpm":5}`), "password", "PATCH /admin/api/tokens/{id}", "tokens/1", 200},
		{"delete token", s.req("DELETE", "/admin/api/tokens/1", ""), "session", "DELETE /admin/api/tokens/{id}", "tokens/1", 200},
		{"delete unknown token", s.req("DELETE", "/admin/api/tokens/77", ""), "session", "DELETE /admin/api/tokens/{id}", "tokens/77", 404},
		{"start checks", s.req("POST", "/admin/api/checks", `{"ids":[1]}`), "session", "POST /admin/api/checks", "", 0},
		{"delete key", bearer("DELETE", "/admin/api/keys/3", ""), "password", "DELETE /admin/api/keys/{id}", "keys/3", 200},
	}
	for _, tc := range changes {
		tc.req.ip = ip
		before := e.auditRows()
		e.advance(time.Second)
		w := e.send(tc.req)
		if tc.status != 0 && w.Code != tc.status {
			t.Errorf("%s: status %d, want %d; %s", tc.name, w.Code, tc.status, w.Body.String())
		}
		after := e.auditRows()
		if len(after) != len(before)+1 {
			t.Errorf("%s: %d audit rows written, want 1", tc.name, len(after)-len(before))
			continue
		}
		a := after[len(after)-1]
		wantDetail := "status " + strconv.Itoa(w.Code)
		if a.Actor != tc.actor || a.IP != ip || a.Action != tc.action || a.Target != tc.target ||
			!strings.HasPrefix(a.Detail, wantDetail) || a.At != e.clock().UnixMilli() {
			t.Errorf("%s: audit row %+v, want actor %q ip %q action %q target %q detail %q…", tc.name, a, tc.actor, ip, tc.action, tc.target, wantDetail)
		}
	}

	// Reads write nothing.
	before := len(e.auditRows())
	for _, target := range []string{"/admin/api/keys", "/admin/api/keys/1", "/admin/api/keys/1/balance", "/admin/api/providers",
		"/admin/api/settings", "/admin/api/checks", "/admin/api/tokens", "/admin/api/audit", "/admin/api/keys/99"} {
		for _, a := range []accReq{s.req("GET", target, ""), bearer("GET", target, "")} {
			a.ip = ip
			e.send(a)
		}
	}
	// Nor do refused requests (unauthenticated ones).
	e.send(accReq{method: "POST", target: "/admin/api/keys", body: `{"provider":"openai","keys":"sk-x"}`, ip: ip})
	if n := len(e.auditRows()) - before; n != 0 {
		t.Errorf("reads and refused requests wrote %d audit rows", n)
	}
}

func TestAuditAPI(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 5; i++ {
		e.advance(time.Second)
		if w := e.admin("PUT", "/admin/api/settings", `{"page_size":`+strconv.Itoa(20+i)+`}`); w.Code != http.StatusOK {
			t.Fatal(w.Body.String())
		}
	}
	type page struct {
		Entries []struct {
			ID     int64  `json:"id"`
			At     int64  `json:"at"`
			Actor  string `json:"actor"`
			IP     string `json:"ip"`
			Action string `json:"action"`
			Target string `json:"target"`
			Detail string `json:"detail"`
		} `json:"entries"`
		NextBefore *int64 `json:"next_before"`
	}
	get := func(q string) page {
		t.Helper()
		w := e.admin("GET", "/admin/api/audit"+q, "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET audit%s: %d %s", q, w.Code, w.Body.String())
		}
		var p page
		decode(t, w, &p)
		return p
	}
	ats := func(p page) []int64 {
		var out []int64
		for _, x := range p.Entries {
			out = append(out, (x.At-t0.UnixMilli())/1000)
		}
		return out
	}
	p := get("?limit=2")
	if got := ats(p); len(got) != 2 || got[0] != 5 || got[1] != 4 || p.NextBefore == nil || *p.NextBefore != p.Entries[1].ID {
		t.Fatalf("first page %v next %v, want [5 4] and next_before the last id", got, p.NextBefore)
	}
	if x := p.Entries[0]; x.Actor != "password" || x.Action != "PUT /admin/api/settings" || x.Detail != "status 200" {
		t.Errorf("entry %+v", x)
	}
	p = get("?limit=2&before=" + strconv.FormatInt(*p.NextBefore, 10))
	if got := ats(p); len(got) != 2 || got[0] != 3 || got[1] != 2 || p.NextBefore == nil {
		t.Fatalf("second page %v", got)
	}
	p = get("?limit=2&before=" + strconv.FormatInt(*p.NextBefore, 10))
	if got := ats(p); len(got) != 1 || got[0] != 1 || p.NextBefore != nil {
		t.Fatalf("last page %v next %v, want [1] and null", got, p.NextBefore)
	}
	if p := get(""); len(p.Entries) != 5 || p.NextBefore != nil {
		t.Errorf("default page: %d entries", len(p.Entries))
	}
	if p := get("?limit=abc&before=-3"); len(p.Entries) != 5 {
		t.Errorf("bad parameters: %d entries, want the defaults", len(p.Entries))
	}
}

// No audit row holds a secret: passwords (right or tried), tokens, keys,
// CSRF tokens, cookies.
func TestAuditHoldsNoSecret(t *testing.T) {
	e := newEnv(t)
	const guestPassword = "guest-password-secret-77"
	const triedPassword = "tried-password-secret-99"
	upstream := []string{"sk-proj-auditSECRETkey000000001", "gsk_auditSECRETkey0000000000002"}
	secrets := []string{testAdminPassword, guestPassword, triedPassword, upstream[0], upstream[1], testKeypoolSecret}

	e.send(accReq{method: "POST", target: "/admin/login", body: loginBody(triedPassword), ip: "203.0.113.1"})
	s := e.adminLogin("203.0.113.1")
	secrets = append(secrets, s.csrf, s.cookie.Value)
	steps := []accReq{
		s.req("POST", "/admin/api/keys", `{"provider":"openai","keys":"`+upstream[0]+`","label":"`+upstream[0]+`"}`),
		s.req("POST", "/admin/api/keys", `{"provider":"groq","keys":["`+upstream[1]+`"]}`),
		s.req("POST", "/admin/api/keys", `{"provider":"groq","keys":["`+upstream[1]+`"]}`), // duplicate
		s.req("POST", "/admin/api/keys/1/reveal", ""),
		s.req("POST", "/admin/api/keys/2/reveal", ""),
		s.req("PATCH", "/admin/api/keys/1", `{"label":"renamed"}`),
		s.req("PUT", "/admin/api/settings", `{"access_mode":"restricted","guest_password":"`+guestPassword+`"}`),
		s.req("PUT", "/admin/api/settings", `{"guest_password":"short"}`), // refused
		s.req("POST", "/admin/api/tokens", `{"name":"ci"}`),
		s.req("POST", "/admin/api/checks", `{}`),
	}
	for _, a := range steps {
		w := e.send(a)
		if w.Code >= 500 {
			t.Fatalf("%s %s: %d %s", a.method, a.target, w.Code, w.Body.String())
		}
		if tok := gjson.Get(w.Body.String(), "token").String(); tok != "" {
			secrets = append(secrets, tok)
			// The token's change and use.
			e.send(s.req("PATCH", "/admin/api/tokens/1", `{"name":"`+tok+`-renamed"}`))
			e.serve("POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, "Authorization", "Bearer "+tok)
		}
	}
	e.admin("POST", "/admin/api/keys", `{"provider":"openai","keys":"`+upstream[0]+`"}`)
	e.send(accReq{method: "POST", target: "/guest/login", body: loginBody(triedPassword)})
	e.send(accReq{method: "POST", target: "/guest/login", body: loginBody(guestPassword)})
	e.send(accReq{method: "POST", target: "/admin/logout", cookies: []*http.Cookie{s.cookie}})

	rows := e.auditRows()
	if len(rows) < len(steps) {
		t.Fatalf("%d audit rows, want at least %d", len(rows), len(steps))
	}
	for _, r := range rows {
		text := strings.Join([]string{r.Actor, r.IP, r.Action, r.Target, r.Detail}, "\x00")
		for _, sec := range secrets {
			// Whole secrets, and any 12-character piece of one.
			for i := 0; i+12 <= len(sec); i++ {
				if strings.Contains(text, sec[i:i+12]) {
					t.Errorf("audit row %+v contains a piece of secret %q", r, sec[:4]+"…")
					break
				}
			}
		}
	}
}

// routePath fills a route pattern: {id} becomes id, a trailing * a path.
func routePath(p string, id int64) string {
	p = strings.ReplaceAll(p, "{id}", strconv.FormatInt(id, 10))
	return strings.Replace(p, "*", "chat/completions", 1)
}

// Every route Routes() lists is served, and every admin route refuses a
// request without admin credentials.
func TestRoutesServedAndGuarded(t *testing.T) {
	e := newEnv(t, "KEYPOOL_DEBUG", "1")
	ids := e.addKeys("openai", "sk-routes-key-00000001")
	if w := e.admin("POST", "/admin/api/tokens", `{"name":"r"}`); w.Code != http.StatusCreated {
		t.Fatal(w.Body.String())
	}
	if w := e.admin("POST", "/admin/api/checks", `{"ids":[1]}`); w.Code >= 300 {
		t.Fatalf("starting a check job: %d %s", w.Code, w.Body.String())
	}
	routes := Routes()
	if len(routes) < len(adminRoutes)+6 {
		t.Fatalf("Routes() lists %d routes", len(routes))
	}
	seen := map[string]bool{}
	for _, rt := range routes {
		key := rt.Method + " " + rt.Path
		if seen[key] {
			t.Errorf("route %s listed twice", key)
		}
		seen[key] = true
		method := rt.Method
		if method == "*" {
			method = http.MethodPost
		}
		target := routePath(rt.Path, ids[0])
		t.Run(key, func(t *testing.T) {
			body := ""
			if method != http.MethodGet && method != http.MethodDelete {
				body = `{}`
			}
			// Without credentials.
			w := e.send(accReq{method: method, target: target, body: body})
			switch rt.Access {
			case Admin, Debug:
				wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
				// Nor with a client token, nor a wrong password.
				// (From an address per route: the throttle would refuse
				// more than 5 from one.)
				for _, auth := range []string{"Bearer " + testAuthKey, "Bearer wrong"} {
					w := e.send(accReq{method: method, target: target, body: body, hdr: []string{"Authorization", auth},
						ip: "198.18.0." + strconv.Itoa(len(seen))})
					wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
				}
			case Client:
				wantError(t, w, http.StatusUnauthorized, "missing_api_key")
			case Guest:
				wantError(t, w, http.StatusForbidden, "guest_page_private")
			case Public:
				if w.Code == http.StatusNotFound {
					t.Errorf("not served: %d %s", w.Code, w.Body.String())
				}
			default:
				t.Errorf("unknown access %q", rt.Access)
			}
			if rt.Access != Admin && rt.Access != Debug {
				return
			}
			// With the admin password: served.
			w = e.send(accReq{method: method, target: target, body: body, hdr: []string{"Authorization", "Bearer " + testAdminPassword}})
			if w.Code == http.StatusNotFound && strings.Contains(w.Body.String(), "no admin route") ||
				w.Code == http.StatusMethodNotAllowed || w.Code == http.StatusUnauthorized || w.Code == http.StatusForbidden {
				t.Errorf("with the admin password: %d %s", w.Code, w.Body.String())
			}
			if rt.Access == Debug {
				// Only with KEYPOOL_DEBUG=1.
				e.set("KEYPOOL_DEBUG", "")
				defer e.set("KEYPOOL_DEBUG", "1")
				w := e.admin(method, target, body)
				if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "no admin route") {
					t.Errorf("without KEYPOOL_DEBUG: %d %s, want 404 no admin route", w.Code, w.Body.String())
				}
			}
		})
	}
	// Every admin route the handler has is listed.
	for _, a := range adminRoutes {
		if !seen[a.method+" /admin/api"+a.path] {
			t.Errorf("admin route %s %s missing from Routes()", a.method, a.path)
		}
	}
	// A path not in the table is not served.
	w := e.admin("GET", "/admin/api/nothing-here", "")
	if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "no admin route") {
		t.Errorf("unknown admin path: %d %s", w.Code, w.Body.String())
	}
}
