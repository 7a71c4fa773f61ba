package access

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/keypool/keypool/seal"
)

// Session is a verified session cookie.
type Session struct {
	Role string // "a" admin, "g" guest
	Exp  int64  // unix s
	Gen  int64  // the role's session generation it was made in
	CSRF string
}

// NewSession signs a session for role, valid until exp (unix s), made in
// generation gen, with a new CSRF token. The signature also covers the
// role's current password, so changing it ends every session.
func NewSession(b *seal.Box, role, password string, exp, gen int64) (value, csrf string) {
	raw := make([]byte, 16)
	rand.Read(raw)
	csrf = hex.EncodeToString(raw)
	return sessionValue(b, payload(role, exp, gen, csrf), password), csrf
}

// ReadSession verifies a cookie value: signature, role, password and
// expiry at now (unix s). Whether its generation is still the role's
// current one is the caller's to check.
func ReadSession(b *seal.Box, value, role, password string, now int64) (Session, bool) {
	i := strings.LastIndexByte(value, '.')
	if i < 0 || password == "" {
		return Session{}, false
	}
	p := value[:i]
	if !SecretEqual(value, sessionValue(b, p, password)) {
		return Session{}, false
	}
	parts := strings.Split(p, "~")
	if len(parts) != 4 || parts[0] != role {
		return Session{}, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now >= exp {
		return Session{}, false
	}
	gen, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return Session{}, false
	}
	return Session{Role: role, Exp: exp, Gen: gen, CSRF: parts[3]}, true
}

// payload is the signed part of a session cookie.
func payload(role string, exp, gen int64, csrf string) string {
	return role + "~" + strconv.FormatInt(exp, 10) + "~" + strconv.FormatInt(gen, 10) + "~" + csrf
}

func sessionValue(b *seal.Box, payload, password string) string {
	pw := sha256.Sum256([]byte(password))
	signed := b.Sign(payload + "~" + hex.EncodeToString(pw[:]))
	return payload + signed[strings.LastIndexByte(signed, '.'):]
}

// SessionCookie is the Set-Cookie for a session: HttpOnly, SameSite
// Strict, Secure except on localhost (plain-HTTP development).
func SessionCookie(r *http.Request, name, value string, maxAge int) string {
	c := name + "=" + value + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" + strconv.Itoa(maxAge)
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host != "localhost" && host != "127.0.0.1" && host != "::1" {
		c += "; Secure"
	}
	return c
}
