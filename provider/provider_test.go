package provider

import (
	"net/http"
	"sort"
	"testing"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		name       string
		ok         bool
		origin     string
		header     string
		bearer     bool
		gateway    bool
		family     Family
		native     string
		openai     string
		wantPrefix []string
	}{
		{name: "openai", ok: true, origin: "https://api.openai.com", header: "Authorization", bearer: true, gateway: true, family: FamilyOpenAI, native: "/v1", openai: "/v1", wantPrefix: []string{"sk-"}},
		{name: "google-ai-studio", ok: true, origin: "https://generativelanguage.googleapis.com", header: "x-goog-api-key", gateway: true, family: FamilyGemini, openai: "/v1beta/openai", wantPrefix: []string{"AIza"}},
		{name: "anthropic", ok: true, origin: "https://api.anthropic.com", header: "x-api-key", gateway: true, family: FamilyAnthropic, openai: "/v1", wantPrefix: []string{"sk-ant-"}},
		{name: "groq", ok: true, origin: "https://api.groq.com", header: "Authorization", bearer: true, gateway: true, family: FamilyOpenAI, native: "/openai/v1", openai: "/openai/v1", wantPrefix: []string{"gsk_"}},
		{name: "siliconflow", ok: true, origin: "https://api.siliconflow.cn", header: "Authorization", bearer: true, gateway: false, family: FamilyOpenAI, openai: "/v1", wantPrefix: []string{"sk-"}},
		{name: "mistral", ok: true, origin: "https://api.mistral.ai", header: "Authorization", bearer: true, gateway: true, family: FamilyOpenAI, openai: "/v1"},
		{name: "nope", ok: false},
		{name: "", ok: false},
		{name: "OpenAI", ok: false}, // names are case-sensitive ids
		{name: "google_ai_studio", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := Lookup(tt.name)
			if ok != tt.ok {
				t.Fatalf("Lookup(%q) ok = %v, want %v", tt.name, ok, tt.ok)
			}
			if !ok {
				if p.Name != "" {
					t.Errorf("Lookup(%q) returned non-zero provider %+v", tt.name, p)
				}
				return
			}
			if p.Name != tt.name {
				t.Errorf("Name = %q, want %q", p.Name, tt.name)
			}
			if p.Origin != tt.origin {
				t.Errorf("Origin = %q, want %q", p.Origin, tt.origin)
			}
			if p.KeyHeader != tt.header || p.KeyBearer != tt.bearer {
				t.Errorf("KeyHeader/KeyBearer = %q/%v, want %q/%v", p.KeyHeader, p.KeyBearer, tt.header, tt.bearer)
			}
			if p.Gateway != tt.gateway {
				t.Errorf("Gateway = %v, want %v", p.Gateway, tt.gateway)
			}
			if p.Family != tt.family {
				t.Errorf("Family = %v, want %v", p.Family, tt.family)
			}
			if p.NativePrefix != tt.native || p.OpenAIPrefix != tt.openai {
				t.Errorf("prefixes = %q/%q, want %q/%q", p.NativePrefix, p.OpenAIPrefix, tt.native, tt.openai)
			}
			if len(p.KeyPrefixes) != len(tt.wantPrefix) {
				t.Fatalf("KeyPrefixes = %q, want %q", p.KeyPrefixes, tt.wantPrefix)
			}
			for i := range tt.wantPrefix {
				if p.KeyPrefixes[i] != tt.wantPrefix[i] {
					t.Errorf("KeyPrefixes = %q, want %q", p.KeyPrefixes, tt.wantPrefix)
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	names := Names()
	if !sort.StringsAreSorted(names) {
		t.Errorf("Names() not sorted: %q", names)
	}
	want := []string{"anthropic", "azure-openai", "cerebras", "cohere", "deepseek", "elevenlabs", "google-ai-studio", "grok", "groq", "mistral", "openai", "openrouter", "perplexity-ai", "siliconflow", "workers-ai"}
	if len(names) != len(want) {
		t.Fatalf("Names() = %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("Names()[%d] = %q, want %q", i, names[i], want[i])
		}
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("Names() lists %q twice", n)
		}
		seen[n] = true
		p, ok := Lookup(n)
		if !ok || p.Name != n {
			t.Errorf("Lookup(%q) = %+v, %v; every listed name must resolve to itself", n, p, ok)
		}
		if p.Origin == "" || p.KeyHeader == "" {
			t.Errorf("%s: empty Origin or KeyHeader", n)
		}
	}
	// The caller owns the slice: changing it must not change the registry.
	names[0] = "zzz"
	if Names()[0] != want[0] {
		t.Errorf("Names() shares its slice between calls")
	}
}

func TestBaseURLVar(t *testing.T) {
	tests := []struct{ name, want string }{
		{"google-ai-studio", "GOOGLE_AI_STUDIO_BASE_URL"},
		{"openai", "OPENAI_BASE_URL"},
		{"anthropic", "ANTHROPIC_BASE_URL"},
		{"siliconflow", "SILICONFLOW_BASE_URL"},
		{"openrouter", "OPENROUTER_BASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := Lookup(tt.name)
			if !ok {
				t.Fatalf("provider %q not registered", tt.name)
			}
			if got := p.BaseURLVar(); got != tt.want {
				t.Errorf("BaseURLVar() = %q, want %q", got, tt.want)
			}
		})
	}
	// Unregistered names follow the same rule.
	if got := (Provider{Name: "a-b-c"}).BaseURLVar(); got != "A_B_C_BASE_URL" {
		t.Errorf("BaseURLVar() for a-b-c = %q", got)
	}
}

func TestWithOrigin(t *testing.T) {
	tests := []struct {
		name, override, want string
	}{
		{"empty keeps default", "", "https://api.openai.com"},
		{"plain", "http://127.0.0.1:8787", "http://127.0.0.1:8787"},
		{"trailing slash dropped", "http://localhost:9000/", "http://localhost:9000"},
		{"several trailing slashes dropped", "http://localhost:9000///", "http://localhost:9000"},
		{"path kept", "https://proxy.example/openai/", "https://proxy.example/openai"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := Lookup("openai")
			q := p.WithOrigin(tt.override)
			if q.Origin != tt.want {
				t.Errorf("WithOrigin(%q).Origin = %q, want %q", tt.override, q.Origin, tt.want)
			}
			if q.Name != p.Name || q.KeyHeader != p.KeyHeader || q.NativePrefix != p.NativePrefix {
				t.Errorf("WithOrigin changed more than the origin: %+v", q)
			}
			// The registry is not modified.
			if r, _ := Lookup("openai"); r.Origin != "https://api.openai.com" {
				t.Errorf("WithOrigin modified the registry: origin now %q", r.Origin)
			}
		})
	}
}

func TestSetKey(t *testing.T) {
	tests := []struct {
		provider, header, want string
		absent                 []string
	}{
		{"openai", "Authorization", "Bearer k", []string{"X-Api-Key", "X-Goog-Api-Key"}},
		{"groq", "Authorization", "Bearer k", nil},
		{"mistral", "Authorization", "Bearer k", nil},
		{"google-ai-studio", "X-Goog-Api-Key", "k", []string{"Authorization", "X-Api-Key"}},
		{"anthropic", "X-Api-Key", "k", []string{"Authorization", "X-Goog-Api-Key"}},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			p, ok := Lookup(tt.provider)
			if !ok {
				t.Fatalf("provider %q not registered", tt.provider)
			}
			h := http.Header{}
			h.Set(tt.header, "old value") // SetKey replaces, never appends
			p.SetKey(h, "k")
			if got := h.Values(tt.header); len(got) != 1 || got[0] != tt.want {
				t.Errorf("%s = %q, want [%q]", tt.header, got, tt.want)
			}
			for _, a := range tt.absent {
				if v := h.Get(a); v != "" {
					t.Errorf("unexpected header %s: %q", a, v)
				}
			}
			if len(h) != 1 {
				t.Errorf("SetKey set %d headers, want 1: %v", len(h), h)
			}
		})
	}
}

// recordingHeader checks that SetKey uses exactly the Header interface with
// the provider's header name as given.
type recordingHeader map[string]string

func (r recordingHeader) Set(k, v string)     { r[k] = v }
func (r recordingHeader) Get(k string) string { return r[k] }

func TestAuthorize(t *testing.T) {
	tests := []struct {
		provider string
		openAI   bool
		sent     map[string]string // what the client sent
		want     map[string]string
	}{
		{"openai", true, nil, map[string]string{"Authorization": "Bearer k"}},
		{"google-ai-studio", false, nil, map[string]string{"x-goog-api-key": "k"}},
		{"google-ai-studio", true, nil, map[string]string{"Authorization": "Bearer k"}},
		{"anthropic", false, nil, map[string]string{"x-api-key": "k", "Anthropic-Version": AnthropicVersion}},
		{"anthropic", true, nil, map[string]string{"Authorization": "Bearer k", "Anthropic-Version": AnthropicVersion}},
		{"anthropic", false, map[string]string{"Anthropic-Version": "2024-01-01"},
			map[string]string{"x-api-key": "k", "Anthropic-Version": "2024-01-01"}},
	}
	for _, tt := range tests {
		p, _ := Lookup(tt.provider)
		h := recordingHeader{}
		for k, v := range tt.sent {
			h[k] = v
		}
		p.Authorize(h, "k", tt.openAI)
		if len(h) != len(tt.want) {
			t.Errorf("%s openAI=%v: %v, want %v", tt.provider, tt.openAI, h, tt.want)
			continue
		}
		for k, v := range tt.want {
			if h[k] != v {
				t.Errorf("%s openAI=%v: %s=%q, want %q", tt.provider, tt.openAI, k, h[k], v)
			}
		}
	}
}

func TestSetKeyHeaderName(t *testing.T) {
	tests := []struct{ provider, key, value string }{
		{"openai", "Authorization", "Bearer sk-x"},
		{"google-ai-studio", "x-goog-api-key", "sk-x"},
		{"anthropic", "x-api-key", "sk-x"},
	}
	for _, tt := range tests {
		p, _ := Lookup(tt.provider)
		h := recordingHeader{}
		p.SetKey(h, "sk-x")
		if len(h) != 1 || h[tt.key] != tt.value {
			t.Errorf("%s: SetKey wrote %v, want {%s: %s}", tt.provider, h, tt.key, tt.value)
		}
	}
}
