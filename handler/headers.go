package handler

import (
	"net/http"
	"strings"
)

// dropRequestHeaders never go upstream: hop-by-hop headers (an Expect:
// 100-continue would make the upstream answer 100, which a Worker cannot
// relay), headers the runtime sets itself, and headers that would tell the
// provider who the client is.
var dropRequestHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Expect": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Host": true, "Content-Length": true,
	"Accept-Encoding": true, "Cookie": true,
	"X-Real-Ip": true, "True-Client-Ip": true, "Forwarded": true,
}

// upstreamHeaders copies the client's headers that may go to the provider.
// Client credentials are left out in every form they can take.
func upstreamHeaders(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for name, vs := range in {
		cn := http.CanonicalHeaderKey(name)
		if dropRequestHeaders[cn] || strings.HasPrefix(cn, "Proxy-") || strings.HasPrefix(cn, "X-Forwarded-") {
			continue
		}
		// Cloudflare's own request metadata (cf-ray, cf-connecting-ip…)
		// stays here; AI Gateway options (cf-aig-*) are meant for upstream.
		if strings.HasPrefix(cn, "Cf-") && !strings.HasPrefix(cn, "Cf-Aig-") {
			continue
		}
		if isCredentialHeader(cn) {
			continue
		}
		out[cn] = vs
	}
	return out
}

func isCredentialHeader(canonical string) bool {
	for _, h := range credentialHeaders {
		if canonical == h {
			return true
		}
	}
	return false
}

// dropResponseHeaders are hop-by-hop headers of the upstream's answer.
var dropResponseHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Proxy-Authenticate": true,
	"Proxy-Connection": true, "Set-Cookie": true,
}

// copyResponseHeaders copies the upstream's answer headers to the client.
// The runtime has already decoded a compressed body, so its encoding and
// length headers would lie and are dropped with it.
func copyResponseHeaders(dst, src http.Header) {
	encoded := src.Get("Content-Encoding") != ""
	for name, vs := range src {
		cn := http.CanonicalHeaderKey(name)
		if dropResponseHeaders[cn] {
			continue
		}
		if encoded && (cn == "Content-Encoding" || cn == "Content-Length") {
			continue
		}
		dst[cn] = vs
	}
}
