// Package provider is the registry of upstream AI providers keypool can pool
// keys for: where each one lives, how it wants its key, and what its keys
// look like. It does no I/O.
package provider

import (
	"sort"
	"strings"
)

// Family groups providers whose error bodies and APIs look alike, so that
// error classification can be written once per family.
type Family int

const (
	FamilyOpenAI    Family = iota // OpenAI and the OpenAI-compatible services
	FamilyGemini                  // Google AI Studio
	FamilyAnthropic               // Anthropic
)

// Provider describes one upstream.
type Provider struct {
	// Name is keypool's id for the provider and, where the provider is on
	// Cloudflare AI Gateway, its gateway slug (/api/<Name>/... maps 1:1).
	Name string
	// Origin is the scheme and host of the provider's API, e.g.
	// "https://api.openai.com". Overridable per deployment (see BaseURLVar).
	Origin string
	// NativePrefix is the path the AI Gateway puts in front of the path a
	// client sends to /api/<Name>/<path>, e.g. "/v1" for openai
	// (gateway "openai/chat/completions" is "api.openai.com/v1/chat/completions").
	NativePrefix string
	// OpenAIPrefix is the path of the provider's OpenAI-compatible API, used
	// for keypool's /v1/* routes, e.g. "/v1beta/openai" for Google AI Studio.
	OpenAIPrefix string
	// KeyHeader is the header the provider's native API reads the key from.
	// When KeyBearer is set the value is "Bearer <key>".
	KeyHeader string
	KeyBearer bool
	// Cloudflare AI Gateway, as its provider pages give the URLs:
	// https://gateway.ai.cloudflare.com/v1/{account}/{gateway}/{Name}/….
	// Gateway reports whether the gateway knows the provider; then
	// /api/<Name>/<path> is the gateway's <Name>/<path>.
	Gateway bool
	// GatewayOpenAI is the path, after the gateway's <Name>, of the
	// provider's OpenAI-compatible API (keypool's /v1/*, model lists and
	// checks), e.g. "" for openai (gateway openai/chat/completions),
	// "/v1beta/openai" for Google AI Studio.
	GatewayOpenAI string
	// NoGatewayOpenAI: the gateway has no form of that API (its Azure
	// OpenAI paths name a resource and a deployment), so it goes direct.
	NoGatewayOpenAI bool
	// GatewayCompat is the provider's model prefix at the gateway's
	// OpenAI-compatible /compat/chat/completions ("" where that endpoint
	// does not serve the provider).
	GatewayCompat string
	// Family selects the error classification rules.
	Family Family
	// StreamUsage: the provider's OpenAI-compatible chat streams accept
	// stream_options.include_usage (Mistral, among others, refuses the
	// field with 422), so keypool may ask them for their usage.
	StreamUsage bool
	// NoOpenAI marks providers without an OpenAI-compatible API: only
	// /api/<Name>/... reaches them.
	NoOpenAI bool
	// Balance is the provider's balance endpoint, if it has one, at
	// BalancePath under Origin.
	Balance     BalanceAPI
	BalancePath string
	// PromptCache: the provider caches prompts per account (OpenAI per
	// organization, Anthropic per workspace, Gemini per project, DeepSeek
	// and xAI per account), so prompt-cache affinity is on by default.
	PromptCache bool
	// ResponsesSocket: the provider serves its Responses API over
	// WebSocket too (GET …/responses with Upgrade: websocket).
	ResponsesSocket bool
	// KeyPrefixes lists the prefixes real keys of this provider start with.
	// Empty means any well-formed token is accepted.
	KeyPrefixes []string
}

var registry = map[string]Provider{
	"openai": {
		Name: "openai", Origin: "https://api.openai.com", NativePrefix: "/v1", OpenAIPrefix: "/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI, StreamUsage: true, PromptCache: true,
		Gateway: true, GatewayOpenAI: "", GatewayCompat: "openai", ResponsesSocket: true,
		KeyPrefixes: []string{"sk-"},
	},
	"siliconflow": {
		Name: "siliconflow", Origin: "https://api.siliconflow.cn", NativePrefix: "", OpenAIPrefix: "/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI,
		// Not on AI Gateway: always direct.
		Balance: BalanceSiliconFlow, BalancePath: "/v1/user/info",
		KeyPrefixes: []string{"sk-"},
	},
	"google-ai-studio": {
		Name: "google-ai-studio", Origin: "https://generativelanguage.googleapis.com", NativePrefix: "", OpenAIPrefix: "/v1beta/openai",
		KeyHeader: "x-goog-api-key", Family: FamilyGemini, StreamUsage: true, PromptCache: true,
		// The gateway passes Google's paths through: its OpenAI-compatible API too.
		Gateway: true, GatewayOpenAI: "/v1beta/openai", GatewayCompat: "google-ai-studio",
		KeyPrefixes: []string{"AIza"},
	},
	"anthropic": {
		Name: "anthropic", Origin: "https://api.anthropic.com", NativePrefix: "", OpenAIPrefix: "/v1",
		KeyHeader: "x-api-key", Family: FamilyAnthropic, PromptCache: true,
		Gateway: true, GatewayOpenAI: "/v1", GatewayCompat: "anthropic",
		KeyPrefixes: []string{"sk-ant-"},
	},
	"groq": {
		Name: "groq", Origin: "https://api.groq.com", NativePrefix: "/openai/v1", OpenAIPrefix: "/openai/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI, StreamUsage: true,
		Gateway: true, GatewayOpenAI: "", GatewayCompat: "groq",
		KeyPrefixes: []string{"gsk_"},
	},
	"deepseek": {
		Name: "deepseek", Origin: "https://api.deepseek.com", NativePrefix: "", OpenAIPrefix: "/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI, StreamUsage: true, PromptCache: true,
		Gateway: true, GatewayOpenAI: "", GatewayCompat: "deepseek",
		Balance: BalanceDeepSeek, BalancePath: "/user/balance",
		KeyPrefixes: []string{"sk-"},
	},
	"openrouter": {
		Name: "openrouter", Origin: "https://openrouter.ai", NativePrefix: "/api", OpenAIPrefix: "/api/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI, StreamUsage: true,
		// Not served by the gateway's /compat.
		Gateway: true, GatewayOpenAI: "/v1",
		Balance: BalanceOpenRouter, BalancePath: "/api/v1/credits",
		KeyPrefixes: []string{"sk-or-"},
	},
	"mistral": {
		Name: "mistral", Origin: "https://api.mistral.ai", NativePrefix: "", OpenAIPrefix: "/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI,
		Gateway: true, GatewayOpenAI: "/v1", GatewayCompat: "mistral",
	},
	"elevenlabs": {
		Name: "elevenlabs", Origin: "https://api.elevenlabs.io", NativePrefix: "", OpenAIPrefix: "/v1",
		KeyHeader: "xi-api-key", Family: FamilyOpenAI, NoOpenAI: true,
		Gateway: true, GatewayOpenAI: "/v1", // its model list, for the checks
	},
	"azure-openai": {
		// No public origin: set AZURE_OPENAI_BASE_URL to the resource
		// (https://<resource>.openai.azure.com) for direct use.
		Name: "azure-openai", Origin: "https://azure-openai.invalid", NativePrefix: "", OpenAIPrefix: "/openai/v1",
		KeyHeader: "api-key", Family: FamilyOpenAI, PromptCache: true,
		// The gateway's form is /azure-openai/<resource>/<deployment>/….
		Gateway: true, NoGatewayOpenAI: true,
	},
	"workers-ai": {
		Name: "workers-ai", Origin: "https://api.cloudflare.com", NativePrefix: "/client/v4/accounts/{account}/ai/run",
		OpenAIPrefix: "/client/v4/accounts/{account}/ai/v1",
		KeyHeader:    "Authorization", KeyBearer: true, Family: FamilyOpenAI,
		// Through the gateway: workers-ai/<model> runs one, workers-ai/v1/… is the OpenAI API.
		Gateway: true, GatewayOpenAI: "/v1", GatewayCompat: "workers-ai",
	},
	"cohere": {
		Name: "cohere", Origin: "https://api.cohere.ai", NativePrefix: "", OpenAIPrefix: "/compatibility/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI,
		Gateway: true, GatewayOpenAI: "/compatibility/v1", GatewayCompat: "cohere",
	},
	"perplexity-ai": {
		Name: "perplexity-ai", Origin: "https://api.perplexity.ai", NativePrefix: "", OpenAIPrefix: "",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI,
		Gateway: true, GatewayOpenAI: "", GatewayCompat: "perplexity",
		KeyPrefixes: []string{"pplx-"},
	},
	"cerebras": {
		Name: "cerebras", Origin: "https://api.cerebras.ai", NativePrefix: "/v1", OpenAIPrefix: "/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI, StreamUsage: true,
		Gateway: true, GatewayOpenAI: "", GatewayCompat: "cerebras",
		KeyPrefixes: []string{"csk-"},
	},
	"grok": {
		Name: "grok", Origin: "https://api.x.ai", NativePrefix: "", OpenAIPrefix: "/v1",
		KeyHeader: "Authorization", KeyBearer: true, Family: FamilyOpenAI, StreamUsage: true, PromptCache: true,
		Gateway: true, GatewayOpenAI: "/v1", GatewayCompat: "grok",
		KeyPrefixes: []string{"xai-"},
	},
}

// Lookup returns the provider called name.
func Lookup(name string) (Provider, bool) {
	p, ok := registry[name]
	return p, ok
}

// Names lists every registered provider, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// BaseURLVar is the name of the variable that overrides the provider's
// origin, e.g. GOOGLE_AI_STUDIO_BASE_URL. It exists for self-hosted
// compatible services, proxies, and tests that play the provider locally.
func (p Provider) BaseURLVar() string {
	return strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")) + "_BASE_URL"
}

// WithOrigin returns p with its origin replaced when override is not empty.
// A trailing slash is dropped so that paths join cleanly.
func (p Provider) WithOrigin(override string) Provider {
	if override != "" {
		p.Origin = strings.TrimRight(override, "/")
	}
	return p
}

// SetKey puts key into h the way this provider's native API expects it.
func (p Provider) SetKey(h Header, key string) {
	if p.KeyBearer {
		h.Set(p.KeyHeader, "Bearer "+key)
		return
	}
	h.Set(p.KeyHeader, key)
}

// AnthropicVersion is the Anthropic API version keypool asks for when the
// client names none.
const AnthropicVersion = "2023-06-01"

// Authorize puts key on h the way the surface called expects it: the
// OpenAI-compatible one (openAI) as a bearer token, the native one in the
// provider's own header (SetKey). Anthropic's API also needs a version,
// left as it is when the client sent one.
func (p Provider) Authorize(h Header, key string, openAI bool) {
	if openAI {
		h.Set("Authorization", "Bearer "+key)
	} else {
		p.SetKey(h, key)
	}
	if p.Family == FamilyAnthropic && h.Get("Anthropic-Version") == "" {
		h.Set("Anthropic-Version", AnthropicVersion)
	}
}

// Header is the part of http.Header that SetKey and Authorize need; it
// keeps this package free of net/http.
type Header interface {
	Set(key, value string)
	Get(key string) string
}
