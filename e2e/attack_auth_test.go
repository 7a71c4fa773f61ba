//go:build e2e

package e2e

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestAttackAuth attacks the admin and guest logins as a password guesser
// would (issue 12, findings 3, 5, 7 and 9): parallel wrong logins, wrong
// bearer passwords on the admin API, addresses rotated inside one IPv6
// /64, oversized chunked login bodies, a session cookie copied before a
// logout, absurd guest paging, and a too short ADMIN_PASSWORD.
func TestAttackAuth(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			a := &authAttack{w: startWorker(t, build, up, nil)}
			a.checkIPHonored(t)
			t.Run("parallel-wrong-logins", a.parallelWrongLogins)
			t.Run("ipv6-slash64", a.ipv6Slash64)
			t.Run("bearer-guesses", a.bearerGuesses)
			t.Run("oversized-login-body", a.oversizedLoginBody)
			t.Run("logout-revokes-copied-cookie", a.logoutRevokes)
			t.Run("guest-summary-paging", a.guestPaging)
			t.Run("short-admin-password", func(t *testing.T) { shortAdminPassword(t, build, up) })
		})
	}
}

type authAttack struct{ w *worker }

// from sends a request as if from ip (CF-Connecting-IP) with headers h.
func (a *authAttack) from(t testing.TB, ip, method, path string, h map[string]string, body string) response {
	t.Helper()
	hd := map[string]string{"CF-Connecting-IP": ip}
	for k, v := range h {
		hd[k] = v
	}
	return a.w.do(t, method, path, hd, body)
}

func (a *authAttack) login(t testing.TB, ip, password string) response {
	t.Helper()
	return a.from(t, ip, "POST", "/admin/login", nil, `{"password":`+jsonString(password)+`}`)
}

// checkIPHonored: each scenario uses addresses of its own, which needs the
// worker to see the CF-Connecting-IP the test sends.
func (a *authAttack) checkIPHonored(t *testing.T) {
	ip := "192.0.2.201"
	if r := a.login(t, ip, a.w.admin); r.status != http.StatusOK {
		t.Fatalf("admin login: %d %s", r.status, r.body)
	}
	for _, e := range a.audit(t) {
		if e.Get("action").String() == "login" {
			if e.Get("ip").String() != ip {
				t.Fatalf("the worker saw address %q, not the CF-Connecting-IP %s sent: these scenarios need it", e.Get("ip"), ip)
			}
			return
		}
	}
	t.Fatalf("no login in the audit log")
}

func (a *authAttack) audit(t testing.TB) []gjson.Result {
	t.Helper()
	r := a.w.adminCall(t, "GET", "/admin/api/audit?limit=500", "")
	if r.status != http.StatusOK {
		t.Fatalf("audit log: %d %s", r.status, r.body)
	}
	return r.json().Get("entries").Array()
}

// statusCounts counts the statuses of a set of answers.
func statusCounts(statuses []int) map[int]int {
	m := map[int]int{}
	for _, s := range statuses {
		m[s]++
	}
	return m
}

// parallelWrongLogins: 60 wrong passwords at once from one address. The
// throttle allows 5 failures; every attempt past them must get 429, even
// those that raced the first ones.
func (a *authAttack) parallelWrongLogins(t *testing.T) {
	ip := "198.51.100.60"
	statuses := make([]int, 60)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = a.login(t, ip, "wrong-"+randomHex(8)).status
		}()
	}
	wg.Wait()
	c := statusCounts(statuses)
	t.Logf("60 parallel wrong logins from %s: %d×401, %d×429, others %v", ip, c[401], c[429], c)
	if c[401] != 5 || c[429] != 55 {
		t.Errorf("60 parallel wrong logins: %d×401 and %d×429, want 5×401 and 55×429 (all past the limit throttled)", c[401], c[429])
	}
	if r := a.login(t, ip, a.w.admin); r.status != http.StatusTooManyRequests {
		t.Errorf("the right password from the throttled address: %d, want 429", r.status)
	}
}

// ipv6Slash64: addresses of one IPv6 /64 share a throttle; another /64 is
// not affected.
func (a *authAttack) ipv6Slash64(t *testing.T) {
	for i := 1; i <= 5; i++ {
		ip := "2001:db8:aa:1:" + strconv.Itoa(i) + "::" + randomHex(2)
		if r := a.login(t, ip, "wrong-"+randomHex(8)); r.status != http.StatusUnauthorized {
			t.Errorf("wrong login %d from %s: %d, want 401", i, ip, r.status)
		}
	}
	r := a.login(t, "2001:db8:aa:1:ffff:ffff:ffff:fffe", a.w.admin)
	t.Logf("right password from a 6th address of the same /64: %d %s", r.status, r.json().Get("error.code"))
	if r.status != http.StatusTooManyRequests {
		t.Errorf("right password from another address of the throttled /64: %d, want 429", r.status)
	}
	if r := a.login(t, "2001:db8:aa:2::1", a.w.admin); r.status != http.StatusOK {
		t.Errorf("right password from another /64: %d, want 200: %s", r.status, r.body)
	}
}

// bearerGuesses: wrong admin passwords as bearer tokens on the admin API
// count in the login throttle and are audited without the guess.
func (a *authAttack) bearerGuesses(t *testing.T) {
	ip := "198.51.100.50"
	var statuses []int
	var guesses []string
	for i := 0; i < 50; i++ {
		g := "guess-" + randomHex(10)
		guesses = append(guesses, g)
		statuses = append(statuses, a.from(t, ip, "GET", "/admin/api/keys", map[string]string{"Authorization": "Bearer " + g}, "").status)
	}
	c := statusCounts(statuses)
	right := a.from(t, ip, "GET", "/admin/api/keys", map[string]string{"Authorization": "Bearer " + a.w.admin}, "")
	entries := a.audit(t)
	audited := 0
	for _, e := range entries {
		if e.Get("ip").String() == ip {
			audited++
		}
		for _, g := range guesses {
			if strings.Contains(e.Raw, g) {
				t.Errorf("an audit entry holds a guessed password: %s", e.Raw)
			}
		}
	}
	t.Logf("50 wrong bearer passwords from %s: %d×401, %d×429; then the right one → %d; audit entries from that address: %d",
		ip, c[401], c[429], right.status, audited)
	if c[401] != 5 || c[429] != 45 {
		t.Errorf("50 wrong bearer passwords: %v, want 5×401 then 45×429", c)
	}
	if right.status != http.StatusTooManyRequests {
		t.Errorf("the right bearer password from the throttled address: %d, want 429", right.status)
	}
	if audited < 5 {
		t.Errorf("failed admin attempts audited: %d, want at least the 5 refused with 401", audited)
	}
	// Logins and bearer attempts share one count.
	ip = "198.51.100.51"
	for i := 0; i < 3; i++ {
		a.from(t, ip, "GET", "/admin/api/providers", map[string]string{"Authorization": "Bearer guess-" + randomHex(6)}, "")
	}
	for i := 0; i < 2; i++ {
		a.login(t, ip, "wrong-"+randomHex(6))
	}
	if r := a.login(t, ip, a.w.admin); r.status != http.StatusTooManyRequests {
		t.Errorf("login after 3 wrong bearer passwords and 2 wrong logins: %d, want 429", r.status)
	}
	// The guest page accepts the admin password too: guessing it there
	// counts as well.
	ip = "198.51.100.52"
	for i := 0; i < 5; i++ {
		a.from(t, ip, "GET", "/guest/api/summary", map[string]string{"Authorization": "Bearer guess-" + randomHex(6)}, "")
	}
	if r := a.login(t, ip, a.w.admin); r.status != http.StatusTooManyRequests {
		t.Errorf("login after 5 wrong bearer passwords on the guest summary: %d, want 429", r.status)
	}
}

// chunked is a body of n bytes of unknown length, so the client sends it
// chunked, without Content-Length.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

// postChunked posts a chunked body of about n bytes from ip. It tries
// again (3 tries in all) when wrangler dev's proxy, not the worker,
// answered or dropped the connection (see afterEarlyAnswer), and returns
// how many tries that cost: such a try may or may not have reached the
// worker.
func (a *authAttack) postChunked(t testing.TB, ip, path string, n int) (response, int) {
	t.Helper()
	body := `{"password":"` + strings.Repeat("x", n) + `"}`
	var r response
	proxied := 0
	for try := 0; try < 3; try++ {
		req, err := http.NewRequest("POST", a.w.base+path, chunked{bytes.NewReader([]byte(body))})
		must(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("CF-Connecting-IP", ip)
		resp, err := a.w.client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r = response{status: resp.StatusCode, header: resp.Header, body: b}
		}
		a.w.afterEarlyAnswer(t)
		if err == nil && !wranglerRestarted(r.status, r.body) {
			return r, proxied
		}
		proxied++
		t.Logf("try %d of a chunked %d-byte body to %s: wrangler dev's proxy failed it (%v, %d)", try+1, n, path, err, r.status)
	}
	t.Fatalf("a chunked %d-byte body to %s: wrangler dev's proxy failed 3 tries", n, path)
	return r, proxied
}

// oversizedLoginBody: a login body past a few KiB is refused with 413 and
// counts in the throttle: the failure that makes loginMaxFailures+1 (6)
// is answered 429. The count is read from the audit log, which names each
// counted failure, so a try the dev proxy lost does not blur it.
func (a *authAttack) oversizedLoginBody(t *testing.T) {
	ip := "198.51.100.70"
	var statuses []int
	lost := 0
	for len(statuses) < 10 {
		r, n := a.postChunked(t, ip, "/admin/login", 2<<20)
		lost += n
		statuses = append(statuses, r.status)
		if r.status == http.StatusRequestEntityTooLarge {
			continue
		}
		if r.status != http.StatusTooManyRequests {
			t.Errorf("oversized login %d: %d, want 413 or, once throttled, 429: %s", len(statuses), r.status, tail(string(r.body), 300))
		}
		break
	}
	var failures []string
	for _, e := range a.audit(t) {
		if e.Get("ip").String() == ip && e.Get("action").String() == "login.fail" {
			failures = append(failures, e.Get("detail").String())
		}
	}
	t.Logf("chunked 2 MiB login bodies from %s → %v (%d tries lost by the dev proxy); audited: %q", ip, statuses, lost, failures)
	if last := statuses[len(statuses)-1]; last != http.StatusTooManyRequests {
		t.Errorf("%d oversized logins never got 429 (oversized bodies must count in the throttle)", len(statuses))
	}
	// Audited: failures 1 to 6, the 6th the one that throttles.
	if len(failures) != 6 {
		t.Errorf("%d audited failures from %s, want 6", len(failures), ip)
	}
	for _, f := range failures {
		if !strings.HasPrefix(f, "body over 4096 bytes; failure ") {
			t.Errorf("audited failure %q: want one for an oversized body", f)
		}
	}
	if !slices.Contains(failures, "body over 4096 bytes; failure 6; throttled until the window ends") {
		t.Errorf("no audited 6th failure that throttles: %q", failures)
	}
	// Every try the worker answered counted once: 5 answers of 413, fewer
	// only by tries lost on the way back.
	if n := len(statuses) - 1; statuses[n] == http.StatusTooManyRequests && (n > 5 || n < 5-lost) {
		t.Errorf("%d answers of 413 before the 429, want 5 (%d tries lost by the dev proxy)", n, lost)
	}
	r, _ := a.postChunked(t, "198.51.100.71", "/admin/login", 16<<10)
	t.Logf("a chunked 16 KiB login body → %d %s", r.status, r.json().Get("error.code"))
	if r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a 16 KiB login body: %d, want 413: %s", r.status, tail(string(r.body), 300))
	}
}

// logoutRevokes: a session cookie copied before a logout stops working;
// "log out everywhere" ends every session.
func (a *authAttack) logoutRevokes(t *testing.T) {
	ip := "192.0.2.210"
	session := func() (cookie, csrf string) {
		r := a.login(t, ip, a.w.admin)
		_, c := setCookieLine(r, "kp_admin")
		if r.status != http.StatusOK || c == nil {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
		return c.Value, r.json().Get("csrf").String()
	}
	get := func(cookie string) int {
		return a.from(t, ip, "GET", "/admin/api/keys", map[string]string{"Cookie": "kp_admin=" + cookie}, "").status
	}
	cookie, _ := session()
	if s := get(cookie); s != http.StatusOK {
		t.Fatalf("fresh session: %d", s)
	}
	if r := a.from(t, ip, "POST", "/admin/logout", map[string]string{"Cookie": "kp_admin=" + cookie}, ""); r.status != http.StatusOK {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	s := get(cookie)
	t.Logf("a copy of the session cookie after logout → %d", s)
	if s != http.StatusUnauthorized {
		t.Errorf("a session cookie copied before the logout: %d, want 401", s)
	}
	// Log out everywhere: both sessions end.
	c1, csrf1 := session()
	c2, _ := session()
	r := a.from(t, ip, "POST", "/admin/api/sessions/revoke", map[string]string{"Cookie": "kp_admin=" + c1, "X-Keypool-CSRF": csrf1}, "")
	t.Logf("log out everywhere → %d %s; then session 1 → %d, session 2 → %d", r.status, r.body, get(c1), get(c2))
	if r.status != http.StatusOK {
		t.Fatalf("log out everywhere: %d %s", r.status, r.body)
	}
	if get(c1) != http.StatusUnauthorized || get(c2) != http.StatusUnauthorized {
		t.Errorf("after log out everywhere: sessions answer %d and %d, want 401 and 401", get(c1), get(c2))
	}
	if c3, _ := session(); get(c3) != http.StatusOK {
		t.Errorf("a login after log out everywhere does not work")
	}
}

// guestPaging: absurd paging of the open guest summary is refused or
// clamped, never a 500; open mode and guest_reveal_keys do not go together.
func (a *authAttack) guestPaging(t *testing.T) {
	a.w.importKeys(t, "openai", "sk-guestpage"+randomHex(8), "sk-guestpage"+randomHex(8))
	if r := a.w.adminCall(t, "PUT", "/admin/api/settings", `{"access_mode":"open"}`); r.status != http.StatusOK {
		t.Fatalf("open mode: %d %s", r.status, r.body)
	}
	for _, q := range []string{"page=18446744073709553&page_size=500", "page=9223372036854775807&page_size=500",
		"page=-9223372036854775808", "page=99999999999999999999999", "page_size=99999999999999999999", "page=abc&page_size=-1",
		"page=2&page_size=1", "page=1e3"} {
		r := a.from(t, "192.0.2.220", "GET", "/guest/api/summary?"+q, nil, "")
		t.Logf("guest summary ?%s → %d (keys %d)", q, r.status, len(r.json().Get("keys").Array()))
		if r.status != http.StatusOK && r.status != http.StatusBadRequest {
			t.Errorf("guest summary ?%s: %d, want 200 or 400: %s", q, r.status, tail(string(r.body), 200))
		}
	}
	for _, tc := range []struct{ first, second string }{
		{`{"access_mode":"open","guest_reveal_keys":true}`, ""},
		{`{"access_mode":"open"}`, `{"guest_reveal_keys":true}`},
		{`{"access_mode":"restricted","guest_password":"guest-pw-` + randomHex(4) + `","guest_reveal_keys":true}`, `{"access_mode":"open"}`},
	} {
		r := a.w.adminCall(t, "PUT", "/admin/api/settings", tc.first)
		if tc.second != "" {
			if r.status != http.StatusOK {
				t.Fatalf("PUT %s: %d %s", tc.first, r.status, r.body)
			}
			r = a.w.adminCall(t, "PUT", "/admin/api/settings", tc.second)
		}
		t.Logf("%s then %s → %d %s", tc.first, tc.second, r.status, r.json().Get("error.message"))
		if r.status != http.StatusBadRequest || !strings.Contains(r.json().Get("error.message").String(), "guest_reveal_keys") {
			t.Errorf("%s then %s: %d %s, want 400 naming guest_reveal_keys", tc.first, tc.second, r.status, r.body)
		}
		a.w.adminCall(t, "PUT", "/admin/api/settings", `{"access_mode":"private","guest_reveal_keys":false}`)
	}
}

// shortAdminPassword: a worker whose ADMIN_PASSWORD is under 16
// characters refuses its admin API and says why.
func shortAdminPassword(t *testing.T, build string, up *fakeupstream.Server) {
	short := "short-" + randomHex(3) // 12 characters
	w := startWorker(t, build, up, map[string]string{"ADMIN_PASSWORD": short})
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/admin/api/keys", ""}, {"GET", "/admin/api/providers", ""},
		{"POST", "/admin/login", `{"password":` + jsonString(short) + `}`},
	} {
		r := w.do(t, tc.method, tc.path, map[string]string{"Authorization": "Bearer " + short}, tc.body)
		msg := r.json().Get("error.message").String()
		t.Logf("%s %s with a 12-character ADMIN_PASSWORD → %d %s", tc.method, tc.path, r.status, msg)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(msg, "16") || !strings.Contains(msg, "ADMIN_PASSWORD") {
			t.Errorf("%s %s: %d %s, want 503 saying ADMIN_PASSWORD needs 16 characters", tc.method, tc.path, r.status, r.body)
		}
	}
	if r := w.do(t, "GET", "/v1/models", map[string]string{"Authorization": "Bearer " + w.token}, ""); r.status != http.StatusOK {
		t.Errorf("the proxy with a short ADMIN_PASSWORD: %d, want 200 (only the admin API is refused)", r.status)
	}
	eventually(t, "a log line about the short ADMIN_PASSWORD", func() bool {
		return strings.Contains(w.logs.String(), "ADMIN_PASSWORD") && strings.Contains(w.logs.String(), "16 characters")
	})
}
