//go:build e2e

package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/handler"
	"github.com/keypool/keypool/proxy"
)

// TestSecurity attacks each build from outside, each build with its own
// wrangler dev, fresh D1 state and fake upstream: every route against
// every kind of credential (the auth matrix), markup stored as data,
// client-token scopes and limits, admin login (throttling, cookies,
// tampering, CSRF), and a scan of every answer, the worker's log, the
// upstream's requests and D1 for any secret the suite used.
func TestSecurity(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			s := &secSuite{up: up, build: build, kpSecret: "e2e-secret-" + randomHex(16),
				guestPW: "guest-" + randomHex(12), wrongAdmin: "adm-" + randomHex(16), secrets: map[string]string{}}
			s.w = startWorker(t, build, up, map[string]string{"USAGE_FLUSH_SECONDS": "0", "KEYPOOL_SECRET": s.kpSecret})
			s.addSecret(s.w.admin, "ADMIN_PASSWORD")
			s.addSecret(s.w.token, "AUTH_KEY")
			s.addSecret(s.kpSecret, "KEYPOOL_SECRET")
			s.addSecret(s.guestPW, "guest password")
			s.addSecret(s.w.gwTok, "CF_AIG_TOKEN (the gateway's credential)")
			s.setup(t)
			t.Run("auth-matrix", s.testAuthMatrix)
			t.Run("xss-as-data", s.testXSSAsData)
			t.Run("tokens", s.testTokens)
			t.Run("login", s.testLogin)
			t.Run("no-secrets", s.testNoSecrets)
			if len(s.findings) > 0 {
				t.Logf("%s: findings (not failures):\n  - %s", build, strings.Join(s.findings, "\n  - "))
			}
		})
	}
}

// credKind is a kind of credential a request carries.
type credKind int

const (
	credNone credKind = iota
	credAuthKey
	credToken
	credWrongAdmin
	credGuest
	credSessionNoCSRF
	credSession
	credAdminPassword
	numCreds
)

var credNames = [numCreds]string{
	"none", "AUTH_KEY", "client token", "wrong admin pw", "guest session",
	"admin session w/o CSRF", "admin session + CSRF", "admin password",
}

func (c credKind) admin() bool {
	return c == credSessionNoCSRF || c == credSession || c == credAdminPassword
}

type secSuite struct {
	w          *worker
	up         *fakeupstream.Server
	build      string
	kpSecret   string
	guestPW    string
	wrongAdmin string

	clientTok   string // an unrestricted token made through the admin API
	adminCookie string // kp_admin session
	csrf        string
	guestCookie string // kp_guest session
	ipHonored   bool   // the worker sees the CF-Connecting-IP the test sends

	keyIDs      []int64 // openai keys: {key} is the first, {keyid} the second
	keyIDSecret string  // the first one's secret
	tokID       int64   // a token for {token}
	jobID       int64   // a check job for {job}
	requestID   string  // a request in the request log for {request}

	mu       sync.Mutex
	secrets  map[string]string // secret → what it is
	seen     []seenResponse
	findings []string
}

// seenResponse is an answer the suite received, kept for the secret scan.
type seenResponse struct {
	cred         credKind
	adminRequest bool
	allowSecret  bool // an admin reveal or a token's creation
	method, path string
	status       int
	header       http.Header
	body         []byte
}

func (s *secSuite) addSecret(v, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v != "" {
		s.secrets[v] = what
	}
}

func (s *secSuite) finding(t *testing.T, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.Logf("FINDING: %s", msg)
	s.mu.Lock()
	s.findings = append(s.findings, msg)
	s.mu.Unlock()
}

// sendOpts are a request's extra headers (a "" value removes one the
// credential set) and whether its answer may hold a secret.
type sendOpts struct {
	header      map[string]string
	allowSecret bool
}

// send makes a request with credential c, recording the answer.
func (s *secSuite) send(t testing.TB, c credKind, method, path, body string, o sendOpts) response {
	t.Helper()
	h := map[string]string{}
	switch c {
	case credAuthKey:
		h["Authorization"] = "Bearer " + s.w.token
	case credToken:
		h["Authorization"] = "Bearer " + s.clientTok
	case credWrongAdmin:
		h["Authorization"] = "Bearer " + s.wrongAdmin
	case credGuest:
		h["Cookie"] = "kp_guest=" + s.guestCookie
	case credSessionNoCSRF:
		h["Cookie"] = "kp_admin=" + s.adminCookie
	case credSession:
		h["Cookie"] = "kp_admin=" + s.adminCookie
		h["X-Keypool-CSRF"] = s.csrf
	case credAdminPassword:
		h["Authorization"] = "Bearer " + s.w.admin
	}
	if c == credAuthKey || c == credToken || c == credWrongAdmin {
		// On admin routes these are wrong admin passwords, which the login
		// throttle counts per address: each comes from an address of its
		// own, so that the suite's own address stays usable.
		h["CF-Connecting-IP"] = fmt.Sprintf("198.18.%d.%d", randomByte(), randomByte())
	}
	for k, v := range o.header {
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	r := s.w.do(t, method, path, h, body)
	s.record(c.admin() || h["Authorization"] == "Bearer "+s.w.admin, o.allowSecret, c, method, path, r)
	return r
}

func randomByte() int {
	b, _ := strconv.ParseUint(randomHex(1), 16, 8)
	return int(b)
}

func (s *secSuite) record(admin, allow bool, c credKind, method, path string, r response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, seenResponse{cred: c, adminRequest: admin, allowSecret: allow, method: method, path: path,
		status: r.status, header: r.header, body: r.body})
}

// raw sends a request with exactly the headers given, recording it as
// non-admin unless it carries the admin password.
func (s *secSuite) raw(t testing.TB, method, path string, header map[string]string, body string) response {
	t.Helper()
	r := s.w.do(t, method, path, header, body)
	admin := header["Authorization"] == "Bearer "+s.w.admin || strings.Contains(header["Cookie"], "kp_admin="+s.adminCookie)
	s.record(admin, false, credNone, method, path, r)
	return r
}

// admin calls an admin route with the admin password; want is the status
// it must answer (0: any).
func (s *secSuite) admin(t testing.TB, method, path, body string, want int) response {
	t.Helper()
	r := s.send(t, credAdminPassword, method, path, body, sendOpts{})
	if want != 0 && r.status != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

func jsonString(v string) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// importKey adds one key and returns its id.
func (s *secSuite) importKey(t testing.TB, prov, label, secret string) int64 {
	t.Helper()
	s.addSecret(secret, prov+" upstream key")
	r := s.admin(t, "POST", "/admin/api/keys", jsonBody(map[string]any{"provider": prov, "label": label, "keys": secret}), http.StatusCreated)
	id := r.json().Get("added_keys.0.id").Int()
	if id <= 0 {
		t.Fatalf("import of one %s key: %s", prov, r.body)
	}
	return id
}

// createToken makes a client token from the JSON fields and returns its
// id and secret.
func (s *secSuite) createToken(t testing.TB, fields map[string]any) (int64, string) {
	t.Helper()
	r := s.send(t, credAdminPassword, "POST", "/admin/api/tokens", jsonBody(fields), sendOpts{allowSecret: true})
	if r.status != http.StatusCreated {
		t.Fatalf("create token %v: %d %s", fields, r.status, r.body)
	}
	tok := r.json().Get("token").String()
	if !strings.HasPrefix(tok, "kp-") {
		t.Fatalf("create token: no kp- secret in %s", r.body)
	}
	s.addSecret(tok, "client token "+r.json().Get("id").String())
	return r.json().Get("id").Int(), tok
}

// setCookieLine returns the Set-Cookie line of an answer for name.
func setCookieLine(r response, name string) (string, *http.Cookie) {
	for _, line := range r.header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == name {
			return line, c
		}
	}
	return "", nil
}

// adminLogin logs in with the admin password from ip ("" for none given)
// and returns the session cookie, its CSRF token and the answer.
func (s *secSuite) adminLogin(t testing.TB, ip string) (cookie, csrf string, r response) {
	t.Helper()
	h := map[string]string{}
	if ip != "" {
		h["CF-Connecting-IP"] = ip
	}
	r = s.raw(t, "POST", "/admin/login", h, `{"password":`+jsonString(s.w.admin)+`}`)
	if r.status != http.StatusOK {
		t.Fatalf("admin login: %d %s", r.status, r.body)
	}
	_, c := setCookieLine(r, "kp_admin")
	if c == nil || c.Value == "" {
		t.Fatalf("admin login set no kp_admin cookie: %v", r.header.Values("Set-Cookie"))
	}
	csrf = r.json().Get("csrf").String()
	if csrf == "" {
		t.Fatalf("admin login answered no csrf: %s", r.body)
	}
	s.addSecret(c.Value, "admin session cookie")
	return c.Value, csrf, r
}

// renewSessions logs in again as admin and as guest.
func (s *secSuite) renewSessions(t testing.TB) {
	t.Helper()
	s.adminCookie, s.csrf, _ = s.adminLogin(t, "")
	r := s.raw(t, "POST", "/guest/login", nil, `{"password":`+jsonString(s.guestPW)+`}`)
	_, gc := setCookieLine(r, "kp_guest")
	if r.status != http.StatusOK || gc == nil {
		t.Fatalf("guest login: %d %s", r.status, r.body)
	}
	s.guestCookie = gc.Value
	s.addSecret(gc.Value, "guest session cookie")
}

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func chatWith(model string) string {
	return jsonBody(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
}

// setup fills the pool, makes a client token, turns the guest page to
// restricted and logs in as admin and as guest.
func (s *secSuite) setup(t *testing.T) {
	for i := 0; i < 3; i++ {
		secret := "sk-secm" + randomHex(16)
		if i == 0 {
			s.keyIDSecret = secret
		}
		s.keyIDs = append(s.keyIDs, s.importKey(t, "openai", "matrix", secret))
	}
	s.tokID, s.clientTok = s.createToken(t, map[string]any{"name": "matrix client"})
	s.admin(t, "PUT", "/admin/api/settings", jsonBody(map[string]any{"access_mode": "restricted", "guest_password": s.guestPW}), http.StatusOK)
	r := s.raw(t, "POST", "/guest/login", nil, `{"password":`+jsonString(s.guestPW)+`}`)
	if r.status != http.StatusOK {
		t.Fatalf("guest login: %d %s", r.status, r.body)
	}
	_, gc := setCookieLine(r, "kp_guest")
	if gc == nil || gc.Value == "" {
		t.Fatalf("guest login set no kp_guest cookie: %v", r.header.Values("Set-Cookie"))
	}
	s.guestCookie = gc.Value
	s.addSecret(gc.Value, "guest session cookie")

	// Does the worker see the CF-Connecting-IP we send? miniflare sets it
	// from the socket only when the request has none; the audit log shows
	// which address the worker saw.
	ip := "192.0.2.77"
	s.adminCookie, s.csrf, _ = s.adminLogin(t, ip)
	entries := s.admin(t, "GET", "/admin/api/audit?limit=5", "", http.StatusOK).json().Get("entries").Array()
	for _, e := range entries {
		if e.Get("action").String() == "login" {
			s.ipHonored = e.Get("ip").String() == ip
			t.Logf("login audited from ip %q (sent CF-Connecting-IP %s): honored=%v", e.Get("ip").String(), ip, s.ipHonored)
			break
		}
	}
	job := s.admin(t, "POST", "/admin/api/checks", jsonBody(map[string]any{"ids": []int64{s.keyIDs[0]}}), 0)
	if job.status/100 != 2 || job.json().Get("id").Int() <= 0 {
		t.Fatalf("start check job: %d %s", job.status, job.body)
	}
	s.jobID = job.json().Get("id").Int()
	// A refused request (AUTH_KEY may not pass through to /v1/files): the
	// request log keeps it, under the id its answer carried.
	refused := s.w.do(t, "GET", "/v1/files", map[string]string{"Authorization": "Bearer " + s.w.token}, "")
	if s.requestID = refused.header.Get(proxy.RequestIDHeader); refused.status != http.StatusForbidden || s.requestID == "" {
		t.Fatalf("a refused request for the log: %d, id %q", refused.status, s.requestID)
	}
}

// Expected statuses: a number, or "2xx".
type expectRow [numCreds]string

var (
	rowClient      = expectRow{"401", "2xx", "2xx", "401", "401", "401", "401", "401"}
	rowPublic      = expectRow{"200", "200", "200", "200", "200", "200", "200", "200"}
	rowGuest       = expectRow{"401", "401", "401", "401", "200", "200", "200", "200"}
	rowAdminRead   = expectRow{"401", "401", "401", "401", "401", "2xx", "2xx", "2xx"}
	rowAdminChange = expectRow{"401", "401", "401", "401", "401", "403", "2xx", "2xx"}
	// The debug panic route answers 500 once authenticated: that is its
	// job.
	rowAdminPanic = expectRow{"401", "401", "401", "401", "401", "500", "500", "500"}
)

// classRow is the row a route's access class and method call for.
func classRow(a handler.Access, method string) expectRow {
	switch a {
	case handler.Client:
		return rowClient
	case handler.Public:
		return rowPublic
	case handler.Guest:
		return rowGuest
	case handler.Admin, handler.Debug:
		if method == "GET" || method == "HEAD" {
			return rowAdminRead
		}
		return rowAdminChange
	}
	return expectRow{}
}

func (e expectRow) ok(c credKind, status int) bool {
	if e[c] == "2xx" {
		return status/100 == 2
	}
	return e[c] == strconv.Itoa(status)
}

// sample is one concrete request for a route. Placeholders: {key},
// {token}, {job}, {request} (ids made in setup), {freshkey} and {freshtoken} (made
// for each attempt; after a refused attempt they must still exist),
// {newkey} and {newlabel} (a new key and label each attempt; after a
// refused one it must not exist), {adminpw}, {guestpw}, {keyid}.
type sample struct {
	method, path, body string
	allowSecret        bool // admin answers that show a secret by design
}

type matrixEntry struct {
	access  handler.Access
	row     expectRow
	samples []sample
}

// authMatrix: every route of handler.Routes(), keyed "METHOD PATH" as it
// lists them. A route missing here fails the test.
var authMatrix = map[string]matrixEntry{
	"* /v1/*": {handler.Client, rowClient, []sample{
		{method: "GET", path: "/v1/models"},
		{method: "POST", path: "/v1/chat/completions", body: chatBody},
	}},
	"* /api/*": {handler.Client, rowClient, []sample{
		{method: "POST", path: "/api/openai/chat/completions", body: chatBody},
	}},
	"POST /admin/login":      {handler.Public, rowPublic, []sample{{method: "POST", path: "/admin/login", body: `{"password":"{adminpw}"}`}}},
	"POST /admin/logout":     {handler.Public, rowPublic, []sample{{method: "POST", path: "/admin/logout"}}},
	"POST /guest/login":      {handler.Public, rowPublic, []sample{{method: "POST", path: "/guest/login", body: `{"password":"{guestpw}"}`}}},
	"GET /guest/api/summary": {handler.Guest, rowGuest, []sample{{method: "GET", path: "/guest/api/summary"}}},

	"GET /admin/api/keys":  {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/keys"}}},
	"POST /admin/api/keys": {handler.Admin, rowAdminChange, []sample{{method: "POST", path: "/admin/api/keys", body: `{"provider":"openai","label":"{newlabel}","keys":"{newkey}"}`}}},
	"POST /admin/api/keys/bulk": {handler.Admin, rowAdminChange, []sample{
		{method: "POST", path: "/admin/api/keys/bulk", body: `{"ids":[{freshkey}],"action":"delete"}`}}},
	"POST /admin/api/keys/export": {handler.Admin, rowAdminChange, []sample{
		{method: "POST", path: "/admin/api/keys/export", body: `{"ids":[{key}]}`, allowSecret: true}}},
	"GET /admin/api/balance/trend": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/balance/trend"}}},
	"GET /admin/api/keys/{id}":     {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/keys/{key}"}}},
	"PATCH /admin/api/keys/{id}": {handler.Admin, rowAdminChange, []sample{
		{method: "PATCH", path: "/admin/api/keys/{key}", body: `{"label":"matrix patched"}`}}},
	"DELETE /admin/api/keys/{id}": {handler.Admin, rowAdminChange, []sample{{method: "DELETE", path: "/admin/api/keys/{freshkey}"}}},
	"POST /admin/api/keys/{id}/reveal": {handler.Admin, rowAdminChange, []sample{
		{method: "POST", path: "/admin/api/keys/{key}/reveal", allowSecret: true}}},
	"GET /admin/api/keys/{id}/balance": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/keys/{key}/balance"}}},
	"GET /admin/api/providers":         {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/providers"}}},
	"GET /admin/api/settings":          {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/settings"}}},
	"PUT /admin/api/settings": {handler.Admin, rowAdminChange, []sample{
		{method: "PUT", path: "/admin/api/settings", body: `{"wait_for_cooldown_seconds":0}`}}},
	"PATCH /admin/api/settings": {handler.Admin, rowAdminChange, []sample{
		{method: "PATCH", path: "/admin/api/settings", body: `{"wait_for_cooldown_seconds":0}`}}},
	"GET /admin/api/checks":      {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/checks"}}},
	"POST /admin/api/checks":     {handler.Admin, rowAdminChange, []sample{{method: "POST", path: "/admin/api/checks", body: `{"ids":[{keyid}]}`}}},
	"GET /admin/api/checks/{id}": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/checks/{job}"}}},
	"DELETE /admin/api/checks/{id}": {handler.Admin, rowAdminChange, []sample{
		{method: "DELETE", path: "/admin/api/checks/{job}"}}},
	"POST /admin/api/checks/{id}/resume": {handler.Admin, rowAdminChange, []sample{
		{method: "POST", path: "/admin/api/checks/{job}/resume"}}},
	"GET /admin/api/tokens": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/tokens"}}},
	"POST /admin/api/tokens": {handler.Admin, rowAdminChange, []sample{
		{method: "POST", path: "/admin/api/tokens", body: `{"name":"matrix made"}`, allowSecret: true}}},
	"GET /admin/api/tokens/{id}": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/tokens/{token}"}}},
	"PATCH /admin/api/tokens/{id}": {handler.Admin, rowAdminChange, []sample{
		{method: "PATCH", path: "/admin/api/tokens/{token}", body: `{"rpm":0}`}}},
	"DELETE /admin/api/tokens/{id}": {handler.Admin, rowAdminChange, []sample{
		{method: "DELETE", path: "/admin/api/tokens/{freshtoken}"}}},
	"GET /admin/api/audit": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/audit"}}},
	"POST /admin/api/sessions/revoke": {handler.Admin, rowAdminChange, []sample{
		{method: "POST", path: "/admin/api/sessions/revoke"}}},
	"GET /admin/api/stats": {handler.Admin, rowAdminRead, []sample{
		{method: "GET", path: "/admin/api/stats?group=model"},
		{method: "GET", path: "/admin/api/stats?group=token&format=csv"},
	}},
	"GET /admin/api/stats/now":      {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/stats/now"}}},
	"GET /admin/api/debug/panic":    {handler.Debug, rowAdminPanic, []sample{{method: "GET", path: "/admin/api/debug/panic"}}},
	"GET /admin/api/debug/sleep":    {handler.Debug, rowAdminRead, []sample{{method: "GET", path: "/admin/api/debug/sleep?ms=1"}}},
	"GET /admin/api/debug/stats":    {handler.Debug, rowAdminRead, []sample{{method: "GET", path: "/admin/api/debug/stats"}}},
	"GET /admin/api/requests":       {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/requests?status=4xx&limit=5"}}},
	"GET /admin/api/requests/{rid}": {handler.Admin, rowAdminRead, []sample{{method: "GET", path: "/admin/api/requests/{request}"}}},
	// d1=none lifts a fault: the matrix injects none.
	"POST /admin/api/debug/faults": {handler.Debug, rowAdminChange, []sample{{method: "POST", path: "/admin/api/debug/faults?d1=none"}}},
}

// matrixCell is one request of the matrix.
type matrixCell struct {
	status int
	ok     bool
}

func (s *secSuite) testAuthMatrix(t *testing.T) {
	// Every route has an entry, with the access class the worker gives it
	// and the row that class calls for; every entry is a route.
	routes := handler.Routes()
	listed := map[string]bool{}
	for _, rt := range routes {
		name := rt.Method + " " + rt.Path
		listed[name] = true
		e, ok := authMatrix[name]
		if !ok {
			t.Errorf("new route without an auth-matrix entry: %s (access %s)", name, rt.Access)
			continue
		}
		if e.access != rt.Access {
			t.Errorf("%s: handler.Routes() says access %q, the matrix %q", name, rt.Access, e.access)
		}
		want := classRow(rt.Access, rt.Method)
		if name == "GET /admin/api/debug/panic" {
			want = rowAdminPanic
		}
		if e.row != want {
			t.Errorf("%s: the matrix row %v is not the one access %q calls for (%v)", name, e.row, rt.Access, want)
		}
	}
	for name := range authMatrix {
		if !listed[name] {
			t.Errorf("auth-matrix entry %s is not a route of handler.Routes()", name)
		}
	}

	names := make([]string, 0, len(authMatrix))
	for n := range authMatrix {
		names = append(names, n)
	}
	sort.Strings(names)
	type line struct {
		label string
		cells [numCreds]matrixCell
		row   expectRow
	}
	var lines []line
	for _, name := range names {
		e := authMatrix[name]
		for _, smp := range e.samples {
			ln := line{label: smp.method + " " + smp.path, row: e.row}
			for c := credKind(0); c < numCreds; c++ {
				status := s.matrixRequest(t, name, e, smp, c)
				ln.cells[c] = matrixCell{status: status, ok: e.row.ok(c, status)}
			}
			lines = append(lines, ln)
		}
	}

	var md strings.Builder
	md.WriteString("\n| route |")
	for _, n := range credNames {
		md.WriteString(" " + n + " |")
	}
	md.WriteString("\n|---|")
	for range credNames {
		md.WriteString("---|")
	}
	for _, ln := range lines {
		fmt.Fprintf(&md, "\n| `%s` |", ln.label)
		for c, cell := range ln.cells {
			if cell.ok {
				fmt.Fprintf(&md, " %d |", cell.status)
			} else {
				fmt.Fprintf(&md, " **%d** ✗ (want %s) |", cell.status, ln.row[c])
			}
		}
	}
	t.Logf("auth matrix (%s), status per route × credential:%s", s.build, md.String())

	s.pathTricks(t)
}

// matrixRequest makes one matrix request and checks its answer; it
// returns the status.
func (s *secSuite) matrixRequest(t *testing.T, name string, e matrixEntry, smp sample, c credKind) int {
	t.Helper()
	path, body := smp.path, smp.body
	var freshKey, newKey, newLabel, freshTokSecret string
	var freshKeyID, freshTokID int64
	switch {
	case strings.Contains(path+body, "{freshkey}"):
		freshKey = "sk-secd" + randomHex(16)
		freshKeyID = s.importKey(t, "openai", "matrix fresh", freshKey)
		path = strings.ReplaceAll(path, "{freshkey}", strconv.FormatInt(freshKeyID, 10))
		body = strings.ReplaceAll(body, "{freshkey}", strconv.FormatInt(freshKeyID, 10))
	case strings.Contains(path, "{freshtoken}"):
		freshTokID, freshTokSecret = s.createToken(t, map[string]any{"name": "matrix fresh"})
		path = strings.ReplaceAll(path, "{freshtoken}", strconv.FormatInt(freshTokID, 10))
	}
	if strings.Contains(body, "{newkey}") {
		newKey = "sk-secn" + randomHex(16)
		s.addSecret(newKey, "openai upstream key")
		body = strings.ReplaceAll(body, "{newkey}", newKey)
		// A label of its own: a masked key shows 9 characters, which another
		// key in the pool can share.
		newLabel = "matrix new " + randomHex(8)
		body = strings.ReplaceAll(body, "{newlabel}", newLabel)
	}
	rep := strings.NewReplacer("{key}", strconv.FormatInt(s.keyIDs[0], 10), "{keyid}", strconv.FormatInt(s.keyIDs[1], 10),
		"{token}", strconv.FormatInt(s.tokID, 10), "{job}", strconv.FormatInt(s.jobID, 10), "{request}", s.requestID,
		"{adminpw}", s.w.admin, "{guestpw}", s.guestPW)
	path, body = rep.Replace(path), rep.Replace(body)

	before := len(s.up.Requests())
	r := s.send(t, c, smp.method, path, body, sendOpts{allowSecret: smp.allowSecret && c.admin()})
	where := fmt.Sprintf("%s with %s", smp.method+" "+smp.path, credNames[c])
	if !e.row.ok(c, r.status) {
		t.Errorf("%s: %d, want %s: %s", where, r.status, e.row[c], tail(string(r.body), 300))
	}
	wantCT := "application/json"
	switch {
	case strings.Contains(path, "format=csv") && r.status == http.StatusOK:
		wantCT = "text/csv"
	case smp.path == "/admin/api/keys/export" && r.status == http.StatusOK:
		wantCT = "text/plain"
		if !strings.Contains(string(r.body), s.keyIDSecret) {
			t.Errorf("%s: the export does not hold the key asked for: %q", where, tail(string(r.body), 200))
		}
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), wantCT) {
		t.Errorf("%s: Content-Type %q, want %s", where, r.header.Get("Content-Type"), wantCT)
	}
	refused := r.status == http.StatusUnauthorized || r.status == http.StatusForbidden
	if refused {
		code := r.json().Get("error.code").String()
		if code == "" {
			t.Errorf("%s: %d without an error code: %s", where, r.status, r.body)
		}
		switch {
		case r.status == http.StatusUnauthorized && e.access == handler.Admin || e.access == handler.Debug && r.status == http.StatusUnauthorized:
			if code != "invalid_admin_password" || !strings.Contains(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: 401 code %q, WWW-Authenticate %q", where, code, r.header.Get("WWW-Authenticate"))
			}
		case r.status == http.StatusForbidden && (e.access == handler.Admin || e.access == handler.Debug):
			if code != "csrf" {
				t.Errorf("%s: 403 code %q, want csrf", where, code)
			}
		case e.access == handler.Client && code != "missing_api_key" && code != "invalid_api_key":
			t.Errorf("%s: 401 code %q", where, code)
		case e.access == handler.Guest && code != "guest_login_required":
			t.Errorf("%s: 401 code %q", where, code)
		}
		// A refused client request never reaches the upstream.
		if n := len(s.up.Requests()) - before; n > 0 {
			t.Errorf("%s: refused, yet %d requests reached the upstream", where, n)
		}
	}
	// A refused change changed nothing.
	ok2xx := r.status/100 == 2
	if freshKey != "" {
		g := s.admin(t, "GET", "/admin/api/keys/"+strconv.FormatInt(freshKeyID, 10), "", 0)
		if !ok2xx && g.status != http.StatusOK {
			t.Errorf("%s: refused (%d), yet the key is gone (%d)", where, r.status, g.status)
		}
		if ok2xx && g.status != http.StatusNotFound {
			t.Errorf("%s: deleted, yet the key reads %d", where, g.status)
		}
	}
	if freshTokSecret != "" {
		g := s.send(t, credNone, "GET", "/v1/models", "", sendOpts{header: map[string]string{"Authorization": "Bearer " + freshTokSecret}})
		if !ok2xx && g.status != http.StatusOK {
			t.Errorf("%s: refused (%d), yet the token no longer works (%d)", where, r.status, g.status)
		}
		if ok2xx && g.status != http.StatusUnauthorized {
			t.Errorf("%s: deleted, yet the token still answers %d", where, g.status)
		}
	}
	if newKey != "" {
		found := false
		for _, k := range s.admin(t, "GET", "/admin/api/keys?provider=openai", "", http.StatusOK).json().Get("keys").Array() {
			found = found || k.Get("label").String() == newLabel && k.Get("key").String() == mask(newKey)
		}
		if found != ok2xx {
			t.Errorf("%s: answered %d, and the key is in the pool: %v", where, r.status, found)
		}
	}
	if ok2xx && smp.path == "/admin/api/tokens" {
		s.addSecret(r.json().Get("token").String(), "client token")
	}
	if ok2xx && smp.path == "/admin/api/sessions/revoke" || smp.path == "/admin/logout" && (c == credSessionNoCSRF || c == credSession) {
		s.renewSessions(t) // the sessions ended, as asked
	}
	return r.status
}

// pathTricks: requests that try to reach an admin route by another
// spelling of its path, or with the admin password where it is not asked.
func (s *secSuite) pathTricks(t *testing.T) {
	tricks := []struct {
		what, method, path string
		header             map[string]string
		refuse             bool // must not be 2xx
	}{
		{"dot-dot from /v1 with AUTH_KEY", "GET", "/v1/../admin/api/keys", map[string]string{"Authorization": "Bearer " + s.w.token}, true},
		{"encoded dot-dot from /v1 with AUTH_KEY", "GET", "/v1/%2e%2e/admin/api/keys", map[string]string{"Authorization": "Bearer " + s.w.token}, true},
		{"encoded slash dot-dot from /v1 with AUTH_KEY", "GET", "/v1/..%2fadmin/api/keys", map[string]string{"Authorization": "Bearer " + s.w.token}, true},
		{"trailing slash, no credential", "GET", "/admin/api/keys/", nil, true},
		{"double slash, no credential", "GET", "/admin/api//keys", nil, true},
		{"upper case, no credential", "GET", "/ADMIN/api/keys", nil, true},
		{"admin password as x-api-key", "GET", "/admin/api/keys", map[string]string{"X-Api-Key": s.w.admin}, true},
		{"admin password as Basic", "GET", "/admin/api/keys", map[string]string{"Authorization": "Basic " + s.w.admin}, true},
		{"guest cookie renamed kp_admin", "GET", "/admin/api/keys", map[string]string{"Cookie": "kp_admin=" + s.guestCookie}, true},
		{"admin cookie renamed kp_guest", "GET", "/guest/api/summary", map[string]string{"Cookie": "kp_guest=" + s.adminCookie}, false},
		{"admin cookie + wrong bearer", "GET", "/admin/api/keys", map[string]string{"Cookie": "kp_admin=" + s.adminCookie, "Authorization": "Bearer " + s.wrongAdmin}, true},
		{"AUTH_KEY as admin session cookie", "GET", "/admin/api/keys", map[string]string{"Cookie": "kp_admin=" + s.w.token}, true},
		{"guest summary with trailing slash, guest cookie", "GET", "/guest/api/summary/", map[string]string{"Cookie": "kp_guest=" + s.guestCookie}, true},
		{"admin cookie, DELETE with an empty CSRF header", "DELETE", "/admin/api/keys/" + strconv.FormatInt(s.keyIDs[2], 10),
			map[string]string{"Cookie": "kp_admin=" + s.adminCookie, "X-Keypool-CSRF": ""}, true},
	}
	for _, tr := range tricks {
		r := s.raw(t, tr.method, tr.path, tr.header, "")
		t.Logf("attack %-45s %s %s → %d %s", tr.what+":", tr.method, tr.path, r.status, r.json().Get("error.code").String())
		if tr.refuse && r.status/100 == 2 {
			t.Errorf("attack %q: %s %s answered %d: %s", tr.what, tr.method, tr.path, r.status, tail(string(r.body), 300))
		}
		if tr.what == "admin cookie renamed kp_guest" && r.status != http.StatusUnauthorized {
			t.Errorf("attack %q: %d, want 401 (restricted mode, no guest session)", tr.what, r.status)
		}
	}
	// The key the CSRF attempt aimed at is still there.
	s.admin(t, "GET", "/admin/api/keys/"+strconv.FormatInt(s.keyIDs[2], 10), "", http.StatusOK)
	// A client request's Cookie (an admin session) is not sent upstream.
	before := len(s.up.Requests())
	r := s.raw(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + s.w.token,
		"Cookie": "kp_admin=" + s.adminCookie + "; kp_guest=" + s.guestCookie}, chatBody)
	if r.status != http.StatusOK {
		t.Fatalf("chat with cookies: %d %s", r.status, r.body)
	}
	for _, q := range s.up.Requests()[before:] {
		if q.Header.Get("Cookie") != "" {
			t.Errorf("a client's Cookie header went upstream: %q", q.Header.Get("Cookie"))
		}
	}
}

// jsonOutsideStrings returns a JSON text with every string's contents
// removed, leaving its structure.
func jsonOutsideStrings(b []byte) []byte {
	var out []byte
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if in {
			if c == '\\' {
				i++
				continue
			}
			if c == '"' {
				in = false
				out = append(out, c)
			}
			continue
		}
		if c == '"' {
			in = true
		}
		out = append(out, c)
	}
	return out
}

var xssPayloads = []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(1)>`}

// checkJSONData checks that an answer holding stored markup carries it as
// JSON data only: a JSON content type, nosniff, a body that parses, no
// markup outside strings, and (keypool escapes <, > and &) no raw markup
// at all.
func checkJSONData(t *testing.T, what string, r response) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	// An upstream's answer passed through keeps the upstream's headers.
	if r.header.Get("X-Content-Type-Options") != "nosniff" && !strings.Contains(what, "upstream") {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, r.header.Get("X-Content-Type-Options"))
	}
	if !gjson.ValidBytes(r.body) {
		t.Errorf("%s: the body is not valid JSON: %s", what, tail(string(r.body), 400))
		return
	}
	if out := jsonOutsideStrings(r.body); bytes.ContainsAny(out, "<>") {
		t.Errorf("%s: markup outside JSON strings: %s", what, tail(string(out), 400))
	}
	for _, p := range xssPayloads {
		if bytes.Contains(r.body, []byte(p)) {
			t.Errorf("%s: the payload %s appears raw in the body", what, p)
		}
	}
	if bytes.Contains(r.body, []byte(`"><`)) {
		t.Errorf("%s: an unescaped quote ends a string before markup: %s", what, tail(string(r.body), 400))
	}
}

func (s *secSuite) testXSSAsData(t *testing.T) {
	type stored struct {
		payload string
		keyID   int64
		keyMask string
		tokID   int64
	}
	var all []stored
	for i, p := range xssPayloads {
		secret := "sk-xss" + strconv.Itoa(i) + randomHex(16)
		id := s.importKey(t, "deepseek", p, secret)
		tokID, _ := s.createToken(t, map[string]any{"name": p})
		all = append(all, stored{payload: p, keyID: id, keyMask: mask(secret), tokID: tokID})
	}
	aliases := map[string]string{}
	var free []string
	for _, p := range xssPayloads {
		aliases[p] = "openai/gpt-4o-mini"
		free = append(free, "mistral/"+p)
	}
	r := s.admin(t, "PUT", "/admin/api/settings", jsonBody(map[string]any{"aliases": aliases, "free_models": free}), http.StatusOK)
	checkJSONData(t, "PUT settings answer", r)

	// A model name in a request: the only mistral key is rate-limited for
	// each payload model, so the model is stored in the key's state.
	mistral := "sk-mxss" + randomHex(16)
	mistralID := s.importKey(t, "mistral", "xss models", mistral)
	for _, p := range xssPayloads {
		errBody := jsonBody(map[string]any{"error": map[string]any{"message": "Rate limit reached for " + p, "type": "requests", "code": "rate_limit_exceeded"}})
		s.up.SetRule(mistral, fakeupstream.Rule{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "120"},
			Body: errBody, Models: []string{p}})
		r := s.send(t, credAuthKey, "POST", "/v1/chat/completions", chatWith("mistral/"+p), sendOpts{})
		t.Logf("chat with model mistral/%s → %d %s", p, r.status, tail(string(r.body), 200))
		if r.status != http.StatusTooManyRequests {
			t.Errorf("rate-limited payload model: %d, want 429", r.status)
		}
		checkJSONData(t, "chat with a payload model (upstream 429)", r)
		// The alias named by the payload resolves and serves.
		r = s.send(t, credAuthKey, "POST", "/v1/chat/completions", chatWith(p), sendOpts{})
		if r.status != http.StatusOK || r.json().Get("model").String() != "gpt-4o-mini" {
			t.Errorf("chat with the payload alias: %d %s", r.status, r.body)
		}
	}
	s.up.ClearRule(mistral)
	eventually(t, "payload models stored on the mistral key", func() bool {
		k := s.admin(t, "GET", "/admin/api/keys/"+strconv.FormatInt(mistralID, 10), "", http.StatusOK).json()
		return k.Get("models.#").Int() == int64(len(xssPayloads))
	})

	// A token scoped elsewhere is refused the payload model; the refusal
	// names it as data.
	_, scoped := s.createToken(t, map[string]any{"name": "xss scoped", "providers": []string{"openai"}, "models": []string{"gpt-4o*"}})
	for _, p := range xssPayloads {
		r := s.send(t, credNone, "POST", "/v1/chat/completions", chatWith("openai/"+p), sendOpts{header: map[string]string{"Authorization": "Bearer " + scoped}})
		if r.status != http.StatusForbidden || !strings.Contains(r.json().Get("error.message").String(), strconv.Quote(p)) {
			t.Errorf("scoped token, payload model: %d %s", r.status, r.body)
		}
		checkJSONData(t, "403 naming the payload model", r)
	}

	// Read everything back.
	keysList := s.admin(t, "GET", "/admin/api/keys?provider=deepseek", "", http.StatusOK)
	checkJSONData(t, "GET /admin/api/keys", keysList)
	tokList := s.admin(t, "GET", "/admin/api/tokens", "", http.StatusOK)
	checkJSONData(t, "GET /admin/api/tokens", tokList)
	for _, st := range all {
		var label gjson.Result
		for _, k := range keysList.json().Get("keys").Array() {
			if k.Get("id").Int() == st.keyID {
				label = k.Get("label")
			}
		}
		if label.String() != st.payload {
			t.Errorf("keys list: label %q, want %q", label.String(), st.payload)
		}
		one := s.admin(t, "GET", "/admin/api/keys/"+strconv.FormatInt(st.keyID, 10), "", http.StatusOK)
		checkJSONData(t, "GET /admin/api/keys/{id}", one)
		if got := one.json().Get("label").String(); got != st.payload {
			t.Errorf("key: label %q, want %q", got, st.payload)
		}
		var name gjson.Result
		for _, tk := range tokList.json().Get("tokens").Array() {
			if tk.Get("id").Int() == st.tokID {
				name = tk.Get("name")
			}
		}
		if name.String() != st.payload {
			t.Errorf("tokens list: name %q, want %q", name.String(), st.payload)
		}
		tk := s.admin(t, "GET", "/admin/api/tokens/"+strconv.FormatInt(st.tokID, 10), "", http.StatusOK)
		checkJSONData(t, "GET /admin/api/tokens/{id}", tk)
		if got := tk.json().Get("name").String(); got != st.payload {
			t.Errorf("token: name %q, want %q", got, st.payload)
		}
	}
	set := s.admin(t, "GET", "/admin/api/settings", "", http.StatusOK)
	checkJSONData(t, "GET /admin/api/settings", set)
	gotAliases := map[string]string{}
	set.json().Get("aliases").ForEach(func(k, v gjson.Result) bool { gotAliases[k.String()] = v.String(); return true })
	var gotFree []string
	for _, f := range set.json().Get("free_models").Array() {
		gotFree = append(gotFree, f.String())
	}
	for _, p := range xssPayloads {
		if gotAliases[p] != "openai/gpt-4o-mini" {
			t.Errorf("settings: alias %q → %q, want openai/gpt-4o-mini (aliases %v)", p, gotAliases[p], gotAliases)
		}
		found := false
		for _, f := range gotFree {
			found = found || f == "mistral/"+p
		}
		if !found {
			t.Errorf("settings: free_models %q lacks mistral/%s", gotFree, p)
		}
	}
	mk := s.admin(t, "GET", "/admin/api/keys?provider=mistral", "", http.StatusOK)
	checkJSONData(t, "GET /admin/api/keys?provider=mistral", mk)
	checkModels := func(what string, models gjson.Result) {
		got := map[string]bool{}
		for _, m := range models.Array() {
			got[m.Get("model").String()] = true
		}
		for _, p := range xssPayloads {
			if !got[p] {
				t.Errorf("%s: model state for %q missing: %s", what, p, models.Raw)
			}
		}
	}
	for _, k := range mk.json().Get("keys").Array() {
		if k.Get("id").Int() == mistralID {
			checkModels("admin keys list, mistral key", k.Get("models"))
		}
	}
	models := s.send(t, credAuthKey, "GET", "/v1/models", "", sendOpts{})
	checkJSONData(t, "GET /v1/models", models)
	ids := map[string]bool{}
	for _, m := range models.json().Get("data").Array() {
		ids[m.Get("id").String()] = true
	}
	for _, p := range xssPayloads {
		if !ids[p] || !ids["mistral/"+p] {
			t.Errorf("/v1/models lacks the alias %q (%v) or the free model mistral/%s (%v): %s", p, ids[p], p, ids["mistral/"+p], tail(string(models.body), 600))
		}
	}

	// The guest page, open to anyone.
	s.admin(t, "PUT", "/admin/api/settings", `{"access_mode":"open"}`, http.StatusOK)
	g := s.send(t, credNone, "GET", "/guest/api/summary?page_size=500", "", sendOpts{})
	checkJSONData(t, "GET /guest/api/summary (open)", g)
	if g.status != http.StatusOK {
		t.Fatalf("open guest summary: %d %s", g.status, g.body)
	}
	labels := map[int64]string{}
	for _, k := range g.json().Get("keys").Array() {
		labels[k.Get("id").Int()] = k.Get("label").String()
		if k.Get("id").Int() == mistralID {
			checkModels("guest summary, mistral key", k.Get("models"))
		}
	}
	for _, st := range all {
		if labels[st.keyID] != st.payload {
			t.Errorf("guest summary: label of key %d %q, want %q", st.keyID, labels[st.keyID], st.payload)
		}
	}
	s.checkStats(t)
	audit := s.admin(t, "GET", "/admin/api/audit?limit=200", "", http.StatusOK)
	checkJSONData(t, "GET /admin/api/audit", audit)
	s.admin(t, "PUT", "/admin/api/settings", `{"access_mode":"restricted"}`, http.StatusOK)
	if r := s.send(t, credNone, "GET", "/guest/api/summary", "", sendOpts{}); r.status != http.StatusUnauthorized {
		t.Errorf("guest summary back in restricted mode, no session: %d, want 401", r.status)
	}
}

// checkStats: the usage statistics grouped by model hold the payload
// models as data, in JSON and in CSV, where model names that a
// spreadsheet would run as formulas are defused.
func (s *secSuite) checkStats(t *testing.T) {
	formulas := []string{"=1+2", "@SUM(1+1)", "+1+1", "-1+1", "=HYPERLINK(\"http://x.invalid\",\"y\")"}
	for _, f := range formulas {
		if r := s.send(t, credAuthKey, "POST", "/v1/chat/completions", chatWith("openai/"+f), sendOpts{}); r.status/100 == 5 {
			t.Errorf("chat with model %q: %d %s", f, r.status, r.body)
		}
	}
	js := s.admin(t, "GET", "/admin/api/stats?group=model", "", http.StatusOK)
	checkJSONData(t, "GET /admin/api/stats?group=model", js)
	models := map[string]bool{}
	for _, p := range js.json().Get("points").Array() {
		models[p.Get("model").String()] = true
	}
	// Grouped by model, a point is named "provider/model".
	var want []string
	for _, p := range xssPayloads {
		want = append(want, "mistral/"+p)
	}
	for _, f := range formulas {
		want = append(want, "openai/"+f)
	}
	for _, m := range want {
		if !models[m] {
			t.Errorf("stats by model: no point for model %q (models: %v)", m, models)
		}
	}
	c := s.admin(t, "GET", "/admin/api/stats?group=model&format=csv", "", http.StatusOK)
	if ct := c.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("stats CSV: Content-Type %q", ct)
	}
	if cd := c.header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
		t.Errorf("stats CSV: Content-Disposition %q, want attachment", cd)
	}
	if c.header.Get("X-Content-Type-Options") != "nosniff" {
		s.finding(t, "GET /admin/api/stats?format=csv has no X-Content-Type-Options: nosniff (every JSON answer has it; the CSV is sent as an attachment, so a browser downloads it rather than rendering it)")
	}
	recs, err := csv.NewReader(bytes.NewReader(c.body)).ReadAll()
	if err != nil || len(recs) < 2 {
		t.Fatalf("stats CSV does not parse (%v): %s", err, c.body)
	}
	col := -1
	for i, h := range recs[0] {
		if h == "model" {
			col = i
		}
	}
	if col < 0 {
		t.Fatalf("stats CSV has no model column: %v", recs[0])
	}
	got := map[string]bool{}
	for _, rec := range recs[1:] {
		v := rec[col]
		got[v] = true
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			t.Errorf("stats CSV: a model field a spreadsheet would run as a formula: %q", v)
		}
	}
	// The provider leads every model field, so no client-chosen model
	// name can start a field; the formula check above still guards it.
	for _, m := range want {
		if !got[m] {
			t.Errorf("stats CSV: model %q missing", m)
		}
	}
	t.Logf("stats CSV, model column: %q", func() []string {
		var out []string
		for _, rec := range recs[1:] {
			out = append(out, rec[col])
		}
		return out
	}())
}

func (s *secSuite) testTokens(t *testing.T) {
	chat := func(tok, body string) response {
		t.Helper()
		return s.send(t, credNone, "POST", "/v1/chat/completions", body, sendOpts{header: map[string]string{"Authorization": "Bearer " + tok}})
	}
	// refused checks an answer's status and code, and that the upstream
	// was not asked.
	refused := func(what string, status int, code string, do func() response) response {
		t.Helper()
		before := len(s.up.Requests())
		r := do()
		if r.status != status || r.json().Get("error.code").String() != code {
			t.Errorf("%s: %d %s, want %d %s: %s", what, r.status, r.json().Get("error.code").String(), status, code, r.body)
		}
		if n := len(s.up.Requests()) - before; n > 0 {
			t.Errorf("%s: refused, yet %d requests reached the upstream", what, n)
		}
		t.Logf("%-50s → %d %s", what, r.status, r.json().Get("error.code").String())
		return r
	}
	served := func(what string, r response) {
		t.Helper()
		if r.status != http.StatusOK {
			t.Errorf("%s: %d, want 200: %s", what, r.status, r.body)
		}
	}

	// Scope: provider openai, models gpt-4o*.
	_, scoped := s.createToken(t, map[string]any{"name": "scoped", "providers": []string{"openai"}, "models": []string{"gpt-4o*"}})
	served("scoped: gpt-4o-mini", chat(scoped, chatBody))
	served("scoped: openai/gpt-4o", chat(scoped, chatWith("openai/gpt-4o")))
	served("scoped: native openai gpt-4o-mini", s.send(t, credNone, "POST", "/api/openai/chat/completions", chatBody,
		sendOpts{header: map[string]string{"X-Api-Key": scoped}}))
	refused("scoped: other model gpt-3.5-turbo", 403, "model_not_allowed", func() response { return chat(scoped, chatWith("gpt-3.5-turbo")) })
	refused("scoped: other provider groq", 403, "provider_not_allowed", func() response { return chat(scoped, chatWith("groq/llama-3.1-8b-instant")) })
	refused("scoped: native groq", 403, "provider_not_allowed", func() response {
		return s.send(t, credNone, "POST", "/api/groq/chat/completions", chatWith("llama-3.1-8b-instant"),
			sendOpts{header: map[string]string{"Authorization": "Bearer " + scoped}})
	})
	refused("scoped: native openai, other model", 403, "model_not_allowed", func() response {
		return s.send(t, credNone, "POST", "/api/openai/chat/completions", chatWith("gpt-3.5-turbo"),
			sendOpts{header: map[string]string{"Authorization": "Bearer " + scoped}})
	})
	refused("scoped: model in the path GET /v1/models/gpt-3.5-turbo", 403, "model_not_allowed", func() response {
		return s.send(t, credNone, "GET", "/v1/models/gpt-3.5-turbo", "", sendOpts{header: map[string]string{"Authorization": "Bearer " + scoped}})
	})
	// An alias whose name matches the scope does not widen it: the scope
	// applies to what the alias resolves to.
	s.admin(t, "PUT", "/admin/api/settings", `{"aliases":{"gpt-4o-sneaky":"openai/gpt-3.5-turbo","gpt-4o-groq":"groq/llama-3.1-8b-instant"}}`, http.StatusOK)
	refused("scoped: alias gpt-4o-sneaky → openai/gpt-3.5-turbo", 403, "model_not_allowed", func() response { return chat(scoped, chatWith("gpt-4o-sneaky")) })
	refused("scoped: alias gpt-4o-groq → groq/…", 403, "provider_not_allowed", func() response { return chat(scoped, chatWith("gpt-4o-groq")) })
	if r := s.send(t, credNone, "GET", "/v1/models", "", sendOpts{header: map[string]string{"Authorization": "Bearer " + scoped}}); r.status == http.StatusOK {
		var other []string
		for _, m := range r.json().Get("data").Array() {
			if id := m.Get("id").String(); !strings.HasPrefix(id, "gpt-4o") && !strings.HasPrefix(id, "openai/gpt-4o") {
				other = append(other, id)
			}
		}
		if len(other) > 0 {
			s.finding(t, "GET /v1/models with a token scoped to openai/gpt-4o* lists models outside its scope (%d, e.g. %q): the list is not filtered by scope (information only; calls to them are refused)", len(other), other[0])
		}
	}

	// Daily request quota 2: the third request is refused until midnight UTC.
	dailyID, daily := s.createToken(t, map[string]any{"name": "daily", "requests_day": 2})
	served("requests_day 2: 1st", chat(daily, chatBody))
	served("requests_day 2: 2nd", chat(daily, chatBody))
	r := refused("requests_day 2: 3rd", 429, "quota_exceeded", func() response { return chat(daily, chatBody) })
	if r.status == http.StatusOK {
		// Tell how far past its quota the token gets, and whether the
		// quota holds once the token's cached record (CACHE_SECONDS, 5 s
		// by default) is read again.
		extra := 1
		for ; extra < 10; extra++ {
			if chat(daily, chatBody).status != http.StatusOK {
				break
			}
		}
		row := s.w.query(t, "SELECT day_requests, used_requests FROM tokens WHERE id = "+strconv.FormatInt(dailyID, 10))
		time.Sleep(6 * time.Second)
		later := chat(daily, chatBody)
		t.Logf("requests_day 2: %d requests past the quota were served in a row; D1 then held %v; 6 s later the next request → %d %s",
			extra, row, later.status, later.json().Get("error.code"))
		if later.status == http.StatusTooManyRequests {
			r = later
		}
	}
	now := time.Now().UTC()
	untilMidnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC).Sub(now)
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra <= 0 || float64(ra) > untilMidnight.Seconds()+5 || float64(ra) < untilMidnight.Seconds()-60 {
		t.Errorf("requests_day: Retry-After %q, want about %v (midnight UTC)", r.header.Get("Retry-After"), untilMidnight.Round(time.Second))
	}

	// A burst: 8 requests at once on a daily quota of 3. How many get
	// through tells how exact the quota is within one isolate.
	_, burst := s.createToken(t, map[string]any{"name": "burst", "requests_day": 3})
	var wg sync.WaitGroup
	var bmu sync.Mutex
	counts := map[int]int{}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := chat(burst, chatBody)
			bmu.Lock()
			counts[r.status]++
			bmu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("burst of 8 concurrent requests on requests_day 3: statuses %v", counts)
	if counts[http.StatusOK] > 3 {
		t.Errorf("a burst of 8 concurrent requests on a token with requests_day 3: %d served (statuses %v), want at most 3", counts[http.StatusOK], counts)
	}

	// Total request quota 2: the third request is refused for good.
	_, total := s.createToken(t, map[string]any{"name": "total", "requests_total": 2})
	served("requests_total 2: 1st", chat(total, chatBody))
	served("requests_total 2: 2nd", chat(total, chatBody))
	r = refused("requests_total 2: 3rd", 429, "quota_exceeded", func() response { return chat(total, chatBody) })
	if r.status == http.StatusTooManyRequests && r.header.Get("Retry-After") != "" {
		t.Errorf("requests_total: Retry-After %q on a quota that never resets", r.header.Get("Retry-After"))
	}

	// Rate limit 2 a minute.
	_, rpm := s.createToken(t, map[string]any{"name": "rpm", "rpm": 2})
	served("rpm 2: 1st", chat(rpm, chatBody))
	served("rpm 2: 2nd", chat(rpm, chatBody))
	r = refused("rpm 2: 3rd", 429, "rate_limited", func() response { return chat(rpm, chatBody) })
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("rpm: Retry-After %q, want 1–60", r.header.Get("Retry-After"))
	}

	// Disabled: refused at once, and served again when enabled.
	disID, dis := s.createToken(t, map[string]any{"name": "to disable"})
	served("to disable: before", chat(dis, chatBody))
	s.send(t, credSession, "PATCH", "/admin/api/tokens/"+strconv.FormatInt(disID, 10), `{"disabled":true}`, sendOpts{})
	refused("disabled token", 401, "token_disabled", func() response { return chat(dis, chatBody) })
	refused("disabled token as x-goog-api-key", 401, "token_disabled", func() response {
		return s.send(t, credNone, "GET", "/v1/models", "", sendOpts{header: map[string]string{"X-Goog-Api-Key": dis}})
	})
	s.admin(t, "PATCH", "/admin/api/tokens/"+strconv.FormatInt(disID, 10), `{"disabled":false}`, http.StatusOK)
	served("re-enabled token", chat(dis, chatBody))

	// Deleted: refused at once.
	delID, del := s.createToken(t, map[string]any{"name": "to delete"})
	served("to delete: before", chat(del, chatBody))
	s.admin(t, "DELETE", "/admin/api/tokens/"+strconv.FormatInt(delID, 10), "", http.StatusOK)
	refused("deleted token", 401, "invalid_api_key", func() response { return chat(del, chatBody) })

	// Expired: expires_at in the past.
	expID, exp := s.createToken(t, map[string]any{"name": "to expire", "expires_in_days": 1})
	served("to expire: before", chat(exp, chatBody))
	past := time.Now().Add(-time.Hour).UnixMilli()
	s.admin(t, "PATCH", "/admin/api/tokens/"+strconv.FormatInt(expID, 10), `{"expires_at":`+strconv.FormatInt(past, 10)+`}`, http.StatusOK)
	refused("expired token", 401, "token_expired", func() response { return chat(exp, chatBody) })

	// A token's look-alike: right prefix, one character changed.
	flipped := []byte(s.clientTok)
	flipped[len(flipped)-1] ^= 1
	refused("client token with its last character changed", 401, "invalid_api_key", func() response { return chat(string(flipped), chatBody) })
	refused("client token with one character appended", 401, "invalid_api_key", func() response { return chat(s.clientTok+"x", chatBody) })
}

// loginFrom posts a login with password from ip.
func (s *secSuite) loginFrom(t testing.TB, w *worker, ip, password string) response {
	t.Helper()
	h := map[string]string{}
	if ip != "" {
		h["CF-Connecting-IP"] = ip
	}
	r := w.do(t, "POST", "/admin/login", h, `{"password":`+jsonString(password)+`}`)
	s.record(false, false, credNone, "POST", "/admin/login", r)
	return r
}

func (s *secSuite) testLogin(t *testing.T) {
	// Throttling: 5 failures from one address, then even the right
	// password is refused with 429 and Retry-After.
	tw, ip := s.w, "198.51.100.23"
	if !s.ipHonored {
		// Every request comes from 127.0.0.1 as the worker sees it: lock
		// that out on a worker of its own, so that this one stays usable.
		t.Logf("the worker does not see the CF-Connecting-IP the test sends: throttling runs on a second worker")
		tw, ip = startWorker(t, s.build, s.up, map[string]string{"USAGE_FLUSH_SECONDS": "0", "KEYPOOL_SECRET": s.kpSecret}), ""
		s.addSecret(tw.admin, "ADMIN_PASSWORD (second worker)")
		s.addSecret(tw.token, "AUTH_KEY (second worker)")
	}
	for i := 1; i <= 5; i++ {
		r := s.loginFrom(t, tw, ip, "wrong-"+randomHex(8))
		if r.status != http.StatusUnauthorized || r.json().Get("error.code").String() != "invalid_admin_password" {
			t.Errorf("wrong password %d: %d %s, want 401 invalid_admin_password", i, r.status, r.body)
		}
		if _, c := setCookieLine(r, "kp_admin"); c != nil {
			t.Errorf("wrong password %d set a session cookie", i)
		}
	}
	r := s.loginFrom(t, tw, ip, tw.admin)
	t.Logf("6th login, right password, after 5 failures: %d %s Retry-After %q", r.status, r.json().Get("error.code"), r.header.Get("Retry-After"))
	if r.status != http.StatusTooManyRequests || r.json().Get("error.code").String() != "login_throttled" {
		t.Errorf("6th login with the right password: %d %s, want 429 login_throttled", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 900 {
		t.Errorf("throttled login: Retry-After %q, want 1–900", r.header.Get("Retry-After"))
	}
	if _, c := setCookieLine(r, "kp_admin"); c != nil {
		t.Errorf("a throttled login set a session cookie")
	}
	// The same password as a bearer token on the admin API, from the
	// throttled address: is guessing it there throttled too?
	h := map[string]string{}
	if ip != "" {
		h["CF-Connecting-IP"] = ip
	}
	var bearerStatuses []int
	for i := 0; i < 6; i++ {
		h["Authorization"] = "Bearer wrong-" + randomHex(8)
		rr := tw.do(t, "GET", "/admin/api/keys", h, "")
		s.record(false, false, credWrongAdmin, "GET", "/admin/api/keys", rr)
		bearerStatuses = append(bearerStatuses, rr.status)
	}
	h["Authorization"] = "Bearer " + tw.admin
	rr := tw.do(t, "GET", "/admin/api/keys", h, "")
	s.record(true, false, credAdminPassword, "GET", "/admin/api/keys", rr)
	t.Logf("from the throttled address: 6 wrong bearer passwords on /admin/api/keys → %v, then the right one → %d", bearerStatuses, rr.status)
	if rr.status == http.StatusOK && bearerStatuses[5] == http.StatusUnauthorized {
		s.finding(t, "login throttling covers only POST /admin/login: from an address locked out there, `Authorization: Bearer <guess>` on /admin/api/* is answered 401 for every wrong guess (%v) and 200 for the right one, without limit, so the admin password can be guessed there at full speed", bearerStatuses)
	}
	if !s.ipHonored {
		// The rest needs a fresh address: the main worker's.
		ip = ""
	} else {
		ip = "198.51.100.99"
	}

	// A successful login from a fresh address: the cookie's attributes.
	cookie, csrf, lr := s.adminLogin(t, ip)
	line, c := setCookieLine(lr, "kp_admin")
	t.Logf("Set-Cookie: %s", strings.Replace(line, cookie, mask(cookie), 1))
	attrs := map[string]bool{}
	for _, a := range strings.Split(line, ";")[1:] {
		attrs[strings.ToLower(strings.TrimSpace(a))] = true
	}
	for _, a := range []string{"httponly", "samesite=strict", "path=/"} {
		if !attrs[a] {
			t.Errorf("session cookie lacks %s: %s", a, strings.Replace(line, cookie, mask(cookie), 1))
		}
	}
	if c.Secure {
		t.Errorf("session cookie is Secure on plain-HTTP 127.0.0.1: %s", line)
	}
	if c.MaxAge <= 0 || c.MaxAge > 30*24*3600 {
		t.Errorf("session cookie Max-Age %d", c.MaxAge)
	}
	if lr.header.Get("Cache-Control") != "no-store" {
		t.Errorf("login answer Cache-Control %q, want no-store", lr.header.Get("Cache-Control"))
	}
	for secret, what := range s.secrets {
		if strings.Contains(what, "session cookie") {
			continue
		}
		if strings.Contains(cookie, secret) {
			t.Errorf("the session cookie holds the %s", what)
		}
	}
	// On another host name the cookie is Secure.
	if sc := s.secureOnOtherHost(t, ip); sc != "" {
		t.Logf("login with Host keypool.example.com: Set-Cookie attributes %s", sc)
		if !strings.Contains(sc, "Secure") {
			t.Errorf("session cookie for Host keypool.example.com lacks Secure: %s", sc)
		}
	}
	withCookie := func(v string, extra map[string]string) map[string]string {
		h := map[string]string{"Cookie": "kp_admin=" + v}
		for k, x := range extra {
			h[k] = x
		}
		return h
	}
	if r := s.raw(t, "GET", "/admin/api/keys", withCookie(cookie, nil), ""); r.status != http.StatusOK {
		t.Fatalf("the new session: %d %s", r.status, r.body)
	}
	// Tampering: any changed character, a dropped signature, an extended
	// expiry, another role.
	flip := func(v string, i int) string {
		b := []byte(v)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	dot := strings.LastIndexByte(cookie, '.')
	parts := strings.Split(cookie[:dot], "~")
	tampered := map[string]string{
		"last character flipped":    flip(cookie, len(cookie)-1),
		"first character flipped":   flip(cookie, 0),
		"signature's first flipped": flip(cookie, dot+1),
		"signature dropped":         cookie[:dot],
		"signature empty":           cookie[:dot+1],
		"expiry extended":           strings.Join(append([]string{parts[0], strconv.FormatInt(time.Now().Add(365*24*time.Hour).Unix(), 10)}, parts[2:]...), "~") + cookie[dot:],
		"role g":                    "g" + cookie[1:],
		"csrf changed":              strings.Join(append(parts[:len(parts)-1:len(parts)-1], randomHex(16)), "~") + cookie[dot:],
	}
	names := make([]string, 0, len(tampered))
	for n := range tampered {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := s.raw(t, "GET", "/admin/api/keys", withCookie(tampered[n], nil), "")
		t.Logf("tampered cookie (%s) → %d %s", n, r.status, r.json().Get("error.code"))
		if r.status != http.StatusUnauthorized {
			t.Errorf("tampered cookie (%s): %d, want 401", n, r.status)
		}
	}
	// CSRF: another session's token, none, and the right one.
	_, csrf2, _ := s.adminLogin(t, ip)
	target := "/admin/api/keys/" + strconv.FormatInt(s.keyIDs[2], 10)
	for _, tc := range []struct {
		what, csrf string
		want       int
	}{{"another session's CSRF token", csrf2, 403}, {"no CSRF token", "", 403}, {"CSRF token with a changed character", flip(csrf, 0), 403}, {"its own CSRF token", csrf, 200}} {
		hd := map[string]string{}
		if tc.csrf != "" {
			hd["X-Keypool-CSRF"] = tc.csrf
		}
		r := s.raw(t, "PATCH", target, withCookie(cookie, hd), `{"label":"csrf test"}`)
		t.Logf("PATCH with the session cookie and %s → %d %s", tc.what, r.status, r.json().Get("error.code"))
		if r.status != tc.want {
			t.Errorf("PATCH with %s: %d, want %d: %s", tc.what, r.status, tc.want, r.body)
		}
	}
	// Logout clears the cookies.
	lo := s.raw(t, "POST", "/admin/logout", withCookie(cookie, nil), "")
	if lo.status != http.StatusOK {
		t.Errorf("logout: %d %s", lo.status, lo.body)
	}
	t.Logf("logout Set-Cookie: %q", lo.header.Values("Set-Cookie"))
	for _, name := range []string{"kp_admin", "kp_guest"} {
		line, c := setCookieLine(lo, name)
		if c == nil || c.Value != "" || c.MaxAge >= 0 || !strings.Contains(line, "HttpOnly") || !strings.Contains(line, "Path=/") {
			t.Errorf("logout does not clear %s: %q", name, lo.header.Values("Set-Cookie"))
		}
	}
	// The cookie is signed, not stored: does a copy kept from before the
	// logout still work?
	if r := s.raw(t, "GET", "/admin/api/keys", withCookie(cookie, nil), ""); r.status == http.StatusOK {
		s.finding(t, "POST /admin/logout only tells the browser to drop the cookie; a copy of the session cookie taken before the logout still works (GET /admin/api/keys → 200) until it expires (Max-Age %ds) or the admin password changes", c.MaxAge)
	}

	guestIP := ""
	if s.ipHonored {
		guestIP = "198.51.100.150"
	}
	s.testGuestAccess(t, guestIP)
}

// testGuestAccess: the guest page in private mode, guest sessions after
// the guest password changes, and guest login throttling.
func (s *secSuite) testGuestAccess(t *testing.T, ip string) {
	guest := map[string]string{"Cookie": "kp_guest=" + s.guestCookie}
	s.admin(t, "PUT", "/admin/api/settings", `{"access_mode":"private"}`, http.StatusOK)
	for _, tc := range []struct {
		what, method, path string
		header             map[string]string
		body               string
		want               int
		code               string
	}{
		{"private: summary with a guest session", "GET", "/guest/api/summary", guest, "", 403, "guest_page_private"},
		{"private: summary, no credential", "GET", "/guest/api/summary", nil, "", 403, "guest_page_private"},
		{"private: summary with the admin password", "GET", "/guest/api/summary", map[string]string{"Authorization": "Bearer " + s.w.admin}, "", 200, ""},
		{"private: guest login with the guest password", "POST", "/guest/login", nil, `{"password":` + jsonString(s.guestPW) + `}`, 403, "guest_login_off"},
	} {
		r := s.raw(t, tc.method, tc.path, tc.header, tc.body)
		t.Logf("%-50s → %d %s", tc.what, r.status, r.json().Get("error.code"))
		if r.status != tc.want || r.json().Get("error.code").String() != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.what, r.status, r.body, tc.want, tc.code)
		}
	}
	// A new guest password ends the guest sessions made with the old one.
	newPW := "guest2-" + randomHex(12)
	s.addSecret(newPW, "guest password (changed)")
	s.admin(t, "PUT", "/admin/api/settings", jsonBody(map[string]any{"access_mode": "restricted", "guest_password": newPW}), http.StatusOK)
	r := s.raw(t, "GET", "/guest/api/summary", guest, "")
	t.Logf("%-50s → %d %s", "old guest session after a new guest password", r.status, r.json().Get("error.code"))
	if r.status != http.StatusUnauthorized {
		t.Errorf("a guest session from before the guest password changed: %d, want 401", r.status)
	}
	if r := s.raw(t, "POST", "/guest/login", nil, `{"password":`+jsonString(s.guestPW)+`}`); r.status != http.StatusUnauthorized {
		t.Errorf("guest login with the old guest password: %d, want 401", r.status)
	}
	// Guest logins are throttled like admin logins.
	h := map[string]string{}
	if ip != "" {
		h["CF-Connecting-IP"] = ip
	}
	for i := 1; i <= 5; i++ {
		if r := s.raw(t, "POST", "/guest/login", h, `{"password":"wrong-`+randomHex(6)+`"}`); r.status != http.StatusUnauthorized {
			t.Errorf("wrong guest password %d: %d, want 401", i, r.status)
		}
	}
	r = s.raw(t, "POST", "/guest/login", h, `{"password":`+jsonString(newPW)+`}`)
	t.Logf("%-50s → %d %s Retry-After %q", "6th guest login, right password", r.status, r.json().Get("error.code"), r.header.Get("Retry-After"))
	if r.status != http.StatusTooManyRequests || r.json().Get("error.code").String() != "login_throttled" || r.header.Get("Retry-After") == "" {
		t.Errorf("6th guest login after 5 failures: %d %s (Retry-After %q), want 429 login_throttled", r.status, r.body, r.header.Get("Retry-After"))
	}
	s.guestPW = newPW
}

// d1 is w.query, retried: the running worker may hold the local
// database's lock for a moment (SQLITE_BUSY).
func (s *secSuite) d1(t *testing.T, sql string) []gjson.Result {
	t.Helper()
	args := []string{"d1", "execute", "DB", "--local", "--json", "--command", sql,
		"-c", filepath.Join(s.w.dir, "wrangler.toml"), "--persist-to", filepath.Join(s.w.dir, "state")}
	var out []byte
	var err error
	for try := 0; try < 5; try++ {
		cmd := exec.Command(filepath.Join(s.w.root, "node_modules", ".bin", "wrangler"), args...)
		cmd.Dir = s.w.dir
		cmd.Env = append(os.Environ(), "CI=true", "WRANGLER_SEND_METRICS=false", "NO_COLOR=1")
		if out, err = cmd.CombinedOutput(); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("wrangler d1 execute %q: %v\n%s", sql, err, tail(string(out), 1500))
	}
	i := strings.Index(string(out), "[")
	if i < 0 {
		t.Fatalf("no JSON in wrangler output: %s", out)
	}
	return gjson.Get(string(out[i:]), "0.results").Array()
}

// secureOnOtherHost logs in with Host: keypool.example.com and returns
// the session cookie's attributes ("" when the request could not be made).
func (s *secSuite) secureOnOtherHost(t *testing.T, ip string) string {
	req, err := http.NewRequest("POST", s.w.base+"/admin/login", strings.NewReader(`{"password":`+jsonString(s.w.admin)+`}`))
	must(t, err)
	req.Host = "keypool.example.com"
	req.Header.Set("Content-Type", "application/json")
	if ip != "" {
		req.Header.Set("CF-Connecting-IP", ip)
	}
	resp, err := s.w.client.Do(req)
	if err != nil {
		t.Logf("login with another Host: %v", err)
		return ""
	}
	resp.Body.Close()
	for _, line := range resp.Header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == "kp_admin" {
			s.addSecret(c.Value, "admin session cookie")
			return line[strings.IndexByte(line, ';'):]
		}
	}
	t.Logf("login with another Host: %d, no kp_admin cookie", resp.StatusCode)
	return ""
}

func (s *secSuite) testNoSecrets(t *testing.T) {
	s.mu.Lock()
	secrets := make(map[string]string, len(s.secrets))
	for k, v := range s.secrets {
		secrets[k] = v
	}
	seen := append([]seenResponse(nil), s.seen...)
	s.mu.Unlock()
	t.Logf("scanning %d answers, the worker log (%d bytes), %d upstream requests and D1 for %d secrets",
		len(seen), len(s.w.logs.String()), len(s.up.Requests()), len(secrets))

	// Answers: no secret in a body or header (but the login's
	// Set-Cookie), except an admin's reveal and a token's creation.
	leaks, control := 0, 0
	for _, r := range seen {
		if r.allowSecret {
			// The control: the reveals and creations do show secrets, so
			// the scan sees them where they are.
			for secret := range secrets {
				if bytes.Contains(r.body, []byte(secret)) {
					control++
					break
				}
			}
			continue
		}
		var hdr strings.Builder
		for k, vs := range r.header {
			if k == "Set-Cookie" {
				continue
			}
			hdr.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
		}
		for secret, what := range secrets {
			if bytes.Contains(r.body, []byte(secret)) || strings.Contains(hdr.String(), secret) {
				leaks++
				kind := "a non-admin"
				if r.adminRequest {
					kind = "an admin"
				}
				t.Errorf("the %s appears in the answer to %s request %s %s (%s, %d)", what, kind, r.method, r.path, credNames[r.cred], r.status)
			}
		}
	}
	if control == 0 {
		t.Errorf("control: no reveal or token creation answer held a known secret; the scan is blind")
	}
	// Set-Cookie carries only session values.
	for _, r := range seen {
		for _, line := range r.header.Values("Set-Cookie") {
			for secret, what := range secrets {
				if strings.Contains(what, "session cookie") {
					continue
				}
				if strings.Contains(line, secret) {
					t.Errorf("the %s appears in a Set-Cookie of %s %s", what, r.method, r.path)
				}
			}
		}
	}

	// The worker's log.
	logs := s.w.logs.String()
	for secret, what := range secrets {
		if strings.Contains(logs, secret) {
			i := strings.Index(logs, secret)
			t.Errorf("the %s appears in the worker log: …%s…", what,
				strings.ReplaceAll(logs[max(0, i-120):i], "\n", " | ")+"<SECRET>")
		}
	}

	// What the upstream received: its own keys, never a keypool secret.
	for _, q := range s.up.Requests() {
		var all strings.Builder
		for k, vs := range q.Header {
			all.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
		}
		all.WriteString(q.Path + "?" + q.Query + "\n")
		all.Write(q.Body)
		for secret, what := range secrets {
			if strings.Contains(what, "upstream key") || strings.Contains(what, "gateway") {
				continue // the upstream's (the gateway's) own credentials
			}
			if strings.Contains(all.String(), secret) {
				t.Errorf("the %s reached the upstream in %s %s", what, q.Method, q.Path)
			}
		}
	}

	// D1 at rest: no secret in plain text (keys are sealed, tokens and
	// the guest password kept as hashes).
	tables := s.d1(t, "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'd1_%'")
	var dumped []string
	for _, tb := range tables {
		name := tb.Get("name").String()
		rows := s.d1(t, "SELECT * FROM \""+name+"\"")
		raw := fmt.Sprint(rows)
		dumped = append(dumped, fmt.Sprintf("%s (%d rows)", name, len(rows)))
		for secret, what := range secrets {
			if strings.Contains(raw, secret) {
				t.Errorf("the %s is stored in plain text in D1 table %s", what, name)
			}
		}
	}
	t.Logf("D1 tables scanned: %s", strings.Join(dumped, ", "))
	if leaks == 0 && !t.Failed() {
		t.Logf("no secret found in %d answers (admin reveals and token creations excepted; %d of those held one, as they must), the log, the upstream's requests or D1", len(seen), control)
	}
}
