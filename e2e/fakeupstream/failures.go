package fakeupstream

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scripted failures, with the status codes, headers and bodies the
// providers really send. Use them with SetRule.

// geminiQuota is the 429 RESOURCE_EXHAUSTED the Gemini API
// (generativelanguage.googleapis.com) sends when a free-tier quota is used
// up: a google.rpc.QuotaFailure naming the quota, a Help link and a
// RetryInfo. Google sends no Retry-After header; the delay is only in the
// body (the message's is precise, RetryInfo's truncated to seconds).
func geminiQuota(model, quotaID, limit, retryDelay string) Rule {
	precise := retryDelay
	if d, err := time.ParseDuration(retryDelay); err == nil {
		precise = strconv.FormatFloat(d.Seconds()+0.451688064, 'f', -1, 64) + "s"
	}
	const metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
	return Rule{Status: http.StatusTooManyRequests, Models: []string{model}, Body: pretty(`{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: `+metric+`, limit: `+limit+`\nPlease retry in `+precise+`.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"`+metric+`","quotaId":"`+quotaID+`","quotaDimensions":{"location":"global","model":"`+model+`"},"quotaValue":"`+limit+`"}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"`+retryDelay+`"}]}}`, "  ")}
}

// GeminiDailyQuota is Gemini's answer once a free-tier key has used its
// requests per day for model (quota GenerateRequestsPerDayPerProjectPerModel-FreeTier,
// limit 50): 429 RESOURCE_EXHAUSTED, although a retry only helps tomorrow.
func GeminiDailyQuota(model string) Rule {
	return geminiQuota(model, "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "50", "26s")
}

// GeminiMinuteQuota is Gemini's answer once a free-tier key has used its
// requests per minute for model (quota GenerateRequestsPerMinutePerProjectPerModel-FreeTier,
// limit 10), with RetryInfo.retryDelay = retryDelay (e.g. "26s").
func GeminiMinuteQuota(model string, retryDelay string) Rule {
	return geminiQuota(model, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10", retryDelay)
}

// GeminiInvalidKey is Gemini's answer to a wrong or deleted key: 400
// INVALID_ARGUMENT with reason API_KEY_INVALID (not a 401).
func GeminiInvalidKey() Rule {
	return Rule{Status: http.StatusBadRequest, Body: pretty(`{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}`, "  ")}
}

// GeminiModelNotFound is Gemini's 404 NOT_FOUND for a model name it does
// not know (the request's fault, not the key's).
func GeminiModelNotFound(model string) Rule {
	return Rule{Status: http.StatusNotFound, Models: []string{model}, Body: pretty(`{"error":{"code":404,"message":"models/`+model+` is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.","status":"NOT_FOUND"}}`, "  ")}
}

// GeminiOverloaded is Gemini's 503 UNAVAILABLE when the model is
// overloaded (transient, not the key's fault).
func GeminiOverloaded() Rule {
	return Rule{Status: http.StatusServiceUnavailable, Body: pretty(`{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, "  ")}
}

// OpenAIInsufficientQuota is OpenAI's answer once the account is out of
// credit: a 429 like a rate limit, but with type and code
// insufficient_quota and no Retry-After (waiting does not help).
func OpenAIInsufficientQuota() Rule {
	return Rule{Status: http.StatusTooManyRequests, Body: pretty(`{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`, "    ")}
}

// OpenAIModelNotFound is OpenAI's 404 model_not_found for a model that
// does not exist or that the key's organization may not use.
func OpenAIModelNotFound(model string) Rule {
	return Rule{Status: http.StatusNotFound, Models: []string{model}, Body: pretty(`{"error":{"message":"The model `+"`"+model+"`"+` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}`, "    ")}
}

// OpenAIRateLimitedNoHint is an OpenAI rate_limit_exceeded 429 that gives
// no delay at all: no Retry-After or x-ratelimit-reset header and no
// "try again in" in the message, as OpenAI sometimes answers. It applies to
// model only, or to every model when model is empty.
func OpenAIRateLimitedNoHint(model string) Rule {
	r := Rule{Status: http.StatusTooManyRequests, Body: pretty(`{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "    ")}
	if model != "" {
		r.Models = []string{model}
	}
	return r
}

// DeepSeekInsufficientBalance is DeepSeek's 402 when the account has no
// balance left (api.deepseek.com error codes: 402 Insufficient Balance).
func DeepSeekInsufficientBalance() Rule {
	return Rule{Status: http.StatusPaymentRequired, Body: `{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}`}
}

// SiliconFlowInsufficientBalance is SiliconFlow's 403 code 30001 when the
// account balance cannot pay for the request.
func SiliconFlowInsufficientBalance() Rule {
	return Rule{Status: http.StatusForbidden, Body: `{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}`}
}

// SiliconFlowModelForbidden is SiliconFlow's 403 code 30011 for a paid
// model asked for with a free account's key.
func SiliconFlowModelForbidden(model string) Rule {
	return Rule{Status: http.StatusForbidden, Models: []string{model}, Body: `{"code":30011,"message":"The model is not available for free users. Please recharge to use it.","data":null}`}
}

// SiliconFlowDailyLimit is SiliconFlow's 429 code 50602 once a key has
// used its requests per day (RPD) for model.
func SiliconFlowDailyLimit(model string) Rule {
	return Rule{Status: http.StatusTooManyRequests, Models: []string{model}, Body: `{"code":50602,"message":"Request was rejected due to rate limiting. If you want more, please contact contact@siliconflow.cn. Details:RPD limit reached, limit: 1000, current: 1001","data":null}`}
}

// SiliconFlowInvalidKey is SiliconFlow's 401 for a wrong key: the body is
// a bare JSON string, not an object.
func SiliconFlowInvalidKey() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `"Invalid token"`}
}

// AnthropicInvalidKey is Anthropic's 401 authentication_error for a wrong
// x-api-key.
func AnthropicInvalidKey() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`}
}

// AnthropicRateLimited is Anthropic's 429 rate_limit_error with a
// retry-after of retryAfter seconds and the anthropic-ratelimit-requests-*
// headers showing the 50 RPM limit used up.
func AnthropicRateLimited(retryAfter int) Rule {
	return Rule{
		Status: http.StatusTooManyRequests,
		Header: map[string]string{
			"Retry-After":                            strconv.Itoa(retryAfter),
			"Anthropic-Ratelimit-Requests-Limit":     "50",
			"Anthropic-Ratelimit-Requests-Remaining": "0",
			"Anthropic-Ratelimit-Requests-Reset":     time.Now().Add(time.Duration(retryAfter) * time.Second).UTC().Format(time.RFC3339),
		},
		Body: `{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (5b6a3a7e-0f4c-4c8e-9d2a-8c1f0e7d6b5a) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."}}`,
	}
}

// AnthropicOverloaded is Anthropic's 529 overloaded_error (transient,
// not the key's fault).
func AnthropicOverloaded() Rule {
	return Rule{Status: 529, Body: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`}
}

// AnthropicLowCredit is Anthropic's answer once the account is out of
// credit: a 400 invalid_request_error, which only its message tells apart
// from a bad request.
func AnthropicLowCredit() Rule {
	return Rule{Status: http.StatusBadRequest, Body: `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}`}
}

// EchoHeadersPath ends the path of a route (under any prefix) that answers
// 200 with every request header named X-Echo-<Name> sent back as response
// header <Name>, value for value, and a Content-Length it states itself,
// for HEAD too (as real servers do; Go's server leaves it out otherwise).
const EchoHeadersPath = "/echo/headers"

func echoHeaders(w http.ResponseWriter, r *http.Request) {
	const body = `{"ok":true}`
	for name, vs := range r.Header {
		if out, ok := strings.CutPrefix(name, "X-Echo-"); ok {
			w.Header()[out] = vs
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write([]byte(body))
	}
}

func writeJSON(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(body))
}

func modelInPath(p string) string {
	i := strings.Index(p, "models/")
	if i < 0 {
		return ""
	}
	m := p[i+len("models/"):]
	if j := strings.IndexAny(m, ":/"); j >= 0 {
		m = m[:j]
	}
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// capture records what the fake sent.
type capture struct {
	http.ResponseWriter
	status int
	buf    []byte
}

func (c *capture) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.buf = append(c.buf, b...)
	return c.ResponseWriter.Write(b)
}

func (c *capture) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
