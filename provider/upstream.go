package provider

import (
	"net/url"
	"strings"
)

// Target is where one deployment sends a provider's requests.
type Target struct {
	// Origin is the provider's origin, or its <NAME>_BASE_URL override.
	Origin string
	// Gateway is the AI Gateway base,
	// https://gateway.ai.cloudflare.com/v1/<account>/<gateway>; "" when
	// no gateway is configured.
	Gateway string
	// Account is the Cloudflare account id (Workers AI paths name it).
	Account string
}

// OpenAIBase is the base URL of p's OpenAI-compatible API, where
// keypool's /v1/<path> goes as <base>/<path>, and whether it is the
// gateway's.
func (p Provider) OpenAIBase(t Target) (string, bool) {
	if t.Gateway != "" && p.Gateway && !p.NoGatewayOpenAI {
		return t.Gateway + "/" + p.Name + p.GatewayOpenAI, true
	}
	return t.Origin + expand(p.OpenAIPrefix, t.Account), false
}

// NativeBase is the base URL of p's own API, where /api/<Name>/<path>
// goes as <base>/<path>, and whether it is the gateway's.
func (p Provider) NativeBase(t Target) (string, bool) {
	if t.Gateway != "" && p.Gateway {
		return t.Gateway + "/" + p.Name, true
	}
	return t.Origin + expand(p.NativePrefix, t.Account), false
}

// CompatBase is the base of the gateway's OpenAI-compatible endpoint
// (<base>/chat/completions, model "<GatewayCompat>/<model>") when it
// serves p; else "" and p's requests on /api/compat go to OpenAIBase
// with the bare model.
func (p Provider) CompatBase(t Target) string {
	if t.Gateway == "" || !p.Gateway || p.GatewayCompat == "" {
		return ""
	}
	return t.Gateway + "/compat"
}

// BalanceURL is where p's balance is read: always the provider itself.
// The gateway's provider paths are its inference APIs; a balance read
// there would count as traffic and might be answered from its cache.
func (p Provider) BalanceURL(t Target) string {
	return t.Origin + p.BalancePath
}

// expand fills the account id into paths that name it (Workers AI).
func expand(path, account string) string {
	return strings.ReplaceAll(path, "{account}", url.PathEscape(account))
}
