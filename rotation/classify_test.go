package rotation

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/provider"
)

// clsNow is the clock of the classification tables: Thursday 2026-01-15
// 18:00 UTC, which is 10:00 in Los Angeles (PST, UTC-8) and 02:00 on the
// 16th in Beijing (UTC+8). The daily resets after it are hard-coded here so
// that a wrong DailyReset shows up as a wrong cooldown.
var clsNow = time.Date(2026, 1, 15, 18, 0, 0, 0, time.UTC)

const (
	untilPacific = 14 * time.Hour // to 2026-01-16 00:00 PST = 08:00Z
	untilUTC     = 6 * time.Hour  // to 2026-01-16 00:00Z
	untilBeijing = 22 * time.Hour // to 2026-01-17 00:00 CST = 2026-01-16 16:00Z
)

// Real error bodies, copied in the shapes the providers send (identifiers
// shortened or replaced).
const (
	// OpenAI and OpenAI-compatible services.
	openai401InvalidKey = `{
    "error": {
        "message": "Incorrect API key provided: sk-ab***************************************7f3c. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_api_key"
    }
}`
	openai429InsufficientQuota = `{
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }
}`
	openai429TPM = `{
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-AbCdEf123456 on tokens per min (TPM): Limit 30000, Used 27463, Requested 3786. Please try again in 18.642s. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "tokens",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}`
	openai429RPD = `{
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-AbCdEf123456 on requests per day (RPD): Limit 10000, Used 10000, Requested 1. Please try again in 1m26.4s. Visit https://platform.openai.com/account/rate-limits to learn more. You can increase your rate limit by adding a payment method to your account at https://platform.openai.com/account/billing.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}`
	openai429RPMNoHint = `{
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-AbCdEf123456 on requests per min (RPM): Limit 500, Used 500, Requested 1. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}`
	openai429Millis = `{
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-AbCdEf123456 on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}`
	openai400InvalidValue = `{
  "error": {
    "message": "Invalid value: 'tool'. Supported values are: 'system', 'assistant', 'user', and 'function'.",
    "type": "invalid_request_error",
    "param": "messages.[1].role",
    "code": "invalid_value"
  }
}`
	openai400ContextLength = `{
  "error": {
    "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded"
  }
}`
	openai404ModelNotFound = `{
    "error": {
        "message": "The model ` + "`gpt-9`" + ` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": null,
        "code": "model_not_found"
    }
}`
	openai404InvalidURL = `{
    "error": {
        "message": "Invalid URL (POST /v1/nope)",
        "type": "invalid_request_error",
        "param": null,
        "code": null
    }
}`
	openai403Region = `{
    "error": {
        "code": "unsupported_country_region_territory",
        "message": "Country, region, or territory not supported",
        "param": null,
        "type": "request_forbidden"
    }
}`
	openai403ProjectModel = `{
    "error": {
        "message": "Project ` + "`proj_x`" + ` does not have access to model ` + "`gpt-4o`" + `",
        "type": "invalid_request_error",
        "param": null,
        "code": "model_not_found"
    }
}`
	openai500 = `{
  "error": {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": null,
    "code": null
  }
}`
	openai502 = `{
  "error": {
    "code": 502,
    "message": "Bad gateway.",
    "param": null,
    "type": "cf_bad_gateway"
  }
}`
	openai503 = `{
  "error": {
    "message": "The engine is currently overloaded, please try again later",
    "type": "server_error",
    "param": null,
    "code": null
  }
}`
	openai504 = `{
  "error": {
    "code": 504,
    "message": "Gateway timeout.",
    "param": null,
    "type": "cf_gateway_timeout"
  }
}`

	deepseek402 = `{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}`
	deepseek401 = `{"error":{"message":"Authentication Fails (no such user)","type":"authentication_error","param":null,"code":"invalid_request_error"}}`

	openrouter402 = `{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}`
	openrouter401 = `{"error":{"message":"No auth credentials found","code":401}}`
	openrouter429 = `{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1768608000000"},"provider_name":null}},"user_id":"user_2abcDEF"}`

	groq429RPD = `{"error":{"message":"Rate limit reached for model ` + "`llama-3.3-70b-versatile`" + ` in organization ` + "`org_01jabcdefghijk`" + ` service tier ` + "`on_demand`" + ` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 7m12s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing","type":"requests","code":"rate_limit_exceeded"}}`
	groq401    = `{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`
	groq413TPM = `{"error":{"message":"Request too large for model ` + "`llama-3.3-70b-versatile`" + ` in organization ` + "`org_01jabcdefghijk`" + ` service tier ` + "`on_demand`" + ` on tokens per minute (TPM): Limit 12000, Requested 19526, please reduce your message size and try again. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing","type":"tokens","code":"rate_limit_exceeded"}}`

	mistral422 = `{"object":"error","message":{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{"model":"mistral-small-latest"}}]},"type":"invalid_request_error","param":null,"code":null}`
	mistral401 = `{"detail":"Unauthorized"}`

	// SiliconFlow (api.siliconflow.cn).
	siliconflow401          = `"Invalid token"`
	siliconflow403Balance   = `{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}`
	siliconflow403FreeModel = `{"code":30011,"message":"The model is not available for free users. Please recharge to use it.","data":null}`
	siliconflow400NoModel   = `{"code":20012,"message":"Model does not exist. Please check it carefully.","data":null}`
	siliconflow429RPD       = `{"code":50602,"message":"Request was rejected due to rate limiting. If you want more, please contact contact@siliconflow.cn. Details:RPD limit reached, limit: 1000, current: 1001","data":null}`
	siliconflow429TPM       = `{"code":50602,"message":"Request was rejected due to rate limiting. If you want more, please contact contact@siliconflow.cn. Details:TPM limit reached.","data":null}`
	siliconflow429TPMNoCode = `{"message":"Request was rejected due to rate limiting. Details: TPM limit reached.","data":null}`
	siliconflow429Busy      = `{"code":50603,"message":"System is too busy now. Please try again later.","data":null}`

	// Google AI Studio (Gemini API).
	gemini429Daily = `{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 50, model: gemini-2.5-pro\nPlease retry in 26.451688064s.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "quotaDimensions": {
              "location": "global",
              "model": "gemini-2.5-pro"
            },
            "quotaValue": "50"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
          {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "26s"
      }
    ]
  }
}`
	gemini429Minute = `{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10, model: gemini-2.5-flash\nPlease retry in 26.451688064s.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {
              "location": "global",
              "model": "gemini-2.5-flash"
            },
            "quotaValue": "10"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
          {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "26s"
      }
    ]
  }
}`
	gemini429MinuteShortRetry = `{
  "error": {
    "code": 429,
    "message": "Resource has been exhausted (e.g. check quota).",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
            "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
            "quotaValue": "1000000"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "1.5s"
      }
    ]
  }
}`
	gemini429Plain = `{
  "error": {
    "code": 429,
    "message": "Resource has been exhausted (e.g. check quota).",
    "status": "RESOURCE_EXHAUSTED"
  }
}`
	gemini400KeyInvalid = `{
  "error": {
    "code": 400,
    "message": "API key not valid. Please pass a valid API key.",
    "status": "INVALID_ARGUMENT",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {
          "service": "generativelanguage.googleapis.com"
        }
      },
      {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key."
      }
    ]
  }
}`
	gemini400KeyExpired = `{
  "error": {
    "code": 400,
    "message": "API key expired. Please renew the API key.",
    "status": "INVALID_ARGUMENT",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_EXPIRED",
        "domain": "googleapis.com",
        "metadata": {
          "service": "generativelanguage.googleapis.com"
        }
      },
      {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key expired. Please renew the API key."
      }
    ]
  }
}`
	gemini400Location = `{
  "error": {
    "code": 400,
    "message": "User location is not supported for the API use.",
    "status": "FAILED_PRECONDITION"
  }
}`
	gemini400NoContents = `{
  "error": {
    "code": 400,
    "message": "* GenerateContentRequest.contents: contents is not specified\n",
    "status": "INVALID_ARGUMENT"
  }
}`
	gemini403Suspended = `{
  "error": {
    "code": 403,
    "message": "Permission denied: Consumer 'api_key:AIzaSyDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' has been suspended.",
    "status": "PERMISSION_DENIED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "CONSUMER_SUSPENDED",
        "domain": "googleapis.com",
        "metadata": {
          "consumer": "projects/123456789012",
          "service": "generativelanguage.googleapis.com"
        }
      },
      {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "Permission denied: Consumer 'api_key:AIzaSyDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' has been suspended."
      }
    ]
  }
}`
	gemini403Leaked = `{
  "error": {
    "code": 403,
    "message": "Your API key was reported as leaked. Please use another API key.",
    "status": "PERMISSION_DENIED"
  }
}`
	gemini403ServiceDisabled = `{
  "error": {
    "code": 403,
    "message": "Generative Language API has not been used in project 123456789012 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=123456789012 then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.",
    "status": "PERMISSION_DENIED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "SERVICE_DISABLED",
        "domain": "googleapis.com",
        "metadata": {
          "consumer": "projects/123456789012",
          "service": "generativelanguage.googleapis.com"
        }
      }
    ]
  }
}`
	gemini404Model = `{
  "error": {
    "code": 404,
    "message": "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.",
    "status": "NOT_FOUND"
  }
}`
	gemini503Overloaded = `{
  "error": {
    "code": 503,
    "message": "The model is overloaded. Please try again later.",
    "status": "UNAVAILABLE"
  }
}`
	gemini500Internal = `{
  "error": {
    "code": 500,
    "message": "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    "status": "INTERNAL"
  }
}`

	// Anthropic.
	anthropic401          = `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`
	anthropic403          = `{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fz"}`
	anthropic400Credit    = `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},"request_id":"req_011CSHoEeqs5C35K2UUqR7G0"}`
	anthropic429          = `{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (9f1b2c3d-0000-4000-8000-123456789abc) of 50,000 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."},"request_id":"req_011CSHoEeqs5C35K2UUqR7G1"}`
	anthropic529          = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7G2"}`
	anthropic500          = `{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011CSHoEeqs5C35K2UUqR7G3"}`
	anthropic404          = `{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"},"request_id":"req_011CSHoEeqs5C35K2UUqR7G4"}`
	anthropic413          = `{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."},"request_id":"req_011CSHoEeqs5C35K2UUqR7G5"}`
	anthropic400MaxTokens = `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":"req_011CSHoEeqs5C35K2UUqR7G6"}`

	// Pages from proxies and CDNs in front of a provider.
	html502Cloudflare   = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
	html403AccessDenied = `<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<!--[if gt IE 8]><!--> <html class="no-js" lang="en-US"> <!--<![endif]-->
<head>
<title>Access denied | api.example.com used Cloudflare to restrict access</title>
<meta charset="UTF-8" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta http-equiv="X-UA-Compatible" content="IE=Edge" />
<meta name="robots" content="noindex, nofollow" />
</head>
<body>
  <div id="cf-wrapper">
    <div id="cf-error-details" class="p-0">
      <header class="mx-auto pt-10 lg:pt-6 lg:px-8 w-240 lg:w-full mb-15 antialiased">
         <h1 class="inline-block md:block mr-2 md:mb-2 font-light text-60 md:text-3xl text-black-dark leading-tight">
           <span data-translate="error">Error</span>
           <span>1020</span>
         </h1>
         <span class="inline-block md:block heading-ray-id font-mono text-15 lg:text-sm lg:leading-relaxed">Ray ID: 8f1a2b3c4d5e6f70 &bull;</span>
        <h2 class="text-gray-600 leading-1.3 text-3xl lg:text-2xl font-light">Access denied</h2>
      </header>
      <section class="w-240 lg:w-full mx-auto mb-8 lg:px-8">
          <div class="w-1/2 md:w-full">
            <h2 class="text-3xl leading-tight font-normal mb-4 text-black-dark antialiased" data-translate="what_happened">What happened?</h2>
            <p>This website is using a security service to protect itself from online attacks.</p>
          </div>
      </section>
    </div>
  </div>
</body>
</html>
`
	akamai403AccessDenied = "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \nYou don't have permission to access \"http&#58;&#47;&#47;api&#46;example&#46;com&#47;v1&#47;chat&#47;completions\" on this server.<P>\nReference&#32;&#35;18&#46;6f2d3e17&#46;1736965200&#46;1a2b3c4d\n</BODY>\n</HTML>\n"
)

// wrap1 wraps an error body in a one-element array, as Gemini's
// OpenAI-compatible endpoint sends it.
func wrap1(body string) string { return "[" + body + "]" }

type clsCase struct {
	name   string
	prov   string
	fam    provider.Family
	status int
	h      http.Header
	body   string
	streak int64
	policy Policy
	action Action
	cool   time.Duration
	storm  bool
}

// realCases are real upstream answers and what keypool must make of them.
// fuzz_test.go seeds its corpora with them.
var realCases = []clsCase{
	// OpenAI.
	{name: "openai 401 invalid_api_key", prov: "openai", status: 401, body: openai401InvalidKey, action: BlockKey},
	{name: "openai 401 invalid_api_key even with retry-after", prov: "openai", status: 401, h: hdr("Retry-After", "5"), body: openai401InvalidKey, action: BlockKey},
	{name: "openai 429 insufficient_quota", prov: "openai", status: 429, body: openai429InsufficientQuota, action: ExhaustKey},
	{name: "openai 429 insufficient_quota ignores retry-after", prov: "openai", status: 429, h: hdr("Retry-After", "20"), body: openai429InsufficientQuota, action: ExhaustKey},
	{name: "openai 429 TPM try again in message", prov: "openai", status: 429, body: openai429TPM, action: Cool, cool: 18642 * time.Millisecond, storm: true},
	{name: "openai 429 TPM retry-after header wins", prov: "openai", status: 429, h: hdr("Retry-After", "20"), body: openai429TPM, action: Cool, cool: 20 * time.Second, storm: true},
	{name: "openai 429 TPM retry-after-ms header wins", prov: "openai", status: 429, h: hdr("retry-after-ms", "2500"), body: openai429TPM, action: Cool, cool: 2500 * time.Millisecond, storm: true},
	{name: "openai 429 TPM http-date header wins", prov: "openai", status: 429, h: hdr("Retry-After", clsNow.Add(45*time.Second).Format(http.TimeFormat)), body: openai429TPM, action: Cool, cool: 45 * time.Second, storm: true},
	{name: "openai 429 TPM unusable header falls back to message", prov: "openai", status: 429, h: hdr("Retry-After", "soon"), body: openai429TPM, action: Cool, cool: 18642 * time.Millisecond, storm: true},
	{name: "openai 429 TPM hint ignores streak", prov: "openai", status: 429, body: openai429TPM, streak: 6, action: Cool, cool: 18642 * time.Millisecond, storm: true},
	{name: "openai 429 hint below 1s clamps to 1s", prov: "openai", status: 429, body: openai429Millis, action: Cool, cool: time.Second, storm: true},
	{name: "openai 429 RPD try again in message", prov: "openai", status: 429, body: openai429RPD, action: Cool, cool: time.Minute + 26400*time.Millisecond},
	{name: "openai 429 RPD header wins", prov: "openai", status: 429, h: hdr("Retry-After", "87"), body: openai429RPD, action: Cool, cool: 87 * time.Second},
	{name: "openai 429 no hint streak 0", prov: "openai", status: 429, body: openai429RPMNoHint, action: Cool, cool: DefaultCooldown, storm: true},
	{name: "openai 429 no hint streak 1", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 1, action: Cool, cool: 2 * DefaultCooldown, storm: true},
	{name: "openai 429 no hint streak 2", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 2, action: Cool, cool: 4 * DefaultCooldown, storm: true},
	{name: "openai 429 no hint streak 4", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 4, action: Cool, cool: 16 * DefaultCooldown, storm: true},
	{name: "openai 429 no hint streak 5 capped", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 5, action: Cool, cool: DefaultMaxCooldown, storm: true},
	{name: "openai 429 no hint streak 1000 capped", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 1000, action: Cool, cool: DefaultMaxCooldown, storm: true},
	{name: "openai 429 no hint negative streak", prov: "openai", status: 429, body: openai429RPMNoHint, streak: -3, action: Cool, cool: DefaultCooldown, storm: true},
	{name: "openai 429 no hint policy 10s/25s streak 0", prov: "openai", status: 429, body: openai429RPMNoHint, policy: Policy{DefaultCooldown: 10 * time.Second, MaxCooldown: 25 * time.Second}, action: Cool, cool: 10 * time.Second, storm: true},
	{name: "openai 429 no hint policy 10s/25s streak 1", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 1, policy: Policy{DefaultCooldown: 10 * time.Second, MaxCooldown: 25 * time.Second}, action: Cool, cool: 20 * time.Second, storm: true},
	{name: "openai 429 no hint policy 10s/25s streak 2 capped", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 2, policy: Policy{DefaultCooldown: 10 * time.Second, MaxCooldown: 25 * time.Second}, action: Cool, cool: 25 * time.Second, storm: true},
	{name: "openai 429 no hint policy max only", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 1, policy: Policy{MaxCooldown: 90 * time.Second}, action: Cool, cool: 90 * time.Second, storm: true},
	{name: "openai 429 no hint policy max below default is raised", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 3, policy: Policy{DefaultCooldown: 2 * time.Minute, MaxCooldown: time.Minute}, action: Cool, cool: 2 * time.Minute, storm: true},
	{name: "openai 429 no hint negative policy uses defaults", prov: "openai", status: 429, body: openai429RPMNoHint, streak: 1, policy: Policy{DefaultCooldown: -time.Second, MaxCooldown: -time.Second}, action: Cool, cool: 2 * DefaultCooldown, storm: true},
	{name: "openai 429 hint beats policy default", prov: "openai", status: 429, body: openai429TPM, policy: Policy{DefaultCooldown: 5 * time.Minute}, action: Cool, cool: 18642 * time.Millisecond, storm: true},
	{name: "openai 400 invalid_value", prov: "openai", status: 400, body: openai400InvalidValue, action: Return},
	{name: "openai 400 context_length_exceeded", prov: "openai", status: 400, body: openai400ContextLength, action: Return},
	{name: "openai 404 model_not_found", prov: "openai", status: 404, body: openai404ModelNotFound, action: ModelMissing},
	{name: "openai 404 invalid URL", prov: "openai", status: 404, body: openai404InvalidURL, action: Return},
	{name: "openai 403 unsupported_country_region_territory", prov: "openai", status: 403, body: openai403Region, action: Return},
	{name: "openai 403 project has no access to model", prov: "openai", status: 403, body: openai403ProjectModel, action: BlockModel},
	{name: "openai 413", prov: "openai", status: 413, body: `{"error":{"message":"Request body too large.","type":"invalid_request_error","param":null,"code":null}}`, action: Return},
	{name: "openai 422", prov: "openai", status: 422, body: `{"error":{"message":"Unprocessable entity.","type":"invalid_request_error","param":null,"code":null}}`, action: Return},
	{name: "openai 408", prov: "openai", status: 408, body: `{"error":{"message":"Request timed out.","type":"timeout","param":null,"code":null}}`, action: Retry, storm: true},
	{name: "openai 500 streak 0", prov: "openai", status: 500, body: openai500, action: Retry, storm: true},
	{name: "openai 500 streak 1", prov: "openai", status: 500, body: openai500, streak: 1, action: Retry, cool: DefaultServerCooldown, storm: true},
	{name: "openai 500 streak 2", prov: "openai", status: 500, body: openai500, streak: 2, action: Retry, cool: 2 * DefaultServerCooldown, storm: true},
	{name: "openai 500 streak 5", prov: "openai", status: 500, body: openai500, streak: 5, action: Retry, cool: 16 * DefaultServerCooldown, storm: true},
	{name: "openai 500 streak 6 capped at 2 min", prov: "openai", status: 500, body: openai500, streak: 6, action: Retry, cool: 2 * time.Minute, storm: true},
	{name: "openai 500 streak 1000 capped at 2 min", prov: "openai", status: 500, body: openai500, streak: 1000, action: Retry, cool: 2 * time.Minute, storm: true},
	{name: "openai 500 policy server cooldown 1s streak 2", prov: "openai", status: 500, body: openai500, streak: 2, policy: Policy{ServerCooldown: time.Second}, action: Retry, cool: 2 * time.Second, storm: true},
	{name: "openai 500 policy server cooldown above cap", prov: "openai", status: 500, body: openai500, streak: 1, policy: Policy{ServerCooldown: 5 * time.Minute}, action: Retry, cool: 2 * time.Minute, storm: true},
	{name: "openai 502 streak 0", prov: "openai", status: 502, body: openai502, action: Retry, storm: true},
	{name: "openai 502 streak 1", prov: "openai", status: 502, body: openai502, streak: 1, action: Retry, cool: DefaultServerCooldown, storm: true},
	{name: "openai 503 streak 0", prov: "openai", status: 503, body: openai503, action: Retry, storm: true},
	{name: "openai 503 retry-after is not a cooldown", prov: "openai", status: 503, h: hdr("Retry-After", "30"), body: openai503, action: Retry, storm: true},
	{name: "openai 503 streak 2", prov: "openai", status: 503, body: openai503, streak: 2, action: Retry, cool: 2 * DefaultServerCooldown, storm: true},
	{name: "openai 504 streak 0", prov: "openai", status: 504, body: openai504, action: Retry, storm: true},
	{name: "openai 504 streak 1", prov: "openai", status: 504, body: openai504, streak: 1, action: Retry, cool: DefaultServerCooldown, storm: true},
	{name: "network error", prov: "openai", status: 0, action: Retry, storm: true},
	{name: "network error streak 1", prov: "openai", status: 0, streak: 1, action: Retry, cool: DefaultServerCooldown, storm: true},
	{name: "network error streak 3", prov: "openai", status: 0, streak: 3, action: Retry, cool: 4 * DefaultServerCooldown, storm: true},

	// DeepSeek, OpenRouter, Groq, Mistral.
	{name: "deepseek 402 insufficient balance", prov: "deepseek", status: 402, body: deepseek402, action: ExhaustKey},
	{name: "deepseek 401 authentication fails", prov: "deepseek", status: 401, body: deepseek401, action: BlockKey},
	{name: "openrouter 402 insufficient credits", prov: "openrouter", status: 402, body: openrouter402, action: ExhaustKey},
	{name: "openrouter 401 no auth credentials is not about a key", prov: "openrouter", status: 401, body: openrouter401, action: Return},
	{name: "openrouter 429 free-models-per-day until UTC midnight", prov: "openrouter", status: 429, body: openrouter429, action: Cool, cool: untilUTC},
	{name: "openrouter 429 free-models-per-day ignores streak", prov: "openrouter", status: 429, body: openrouter429, streak: 4, action: Cool, cool: untilUTC},
	{name: "groq 429 RPD retry-after header agrees with message", prov: "groq", status: 429, h: hdr("retry-after", "432"), body: groq429RPD, action: Cool, cool: 7*time.Minute + 12*time.Second},
	{name: "groq 429 RPD retry-after header wins over message", prov: "groq", status: 429, h: hdr("retry-after", "500"), body: groq429RPD, action: Cool, cool: 500 * time.Second},
	{name: "groq 429 RPD without header uses message", prov: "groq", status: 429, body: groq429RPD, action: Cool, cool: 7*time.Minute + 12*time.Second},
	{name: "groq 401 invalid_api_key", prov: "groq", status: 401, body: groq401, action: BlockKey},
	{name: "groq 413 request too large", prov: "groq", status: 413, body: groq413TPM, action: Return},
	{name: "mistral 422 validation", prov: "mistral", status: 422, body: mistral422, action: Return},
	{name: "mistral 401 unauthorized names no key: returned (a health check blames it)", prov: "mistral", status: 401, body: mistral401, action: Return},

	// SiliconFlow.
	{name: "siliconflow 401 invalid token", prov: "siliconflow", status: 401, body: siliconflow401, action: BlockKey},
	{name: "siliconflow 403 30001 balance insufficient", prov: "siliconflow", status: 403, body: siliconflow403Balance, action: ExhaustKey},
	{name: "siliconflow 403 30011 model not for free users", prov: "siliconflow", status: 403, body: siliconflow403FreeModel, action: BlockModel},
	{name: "siliconflow 400 20012 model does not exist", prov: "siliconflow", status: 400, body: siliconflow400NoModel, action: Return},
	{name: "siliconflow 429 RPD until Beijing midnight", prov: "siliconflow", status: 429, body: siliconflow429RPD, action: Cool, cool: untilBeijing},
	{name: "siliconflow 429 TPM default cooldown", prov: "siliconflow", status: 429, body: siliconflow429TPM, action: Cool, cool: DefaultCooldown, storm: true},
	{name: "siliconflow 429 TPM without code", prov: "siliconflow", status: 429, body: siliconflow429TPMNoCode, streak: 1, action: Cool, cool: 2 * DefaultCooldown, storm: true},
	{name: "siliconflow 429 50603 system busy", prov: "siliconflow", status: 429, body: siliconflow429Busy, action: Retry, storm: true},
	{name: "siliconflow 429 50603 system busy streak 1", prov: "siliconflow", status: 429, body: siliconflow429Busy, streak: 1, action: Retry, cool: DefaultServerCooldown, storm: true},

	// Google AI Studio.
	{name: "gemini 429 per-day quota until Pacific midnight, not RetryInfo", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: gemini429Daily, action: Cool, cool: untilPacific},
	{name: "gemini 429 per-day quota ignores retry-after header", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, h: hdr("Retry-After", "26"), body: gemini429Daily, action: Cool, cool: untilPacific},
	{name: "gemini 429 per-minute quota RetryInfo 26s", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: gemini429Minute, action: Cool, cool: 26 * time.Second, storm: true},
	{name: "gemini 429 per-minute quota RetryInfo 1.5s", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: gemini429MinuteShortRetry, action: Cool, cool: 1500 * time.Millisecond, storm: true},
	{name: "gemini 429 without details default cooldown", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: gemini429Plain, action: Cool, cool: DefaultCooldown, storm: true},
	{name: "gemini 429 RetryInfo 0s is no hint", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: strings.Replace(gemini429MinuteShortRetry, `"1.5s"`, `"0s"`, 1), action: Cool, cool: DefaultCooldown, storm: true},
	{name: "gemini 429 RetryInfo garbage falls back to message", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: strings.Replace(gemini429Minute, `"26s"`, `"soon"`, 1), action: Cool, cool: 26451688064 * time.Nanosecond, storm: true},
	{name: "gemini 400 API_KEY_INVALID", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: gemini400KeyInvalid, action: BlockKey},
	{name: "gemini 400 API_KEY_EXPIRED", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: gemini400KeyExpired, action: BlockKey},
	{name: "gemini 400 FAILED_PRECONDITION user location", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: gemini400Location, action: Return},
	{name: "gemini 400 INVALID_ARGUMENT contents not specified", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: gemini400NoContents, action: Return},
	{name: "gemini 403 consumer suspended", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 403, body: gemini403Suspended, action: BlockKey},
	{name: "gemini 403 key reported as leaked", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 403, body: gemini403Leaked, action: BlockKey},
	{name: "gemini 403 service disabled", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 403, body: gemini403ServiceDisabled, action: BlockKey},
	{name: "gemini 404 model not found", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 404, body: gemini404Model, action: ModelMissing},
	{name: "gemini 503 model overloaded", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 503, body: gemini503Overloaded, action: Retry, storm: true},
	{name: "gemini 500 internal", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 500, body: gemini500Internal, action: Retry, storm: true},
	{name: "gemini openai-compat 429 per-day in array", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: wrap1(gemini429Daily), action: Cool, cool: untilPacific},
	{name: "gemini openai-compat 429 per-minute in array", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 429, body: wrap1(gemini429Minute), action: Cool, cool: 26 * time.Second, storm: true},
	{name: "gemini openai-compat 400 API_KEY_INVALID in array", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: wrap1(gemini400KeyInvalid), action: BlockKey},
	{name: "gemini openai-compat 400 contents in array", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: wrap1(gemini400NoContents), action: Return},
	{name: "gemini openai-compat 400 location in array", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 400, body: wrap1(gemini400Location), action: Return},
	{name: "gemini openai-compat 404 in array", prov: "google-ai-studio", fam: provider.FamilyGemini, status: 404, body: wrap1(gemini404Model), action: ModelMissing},

	// Anthropic.
	{name: "anthropic 401 invalid x-api-key", prov: "anthropic", fam: provider.FamilyAnthropic, status: 401, body: anthropic401, action: BlockKey},
	{name: "anthropic 403 permission_error is about the resource asked for", prov: "anthropic", fam: provider.FamilyAnthropic, status: 403, body: anthropic403, action: Return},
	{name: "anthropic 400 credit balance too low", prov: "anthropic", fam: provider.FamilyAnthropic, status: 400, body: anthropic400Credit, action: ExhaustKey},
	{name: "anthropic 429 rate_limit_error retry-after 12", prov: "anthropic", fam: provider.FamilyAnthropic, status: 429, h: hdr("retry-after", "12", "anthropic-ratelimit-input-tokens-remaining", "0"), body: anthropic429, action: Cool, cool: 12 * time.Second, storm: true},
	{name: "anthropic 429 rate_limit_error without header", prov: "anthropic", fam: provider.FamilyAnthropic, status: 429, body: anthropic429, action: Cool, cool: DefaultCooldown, storm: true},
	{name: "anthropic 529 overloaded_error", prov: "anthropic", fam: provider.FamilyAnthropic, status: 529, body: anthropic529, action: Retry, storm: true},
	{name: "anthropic 529 overloaded_error streak 1", prov: "anthropic", fam: provider.FamilyAnthropic, status: 529, body: anthropic529, streak: 1, action: Retry, cool: DefaultServerCooldown, storm: true},
	{name: "anthropic 500 api_error", prov: "anthropic", fam: provider.FamilyAnthropic, status: 500, body: anthropic500, action: Retry, storm: true},
	{name: "anthropic 404 not_found_error model", prov: "anthropic", fam: provider.FamilyAnthropic, status: 404, body: anthropic404, action: ModelMissing},
	{name: "anthropic 413 request_too_large", prov: "anthropic", fam: provider.FamilyAnthropic, status: 413, body: anthropic413, action: Return},
	{name: "anthropic 400 max_tokens field required", prov: "anthropic", fam: provider.FamilyAnthropic, status: 400, body: anthropic400MaxTokens, action: Return},

	// Proxies, CDNs and odd bodies.
	{name: "html 502 from cloudflare proxy", prov: "openai", status: 502, body: html502Cloudflare, action: Retry, storm: true},
	// An HTML 403 comes from a firewall in front of the provider, which
	// refuses every key alike: next key, no block, counts toward a storm.
	{name: "html 403 cloudflare access denied moves on without blocking", prov: "openai", status: 403, body: html403AccessDenied, action: Retry, storm: true},
	{name: "html 403 akamai access denied moves on without blocking", prov: "openai", status: 403, body: akamai403AccessDenied, action: Retry, storm: true},
	{name: "empty body 429 default cooldown", prov: "openai", status: 429, action: Cool, cool: DefaultCooldown, storm: true},
	{name: "empty body 429 streak 1", prov: "openai", status: 429, streak: 1, action: Cool, cool: 2 * DefaultCooldown, storm: true},
	{name: "plain text 429 try again in", prov: "openai", status: 429, body: "Too many requests. Please try again in 3s.", action: Cool, cool: 3 * time.Second, storm: true},
	{name: "empty body 402", prov: "openai", status: 402, action: ExhaustKey},
	{name: "empty body 403", prov: "openai", status: 403, action: Return},
	{name: "empty body 404", prov: "openai", status: 404, action: Return},
	{name: "json null body 401", prov: "openai", status: 401, body: "null", action: Return},
	{name: "error as string 401", prov: "openai", status: 401, body: `{"error":"Invalid API key"}`, action: BlockKey},
	{name: "error as string 403 model", prov: "openai", status: 403, body: `{"error":"You may not use this model"}`, action: BlockModel},
}

func TestClassifyRealBodies(t *testing.T) {
	for _, tt := range realCases {
		t.Run(tt.name, func(t *testing.T) {
			a := Answer{Provider: tt.prov, Family: tt.fam, Status: tt.status, Header: tt.h, Streak: tt.streak}
			if tt.body != "" {
				a.Body = []byte(tt.body)
			}
			v := tt.policy.Classify(a, clsNow)
			if v.Action != tt.action {
				t.Fatalf("Action = %v, want %v (verdict %+v)", v.Action, tt.action, v)
			}
			if v.Cooldown != tt.cool {
				t.Errorf("Cooldown = %v, want %v", v.Cooldown, tt.cool)
			}
			if v.Storm != tt.storm {
				t.Errorf("Storm = %v, want %v", v.Storm, tt.storm)
			}
			checkReason(t, tt.status, v)
		})
	}
}

// checkReason checks what every verdict's Reason must satisfy.
func checkReason(t *testing.T, status int, v Verdict) {
	t.Helper()
	switch v.Action {
	case Serve, Return:
		if v.Reason != "" {
			t.Errorf("%v verdict has Reason %q, want none", v.Action, v.Reason)
		}
	default:
		if v.Reason == "" {
			t.Errorf("%v verdict has no Reason", v.Action)
		} else if status != 0 && !strings.Contains(v.Reason, strconv.Itoa(status)) {
			t.Errorf("Reason %q does not name status %d", v.Reason, status)
		}
	}
	if len(v.Reason) > 120 {
		t.Errorf("Reason is %d bytes long: %q", len(v.Reason), v.Reason)
	}
}

// The old status-only table, updated: without a body, 402 exhausts, and
// 401 and 403 go back to the client (nothing says the key is bad).
func TestClassifyStatusOnly(t *testing.T) {
	tests := []struct {
		status   int
		action   Action
		cooldown time.Duration
		storm    bool
	}{
		{200, Serve, 0, false},
		{201, Serve, 0, false},
		{204, Serve, 0, false},
		{299, Serve, 0, false},
		{0, Retry, 0, true},
		{300, Return, 0, false},
		{304, Return, 0, false},
		{400, Return, 0, false},
		{401, Return, 0, false},
		{402, ExhaustKey, 0, false},
		{403, Return, 0, false},
		{404, Return, 0, false},
		{405, Return, 0, false},
		{408, Retry, 0, true},
		{409, Return, 0, false},
		{413, Return, 0, false},
		{422, Return, 0, false},
		{429, Cool, DefaultCooldown, true},
		{451, Return, 0, false},
		{499, Return, 0, false},
		{500, Retry, 0, true},
		{502, Retry, 0, true},
		{503, Retry, 0, true},
		{504, Retry, 0, true},
		{520, Retry, 0, true},
		{524, Retry, 0, true},
		{529, Retry, 0, true},
		{599, Retry, 0, true},
		{100, Retry, 0, false},
		{101, Retry, 0, false},
		{103, Retry, 0, false},
		{199, Retry, 0, false},
		{600, Retry, 0, false},
		{999, Retry, 0, false},
		{-1, Retry, 0, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			for _, h := range []http.Header{nil, hdr("Content-Type", "application/json")} {
				v := Policy{}.Classify(Answer{Status: tt.status, Header: h}, clsNow)
				if v.Action != tt.action || v.Cooldown != tt.cooldown || v.Storm != tt.storm {
					t.Fatalf("verdict %+v, want action %v, cooldown %v, storm %v", v, tt.action, tt.cooldown, tt.storm)
				}
				checkReason(t, tt.status, v)
			}
		})
	}
}

// A 101 serves only when the request asked to switch protocols (a
// WebSocket handshake); anywhere else the Worker could not relay it.
func TestClassifyUpgrade(t *testing.T) {
	tests := []struct {
		status  int
		upgrade bool
		action  Action
	}{
		{101, true, Serve},
		{101, false, Retry},
		{200, true, Return}, // the upstream ignored the upgrade: the client gets its answer
		{401, true, Return},
		{429, true, Cool},
		{500, true, Retry},
	}
	for _, tt := range tests {
		v := Policy{}.Classify(Answer{Status: tt.status, Upgrade: tt.upgrade}, clsNow)
		if v.Action != tt.action {
			t.Errorf("status %d, upgrade %v: action %v, want %v", tt.status, tt.upgrade, v.Action, tt.action)
		}
		checkReason(t, tt.status, v)
	}
}

// Every status, with and without an error body: 2xx serves with no reason,
// everything else that blames a key or retries has a reason naming the
// status, and cooldowns stay in range.
func TestClassifyEveryStatus(t *testing.T) {
	bodies := []string{"", openai500, anthropic429, gemini403Suspended, siliconflow403FreeModel, html502Cloudflare}
	for s := -2; s <= 700; s++ {
		for _, body := range bodies {
			v := Policy{}.Classify(Answer{Provider: "openai", Status: s, Body: []byte(body)}, clsNow)
			if (s >= 200 && s < 300) != (v.Action == Serve) {
				t.Errorf("status %d: Action %v", s, v.Action)
			}
			if (s < 100 || s > 599) && s != 0 && (v.Action != Retry || v.Cooldown != 0) {
				t.Errorf("status %d: verdict %+v, want retry without cooldown", s, v)
			}
			if v.Cooldown < 0 || v.Cooldown > maxCooldown {
				t.Errorf("status %d: Cooldown %v out of range", s, v.Cooldown)
			}
			if v.Action == Cool && v.Cooldown < time.Second {
				t.Errorf("status %d: Cool for %v", s, v.Cooldown)
			}
			if v.Storm && v.Action != Cool && v.Action != Retry {
				t.Errorf("status %d: storm on %v", s, v.Action)
			}
			checkReason(t, s, v)
		}
	}
}

// A Reason names the provider's error code, never the message: messages
// can quote the key.
func TestClassifyReasonHidesBody(t *testing.T) {
	const secret = "sk-secretsecret"
	tests := []struct {
		name   string
		fam    provider.Family
		status int
		body   string
	}{
		{"openai 401", provider.FamilyOpenAI, 401, `{"error":{"message":"Incorrect API key provided: ` + secret + `. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
		{"openai 429 quota", provider.FamilyOpenAI, 429, `{"error":{"message":"You exceeded your current quota for ` + secret + `","type":"insufficient_quota","param":"` + secret + `","code":"insufficient_quota"}}`},
		{"openai 429 rate", provider.FamilyOpenAI, 429, `{"error":{"message":"Rate limit reached for ` + secret + `. Please try again in 2s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`},
		{"openai 429 daily", provider.FamilyOpenAI, 429, `{"error":{"message":"Rate limit reached for ` + secret + ` on requests per day (RPD)","type":"requests","param":null,"code":"rate_limit_exceeded"}}`},
		{"openai 403 model", provider.FamilyOpenAI, 403, `{"error":{"message":"Key ` + secret + ` may not use model gpt-4o","type":"invalid_request_error","param":null,"code":"model_not_found"}}`},
		{"openai 404 model", provider.FamilyOpenAI, 404, `{"error":{"message":"The model gpt-9 does not exist for ` + secret + `","type":"invalid_request_error","param":null,"code":"model_not_found"}}`},
		{"openai 500", provider.FamilyOpenAI, 500, `{"error":{"message":"Server error for ` + secret + `","type":"server_error","param":null,"code":null}}`},
		{"error string 401", provider.FamilyOpenAI, 401, `{"error":"Invalid API key: ` + secret + `"}`},
		{"json string 401", provider.FamilyOpenAI, 401, `"` + secret + ` is an invalid token"`},
		{"deepseek 402", provider.FamilyOpenAI, 402, `{"error":{"message":"Insufficient Balance on ` + secret + `","type":"unknown_error","param":null,"code":"invalid_request_error"}}`},
		{"siliconflow 403", provider.FamilyOpenAI, 403, `{"code":30001,"message":"Sorry, your account balance is insufficient (` + secret + `)","data":null}`},
		{"gemini 403", provider.FamilyGemini, 403, `{"error":{"code":403,"message":"Permission denied: Consumer 'api_key:` + secret + `' has been suspended.","status":"PERMISSION_DENIED"}}`},
		{"gemini 429 daily", provider.FamilyGemini, 429, `{"error":{"code":429,"message":"Quota exceeded for ` + secret + `","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}`},
		{"anthropic 401", provider.FamilyAnthropic, 401, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key ` + secret + `"}}`},
		{"anthropic 529", provider.FamilyAnthropic, 529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded ` + secret + `"}}`},
		{"plain text 401", provider.FamilyOpenAI, 401, "invalid api key " + secret},
		{"plain text 429", provider.FamilyOpenAI, 429, "Too many requests for " + secret},
		{"html 502", provider.FamilyOpenAI, 502, "<html><body>502 Bad Gateway " + secret + "</body></html>"},
		{"long code is dropped", provider.FamilyOpenAI, 500, `{"error":{"message":"x","code":"` + secret + strings.Repeat("x", 64) + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Policy{}.Classify(Answer{Provider: "p", Family: tt.fam, Status: tt.status, Body: []byte(tt.body)}, clsNow)
			if v.Action == Serve || v.Action == Return {
				t.Fatalf("Action = %v, want a verdict with a reason", v.Action)
			}
			if strings.Contains(strings.ToLower(v.Reason), "secret") {
				t.Errorf("Reason %q quotes the body", v.Reason)
			}
			checkReason(t, tt.status, v)
		})
	}
}

// The reason names the provider's code: error.code first, then Gemini's
// status, then the error type.
func TestClassifyReasonCode(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"openai code", 401, openai401InvalidKey, "credential rejected (401 invalid_api_key)"},
		{"openai quota", 429, openai429InsufficientQuota, "no balance or quota left (429 insufficient_quota)"},
		{"openai rate", 429, openai429TPM, "rate limited (429 rate_limit_exceeded)"},
		{"openai daily", 429, openai429RPD, "daily quota used up (429 rate_limit_exceeded)"},
		{"openai project model", 403, openai403ProjectModel, "no permission for this model (403 model_not_found)"},
		{"openai model missing", 404, openai404ModelNotFound, "model not available to this key (404 model_not_found)"},
		{"openai 500 type", 500, openai500, "upstream error (500 server_error)"},
		{"siliconflow numeric code", 403, siliconflow403Balance, "no balance or quota left (403 30001)"},
		{"siliconflow busy", 429, siliconflow429Busy, "upstream busy (429 50603)"},
		{"anthropic type", 401, anthropic401, "credential rejected (401 authentication_error)"},
		{"openrouter 402 numeric code", 402, openrouter402, "no balance or quota left (402)"},
		{"no body", 402, "", "payment required (402)"},
		{"html", 502, html502Cloudflare, "upstream error (502)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Policy{}.Classify(Answer{Provider: "openai", Status: tt.status, Body: []byte(tt.body)}, clsNow)
			if v.Reason != tt.want {
				t.Errorf("Reason = %q, want %q", v.Reason, tt.want)
			}
		})
	}
	v := Policy{}.Classify(Answer{Status: 0}, clsNow)
	if v.Reason != "network error or timeout" {
		t.Errorf("network error Reason = %q", v.Reason)
	}
	v = Policy{}.Classify(Answer{Status: 600}, clsNow)
	if v.Reason != "invalid upstream status 600" {
		t.Errorf("status 600 Reason = %q", v.Reason)
	}
}

// Classify must not depend on the zone now is written in.
func TestClassifyZoneOfNow(t *testing.T) {
	tokyo := time.FixedZone("JST", 9*3600)
	for _, tt := range realCases {
		a := Answer{Provider: tt.prov, Family: tt.fam, Status: tt.status, Header: tt.h, Body: []byte(tt.body), Streak: tt.streak}
		if want, got := tt.policy.Classify(a, clsNow), tt.policy.Classify(a, clsNow.In(tokyo)); got != want {
			t.Errorf("%s: in JST %+v, in UTC %+v", tt.name, got, want)
		}
	}
}

// Daily quotas cool until the provider's reset, wherever now falls.
func TestClassifyDailyResetAcrossDST(t *testing.T) {
	tests := []struct {
		name string
		prov string
		fam  provider.Family
		body string
		now  time.Time
		want time.Time
	}{
		{"gemini before DST starts", "google-ai-studio", provider.FamilyGemini, gemini429Daily,
			time.Date(2026, 3, 8, 4, 0, 0, 0, time.UTC), time.Date(2026, 3, 8, 8, 0, 0, 0, time.UTC)},
		{"gemini on the day DST starts", "google-ai-studio", provider.FamilyGemini, gemini429Daily,
			time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 7, 0, 0, 0, time.UTC)},
		{"gemini on the day DST ends", "google-ai-studio", provider.FamilyGemini, gemini429Daily,
			time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)},
		{"gemini in summer", "google-ai-studio", provider.FamilyGemini, wrap1(gemini429Daily),
			time.Date(2026, 7, 15, 6, 59, 0, 0, time.UTC), time.Date(2026, 7, 15, 7, 0, 0, 0, time.UTC)},
		{"siliconflow just before Beijing midnight", "siliconflow", provider.FamilyOpenAI, siliconflow429RPD,
			time.Date(2026, 7, 15, 15, 59, 59, 0, time.UTC), time.Date(2026, 7, 15, 16, 0, 0, 0, time.UTC)},
		{"openrouter at UTC midnight", "openrouter", provider.FamilyOpenAI, openrouter429,
			time.Date(2026, 7, 15, 0, 0, 0, 0, time.UTC), time.Date(2026, 7, 16, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Policy{}.Classify(Answer{Provider: tt.prov, Family: tt.fam, Status: 429, Body: []byte(tt.body)}, tt.now)
			want := clampCooldown(tt.want.Sub(tt.now))
			if v.Action != Cool || v.Cooldown != want || v.Storm {
				t.Errorf("verdict %+v, want cool for %v without storm", v, want)
			}
		})
	}
}

// Known misclassifications (see the report that came with these tests):
// upstream messages that quote the client's own request text are scanned
// for key and balance phrases, so a client can make keypool block or
// exhaust keys that are fine; and some request-caused refusals blame keys.
// Each row is the answer keypool should give.
func TestClassifyKnownBugs(t *testing.T) {
	tests := []struct {
		name   string
		prov   string
		fam    provider.Family
		status int
		body   string
		action Action
	}{
		{"openai 400 invalid_value quoting client text 'invalid api key' is about the request", "openai", provider.FamilyOpenAI, 400,
			`{"error":{"message":"Invalid value: 'invalid api key'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.","type":"invalid_request_error","param":"messages[0].role","code":"invalid_value"}}`,
			Return},
		{"anthropic 400 input tag quoting client text 'credit balance is too low' is about the request", "anthropic", provider.FamilyAnthropic, 400,
			`{"type":"error","error":{"type":"invalid_request_error","message":"messages.0.content.0: Input tag 'credit balance is too low' found using 'type' does not match any of the expected tags: 'document', 'image', 'redacted_thinking', 'search_result', 'text', 'thinking', 'tool_result', 'tool_use'"},"request_id":"req_011CSHoEeqs5C35K2UUqR7G7"}`,
			Return},
		{"anthropic 400 input tag quoting client text 'invalid x-api-key' is about the request", "anthropic", provider.FamilyAnthropic, 400,
			`{"type":"error","error":{"type":"invalid_request_error","message":"tools.0: Input tag 'invalid x-api-key' found using 'type' does not match any of the expected tags: 'bash_20250124', 'custom', 'text_editor_20250124'"},"request_id":"req_011CSHoEeqs5C35K2UUqR7G8"}`,
			Return},
		{"gemini 400 unknown field quoting client text 'api key expired' is about the request", "google-ai-studio", provider.FamilyGemini, 400,
			`{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"api key expired\" at 'generation_config': Cannot find field.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"generation_config","description":"Invalid JSON payload received. Unknown name \"api key expired\" at 'generation_config': Cannot find field."}]}]}}`,
			Return},
		{"openrouter 403 moderation flagged the input, not the key", "openrouter", provider.FamilyOpenAI, 403,
			`{"error":{"code":403,"message":"openai/gpt-4o requires moderation on OpenAI. Your input was flagged for \"harassment\". No credits were charged.","metadata":{"reasons":["harassment"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}`,
			Return},
		{"openai 429 request too large for the TPM limit is about the request", "openai", provider.FamilyOpenAI, 429,
			`{"error":{"message":"Request too large for gpt-4o in organization org-AbCdEf123456 on tokens per min (TPM): Limit 30000, Requested 45123. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`,
			Return},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Policy{}.Classify(Answer{Provider: tt.prov, Family: tt.fam, Status: tt.status, Body: []byte(tt.body)}, clsNow)
			if v.Action != tt.action {
				t.Errorf("Action = %v (%q), want %v", v.Action, v.Reason, tt.action)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	tests := []struct {
		a    Action
		want string
	}{
		{Serve, "serve"},
		{Return, "return"},
		{Retry, "retry"},
		{Cool, "cool"},
		{ModelMissing, "model_missing"},
		{BlockModel, "block_model"},
		{BlockKey, "block_key"},
		{ExhaustKey, "exhaust_key"},
		{ExhaustKey + 1, "action(8)"},
		{100, "action(100)"},
		{-1, "action(-1)"},
	}
	for _, tt := range tests {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("Action(%d).String() = %q, want %q", int(tt.a), got, tt.want)
		}
	}
	// Every named action has a distinct name.
	seen := map[string]Action{}
	for a := Serve; a <= ExhaustKey; a++ {
		s := a.String()
		if b, dup := seen[s]; dup {
			t.Errorf("actions %d and %d are both %q", int(a), int(b), s)
		}
		seen[s] = a
	}
}

func TestStreakAt(t *testing.T) {
	at := clsNow
	ms := at.UnixMilli()
	mem := StreakMemory.Milliseconds()
	tests := []struct {
		name string
		c    Candidate
		want int64
	}{
		{"no streak", Candidate{}, 0},
		{"no streak, recent cooldown", Candidate{CoolEnd: ms - 1000}, 0},
		{"negative streak", Candidate{Streak: -2, CoolEnd: ms}, 0},
		{"streak, cooldown just ended", Candidate{Streak: 3, CoolEnd: ms}, 3},
		{"streak, cooldown still running", Candidate{Streak: 2, CoolEnd: ms + 60_000}, 2},
		{"streak, ended 14 min ago", Candidate{Streak: 3, CoolEnd: ms - 14*60_000}, 3},
		{"streak, ended exactly StreakMemory ago", Candidate{Streak: 3, CoolEnd: ms - mem}, 3},
		{"streak, ended StreakMemory+1ms ago", Candidate{Streak: 3, CoolEnd: ms - mem - 1}, 0},
		{"streak, ended an hour ago", Candidate{Streak: 7, CoolEnd: ms - 3_600_000}, 0},
		{"streak without cooldown end", Candidate{Streak: 4}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.StreakAt(at); got != tt.want {
				t.Errorf("StreakAt = %d, want %d", got, tt.want)
			}
		})
	}
}

func BenchmarkClassifyBodies(b *testing.B) {
	var p Policy
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tt := &realCases[i%len(realCases)]
		p.Classify(Answer{Provider: tt.prov, Family: tt.fam, Status: tt.status, Header: tt.h, Body: []byte(tt.body), Streak: tt.streak}, clsNow)
		i++
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		name string
		body string
		want errorInfo
	}{
		{"empty", "", errorInfo{}},
		{"openai", openai401InvalidKey, errorInfo{code: "invalid_api_key", typ: "invalid_request_error",
			message: "incorrect api key provided: sk-ab***************************************7f3c. you can find your api key at https://platform.openai.com/account/api-keys."}},
		{"openai null code", openai404InvalidURL, errorInfo{typ: "invalid_request_error", message: "invalid url (post /v1/nope)"}},
		{"openai numeric code", openai502, errorInfo{code: "502", typ: "cf_bad_gateway", message: "bad gateway."}},
		{"openrouter", openrouter402, errorInfo{code: "402", message: "insufficient credits. add more using https://openrouter.ai/credits"}},
		{"siliconflow top-level code", siliconflow403Balance, errorInfo{code: "30001", message: "sorry, your account balance is insufficient"}},
		{"siliconflow json string", siliconflow401, errorInfo{message: "invalid token"}},
		{"anthropic", anthropic529, errorInfo{typ: "overloaded_error", message: "overloaded"}},
		{"gemini daily", gemini429Daily, errorInfo{code: "429", status: "RESOURCE_EXHAUSTED",
			message:    strings.ToLower("You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 50, model: gemini-2.5-pro\nPlease retry in 26.451688064s."),
			quotaIDs:   []string{"GenerateRequestsPerDayPerProjectPerModel-FreeTier"},
			retryDelay: "26s"}},
		{"gemini key invalid", gemini400KeyInvalid, errorInfo{code: "400", status: "INVALID_ARGUMENT",
			message: "api key not valid. please pass a valid api key.", reasons: []string{"API_KEY_INVALID"}}},
		{"gemini in array", wrap1(gemini403Leaked), errorInfo{code: "403", status: "PERMISSION_DENIED",
			message: "your api key was reported as leaked. please use another api key."}},
		{"error as string, code beside it", `{"error":"Invalid API key","code":"bad_key"}`, errorInfo{code: "bad_key", message: "invalid api key"}},
		{"mistral message object", `{"object":"error","message":{"detail":"x"},"type":"invalid_request_error"}`,
			errorInfo{typ: "invalid_request_error", message: `{"detail":"x"}`}},
		{"array of a number", "[1]", errorInfo{}},
		{"empty array", "[]", errorInfo{}},
		{"null", "null", errorInfo{}},
		{"html", html502Cloudflare, errorInfo{message: strings.ToLower(html502Cloudflare)}},
		{"plain text", "Invalid Token", errorInfo{message: "invalid token"}},
		{"bool code ignored", `{"error":{"code":true,"message":"M"}}`, errorInfo{message: "m"}},
		{"float code truncated", `{"code":30001.9,"message":"M"}`, errorInfo{code: "30001", message: "m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseError([]byte(tt.body))
			if got.code != tt.want.code || got.typ != tt.want.typ || got.status != tt.want.status ||
				got.message != tt.want.message || got.retryDelay != tt.want.retryDelay ||
				strings.Join(got.reasons, ",") != strings.Join(tt.want.reasons, ",") ||
				strings.Join(got.quotaIDs, ",") != strings.Join(tt.want.quotaIDs, ",") {
				t.Errorf("parseError =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// Real and provider-shaped 401/403 answers: a key is blocked or exhausted
// only when the body says the key itself is bad; a refusal of something
// the client sent, or one keypool cannot read, goes back to the client
// and blames no key (a health check, which sends nothing of a client's,
// takes an unreadable one as the key's).
func TestClassifyBlamesOnlyTheKey(t *testing.T) {
	const (
		// api.openai.com, with an OpenAI-Organization header the key is not in.
		mismatchedOrg = `{"error":{"message":"OpenAI-Organization header should match organization for API key","type":"invalid_request_error","param":null,"code":"mismatched_organization"}}`
		// The same for OpenAI-Project (code seen in the wild, message by analogy).
		mismatchedProject = `{"error":{"message":"OpenAI-Project header should match project for API key","type":"invalid_request_error","param":null,"code":"mismatched_project"}}`
		invalidOrg        = `{"error":{"message":"","type":"invalid_request_error","param":null,"code":"invalid_organization"}}`
		noSuchOrg         = `{"error":{"message":"No such organization: org-attacker.","type":"invalid_request_error","param":null,"code":null}}`
		// The key's account left every organisation: the key is unusable.
		noOrganization = `{"error":{"message":"You must be a member of an organization to use the API. Please contact us through our help center at help.openai.com.","type":"invalid_request_error","param":null,"code":"no_organization"}}`
		anthropicOAuth = `{"type":"error","error":{"type":"authentication_error","message":"OAuth authentication is currently not supported."},"request_id":"req_011CSHa1FurUZv2Lu8mxQdXf"}`
		anthropicBeta  = `{"type":"error","error":{"type":"invalid_request_error","message":"Unexpected value(s) ` + "`made-up-2099-01-01`" + ` for the ` + "`anthropic-beta`" + ` header."}}`
		geminiUserProj = `{"error":{"code":403,"message":"Caller does not have required permission to use project attacker-project.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"USER_PROJECT_DENIED","domain":"googleapis.com"}]}}`
		geminiBlocked  = `{"error":{"code":403,"message":"Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_SERVICE_BLOCKED","domain":"googleapis.com"}]}}`
		geminiIP       = `{"error":{"code":403,"message":"The provided API key has an IP address restriction.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_IP_ADDRESS_BLOCKED","domain":"googleapis.com"}]}}`
		cerebrasWrong  = `{"message":"Wrong API Key","type":"invalid_request_error","param":"api_key","code":"wrong_api_key"}`
		cohereToken    = `{"message":"invalid api token"}`
		unknown401     = `{"error":{"message":"Something about your request.","type":"invalid_request_error","param":null,"code":"unheard_of"}}`
	)
	gemini, anthropic := provider.FamilyGemini, provider.FamilyAnthropic
	tests := []struct {
		name    string
		fam     provider.Family
		status  int
		body    string
		action  Action
		suspect bool
		check   CheckOutcome
	}{
		// About what the client sent: returned, never suspect.
		{"openai 401 mismatched_organization", 0, 401, mismatchedOrg, Return, false, CheckInconclusive},
		{"openai 401 mismatched_project", 0, 401, mismatchedProject, Return, false, CheckInconclusive},
		{"openai 401 invalid_organization", 0, 401, invalidOrg, Return, false, CheckInconclusive},
		{"openai 401 no such organization", 0, 401, noSuchOrg, Return, false, CheckInconclusive},
		{"anthropic 401 oauth not supported", anthropic, 401, anthropicOAuth, Return, false, CheckInconclusive},
		{"anthropic 400 unknown beta", anthropic, 400, anthropicBeta, Return, false, CheckInconclusive},
		{"gemini 403 user project denied", gemini, 403, geminiUserProj, Return, false, CheckInconclusive},
		// Unreadable: returned, suspect.
		{"401 with an unknown code", 0, 401, unknown401, Return, true, CheckInvalid},
		{"401 without a body", 0, 401, "", Return, true, CheckInvalid},
		{"mistral 401 unauthorized", 0, 401, mistral401, Return, true, CheckInvalid},
		{"anthropic 403 permission_error", anthropic, 403, anthropic403, Return, true, CheckInvalid},
		{"403 without a body", 0, 403, "", Return, true, CheckInvalid},
		// The key itself: blocked or exhausted.
		{"openai 401 invalid_api_key", 0, 401, openai401InvalidKey, BlockKey, false, CheckInvalid},
		{"openai 401 no_organization", 0, 401, noOrganization, BlockKey, false, CheckInvalid},
		{"groq 401 invalid_api_key", 0, 401, groq401, BlockKey, false, CheckInvalid},
		{"deepseek 401 authentication_error", 0, 401, deepseek401, BlockKey, false, CheckInvalid},
		{"siliconflow 401 invalid token", 0, 401, siliconflow401, BlockKey, false, CheckInvalid},
		{"cerebras 401 wrong_api_key", 0, 401, cerebrasWrong, BlockKey, false, CheckInvalid},
		{"cohere 401 invalid api token", 0, 401, cohereToken, BlockKey, false, CheckInvalid},
		{"anthropic 401 invalid x-api-key", anthropic, 401, anthropic401, BlockKey, false, CheckInvalid},
		{"gemini 403 consumer suspended", gemini, 403, gemini403Suspended, BlockKey, false, CheckInvalid},
		{"gemini 403 leaked", gemini, 403, gemini403Leaked, BlockKey, false, CheckInvalid},
		{"gemini 403 service disabled", gemini, 403, gemini403ServiceDisabled, BlockKey, false, CheckInvalid},
		{"gemini 403 API_KEY_SERVICE_BLOCKED", gemini, 403, geminiBlocked, BlockKey, false, CheckInvalid},
		{"gemini 403 API_KEY_IP_ADDRESS_BLOCKED", gemini, 403, geminiIP, BlockKey, false, CheckInvalid},
		{"siliconflow 403 balance", 0, 403, siliconflow403Balance, ExhaustKey, false, CheckExhausted},
		{"anthropic 400 credit too low", anthropic, 400, anthropic400Credit, ExhaustKey, false, CheckExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Answer{Provider: "p", Family: tt.fam, Status: tt.status}
			if tt.body != "" {
				a.Body = []byte(tt.body)
			}
			v := Policy{}.Classify(a, clsNow)
			if v.Action != tt.action || v.Suspect != tt.suspect {
				t.Errorf("verdict %+v, want %v with suspect %v", v, tt.action, tt.suspect)
			}
			checkReason(t, tt.status, v)
			if got := (Policy{}).CheckOf(a, false, clsNow).Outcome; got != tt.check {
				t.Errorf("as a health check: %s, want %s", got, tt.check)
			}
		})
	}
}
