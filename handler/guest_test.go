package handler

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/seal"
)

const testGuestPassword = "guest-pass-4567"

// guestSummaryJSON is the answer of GET /guest/api/summary.
type guestSummaryJSON struct {
	Total      int64                       `json:"total"`
	ByStatus   map[string]int64            `json:"by_status"`
	ByProvider map[string]map[string]int64 `json:"by_provider"`
	Balance    struct {
		Known   int64    `json:"known"`
		Total   *float64 `json:"total"`
		Average *float64 `json:"average"`
		Median  *float64 `json:"median"`
		Min     *float64 `json:"min"`
		Max     *float64 `json:"max"`
	} `json:"balance"`
	Page     int       `json:"page"`
	PageSize int       `json:"page_size"`
	Keys     []keyJSON `json:"keys"`
}

// guestPool fills the pool through the admin API (sealed) with keys in
// every state and some balances, and returns the secrets in id order.
func guestPool(t *testing.T, e *testEnv) []string {
	t.Helper()
	secrets := []string{"sk-guest-openai-0000000001", "sk-guest-openai-0000000002", "sk-guest-openai-0000000003",
		"gsk_guest-groq-00000000004", "gsk_guest-groq-00000000005"}
	for _, add := range []string{
		`{"provider":"openai","keys":["` + strings.Join(secrets[:3], `","`) + `"],"label":"team"}`,
		`{"provider":"groq","keys":["` + strings.Join(secrets[3:], `","`) + `"]}`,
	} {
		if w := e.admin(http.MethodPost, "/admin/api/keys", add); w.Code != http.StatusCreated {
			t.Fatalf("adding keys: %d %s", w.Code, w.Body.String())
		}
	}
	for _, q := range []string{
		`UPDATE keys SET status = 'disabled' WHERE id = 2`,
		`UPDATE keys SET status = 'exhausted', balance = 0 WHERE id = 3`,
		`UPDATE keys SET status = 'blocked' WHERE id = 5`,
		`UPDATE keys SET balance = 10.5 WHERE id = 1`,
		`UPDATE keys SET balance = 4 WHERE id = 4`,
	} {
		if _, err := e.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return secrets
}

func (e *testEnv) summary(a accReq) *httptest.ResponseRecorder {
	e.t.Helper()
	a.method = http.MethodGet
	if a.target == "" {
		a.target = "/guest/api/summary"
	}
	return e.send(a)
}

func decodeSummary(t *testing.T, w *httptest.ResponseRecorder) guestSummaryJSON {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("summary: %d %s", w.Code, w.Body.String())
	}
	var s guestSummaryJSON
	decode(t, w, &s)
	return s
}

func TestGuestPrivate(t *testing.T) {
	e := newEnv(t)
	guestPool(t, e)
	admin := e.adminLogin("")
	refused := []struct {
		name string
		req  accReq
	}{
		{"anonymous", accReq{}},
		{"client token", accReq{hdr: []string{"Authorization", "Bearer " + testAuthKey}}},
		{"wrong password", accReq{hdr: []string{"Authorization", "Bearer nope"}}},
		{"guest password as bearer", accReq{hdr: []string{"Authorization", "Bearer " + testGuestPassword}}},
		{"tampered admin cookie", accReq{cookies: []*http.Cookie{{Name: adminCookie, Value: tamper(admin.cookie.Value, 4)}}}},
		{"admin cookie as guest cookie", accReq{cookies: []*http.Cookie{{Name: guestCookie, Value: admin.cookie.Value}}}},
	}
	for _, tc := range refused {
		w := e.summary(tc.req)
		wantError(t, w, http.StatusForbidden, "guest_page_private")
		if strings.Contains(w.Body.String(), "sk-guest") {
			t.Errorf("%s: the refusal shows keys", tc.name)
		}
	}
	// Admins see it, by password or session.
	for _, a := range []accReq{{hdr: []string{"Authorization", "Bearer " + testAdminPassword}}, {cookies: []*http.Cookie{admin.cookie}}} {
		if s := decodeSummary(t, e.summary(a)); s.Total != 5 {
			t.Errorf("admin summary: total %d", s.Total)
		}
	}
	// Guest login is off.
	wantError(t, e.send(accReq{method: http.MethodPost, target: "/guest/login", body: loginBody(testGuestPassword)}),
		http.StatusForbidden, "guest_login_off")
	w := e.send(accReq{method: http.MethodPost, target: "/guest/api/summary", hdr: []string{"Authorization", "Bearer " + testAdminPassword}})
	wantError(t, w, http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestGuestOpen(t *testing.T) {
	e := newEnv(t)
	secrets := guestPool(t, e)
	e.putSettings(`{"access_mode":"open"}`)
	w := e.summary(accReq{})
	s := decodeSummary(t, w)
	if s.Total != 5 {
		t.Errorf("total %d, want 5", s.Total)
	}
	wantStatus := map[string]int64{"active": 2, "disabled": 1, "exhausted": 1, "blocked": 1}
	for k, v := range wantStatus {
		if s.ByStatus[k] != v {
			t.Errorf("by_status %v, want %v", s.ByStatus, wantStatus)
			break
		}
	}
	if len(s.ByStatus) != 4 {
		t.Errorf("by_status %v", s.ByStatus)
	}
	if p := s.ByProvider["openai"]; p["active"] != 1 || p["disabled"] != 1 || p["exhausted"] != 1 || p["blocked"] != 0 {
		t.Errorf("by_provider openai %v", p)
	}
	if p := s.ByProvider["groq"]; p["active"] != 1 || p["blocked"] != 1 || len(s.ByProvider) != 2 {
		t.Errorf("by_provider %v", s.ByProvider)
	}
	b := s.Balance
	// Balances 0, 4, 10.5.
	if b.Known != 3 || b.Total == nil || *b.Total != 14.5 || *b.Min != 0 || *b.Max != 10.5 || *b.Median != 4 ||
		*b.Average < 4.83 || *b.Average > 4.84 {
		t.Errorf("balance %+v", b)
	}
	if len(s.Keys) != 5 || s.Page != 1 || s.PageSize != 50 {
		t.Fatalf("%d keys page %d size %d", len(s.Keys), s.Page, s.PageSize)
	}
	for i, k := range s.Keys {
		if k.Key != provider.Mask(secrets[i]) {
			t.Errorf("key %d shown as %q, want %q", k.ID, k.Key, provider.Mask(secrets[i]))
		}
	}
	for _, sec := range secrets {
		if strings.Contains(w.Body.String(), sec[5:len(sec)-4]) {
			t.Errorf("the summary shows key %q unmasked", sec)
		}
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", w.Header())
	}

	// Pages.
	pages := []struct {
		query    string
		page     int
		size     int
		firstID  int64
		keyCount int
	}{
		{"?page_size=2", 1, 2, 1, 2},
		{"?page_size=2&page=2", 2, 2, 3, 2},
		{"?page_size=2&page=3", 3, 2, 5, 1},
		{"?page_size=2&page=4", 4, 2, 0, 0},
		{"?page=0&page_size=-3", 1, 50, 1, 5},
		{"?page_size=100000", 1, 500, 1, 5},
		{"?page=x&page_size=y", 1, 50, 1, 5},
	}
	for _, p := range pages {
		s := decodeSummary(t, e.summary(accReq{target: "/guest/api/summary" + p.query}))
		if s.Page != p.page || s.PageSize != p.size || len(s.Keys) != p.keyCount || p.keyCount > 0 && s.Keys[0].ID != p.firstID {
			t.Errorf("%s: page %d size %d, %d keys; want %d/%d/%d from id %d", p.query, s.Page, s.PageSize, len(s.Keys), p.page, p.size, p.keyCount, p.firstID)
		}
		if s.Total != 5 {
			t.Errorf("%s: total %d", p.query, s.Total)
		}
	}
	// page_size from the settings.
	e.putSettings(`{"page_size":10}`)
	if s := decodeSummary(t, e.summary(accReq{})); s.PageSize != 10 {
		t.Errorf("page_size %d, want the setting's 10", s.PageSize)
	}

	// An empty pool.
	e2 := newEnv(t)
	e2.putSettings(`{"access_mode":"open"}`)
	s = decodeSummary(t, e2.summary(accReq{}))
	if s.Total != 0 || s.Balance.Known != 0 || s.Balance.Total != nil || s.Balance.Median != nil || len(s.Keys) != 0 || s.ByStatus["active"] != 0 {
		t.Errorf("empty pool summary %+v", s)
	}
}

func TestGuestRestricted(t *testing.T) {
	e := newEnv(t)
	guestPool(t, e)
	e.putSettings(`{"access_mode":"restricted"}`)
	// No guest password yet: nobody logs in.
	wantError(t, e.summary(accReq{}), http.StatusUnauthorized, "guest_login_required")
	wantError(t, e.send(accReq{method: http.MethodPost, target: "/guest/login", body: loginBody("")}), http.StatusForbidden, "guest_login_off")

	e.putSettings(`{"guest_password":"` + testGuestPassword + `"}`)
	wantError(t, e.summary(accReq{}), http.StatusUnauthorized, "guest_login_required")
	guestLogin := func(password, ip string) *httptest.ResponseRecorder {
		return e.send(accReq{method: http.MethodPost, target: "/guest/login", body: loginBody(password), ip: ip})
	}
	for _, pw := range []string{"wrong-password", "", testGuestPassword + " ", testAdminPassword} {
		w := guestLogin(pw, "")
		wantError(t, w, http.StatusUnauthorized, "invalid_guest_password")
		if len(w.Header().Values("Set-Cookie")) != 0 {
			t.Errorf("a failed guest login set a cookie")
		}
	}
	w := guestLogin(testGuestPassword, "")
	if w.Code != http.StatusOK {
		t.Fatalf("guest login: %d %s", w.Code, w.Body.String())
	}
	line := setCookieLine(w, guestCookie)
	attrs := cookieAttrs(line)
	if _, ok := attrs["httponly"]; !ok || attrs["samesite"] != "Strict" || attrs["path"] != "/" || attrs["max-age"] != "43200" {
		t.Errorf("guest cookie %q", line)
	}
	if _, ok := attrs["secure"]; !ok {
		t.Errorf("guest cookie %q is not Secure", line)
	}
	g := findCookie(w, guestCookie)
	if s := decodeSummary(t, e.summary(accReq{cookies: []*http.Cookie{g}})); s.Total != 5 {
		t.Errorf("guest summary total %d", s.Total)
	}
	// Tampered, expired, or after a new guest password: refused.
	wantError(t, e.summary(accReq{cookies: []*http.Cookie{{Name: guestCookie, Value: tamper(g.Value, len(g.Value)-2)}}}),
		http.StatusUnauthorized, "guest_login_required")
	wantError(t, e.summary(accReq{cookies: []*http.Cookie{{Name: guestCookie, Value: "a" + g.Value[1:]}}}),
		http.StatusUnauthorized, "guest_login_required")
	e.advance(12 * time.Hour)
	wantError(t, e.summary(accReq{cookies: []*http.Cookie{g}}), http.StatusUnauthorized, "guest_login_required")
	e.setNow(t0)
	if w := e.summary(accReq{cookies: []*http.Cookie{g}}); w.Code != http.StatusOK {
		t.Fatalf("back in time: %d", w.Code)
	}
	e.putSettings(`{"guest_password":"another-guest-password"}`)
	wantError(t, e.summary(accReq{cookies: []*http.Cookie{g}}), http.StatusUnauthorized, "guest_login_required")
	// Admins need no guest login.
	if w := e.summary(accReq{hdr: []string{"Authorization", "Bearer " + testAdminPassword}}); w.Code != http.StatusOK {
		t.Errorf("admin: %d", w.Code)
	}
	// Back to private: the guest session no longer opens the page.
	w = guestLogin("another-guest-password", "")
	g = findCookie(w, guestCookie)
	e.putSettings(`{"access_mode":"private"}`)
	wantError(t, e.summary(accReq{cookies: []*http.Cookie{g}}), http.StatusForbidden, "guest_page_private")

	// Guest logins are throttled per IP like admin logins, apart from them.
	e.putSettings(`{"access_mode":"restricted"}`)
	const ip = "203.0.113.50"
	for i := 0; i < loginMaxFailures; i++ {
		wantError(t, guestLogin("wrong", ip), http.StatusUnauthorized, "invalid_guest_password")
	}
	w = guestLogin("another-guest-password", ip)
	wantError(t, w, http.StatusTooManyRequests, "login_throttled")
	if w.Header().Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	if w := guestLogin("another-guest-password", "203.0.113.51"); w.Code != http.StatusOK {
		t.Errorf("another IP: %d", w.Code)
	}
	if w := e.send(accReq{method: http.MethodPost, target: "/admin/login", body: loginBody(testAdminPassword), ip: ip}); w.Code != http.StatusOK {
		t.Errorf("admin login from the IP throttled for guest logins: %d", w.Code)
	}
	e.advance(loginWindow)
	if w := guestLogin("another-guest-password", ip); w.Code != http.StatusOK {
		t.Errorf("after the window: %d", w.Code)
	}
}

func TestGuestRevealKeys(t *testing.T) {
	for _, mode := range []string{"open", "restricted"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			secrets := guestPool(t, e)
			e.putSettings(`{"access_mode":"` + mode + `","guest_password":"` + testGuestPassword + `"}`)
			var guest accReq
			if mode == "restricted" {
				w := e.send(accReq{method: http.MethodPost, target: "/guest/login", body: loginBody(testGuestPassword)})
				guest.cookies = []*http.Cookie{findCookie(w, guestCookie)}
			}
			adminReq := accReq{hdr: []string{"Authorization", "Bearer " + testAdminPassword}}
			check := func(name string, a accReq, full bool) {
				t.Helper()
				w := e.summary(a)
				s := decodeSummary(t, w)
				if len(s.Keys) != len(secrets) {
					t.Fatalf("%s: %d keys", name, len(s.Keys))
				}
				for i, k := range s.Keys {
					want := provider.Mask(secrets[i])
					if full {
						want = secrets[i]
					}
					if k.Key != want {
						t.Errorf("%s: key %d shown as %q, want %q", name, k.ID, k.Key, want)
					}
				}
				for _, sec := range secrets {
					if strings.Contains(w.Body.String(), sec) != full {
						t.Errorf("%s: full key %q in the answer: %v, want %v", name, sec, !full, full)
					}
				}
			}
			check("guest, reveal off", guest, false)
			check("admin, reveal off", adminReq, false)
			if mode == "open" {
				// Full keys for anyone: refused (see TestRevealRefusedWhenOpen).
				wantError(t, e.admin(http.MethodPut, "/admin/api/settings", `{"guest_reveal_keys":true}`), http.StatusBadRequest, "invalid_request")
				check("guest, reveal refused", guest, false)
				return
			}
			e.putSettings(`{"guest_reveal_keys":true}`)
			check("guest, reveal on", guest, true)
			// The admin's summary stays masked: admins reveal one key at a
			// time, audited.
			check("admin, reveal on", adminReq, false)
			e.putSettings(`{"guest_reveal_keys":false}`)
			check("guest, reveal off again", guest, false)
		})
	}
}

func TestGuestPasswordNeverShown(t *testing.T) {
	e := newEnv(t)
	w := e.admin(http.MethodPut, "/admin/api/settings", `{"guest_password":"`+testGuestPassword+`"}`)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	for _, body := range []string{w.Body.String(), e.admin(http.MethodGet, "/admin/api/settings", "").Body.String()} {
		if strings.Contains(body, testGuestPassword) || strings.Contains(body, `"guest_password"`) || !strings.Contains(body, `"guest_password_set":true`) {
			t.Errorf("settings answer %s: want guest_password_set only", body)
		}
	}
	box, err := seal.New(testKeypoolSecret)
	if err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := e.db.QueryRow(`SELECT value FROM settings WHERE name = 'guest_password'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != `"`+box.Fingerprint(testGuestPassword, "guest")+`"` {
		t.Errorf("stored guest password %q, want its fingerprint", stored)
	}
	if n := e.count(`SELECT COUNT(*) FROM settings WHERE value LIKE ?`, "%"+testGuestPassword[:8]+"%"); n != 0 {
		t.Errorf("the guest password is in D1")
	}
	// Too short, not a string: refused; null clears it.
	for _, bad := range []string{`{"guest_password":"short"}`, `{"guest_password":12345678}`, `{"guest_password":true}`} {
		wantError(t, e.admin(http.MethodPut, "/admin/api/settings", bad), http.StatusBadRequest, "invalid_request")
	}
	for _, bad := range []string{`{"access_mode":"public"}`, `{"access_mode":1}`, `{"guest_reveal_keys":"yes"}`, `{"page_size":5}`, `{"page_size":501}`} {
		wantError(t, e.admin(http.MethodPut, "/admin/api/settings", bad), http.StatusBadRequest, "invalid_request")
	}
	w = e.admin(http.MethodPut, "/admin/api/settings", `{"guest_password":null}`)
	if !strings.Contains(w.Body.String(), `"guest_password_set":false`) {
		t.Errorf("after null: %s", w.Body.String())
	}
	// Without KEYPOOL_SECRET a guest password cannot be kept.
	e.set("KEYPOOL_SECRET", "")
	wantError(t, e.admin(http.MethodPut, "/admin/api/settings", `{"guest_password":"`+testGuestPassword+`"}`),
		http.StatusServiceUnavailable, "not_configured")
}

// wantJSONData checks that w is JSON and that each payload comes back as
// data: exactly as sent inside a JSON string, never as markup.
func wantJSONData(t *testing.T, name string, w *httptest.ResponseRecorder, payloads ...string) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", name, ct)
	}
	if w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%s: no X-Content-Type-Options: nosniff", name)
	}
	body := w.Body.Bytes()
	if !json.Valid(body) {
		t.Fatalf("%s: not JSON: %s", name, body)
	}
	// Every string in the answer, decoded; a payload must be one of them
	// (or inside one), and the raw body may hold its markup only within
	// JSON strings, which valid JSON guarantees outside them.
	var strs []string
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		if s, ok := tok.(string); ok {
			strs = append(strs, s)
		}
	}
	for _, p := range payloads {
		found := false
		for _, s := range strs {
			if strings.Contains(s, p) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: payload %q not returned as data: %s", name, p, body)
		}
	}
	// Raw markup outside a string would be invalid JSON; inside one it is
	// escaped, so the body holds no raw tag at all.
	for _, tag := range []string{"<script>", "<img"} {
		if bytes.Contains(body, []byte(tag)) {
			t.Errorf("%s: raw %q in the body (want it escaped): %s", name, tag, body)
		}
	}
}

func TestXSSPayloadsAreData(t *testing.T) {
	payloads := []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(1)>`}
	for _, p := range payloads {
		t.Run(p, func(t *testing.T) {
			e := newEnv(t)
			q, _ := json.Marshal(p)
			label := string(q)
			w := e.admin(http.MethodPost, "/admin/api/keys", `{"provider":"openai","keys":"sk-xss-key-000000000001","label":`+label+`}`)
			if w.Code != http.StatusCreated {
				t.Fatalf("add: %d %s", w.Code, w.Body.String())
			}
			wantJSONData(t, "keys list", e.admin(http.MethodGet, "/admin/api/keys", ""), p)
			wantJSONData(t, "key", e.admin(http.MethodGet, "/admin/api/keys/1", ""), p)
			w = e.admin(http.MethodPost, "/admin/api/tokens", `{"name":`+label+`}`)
			wantJSONData(t, "token create", w, p)
			wantJSONData(t, "token list", e.admin(http.MethodGet, "/admin/api/tokens", ""), p)
			wantJSONData(t, "token", e.admin(http.MethodGet, "/admin/api/tokens/1", ""), p)
			w = e.admin(http.MethodPut, "/admin/api/settings", `{"aliases":{`+label+`:"groq/llama-3.1-8b-instant"},"access_mode":"open"}`)
			wantJSONData(t, "settings put", w, p)
			wantJSONData(t, "settings", e.admin(http.MethodGet, "/admin/api/settings", ""), p)
			wantJSONData(t, "guest summary", e.summary(accReq{}), p)
			// The alias is listed as a model.
			e.addKeys("groq", "gsk_xss-key-00000000001")
			wantJSONData(t, "models", e.proxy(http.MethodGet, "/v1/models", ""), p)
			// Echoed in errors.
			wantJSONData(t, "unknown provider", e.admin(http.MethodPost, "/admin/api/keys", `{"provider":`+label+`,"keys":"x"}`), p)
			wantJSONData(t, "unknown setting", e.admin(http.MethodPut, "/admin/api/settings", `{`+label+`:1}`), p)
			wantJSONData(t, "bad alias", e.admin(http.MethodPut, "/admin/api/settings", `{"aliases":{`+label+`:"nope"}}`), p)
		})
	}
}
