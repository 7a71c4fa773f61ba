package proxy

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/settings"
)

// requestHeaderCases: which client headers reach a provider of each
// family. A name absent from a family's set is dropped for it.
var requestHeaderCases = []struct {
	name     string
	families []provider.Family // those it goes to
}{
	// Content negotiation and harmless client description: everyone.
	{"Content-Type", allFamilies},
	{"accept", allFamilies},
	{"Accept-Language", allFamilies},
	{"User-Agent", allFamilies},
	{"Idempotency-Key", allFamilies},
	{"X-Stainless-Lang", allFamilies},
	{"x-stainless-retry-count", allFamilies},
	{"X-Stainless-Package-Version", allFamilies},
	// Documented request options, per family.
	{"OpenAI-Beta", openAIOnly},
	{"X-Client-Request-Id", openAIOnly},
	{"originator", openAIOnly},
	{"session_id", openAIOnly},
	{"HTTP-Referer", openAIOnly},
	{"X-Title", openAIOnly},
	{"anthropic-version", anthropicOnly},
	{"anthropic-beta", anthropicOnly},
	{"anthropic-dangerous-direct-browser-access", anthropicOnly},
	{"x-app", anthropicOnly},
	{"x-goog-api-client", geminiOnly},
	{"X-Goog-FieldMask", geminiOnly},
	{"X-Server-Timeout", geminiOnly},
	// Organisation, project and account selectors: nobody.
	{"OpenAI-Organization", nil},
	{"openai-project", nil},
	{"ChatGPT-Account-Id", nil},
	{"anthropic-organization-id", nil},
	{"x-goog-user-project", nil},
	// Credentials, in every form a client may send its token.
	{"Authorization", nil},
	{"X-Api-Key", nil},
	{"x-goog-api-key", nil},
	{"api-key", nil},
	{"xi-api-key", nil},
	{"Proxy-Authorization", nil},
	{"Cookie", nil},
	// Hop-by-hop, runtime and client-address headers.
	{"Connection", nil},
	{"Keep-Alive", nil},
	{"Expect", nil},
	{"Te", nil},
	{"Transfer-Encoding", nil},
	{"Upgrade", nil},
	{"Host", nil},
	{"Content-Length", nil},
	{"Accept-Encoding", nil},
	{"X-Forwarded-For", nil},
	{"X-Forwarded-Host", nil},
	{"X-Real-Ip", nil},
	{"True-Client-Ip", nil},
	{"Forwarded", nil},
	{"Referer", nil},
	{"Origin", nil},
	// Cloudflare's metadata, and AI Gateway options on a direct call.
	{"cf-ray", nil},
	{"CF-Connecting-IP", nil},
	{"cf-ipcountry", nil},
	{"cf-aig-cache-ttl", nil},
	{"cf-aig-authorization", nil},
	// Anything else.
	{"X-Custom", nil},
	{"X-Test-Id", nil},
}

var (
	allFamilies   = []provider.Family{provider.FamilyOpenAI, provider.FamilyGemini, provider.FamilyAnthropic}
	openAIOnly    = []provider.Family{provider.FamilyOpenAI}
	anthropicOnly = []provider.Family{provider.FamilyAnthropic}
	geminiOnly    = []provider.Family{provider.FamilyGemini}
)

func headerString(h http.Header) string {
	var lines []string
	for k, vs := range h {
		lines = append(lines, k+": "+strings.Join(vs, " | "))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestCopyResponseHeaders(t *testing.T) {
	tests := []struct {
		name string
		src  http.Header
		want http.Header // besides the sandbox headers
	}{
		{
			name: "OpenAI answer: request id, rate limits, processing time, no account",
			src: http.Header{
				"Content-Type": {"application/json"}, "Content-Length": {"123"}, "X-Request-Id": {"req_1"},
				"Openai-Model": {"gpt-4o-mini"}, "Openai-Processing-Ms": {"12"}, "Openai-Version": {"2020-10-01"},
				"X-Ratelimit-Remaining-Requests": {"9"}, "X-Ratelimit-Reset-Tokens": {"1s"},
				"Openai-Organization": {"org-abc"}, "Openai-Project": {"proj_abc"},
				"Set-Cookie": {"__cf_bm=abc; path=/", "_cfuvid=def"}, "Cf-Ray": {"8f0-SJC"}, "Server": {"cloudflare"},
				"Strict-Transport-Security": {"max-age=1"}, "Alt-Svc": {"h3=\":443\""},
			},
			want: http.Header{
				"Content-Type": {"application/json"}, "Content-Length": {"123"}, "X-Request-Id": {"req_1"},
				"Openai-Model": {"gpt-4o-mini"}, "Openai-Processing-Ms": {"12"}, "Openai-Version": {"2020-10-01"},
				"X-Ratelimit-Remaining-Requests": {"9"}, "X-Ratelimit-Reset-Tokens": {"1s"},
			},
		},
		{
			name: "Anthropic answer: request-id and rate limits, no organisation id",
			src: http.Header{
				"Content-Type": {"application/json"}, "Request-Id": {"req_011"},
				"Anthropic-Organization-Id": {"5b6a3a7e"}, "Anthropic-Ratelimit-Requests-Remaining": {"49"},
				"Retry-After": {"3"}, "Retry-After-Ms": {"2500"},
			},
			want: http.Header{
				"Content-Type": {"application/json"}, "Request-Id": {"req_011"},
				"Anthropic-Ratelimit-Requests-Remaining": {"49"}, "Retry-After": {"3"}, "Retry-After-Ms": {"2500"},
			},
		},
		{
			name: "encoded answer drops encoding and length together",
			src: http.Header{
				"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}, "Content-Length": {"55"}, "Vary": {"Accept-Encoding"},
			},
			want: http.Header{"Content-Type": {"application/json"}, "Vary": {"Accept-Encoding"}},
		},
		{
			name: "hop-by-hop dropped, caching kept",
			src: http.Header{
				"Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"}, "Transfer-Encoding": {"chunked"},
				"Proxy-Authenticate": {"Basic"}, "Cache-Control": {"no-cache"}, "Etag": {`"x"`}, "Last-Modified": {"Mon"},
			},
			want: http.Header{"Cache-Control": {"no-cache"}, "Etag": {`"x"`}, "Last-Modified": {"Mon"}},
		},
		{
			name: "the provider's own CSP or sniffing hint is replaced",
			src: http.Header{
				"Content-Type": {"text/html"}, "Content-Security-Policy": {"default-src *"}, "X-Content-Type-Options": {"none"},
			},
			want: http.Header{"Content-Type": {"text/html"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := http.Header{"X-Already": {"there"}}
			copyResponseHeaders(dst, tc.src)
			tc.want["X-Already"] = []string{"there"}
			tc.want["X-Content-Type-Options"] = []string{"nosniff"}
			tc.want["Content-Security-Policy"] = []string{"sandbox"}
			if got, want := headerString(dst), headerString(tc.want); got != want {
				t.Errorf("copied headers:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestForwardHeadersSetting(t *testing.T) {
	s := settings.Parse(map[string]string{settings.ForwardHeaders: `["x-test-id","X-My-Tenant-Tag"]`})
	in := http.Header{"X-Test-Id": {"a"}, "X-My-Tenant-Tag": {"b"}, "X-Other": {"c"}}
	if got := names(upstreamHeaders(in, ruleFor(s, provider.FamilyGemini, false))); strings.Join(got, ",") != "X-My-Tenant-Tag,X-Test-Id" {
		t.Errorf("with forward_headers: forwarded %v", got)
	}
}

func TestUpstreamHeadersGateway(t *testing.T) {
	in := http.Header{}
	for _, n := range []string{"cf-aig-cache-ttl", "cf-aig-skip-cache", "cf-aig-collect-log", "cf-aig-custom-cost",
		"cf-aig-cache-key", "cf-aig-metadata", "cf-aig-authorization", "cf-ray", "Content-Type"} {
		in[n] = []string{"v"}
	}
	tests := []struct {
		name string
		rule forwardRule
		want []string
	}{
		{"direct: no cf-aig-* at all", forwardRule{}, []string{"Content-Type"}},
		{"gateway: the cache controls", forwardRule{gateway: true},
			[]string{"Cf-Aig-Cache-Ttl", "Cf-Aig-Skip-Cache", "Content-Type"}},
		{"gateway with gateway_headers", ruleFor(settings.Settings{GatewayHeaders: []string{"Cf-Aig-Metadata"}}, provider.FamilyOpenAI, true),
			[]string{"Cf-Aig-Cache-Ttl", "Cf-Aig-Metadata", "Cf-Aig-Skip-Cache", "Content-Type"}},
		{"gateway_headers mean nothing on a direct call", ruleFor(settings.Settings{GatewayHeaders: []string{"Cf-Aig-Metadata"}}, provider.FamilyOpenAI, false),
			[]string{"Content-Type"}},
	}
	for _, tc := range tests {
		if got := names(upstreamHeaders(in, tc.rule)); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: forwarded %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUpstreamHeadersPerFamily(t *testing.T) {
	in := http.Header{}
	for _, tc := range requestHeaderCases {
		// The raw (possibly non-canonical) name, as a runtime may give it.
		in[tc.name] = []string{"value of " + tc.name, "second, with a comma"}
	}
	for _, fam := range allFamilies {
		out := upstreamHeaders(in, forwardRule{family: fam})
		for _, tc := range requestHeaderCases {
			want := false
			for _, f := range tc.families {
				want = want || f == fam
			}
			vs, got := out[http.CanonicalHeaderKey(tc.name)]
			if got != want {
				t.Errorf("family %d: %s forwarded = %v, want %v", fam, tc.name, got, want)
			}
			if got && (len(vs) != 2 || vs[0] != "value of "+tc.name || vs[1] != "second, with a comma") {
				t.Errorf("family %d: %s forwarded as %q, want the client's values", fam, tc.name, vs)
			}
		}
	}
	if in.Get("Authorization") == "" {
		t.Errorf("upstreamHeaders modified its input")
	}
	if len(upstreamHeaders(http.Header{}, forwardRule{})) != 0 {
		t.Errorf("empty input gave headers")
	}
}
