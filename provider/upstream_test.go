package provider

import "testing"

// TestUpstreamURLs is the route → upstream table, for every provider,
// with and without AI Gateway: keypool's /v1/chat/completions (the
// OpenAI-compatible base + "/chat/completions"), /api/<name>/<path> (the
// native base + "/" + path), /api/compat and the balance read. The
// gateway paths follow Cloudflare's AI Gateway provider pages.
func TestUpstreamURLs(t *testing.T) {
	const gw = "https://gateway.ai.cloudflare.com/v1/acct/gw"
	tests := []struct {
		name           string
		native         string // the path sent to /api/<name>/
		chat, chatGW   string // /v1/chat/completions without / with the gateway
		api, apiGW     string // /api/<name>/<native>
		compatGW       string // /api/compat/chat/completions with the gateway
		balance        string // direct in both cases; "" = none
		viaGW, apiViaG bool
	}{
		{"openai", "chat/completions",
			"https://api.openai.com/v1/chat/completions", gw + "/openai/chat/completions",
			"https://api.openai.com/v1/chat/completions", gw + "/openai/chat/completions",
			gw + "/compat/chat/completions", "", true, true},
		{"siliconflow", "v1/chat/completions",
			"https://api.siliconflow.cn/v1/chat/completions", "https://api.siliconflow.cn/v1/chat/completions",
			"https://api.siliconflow.cn/v1/chat/completions", "https://api.siliconflow.cn/v1/chat/completions",
			"https://api.siliconflow.cn/v1/chat/completions", "https://api.siliconflow.cn/v1/user/info", false, false},
		{"google-ai-studio", "v1beta/models/gemini-2.0-flash:generateContent",
			"https://generativelanguage.googleapis.com/v1beta/openai/chat/completions", gw + "/google-ai-studio/v1beta/openai/chat/completions",
			"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
			gw + "/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent",
			gw + "/compat/chat/completions", "", true, true},
		{"anthropic", "v1/messages",
			"https://api.anthropic.com/v1/chat/completions", gw + "/anthropic/v1/chat/completions",
			"https://api.anthropic.com/v1/messages", gw + "/anthropic/v1/messages",
			gw + "/compat/chat/completions", "", true, true},
		{"groq", "chat/completions",
			"https://api.groq.com/openai/v1/chat/completions", gw + "/groq/chat/completions",
			"https://api.groq.com/openai/v1/chat/completions", gw + "/groq/chat/completions",
			gw + "/compat/chat/completions", "", true, true},
		{"deepseek", "chat/completions",
			"https://api.deepseek.com/v1/chat/completions", gw + "/deepseek/chat/completions",
			"https://api.deepseek.com/chat/completions", gw + "/deepseek/chat/completions",
			gw + "/compat/chat/completions", "https://api.deepseek.com/user/balance", true, true},
		{"mistral", "v1/chat/completions",
			"https://api.mistral.ai/v1/chat/completions", gw + "/mistral/v1/chat/completions",
			"https://api.mistral.ai/v1/chat/completions", gw + "/mistral/v1/chat/completions",
			gw + "/compat/chat/completions", "", true, true},
		{"openrouter", "v1/chat/completions",
			"https://openrouter.ai/api/v1/chat/completions", gw + "/openrouter/v1/chat/completions",
			"https://openrouter.ai/api/v1/chat/completions", gw + "/openrouter/v1/chat/completions",
			gw + "/openrouter/v1/chat/completions", "https://openrouter.ai/api/v1/credits", true, true},
		{"grok", "v1/chat/completions",
			"https://api.x.ai/v1/chat/completions", gw + "/grok/v1/chat/completions",
			"https://api.x.ai/v1/chat/completions", gw + "/grok/v1/chat/completions",
			gw + "/compat/chat/completions", "", true, true},
		{"cerebras", "chat/completions",
			"https://api.cerebras.ai/v1/chat/completions", gw + "/cerebras/chat/completions",
			"https://api.cerebras.ai/v1/chat/completions", gw + "/cerebras/chat/completions",
			gw + "/compat/chat/completions", "", true, true},
		{"cohere", "v2/chat",
			"https://api.cohere.ai/compatibility/v1/chat/completions", gw + "/cohere/compatibility/v1/chat/completions",
			"https://api.cohere.ai/v2/chat", gw + "/cohere/v2/chat",
			gw + "/compat/chat/completions", "", true, true},
		{"perplexity-ai", "chat/completions",
			"https://api.perplexity.ai/chat/completions", gw + "/perplexity-ai/chat/completions",
			"https://api.perplexity.ai/chat/completions", gw + "/perplexity-ai/chat/completions",
			gw + "/compat/chat/completions", "", true, true},
		{"workers-ai", "@cf/meta/llama-3.1-8b-instruct",
			"https://api.cloudflare.com/client/v4/accounts/acct/ai/v1/chat/completions", gw + "/workers-ai/v1/chat/completions",
			"https://api.cloudflare.com/client/v4/accounts/acct/ai/run/@cf/meta/llama-3.1-8b-instruct",
			gw + "/workers-ai/@cf/meta/llama-3.1-8b-instruct",
			gw + "/compat/chat/completions", "", true, true},
		// The gateway's Azure form names a resource and a deployment.
		{"azure-openai", "my-resource/my-deployment/chat/completions",
			"https://azure-openai.invalid/openai/v1/chat/completions", "https://azure-openai.invalid/openai/v1/chat/completions",
			"https://azure-openai.invalid/my-resource/my-deployment/chat/completions", gw + "/azure-openai/my-resource/my-deployment/chat/completions",
			"https://azure-openai.invalid/openai/v1/chat/completions", "", false, true},
		{"elevenlabs", "v1/text-to-speech/voice",
			"https://api.elevenlabs.io/v1/chat/completions", gw + "/elevenlabs/v1/chat/completions",
			"https://api.elevenlabs.io/v1/text-to-speech/voice", gw + "/elevenlabs/v1/text-to-speech/voice",
			gw + "/elevenlabs/v1/chat/completions", "", true, true},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.name] = true
		p, ok := Lookup(tt.name)
		if !ok {
			t.Fatalf("no provider %s", tt.name)
		}
		for _, withGW := range []bool{false, true} {
			tg := Target{Origin: p.Origin, Account: "acct"}
			wantChat, wantAPI, wantCompat, wantVia, wantAPIVia := tt.chat, tt.api, tt.chat, false, false
			if withGW {
				tg.Gateway = gw
				wantChat, wantAPI, wantCompat, wantVia, wantAPIVia = tt.chatGW, tt.apiGW, tt.compatGW, tt.viaGW, tt.apiViaG
			}
			base, via := p.OpenAIBase(tg)
			if base+"/chat/completions" != wantChat || via != wantVia {
				t.Errorf("%s gateway=%v: /v1/chat/completions → %s (gateway %v), want %s (%v)", tt.name, withGW, base+"/chat/completions", via, wantChat, wantVia)
			}
			nb, nvia := p.NativeBase(tg)
			if nb+"/"+tt.native != wantAPI || nvia != wantAPIVia {
				t.Errorf("%s gateway=%v: /api/%s/%s → %s (gateway %v), want %s (%v)", tt.name, withGW, tt.name, tt.native, nb+"/"+tt.native, nvia, wantAPI, wantAPIVia)
			}
			compat := p.CompatBase(tg)
			if compat == "" {
				compat = base
			}
			if compat+"/chat/completions" != wantCompat {
				t.Errorf("%s gateway=%v: /api/compat/chat/completions → %s, want %s", tt.name, withGW, compat+"/chat/completions", wantCompat)
			}
			if p.Balance != NoBalance && p.BalanceURL(tg) != tt.balance || p.Balance == NoBalance && tt.balance != "" {
				t.Errorf("%s gateway=%v: balance %s, want %s", tt.name, withGW, p.BalanceURL(tg), tt.balance)
			}
		}
	}
	for _, n := range Names() {
		if !seen[n] {
			t.Errorf("provider %s has no row in the upstream table", n)
		}
	}
}

// TestGatewayFields keeps the gateway columns consistent: only providers
// the gateway knows have gateway paths or a compat name.
func TestGatewayFields(t *testing.T) {
	for _, n := range Names() {
		p, _ := Lookup(n)
		if !p.Gateway && (p.GatewayOpenAI != "" || p.GatewayCompat != "" || p.NoGatewayOpenAI) {
			t.Errorf("%s: gateway paths on a provider the gateway does not know", n)
		}
		if p.NoGatewayOpenAI && p.GatewayOpenAI != "" {
			t.Errorf("%s: NoGatewayOpenAI with a GatewayOpenAI path", n)
		}
	}
}
