package rotation

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keypool/keypool/provider"
)

// fuzzProviders are the provider names whose daily resets differ; the
// fuzzer may also invent its own.
var fuzzProviders = []string{"openai", "google-ai-studio", "siliconflow", "anthropic", "openrouter", "groq", "deepseek", ""}

// longHTML is an ASCII error page just over maxMessage bytes, so that a
// mutation inserting a multi-byte character lands near the cut.
var longHTML = "<html><head><title>500 Internal Server Error</title></head><body>" +
	strings.Repeat("<p>The server encountered an internal error and was unable to complete your request.</p>\n", 24) +
	"</body></html>"

func FuzzClassify(f *testing.F) {
	for _, tt := range realCases {
		ra := ""
		if tt.h != nil {
			ra = tt.h.Get("Retry-After")
		}
		f.Add(tt.status, []byte(tt.body), ra, tt.prov, uint8(tt.fam), tt.streak)
	}
	for _, ra := range []string{"", "20", "0.2", "1e10", "-Inf", "NaN", "Fri, 16 Jan 2026 08:00:00 GMT", "later"} {
		f.Add(429, []byte(openai429TPM), ra, "openai", uint8(provider.FamilyOpenAI), int64(0))
	}
	f.Add(429, []byte(longHTML), "", "openai", uint8(0), int64(0))
	f.Add(503, []byte(longHTML), "", "google-ai-studio", uint8(1), int64(3))
	f.Add(429, []byte(`{"error":{"message":"try again in 99999999999h"}}`), "", "openai", uint8(0), int64(0))
	f.Add(429, []byte(`{"error":{"details":[{"@type":"google.rpc.RetryInfo","retryDelay":"9999999999999s"}]}}`), "", "google-ai-studio", uint8(1), int64(0))
	f.Add(-1<<63, []byte(nil), "", "", uint8(0), int64(-1<<63))
	f.Add(1<<62, []byte("x"), "", "siliconflow", uint8(2), int64(1<<62))

	f.Fuzz(func(t *testing.T, status int, body []byte, ra, prov string, fam uint8, streak int64) {
		h := http.Header{}
		if ra != "" {
			if fam&4 != 0 {
				h.Set("Retry-After-Ms", ra)
			} else {
				h.Set("Retry-After", ra)
			}
		}
		if fam&8 != 0 {
			prov = fuzzProviders[int(fam>>4)%len(fuzzProviders)]
		}
		a := Answer{Provider: prov, Family: provider.Family(fam % 3), Status: status, Header: h, Body: body, Streak: streak}
		v := Policy{}.Classify(a, clsNow)

		if v.Action < Serve || v.Action > ExhaustKey {
			t.Fatalf("Action %d out of range", int(v.Action))
		}
		if v.Cooldown < 0 || v.Cooldown > maxCooldown {
			t.Fatalf("Cooldown %v out of [0, 24h]: %+v", v.Cooldown, v)
		}
		switch v.Action {
		case Cool:
			if v.Cooldown < time.Second {
				t.Fatalf("Cool for %v < 1s: %+v", v.Cooldown, v)
			}
		case Retry:
			if v.Cooldown > maxServerCooldown {
				t.Fatalf("Retry cooldown %v above %v", v.Cooldown, maxServerCooldown)
			}
		default:
			if v.Cooldown != 0 {
				t.Fatalf("%v with Cooldown %v", v.Action, v.Cooldown)
			}
			if v.Storm {
				t.Fatalf("%v marked as storm", v.Action)
			}
		}
		if (status >= 200 && status < 300) != (v.Action == Serve) {
			t.Fatalf("status %d gave %v", status, v.Action)
		}
		if v.Action == Serve || v.Action == Return {
			if v.Reason != "" {
				t.Fatalf("%v with Reason %q", v.Action, v.Reason)
			}
		} else if v.Reason == "" {
			t.Fatalf("%v without Reason", v.Action)
		}
		if len(v.Reason) > 120 {
			t.Fatalf("Reason is %d bytes: %q", len(v.Reason), v.Reason)
		}
		if v2 := (Policy{}).Classify(a, clsNow); v2 != v {
			t.Fatalf("not deterministic: %+v then %+v", v, v2)
		}
	})
}

func FuzzTryAgainIn(f *testing.F) {
	for _, s := range []string{
		"please try again in 18.642s", "try again in 1m26.4s", "try again in 120ms", "try again in 6h0m0s",
		"please retry in 26.451688064s.", "try again in soon", "try again in 5.", "try again in 1000h",
		"try again in 9999999999s", "try again in ", "retry in .", "try again in 1h1h1h1h1h",
		"try again in 0.000000001s", "retry in 1e5s", "try again in 2562047h47m16.854775807s",
	} {
		f.Add(s)
	}
	for _, tt := range realCases {
		f.Add(parseError([]byte(tt.body)).message)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		for _, m := range []string{msg, strings.ToLower(msg)} {
			d, ok := TryAgainIn(m)
			if ok && (d < time.Second || d > maxCooldown) {
				t.Fatalf("TryAgainIn(%q) = %v, out of [1s, 24h]", m, d)
			}
			if !ok && d != 0 {
				t.Fatalf("TryAgainIn(%q) = %v with ok=false", m, d)
			}
			if ok && !strings.Contains(m, "try again in ") && !strings.Contains(m, "retry in ") {
				t.Fatalf("TryAgainIn(%q) found a hint without a marker", m)
			}
		}
	})
}

func FuzzParseError(f *testing.F) {
	for _, tt := range realCases {
		f.Add([]byte(tt.body))
	}
	for _, s := range []string{
		"", "null", "[]", "[1]", `[""]`, `"x"`, `{"error":null}`, `{"error":[1,2]}`, `{"error":{"details":{}}}`,
		`{"error":{"details":[{"@type":"google.rpc.QuotaFailure","violations":{"quotaId":1}}]}}`,
		`{"code":1e400}`, `{"code":-99999999999999999999}`, `{"error":{"code":true}}`,
		longHTML, `{"error":{"message":"` + longHTML[:2100] + `"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e := parseError(body)
		if len(e.message) > maxMessage {
			t.Fatalf("message is %d bytes, more than maxMessage (%d)", len(e.message), maxMessage)
		}
		if s := e.suffix(); len(s) > 65 {
			t.Fatalf("suffix is %d bytes: %q", len(s), s)
		}
		// The heuristics read any shape without panicking.
		_ = e.invalidKey(true) || e.invalidKey(false) || e.noCredit(true) || e.noCredit(false) || e.region(true) || e.region(false) || e.aboutRequest() || e.aboutModel() || e.busy() || e.daily()
	})
}

// parseError truncates before lower-casing, and strings.ToLower can grow a
// string (an invalid byte becomes the 3-byte U+FFFD, 'Ⱥ' becomes the 3-byte
// 'ⱥ'), so message can exceed maxMessage, the bound its comment promises.
func TestParseErrorMessageBound(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"ascii text", strings.Repeat("A", 3*maxMessage)},
		{"ascii json message", `{"error":{"message":"` + strings.Repeat("A", 3*maxMessage) + `"}}`},
		{"valid utf-8, same length when lowered", strings.Repeat("É", maxMessage)},
		{"cut inside a rune", strings.Repeat("a", maxMessage-1) + "é"},
		{"invalid utf-8 bytes", strings.Repeat("\xff", maxMessage/2)},
		{"runes that grow when lowered", strings.Repeat("Ⱥ", maxMessage/2)},
		{"json message with runes that grow", `{"error":{"message":"` + strings.Repeat("Ⱥ", maxMessage/2) + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := parseError([]byte(tt.body))
			if len(e.message) > maxMessage {
				t.Errorf("message is %d bytes, want at most %d", len(e.message), maxMessage)
			}
			if e.message != "" && !utf8.ValidString(e.message) && utf8.ValidString(tt.body) {
				t.Errorf("message of a valid UTF-8 body is not valid UTF-8")
			}
		})
	}
}
