package proxy

import (
	"net/http"
	"strings"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/settings"
)

// Request headers go upstream only from an allow-list: the provider acts
// on whatever it receives with a pool key, and a header that selects an
// organisation or project (OpenAI-Organization, OpenAI-Project,
// x-goog-user-project…) makes it refuse every key alike. So only content
// negotiation, the providers' documented request options and the SDKs'
// harmless telemetry pass; credentials, cookies, hop-by-hop headers,
// X-Forwarded-* and Cloudflare's cf-* metadata never do.
var (
	commonRequestHeaders = headerSet("Accept", "Accept-Language", "Content-Type", "User-Agent", "Idempotency-Key")
	familyRequestHeaders = map[provider.Family]map[string]bool{
		provider.FamilyOpenAI: headerSet("OpenAI-Beta", "X-Client-Request-Id",
			"Originator", "Session_id", "Conversation_id", // Codex CLI
			"HTTP-Referer", "X-Title"), // OpenRouter's app attribution
		provider.FamilyAnthropic: headerSet("Anthropic-Version", "Anthropic-Beta",
			"Anthropic-Dangerous-Direct-Browser-Access", "X-App"), // the last two: Claude Code
		provider.FamilyGemini: headerSet("X-Goog-Api-Client", "X-Goog-FieldMask", "X-Server-Timeout"),
	}
	// The OpenAI and Anthropic SDKs (and Claude Code) describe themselves
	// in X-Stainless-* headers: language, version, OS, retry count, timeout.
	requestHeaderPrefixes = []string{"X-Stainless-"}
	// Through AI Gateway the cache controls go too; other cf-aig-* options
	// (logging, custom cost, cache keys, metadata) only when the
	// gateway_headers setting names them.
	gatewayRequestHeaders = headerSet("Cf-Aig-Cache-Ttl", "Cf-Aig-Skip-Cache")
)

// forwardRule is what decides which client headers go on one call.
type forwardRule struct {
	family  provider.Family
	gateway bool            // the call goes through AI Gateway
	extra   map[string]bool // canonical names the admin allowed (settings)
}

// upstreamHeaders copies the client's headers that rule allows. Values are
// kept as they are.
func upstreamHeaders(in http.Header, rule forwardRule) http.Header {
	out := make(http.Header, len(in))
	for name, vs := range in {
		cn := http.CanonicalHeaderKey(name)
		if defaultForwarded(cn, rule.family) || rule.extra[cn] || rule.gateway && gatewayRequestHeaders[cn] {
			out[cn] = vs
		}
	}
	return out
}

// defaultForwarded: cn (canonical) goes to a provider of fam unasked.
func defaultForwarded(cn string, fam provider.Family) bool {
	if commonRequestHeaders[cn] || familyRequestHeaders[fam][cn] {
		return true
	}
	for _, p := range requestHeaderPrefixes {
		if strings.HasPrefix(cn, p) {
			return true
		}
	}
	return false
}

// Response headers go back to the client from an allow-list too: the
// body's own description, caching, rate limits and request ids. Those
// naming the account behind a key (openai-organization, openai-project,
// anthropic-organization-id) and cookies stay here.
var (
	responseHeaders = headerSet("Content-Type", "Content-Length", "Content-Disposition", "Content-Language",
		"Cache-Control", "Etag", "Last-Modified", "Expires", "Vary",
		"Retry-After", "Retry-After-Ms", "X-Request-Id", "Request-Id",
		"Openai-Processing-Ms", "Openai-Version", "Openai-Model", "Cf-Aig-Cache-Status")
	responseHeaderPrefixes = []string{"X-Ratelimit-", "Anthropic-Ratelimit-"}
)

// copyResponseHeaders copies the allowed headers of the upstream's answer
// to the client, and marks the answer as data to show as it is: proxied
// answers are served on the admin UI's origin. The runtime has already
// decoded a compressed body, so its length header would lie and is
// dropped.
func copyResponseHeaders(dst, src http.Header) {
	encoded := src.Get("Content-Encoding") != ""
	for name, vs := range src {
		cn := http.CanonicalHeaderKey(name)
		if responseAllowed(cn) && !(encoded && cn == "Content-Length") {
			dst[cn] = vs
		}
	}
	Sandbox(dst)
}

func responseAllowed(cn string) bool {
	if responseHeaders[cn] {
		return true
	}
	for _, p := range responseHeaderPrefixes {
		if strings.HasPrefix(cn, p) {
			return true
		}
	}
	return false
}

// Sandbox makes a browser neither guess an answer's type nor run it as a
// page: what a provider (or a prompt) returns cannot script the admin UI.
func Sandbox(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox")
}

func headerSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[http.CanonicalHeaderKey(n)] = true
	}
	return m
}

// ruleFor is the header rule of a call to a provider of fam.
func ruleFor(s settings.Settings, fam provider.Family, gateway bool) forwardRule {
	r := forwardRule{family: fam, gateway: gateway, extra: map[string]bool{}}
	for _, n := range s.ForwardHeaders {
		r.extra[n] = true
	}
	if gateway {
		for _, n := range s.GatewayHeaders {
			r.extra[n] = true
		}
	}
	return r
}
