package handler

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// credentialHeaders are every header a client may put its keypool token in:
// each provider's SDK sends the key in its own header. All are removed
// before a request goes upstream.
var credentialHeaders = []string{"Authorization", "X-Api-Key", "X-Goog-Api-Key", "Api-Key", "Xi-Api-Key"}

// clientCredential returns the token the client presented, in the first
// place it finds one: a credential header, then the ?key= query parameter
// (Gemini SDKs).
func clientCredential(r *http.Request) string {
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

// secretEqual compares a presented secret with the configured one in
// constant time. Hashing first makes the time independent of the lengths
// too.
func secretEqual(presented, want string) bool {
	a := sha256.Sum256([]byte(presented))
	b := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
