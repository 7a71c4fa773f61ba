package handler

import (
	"context"
	"database/sql"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/access"
	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/store"
)

// Who may do what:
//   - the proxy routes take a client token (AUTH_KEY, the unrestricted
//     bootstrap token, or one the admin created);
//   - the admin routes take the admin password as a bearer token (for
//     scripts) or an admin session cookie from POST /admin/login, plus the
//     session's CSRF token in X-Keypool-CSRF on every change;
//   - the guest routes follow the access_mode setting.

const (
	adminCookie = "kp_admin"
	guestCookie = "kp_guest"
	csrfHeader  = "X-Keypool-Csrf"
	// Login throttling: this many wrong passwords (logins and admin bearer
	// tokens alike) from one address, or IPv6 /64, within the window lock
	// it out until the window ends (see throttle.go).
	loginMaxFailures = 5
	loginWindow      = 15 * time.Minute
)

// box returns the sealing box of KEYPOOL_SECRET, derived once per secret.
func (h *Handler) box() (*seal.Box, error) {
	secret := h.cfg().KeypoolSecret
	h.boxMu.Lock()
	defer h.boxMu.Unlock()
	if h.boxFor != secret || h.boxVal == nil {
		b, err := seal.New(secret)
		if err != nil {
			return nil, err
		}
		h.boxVal, h.boxFor = b, secret
	}
	return h.boxVal, nil
}

// needBox answers 503 saying why when KEYPOOL_SECRET is missing: keypool
// does not serve keys it could not keep encrypted.
func (h *Handler) needBox(w http.ResponseWriter) (*seal.Box, bool) {
	b, err := h.box()
	if err != nil {
		reply.NoSecret(w, err)
		return nil, false
	}
	return b, true
}

// newSession signs a session for role (access.NewSession) in the role's
// current generation, read afresh, so that a logout can end it.
func (h *Handler) newSession(ctx context.Context, b *seal.Box, role, password string, ttl time.Duration) (value, csrf string, err error) {
	gen, err := h.sessionGeneration(ctx, role, true)
	if err != nil {
		return "", "", err
	}
	value, csrf = access.NewSession(b, role, password, h.d.Now().Add(ttl).Unix(), gen)
	return value, csrf, nil
}

// readSession verifies the cookie name: signature, role, password, expiry
// (access.ReadSession) and generation.
func (h *Handler) readSession(r *http.Request, name, role, password string) (access.Session, bool) {
	c, err := r.Cookie(name)
	if err != nil {
		return access.Session{}, false
	}
	b, err := h.box()
	if err != nil {
		return access.Session{}, false
	}
	s, ok := access.ReadSession(b, c.Value, role, password, h.d.Now().Unix())
	if !ok || !h.currentGeneration(r.Context(), role, s.Gen) {
		return access.Session{}, false
	}
	return s, true
}

// adminActor authenticates an admin request and names who made it:
// "password" (bearer) or "session". State-changing requests on a session
// need its CSRF token. A bearer token counts in the login throttle (its D1
// queries counted in queries). It answers 401/403/429/503 itself when it
// fails.
func (h *Handler) adminActor(w http.ResponseWriter, r *http.Request, queries store.Counter) (string, bool) {
	want, ok := h.adminPassword(w)
	if !ok {
		return "", false
	}
	if v := r.Header.Get("Authorization"); v != "" {
		switch a, retry := h.bearerAttempt(r, v, want, queries); a {
		case attemptOK:
			return "password", true
		case attemptThrottled, attemptUnchecked:
			writeThrottled(w, a, retry)
			return "", false
		}
	} else if s, ok := h.readSession(r, adminCookie, "a", want); ok {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !access.SecretEqual(r.Header.Get(csrfHeader), s.CSRF) {
			reply.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "csrf",
				Message: "a change made with an admin session needs its CSRF token in the X-Keypool-CSRF header (from POST /admin/login)"}.Write(w)
			return "", false
		}
		return "session", true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="keypool admin"`)
	reply.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_admin_password",
		Message: "admin routes need an admin session (POST /admin/login) or the admin password as Authorization: Bearer <ADMIN_PASSWORD>"}.Write(w)
	return "", false
}

// sessionHours is how long an admin session lasts.
func (h *Handler) sessionTTL() time.Duration {
	return h.cfg().SessionTTL
}

// loginBodyLimit bounds a login body: a password and little else.
const loginBodyLimit = 4 << 10

// login serves POST /admin/login {"password"}: a session cookie and its
// CSRF token. Wrong passwords and oversized bodies count in the login
// throttle.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	b, db, ok := h.loginRequest(w, r)
	if !ok {
		return
	}
	want, ok := h.adminPassword(w)
	if !ok {
		return
	}
	csrf, ok := h.passwordLogin(w, r, b, db, loginRole{
		name: "admin", session: "a", cookie: adminCookie, failAction: "login.fail",
		wrongCode: "invalid_admin_password", boundTo: want,
		right: func(got string) bool { return access.SecretEqual(got, want) },
	})
	if !ok {
		return
	}
	h.audit(r, db, "session", "login", "", "")
	var out jsonout.Builder
	reply.JSON(w, http.StatusOK, out.Object().Key("csrf").String(csrf).
		Key("expires_at").Int(h.d.Now().Add(h.sessionTTL()).UnixMilli()).EndObject().Bytes())
}

// loginRequest checks what a login needs: a POST, KEYPOOL_SECRET (to
// sign the session) and the database; false: answered.
func (h *Handler) loginRequest(w http.ResponseWriter, r *http.Request) (*seal.Box, *sql.DB, bool) {
	if r.Method != http.MethodPost {
		reply.MethodNotAllowed(w, "POST")
		return nil, nil, false
	}
	b, ok := h.needBox(w)
	if !ok {
		return nil, nil, false
	}
	db, ok := h.db(w)
	return b, db, ok
}

// loginRole is what differs between the admin and the guest login.
type loginRole struct {
	name       string // "admin" or "guest", for messages
	session    string // the session's role letter
	cookie     string
	throttle   string // the prefix of the role's throttle key
	failAction string // audited for a wrong password
	wrongCode  string // the error code of a wrong password
	boundTo    string // what the session is bound to: changing it ends sessions
	right      func(password string) bool
}

// passwordLogin checks the {"password"} of a login for role, counted in
// the throttle, and on success sets the session cookie and returns the
// session's CSRF token. Otherwise it has answered.
func (h *Handler) passwordLogin(w http.ResponseWriter, r *http.Request, b *seal.Box, db *sql.DB, role loginRole) (csrf string, ok bool) {
	key := role.throttle + access.ThrottleKey(r)
	body, ok := h.readLoginBody(w, r, key, role.failAction)
	if !ok {
		return "", false
	}
	got := gjson.GetBytes(body, "password").String()
	right := got != "" && role.right(got)
	switch a, retry := h.passwordAttempt(r, key, right, role.failAction, ""); a {
	case attemptWrong:
		reply.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: role.wrongCode,
			Message: "wrong " + role.name + " password"}.Write(w)
		return "", false
	case attemptThrottled, attemptUnchecked:
		writeThrottled(w, a, retry)
		return "", false
	}
	ctx := r.Context()
	if err := store.On(db, h.d.Queries).Audit().LoginSuccess(ctx, key); err != nil {
		log.Printf("keypool: clearing failed %s logins: %v", role.name, err)
	}
	value, csrf, err := h.newSession(ctx, b, role.session, role.boundTo, h.sessionTTL())
	if err != nil {
		reply.Failed(w, err, "could not start a session", "making a %s session", role.name)
		return "", false
	}
	w.Header().Add("Set-Cookie", access.SessionCookie(r, role.cookie, value, int(h.sessionTTL().Seconds())))
	return csrf, true
}

// readLoginBody reads a login body of at most loginBodyLimit bytes. One
// larger counts as a failed attempt under key and is answered 413 (429
// once the address is throttled).
func (h *Handler) readLoginBody(w http.ResponseWriter, r *http.Request, key, action string) ([]byte, bool) {
	if r.Body == nil {
		return nil, true
	}
	body, ok, err := h.d.ReadBody(r, loginBodyLimit)
	if err != nil {
		reply.BadRequest("could not read the request body: "+err.Error(), "").Write(w)
		return nil, false
	}
	if ok {
		return body, true
	}
	if a, retry := h.passwordAttempt(r, key, false, action, "body over "+strconv.Itoa(loginBodyLimit)+" bytes"); a != attemptWrong {
		writeThrottled(w, a, retry)
		return nil, false
	}
	reply.Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
		Message: "a login body is at most " + strconv.Itoa(loginBodyLimit) + " bytes"}.Write(w)
	return nil, false
}

// logout serves POST /admin/logout: the cookies are cleared and, when
// the request carries a valid admin session, every admin session ends
// (sessions are signed, not stored: ending this one alone would need a
// record of each). A guest's logout ends no other guest's session.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		reply.MethodNotAllowed(w, "POST")
		return
	}
	ended := false
	if want := h.cfg().AdminPassword; adminPasswordLongEnough(want) {
		if _, ok := h.readSession(r, adminCookie, "a", want); ok {
			if err := h.revokeSessions(r.Context(), "a"); err != nil {
				reply.Failed(w, err, "could not end the admin session; try again", "ending the admin sessions")
				return
			}
			ended = true
			if db, err := h.d.DB(); err == nil {
				h.audit(r, db, "session", "logout", "", "every admin session ended")
			}
		}
	}
	w.Header().Add("Set-Cookie", access.SessionCookie(r, adminCookie, "", 0))
	w.Header().Add("Set-Cookie", access.SessionCookie(r, guestCookie, "", 0))
	var out jsonout.Builder
	reply.JSON(w, http.StatusOK, out.Object().Key("logged_out").Bool(true).Key("sessions_ended").Bool(ended).EndObject().Bytes())
}

// audit records an admin action (actor "" for anonymous ones such as a
// failed login). Targets are masked by the caller; a failure to write is
// logged, not fatal.
func (h *Handler) audit(r *http.Request, db *sql.DB, actor, action, target, detail string) {
	if actor == "" {
		actor = "anonymous"
	}
	e := store.Entry{At: h.d.Now().UnixMilli(), Actor: actor, IP: access.ClientIP(r), Action: action, Target: target, Detail: detail}
	if err := store.On(db, h.d.Queries).Audit().Add(r.Context(), e); err != nil {
		log.Printf("keypool: writing the audit log: %v", err)
	}
}
