package access

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClientCredential(t *testing.T) {
	tests := []struct {
		name   string
		target string
		hdr    []string // name/value pairs
		want   string
	}{
		{"bearer", "/v1/models", []string{"Authorization", "Bearer tok-1"}, "tok-1"},
		{"bearer lower case", "/v1/models", []string{"Authorization", "bearer tok-1"}, "tok-1"},
		{"bearer upper case and spaces", "/v1/models", []string{"Authorization", "  BEARER   tok-1  "}, "tok-1"},
		{"authorization without scheme", "/v1/models", []string{"Authorization", "tok-raw"}, "tok-raw"},
		{"x-api-key", "/v1/models", []string{"x-api-key", "tok-2"}, "tok-2"},
		{"x-goog-api-key", "/v1/models", []string{"x-goog-api-key", "tok-3"}, "tok-3"},
		{"api-key", "/v1/models", []string{"api-key", "tok-4"}, "tok-4"},
		{"xi-api-key", "/v1/models", []string{"xi-api-key", "tok-5"}, "tok-5"},
		{"query key", "/api/google-ai-studio/v1beta/models?key=tok-6&alt=sse", nil, "tok-6"},
		{"header value trimmed", "/v1/models", []string{"x-api-key", "  tok-7\t"}, "tok-7"},
		{"none", "/v1/models?other=1", nil, ""},
		{"empty query key", "/v1/models?key=", nil, ""},
		{"blank header ignored", "/v1/models", []string{"Authorization", "   ", "x-api-key", "tok-8"}, "tok-8"},
		{"authorization before x-api-key", "/v1/models", []string{"x-api-key", "second", "Authorization", "Bearer first"}, "first"},
		{"x-api-key before x-goog-api-key", "/v1/models", []string{"x-goog-api-key", "second", "x-api-key", "first"}, "first"},
		{"x-goog-api-key before api-key", "/v1/models", []string{"api-key", "second", "x-goog-api-key", "first"}, "first"},
		{"api-key before xi-api-key", "/v1/models", []string{"xi-api-key", "second", "api-key", "first"}, "first"},
		{"header before query", "/v1/models?key=second", []string{"xi-api-key", "first"}, "first"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				r.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			if got := Credential(r); got != tc.want {
				t.Errorf("Credential = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSecretEqual(t *testing.T) {
	tests := []struct {
		presented, want string
		eq              bool
	}{
		{"s3cret", "s3cret", true},
		{"s3cret", "s3cre", false},
		{"s3cre", "s3cret", false},
		{"S3cret", "s3cret", false},
		{"s3cret ", "s3cret", false},
		{"", "s3cret", false},
		{"s3cret", "", false},
		{"", "", true},
		{strings.Repeat("a", 1000), strings.Repeat("a", 1000), true},
		{strings.Repeat("a", 1000), strings.Repeat("a", 999) + "b", false},
		{"clé✓", "clé✓", true},
	}
	for _, tc := range tests {
		if got := SecretEqual(tc.presented, tc.want); got != tc.eq {
			t.Errorf("SecretEqual(%q, %q) = %v, want %v", tc.presented, tc.want, got, tc.eq)
		}
	}
}

func TestThrottleKey(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1:2:3:4", "fe80::/64"},
		{"fe80::1%eth0", "fe80::1%eth0"}, // not an address Cloudflare sends: counted as given
		{"not an address", "not an address"},
		{strings.Repeat("x", 300), strings.Repeat("x", 64)},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cf-Connecting-Ip", tc.ip)
		if got := ThrottleKey(r); got != tc.want {
			t.Errorf("ThrottleKey(%q) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}
