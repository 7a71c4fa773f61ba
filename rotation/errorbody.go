package rotation

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// errorInfo is what an upstream error body says, in the few shapes
// providers use:
//
//	OpenAI & compatible  {"error":{"message","type","code","param"}}
//	Gemini               {"error":{"code":429,"message","status","details":[…]}}
//	                     (a one-element array of that on its OpenAI API)
//	Anthropic            {"type":"error","error":{"type","message"}}
//	SiliconFlow          {"code":20012,"message","data":null} or "Invalid token"
//
// Anything else (HTML, plain text) is kept as a message.
type errorInfo struct {
	code       string // error.code / top-level code (numbers as text)
	typ        string // error.type (OpenAI, Anthropic)
	status     string // error.status (Gemini)
	message    string // lower case
	reasons    []string
	quotaIDs   []string
	retryDelay string
	notJSON    bool // an HTML or text page, not a provider's error object
}

// maxMessage bounds the text the heuristics scan.
const maxMessage = 2048

func parseError(body []byte) errorInfo {
	var e errorInfo
	if len(body) == 0 {
		return e
	}
	if !gjson.ValidBytes(body) {
		e.message = lowerPrefix(string(body))
		e.notJSON = true
		return e
	}
	root := gjson.ParseBytes(body)
	if root.IsArray() {
		root = root.Get("0")
	}
	if root.Type == gjson.String {
		e.message = lowerPrefix(root.String())
		return e
	}
	obj := root.Get("error")
	if d := root.Get("detail"); d.IsObject() && !obj.Exists() {
		// ElevenLabs: {"detail":{"status":"quota_exceeded","message":…}}
		e.code = d.Get("status").String()
		obj = d
	}
	if obj.Type == gjson.String {
		e.message = lowerPrefix(obj.String())
		obj = root
	} else if !obj.IsObject() {
		obj = root
	}
	if e.message == "" {
		e.message = lowerPrefix(obj.Get("message").String())
	}
	if e.code == "" {
		e.code = scalar(obj.Get("code"))
	}
	if e.code == "" {
		e.code = scalar(root.Get("code"))
	}
	e.typ = obj.Get("type").String()
	e.status = obj.Get("status").String()
	for _, d := range obj.Get("details").Array() {
		switch t := d.Get("@type").String(); {
		case strings.HasSuffix(t, "google.rpc.ErrorInfo"):
			e.reasons = append(e.reasons, d.Get("reason").String())
		case strings.HasSuffix(t, "google.rpc.QuotaFailure"):
			for _, v := range d.Get("violations").Array() {
				e.quotaIDs = append(e.quotaIDs, v.Get("quotaId").String())
			}
		case strings.HasSuffix(t, "google.rpc.RetryInfo"):
			e.retryDelay = d.Get("retryDelay").String()
		}
	}
	return e
}

func scalar(r gjson.Result) string {
	switch r.Type {
	case gjson.String:
		return r.String()
	case gjson.Number:
		return strconv.FormatInt(r.Int(), 10)
	}
	return ""
}

// lowerPrefix lower-cases the start of s, at most maxMessage bytes and
// never half a character (lower-casing may lengthen text, so it comes
// first).
func lowerPrefix(s string) string {
	if len(s) > maxMessage {
		s = s[:maxMessage]
	}
	s = strings.ToLower(s)
	if len(s) > maxMessage {
		s = s[:maxMessage]
	}
	for len(s) > 0 && !utf8.ValidString(s[max(len(s)-utf8.UTFMax, 0):]) {
		s = s[:len(s)-1]
	}
	return s
}

// suffix names the provider's own error code for the key's history; a
// bare HTTP status repeated as the code says nothing new.
func (e errorInfo) suffix() string {
	code := e.code
	if len(code) == 3 && strings.Trim(code, "0123456789") == "" {
		code = ""
	}
	for _, s := range []string{code, e.status, e.typ} {
		if s != "" && len(s) <= 64 {
			return " " + s
		}
	}
	return ""
}

// has reports whether the message contains one of subs. On a 400 the
// message often quotes the client's own input ("Invalid value: '<what
// you sent>'"), so strict callers only accept a message that starts with
// the phrase: a client must not be able to block keys with its prompt.
func (e errorInfo) has(subs ...string) bool {
	for _, s := range subs {
		if strings.Contains(e.message, s) {
			return true
		}
	}
	return false
}

func (e errorInfo) starts(subs ...string) bool {
	m := strings.TrimSpace(e.message)
	for _, s := range subs {
		if strings.HasPrefix(m, s) {
			return true
		}
	}
	return false
}

func (e errorInfo) says(strict bool, subs ...string) bool {
	if strict {
		return e.starts(subs...)
	}
	return e.has(subs...)
}

func (e errorInfo) reason(r string) bool {
	for _, x := range e.reasons {
		if x == r {
			return true
		}
	}
	return false
}

// keyReasons are Google's ErrorInfo reasons that mean this key (or the
// project behind it) cannot be used from keypool, whatever is asked: it
// is invalid or expired, restricted to other APIs, referrers, addresses
// or apps (keypool forwards none of those client headers), or its
// project is suspended or has the API turned off.
var keyReasons = []string{"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
	"API_KEY_HTTP_REFERRER_BLOCKED", "API_KEY_IP_ADDRESS_BLOCKED", "API_KEY_ANDROID_APP_BLOCKED",
	"API_KEY_IOS_APP_BLOCKED", "CONSUMER_SUSPENDED", "CONSUMER_INVALID", "SERVICE_DISABLED"}

// invalidKey: the credential itself is wrong, revoked, expired or
// suspended, or its account may not use the API at all.
func (e errorInfo) invalidKey(strict bool) bool {
	for _, r := range keyReasons {
		if e.reason(r) {
			return true
		}
	}
	switch e.code {
	case "invalid_api_key", "wrong_api_key", "no_organization", "account_deactivated":
		return true
	}
	return e.typ == "authentication_error" ||
		e.says(strict, "api key not valid", "incorrect api key", "invalid api key", "invalid x-api-key",
			"invalid token", "invalid api token", "wrong api key", "api key expired", "permission denied: consumer",
			"your api key was reported as leaked", "api key has been revoked", "invalid authentication") ||
		!strict && e.has("has been suspended", "reported as leaked", "associated with a deactivated account")
}

// clientCodes are error codes about a header or option the client sent
// (OpenAI's organisation and project selectors), not about the key.
var clientCodes = []string{"mismatched_organization", "mismatched_project", "invalid_organization", "invalid_project"}

// aboutClient: the refusal names something the client chose, which every
// key would meet alike: an organisation or project selector, an OAuth
// mode or beta feature, a Google user project or OAuth token.
func (e errorInfo) aboutClient() bool {
	for _, c := range clientCodes {
		if e.code == c {
			return true
		}
	}
	return e.reason("USER_PROJECT_DENIED") || e.reason("ACCESS_TOKEN_EXPIRED") || e.reason("ACCESS_TOKEN_SCOPE_INSUFFICIENT") ||
		e.reason("ACCESS_TOKEN_TYPE_UNSUPPORTED") ||
		e.has("openai-organization header", "openai-project header", "no such organization", "oauth", "anthropic-beta")
}

// noCredit: the account behind the key has no money or quota left.
func (e errorInfo) noCredit(strict bool) bool {
	return e.code == "insufficient_quota" || e.typ == "insufficient_quota" ||
		e.code == "30001" || // SiliconFlow: account balance is insufficient
		e.code == "quota_exceeded" || // ElevenLabs: characters used up
		e.says(strict, "insufficient balance", "sorry, your account balance is insufficient",
			"your credit balance is too low", "insufficient credits") ||
		!strict && e.has("balance is insufficient", "credit balance is too low")
}

// region: the provider refuses where the request comes from.
func (e errorInfo) region(strict bool) bool {
	return e.code == "unsupported_country_region_territory" ||
		e.says(strict, "user location is not supported", "country, region, or territory not supported") ||
		!strict && e.has("location is not supported", "not available in your country", "not available in your region")
}

// aboutRequest: a 403 or 429 that no key could get past, because of what
// was asked (moderation, a request over the per-minute token limit).
func (e errorInfo) aboutRequest() bool {
	return e.has("requires moderation", "your input was flagged") || e.starts("request too large")
}

// aboutModel: the error concerns the requested model.
func (e errorInfo) aboutModel() bool {
	return e.code == "model_not_found" || e.has("model")
}

// busy: a 429 about the service's load rather than the key's limits.
func (e errorInfo) busy() bool {
	return e.code == "50603" || e.typ == "overloaded_error" || e.has("system is too busy", "overloaded")
}

// daily: the quota that ran out resets once a day.
func (e errorInfo) daily() bool {
	for _, q := range e.quotaIDs {
		if strings.Contains(q, "PerDay") {
			return true
		}
	}
	return e.has("per day", "rpd limit", "tpd limit", "(rpd)", "(tpd)", "daily", "free-models-per-day")
}
