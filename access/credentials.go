// Package access is how keypool knows who is calling: the client
// credential in a request (every provider SDK's header, or ?key=), secrets
// compared in constant time, the caller's address and its throttle key,
// and the signed session cookies of admins and guests. It is pure: the
// handler reads the stored state (session generations, tokens, the login
// throttle) and answers.
package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// credentialHeaders are every header a client may put its keypool token in:
// each provider's SDK sends the key in its own header. All are removed
// before a request goes upstream.
var credentialHeaders = []string{"Authorization", "X-Api-Key", "X-Goog-Api-Key", "Api-Key", "Xi-Api-Key"}

// Credential returns the token the client presented, in the first
// place it finds one: a credential header, then the ?key= query parameter
// (Gemini SDKs).
func Credential(r *http.Request) string {
	for _, h := range credentialHeaders {
		v := strings.TrimSpace(r.Header.Get(h))
		if v == "" {
			continue
		}
		if h == "Authorization" {
			if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
				v = strings.TrimSpace(v[7:])
			}
		}
		return v
	}
	return r.URL.Query().Get("key")
}

// SecretEqual compares a presented secret with the configured one in
// constant time. Hashing first makes the time independent of the lengths
// too.
func SecretEqual(presented, want string) bool {
	a := sha256.Sum256([]byte(presented))
	b := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// ClientIP is the address the request came from, as Cloudflare saw it.
func ClientIP(r *http.Request) string {
	if ip := strings.TrimSpace(r.Header.Get("Cf-Connecting-Ip")); ip != "" {
		return ip
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// ThrottleKey is the throttle's name for r's address: an IPv4 address as
// is, an IPv6 address as its /64. (Package net, which keypool already
// builds with under TinyGo, rather than adding net/netip.)
func ThrottleKey(r *http.Request) string {
	s := ClientIP(r)
	ip := net.ParseIP(s)
	switch {
	case ip == nil:
		if len(s) > 64 {
			s = s[:64] // not an address: bounded, still counted
		}
		return s
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
