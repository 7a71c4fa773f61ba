package access

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool/seal"
)

// TestSessionRoundTrip: a session reads back as made, and nothing else
// does: another role, another password, after its expiry, with its
// payload or signature changed, or from another secret.
func TestSessionRoundTrip(t *testing.T) {
	b, err := seal.New(strings.Repeat("k", 32))
	if err != nil {
		t.Fatal(err)
	}
	value, csrf := NewSession(b, "a", "admin-password-1234", 1000, 7)
	s, ok := ReadSession(b, value, "a", "admin-password-1234", 999)
	if !ok || s != (Session{Role: "a", Exp: 1000, Gen: 7, CSRF: csrf}) || len(csrf) != 32 {
		t.Fatalf("read back %+v, %v (csrf %q)", s, ok, csrf)
	}
	other, _ := seal.New(strings.Repeat("o", 32))
	i := strings.LastIndexByte(value, '.')
	for name, read := range map[string]func() bool{
		"another role":     func() bool { _, ok := ReadSession(b, value, "g", "admin-password-1234", 999); return ok },
		"another password": func() bool { _, ok := ReadSession(b, value, "a", "admin-password-12345", 999); return ok },
		"no password":      func() bool { _, ok := ReadSession(b, value, "a", "", 999); return ok },
		"expired":          func() bool { _, ok := ReadSession(b, value, "a", "admin-password-1234", 1000); return ok },
		"payload changed": func() bool {
			_, ok := ReadSession(b, strings.Replace(value, "~1000~", "~9999~", 1), "a", "admin-password-1234", 999)
			return ok
		},
		"signature changed": func() bool {
			_, ok := ReadSession(b, value[:i+1]+strings.Repeat("A", len(value)-i-1), "a", "admin-password-1234", 999)
			return ok
		},
		"another secret": func() bool { _, ok := ReadSession(other, value, "a", "admin-password-1234", 999); return ok },
		"no signature":   func() bool { _, ok := ReadSession(b, value[:i], "a", "admin-password-1234", 999); return ok },
	} {
		if read() {
			t.Errorf("%s: accepted", name)
		}
	}
	if v2, csrf2 := NewSession(b, "a", "admin-password-1234", 1000, 7); v2 == value || csrf2 == csrf {
		t.Errorf("two sessions share a value or CSRF token")
	}
}

func TestSessionCookie(t *testing.T) {
	for host, secure := range map[string]bool{"127.0.0.1:8787": false, "localhost": false, "[::1]:8787": false, "keypool.example.com": true} {
		r := httptestRequest(host)
		c := SessionCookie(r, "kp_admin", "v", 60)
		if !strings.HasPrefix(c, "kp_admin=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60") || strings.HasSuffix(c, "; Secure") != secure {
			t.Errorf("%s: %s", host, c)
		}
	}
}

func httptestRequest(host string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = host
	return r
}
