package handler

import (
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/keypool/keypool/access"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/store"
)

// Password guessing: every wrong admin password, whether sent to POST
// /admin/login or as a bearer token to an admin route (or the guest
// summary), counts in one throttle per client address (an IPv6 client's
// whole /64, which it can rotate freely). After loginMaxFailures failures
// in loginWindow the address gets 429 for every further attempt, the right
// password included, until the window ends. Guest logins count apart.

// minAdminPassword is the shortest ADMIN_PASSWORD the admin API accepts:
// the throttle slows guessing, it cannot save a short password.
const minAdminPassword = 16

// shortPasswordLogged: a too short ADMIN_PASSWORD is logged once per
// instance, not on every refused request.
var shortPasswordLogged atomic.Bool

// attempt is the verdict on one password attempt.
type attempt int

const (
	attemptOK        attempt = iota // the right password, not throttled
	attemptWrong                    // a wrong password, counted
	attemptThrottled                // the address is throttled
	attemptUnchecked                // the throttle could not be read: refuse
)

// passwordAttempt counts one attempt at a password under key (failures
// only; right reports whether the password was right) and audits a
// failure as action, until the address is throttled: the attempts after
// the one that trips the throttle are counted, not audited one by one. It
// returns the verdict and, when throttled, the seconds to wait.
func (h *Handler) passwordAttempt(r *http.Request, key string, right bool, action, detail string) (attempt, int64) {
	return h.passwordAttemptCounted(r, key, right, action, detail, h.d.Queries)
}

// passwordAttemptCounted is passwordAttempt with its D1 queries counted in
// queries.
func (h *Handler) passwordAttemptCounted(r *http.Request, key string, right bool, action, detail string, queries store.Counter) (attempt, int64) {
	db, err := h.d.DB()
	if err != nil {
		log.Printf("keypool: login throttle: %v", err)
		return attemptUnchecked, 0
	}
	now := h.d.Now().UnixMilli()
	window := loginWindow.Milliseconds()
	n, since, err := store.On(db, queries).Audit().LoginAttempt(r.Context(), key, !right, now, window)
	if err != nil {
		log.Printf("keypool: login throttle: %v", err)
		return attemptUnchecked, 0
	}
	throttled := n > loginMaxFailures || right && n >= loginMaxFailures
	if !right && n <= loginMaxFailures+1 {
		note := "failure " + strconv.FormatInt(n, 10)
		if throttled {
			note += "; throttled until the window ends"
		}
		h.audit(r, db, "", action, "", strings.TrimPrefix(detail+"; "+note, "; "))
	}
	switch {
	case throttled:
		return attemptThrottled, max((since+window-now+999)/1000, 1)
	case right:
		return attemptOK, 0
	}
	return attemptWrong, 0
}

// writeThrottled answers an attempt refused by the throttle (or one it
// could not check).
func writeThrottled(w http.ResponseWriter, a attempt, retry int64) {
	if a == attemptUnchecked {
		e := reply.StoreUnavailable()
		e.Message = "keypool's database (D1) is not answering, so the login throttle cannot be checked; try again shortly"
		e.Write(w)
		return
	}
	reply.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "login_throttled", RetryAfter: retry,
		Message: "too many failed password attempts from your address; try again in " + strconv.FormatInt(retry, 10) + "s"}.Write(w)
}

// bearerAttempt checks an Authorization header on an admin route against
// the admin password, counted in the throttle (its D1 queries in queries).
func (h *Handler) bearerAttempt(r *http.Request, header, want string, queries store.Counter) (attempt, int64) {
	got := ""
	if len(header) > 7 && strings.EqualFold(header[:7], "bearer ") {
		got = strings.TrimSpace(header[7:])
	}
	right := got != "" && access.SecretEqual(got, want)
	return h.passwordAttemptCounted(r, access.ThrottleKey(r), right, "admin.auth.fail", "bearer "+r.Method+" "+auditPath(r.URL.Path), queries)
}

// auditPath bounds a request path kept in the audit log.
func auditPath(p string) string {
	if len(p) > 200 {
		return p[:200] + "…"
	}
	return p
}

// adminPassword returns ADMIN_PASSWORD, or answers 503 saying why the
// admin API is off: unset, or shorter than minAdminPassword characters.
func (h *Handler) adminPassword(w http.ResponseWriter) (string, bool) {
	want := h.cfg().AdminPassword
	if want == "" {
		reply.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
			Message: "the admin password is not set: run `wrangler secret put ADMIN_PASSWORD` (locally, put ADMIN_PASSWORD in .dev.vars)"}.Write(w)
		return "", false
	}
	if !adminPasswordLongEnough(want) {
		if shortPasswordLogged.CompareAndSwap(false, true) {
			log.Printf("keypool: the admin API is off: ADMIN_PASSWORD is shorter than %d characters", minAdminPassword)
		}
		reply.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "admin_password_too_short",
			Message: "the admin API is off: ADMIN_PASSWORD is shorter than " + strconv.Itoa(minAdminPassword) + " characters; set a longer one with `wrangler secret put ADMIN_PASSWORD` (locally, in .dev.vars)"}.Write(w)
		return "", false
	}
	return want, true
}

func adminPasswordLongEnough(p string) bool { return utf8.RuneCountInString(p) >= minAdminPassword }
