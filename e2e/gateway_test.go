//go:build e2e

package e2e

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestGateway runs keypool with Cloudflare AI Gateway configured (the fake
// upstream plays the gateway at AI_GATEWAY_URL and every provider at its
// base URL): every route of README's route list must reach the gateway at
// that provider's gateway path, or the provider itself when the gateway
// does not know it, with the pool key, never the client's token, and with
// cf-aig-metadata naming the client token and the key.
func TestGateway(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			g := &gatewaySuite{w: startWorker(t, build, up, nil), keys: map[string]string{}}
			g.setUp(t)
			t.Run("routes", g.testRoutes)
			t.Run("model-lists", g.testModelLists)
			t.Run("checks", g.testChecks)
			t.Run("rotation", g.testRotation)
			t.Run("admin-providers", g.testProviders)
		})
	}
}

type gatewaySuite struct {
	w       *worker
	keys    map[string]string // provider → its one key (the routes' pool)
	tokID   int64
	tokName string
	tok     string
}

// gatewayKeys are well-formed keys for every provider, one each.
var gatewayKeys = map[string]string{
	"openai": "sk-gwoa", "siliconflow": "sk-gwsf", "google-ai-studio": "AIzaGw", "anthropic": "sk-ant-gw",
	"groq": "gsk_gw", "deepseek": "sk-gwds", "mistral": "ms-gw", "openrouter": "sk-or-gw", "grok": "xai-gw",
	"cerebras": "csk-gw", "cohere": "co-gw", "perplexity-ai": "pplx-gw", "workers-ai": "cf-gw",
	"azure-openai": "az-gw", "elevenlabs": "el-gw",
}

func (g *gatewaySuite) setUp(t *testing.T) {
	for prov, prefix := range gatewayKeys {
		k := prefix + randomHex(12)
		if j := g.w.importKeys(t, prov, k); j.Get("added").Int() != 1 {
			t.Fatalf("import %s: %s", prov, j.Raw)
		}
		g.keys[prov] = k
	}
	// A token with a name outside ASCII: the metadata header must still
	// be a valid header value. Full pass-through, for /v1/files.
	g.tokName = "gw team ü"
	r := g.w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"`+g.tokName+`","endpoints":"all"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create token: %d %s", r.status, r.body)
	}
	g.tokID, g.tok = r.json().Get("id").Int(), r.json().Get("token").String()
}

// gw is the gateway's path prefix for this worker's account and gateway.
func (g *gatewaySuite) gw() string { return "/v1/" + g.w.gwAcct + "/" + g.w.gwName }

// routeCase is one request and the exact path the upstream must see:
// gateway paths start with "gw:" (under the gateway's prefix).
type routeCase struct {
	method, path, body string
	multipart          bool
	prov               string // whose key serves it
	upstream           string // "gw:/<slug>/…" through the gateway, else the direct path
	model              string // the body model the upstream must see ("" = unchecked)
}

var gatewayRoutes = []routeCase{
	// The OpenAI-compatible surface, default provider (openai).
	{"POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, false, "openai", "gw:/openai/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false, "openai", "gw:/openai/chat/completions", ""},
	{"POST", "/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}`, false, "openai", "gw:/openai/completions", ""},
	{"POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, false, "openai", "gw:/openai/embeddings", ""},
	{"POST", "/v1/images/generations", `{"model":"dall-e-3","prompt":"a cat"}`, false, "openai", "gw:/openai/images/generations", ""},
	{"POST", "/v1/audio/speech", `{"model":"tts-1","input":"hi","voice":"alloy"}`, false, "openai", "gw:/openai/audio/speech", ""},
	{"POST", "/v1/audio/transcriptions", "whisper-1", true, "openai", "gw:/openai/audio/transcriptions", ""},
	{"POST", "/v1/audio/translations", "whisper-1", true, "openai", "gw:/openai/audio/translations", ""},
	{"POST", "/v1/rerank", `{"model":"rerank-1","query":"q","documents":["a","b"]}`, false, "openai", "gw:/openai/rerank", ""},
	{"POST", "/v1/responses", `{"model":"gpt-4o-mini","input":"hi"}`, false, "openai", "gw:/openai/responses", ""},
	{"GET", "/v1/models/gpt-4o-mini", "", false, "openai", "gw:/openai/models/gpt-4o-mini", ""},
	{"GET", "/v1/files", "", false, "openai", "gw:/openai/files", ""},
	// /v1/chat/completions for every provider with an OpenAI-compatible API.
	{"POST", "/v1/chat/completions", `{"model":"siliconflow/Qwen/Qwen2.5-7B-Instruct","messages":[]}`, false, "siliconflow", "/v1/chat/completions", "Qwen/Qwen2.5-7B-Instruct"},
	{"POST", "/v1/chat/completions", `{"model":"google-ai-studio/gemini-2.0-flash","messages":[]}`, false, "google-ai-studio", "gw:/google-ai-studio/v1beta/openai/chat/completions", "gemini-2.0-flash"},
	{"POST", "/v1/chat/completions", `{"model":"anthropic/claude-3-5-haiku-latest","messages":[]}`, false, "anthropic", "gw:/anthropic/v1/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"groq/llama-3.1-8b-instant","messages":[]}`, false, "groq", "gw:/groq/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"deepseek/deepseek-chat","messages":[]}`, false, "deepseek", "gw:/deepseek/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"mistral/mistral-small-latest","messages":[]}`, false, "mistral", "gw:/mistral/v1/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"openrouter/openai/gpt-4o-mini","messages":[]}`, false, "openrouter", "gw:/openrouter/v1/chat/completions", "openai/gpt-4o-mini"},
	{"POST", "/v1/chat/completions", `{"model":"grok/grok-2","messages":[]}`, false, "grok", "gw:/grok/v1/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"cerebras/llama3.1-8b","messages":[]}`, false, "cerebras", "gw:/cerebras/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"cohere/command-r","messages":[]}`, false, "cohere", "gw:/cohere/compatibility/v1/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"perplexity-ai/sonar","messages":[]}`, false, "perplexity-ai", "gw:/perplexity-ai/chat/completions", ""},
	{"POST", "/v1/chat/completions", `{"model":"workers-ai/@cf/meta/llama-3.1-8b-instruct","messages":[]}`, false, "workers-ai", "gw:/workers-ai/v1/chat/completions", "@cf/meta/llama-3.1-8b-instruct"},
	// The gateway's Azure form names a resource and a deployment, which an
	// OpenAI-compatible request does not: direct.
	{"POST", "/v1/chat/completions", `{"model":"azure-openai/gpt-4o-mini","messages":[]}`, false, "azure-openai", "/openai/v1/chat/completions", ""},
	// The providers' own APIs.
	{"POST", "/api/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, false, "openai", "gw:/openai/chat/completions", ""},
	{"POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`, false, "google-ai-studio", "gw:/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", ""},
	{"POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", `{"contents":[{"parts":[{"text":"hi"}]}]}`, false, "google-ai-studio", "gw:/google-ai-studio/v1beta/models/gemini-2.0-flash:streamGenerateContent", ""},
	{"POST", "/api/anthropic/v1/messages", `{"model":"claude-3-5-haiku-latest","max_tokens":10,"messages":[]}`, false, "anthropic", "gw:/anthropic/v1/messages", ""},
	{"POST", "/api/groq/chat/completions", `{"model":"llama-3.1-8b-instant","messages":[]}`, false, "groq", "gw:/groq/chat/completions", ""},
	{"POST", "/api/deepseek/chat/completions", `{"model":"deepseek-chat","messages":[]}`, false, "deepseek", "gw:/deepseek/chat/completions", ""},
	{"POST", "/api/mistral/v1/chat/completions", `{"model":"mistral-small-latest","messages":[]}`, false, "mistral", "gw:/mistral/v1/chat/completions", ""},
	{"POST", "/api/openrouter/v1/chat/completions", `{"model":"openai/gpt-4o-mini","messages":[]}`, false, "openrouter", "gw:/openrouter/v1/chat/completions", ""},
	{"POST", "/api/elevenlabs/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb", `{"text":"hi","model_id":"eleven_multilingual_v2"}`, false, "elevenlabs", "gw:/elevenlabs/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb", ""},
	{"POST", "/api/workers-ai/@cf/meta/llama-3.1-8b-instruct", `{"prompt":"hi"}`, false, "workers-ai", "gw:/workers-ai/@cf/meta/llama-3.1-8b-instruct", ""},
	{"POST", "/api/azure-openai/my-resource/my-deployment/chat/completions?api-version=2024-06-01", `{"messages":[]}`, false, "azure-openai", "gw:/azure-openai/my-resource/my-deployment/chat/completions", ""},
	{"POST", "/api/siliconflow/v1/chat/completions", `{"model":"Qwen/Qwen2.5-7B-Instruct","messages":[]}`, false, "siliconflow", "/v1/chat/completions", ""},
	// The gateway's OpenAI-compatible endpoint, for the providers it
	// serves (Perplexity under its compat name); the others at their
	// own OpenAI-compatible path, through the gateway when it knows them.
	{"POST", "/api/compat/chat/completions", `{"model":"anthropic/claude-3-5-haiku-latest","messages":[]}`, false, "anthropic", "gw:/compat/chat/completions", "anthropic/claude-3-5-haiku-latest"},
	{"POST", "/api/compat/chat/completions", `{"model":"perplexity-ai/sonar","messages":[]}`, false, "perplexity-ai", "gw:/compat/chat/completions", "perplexity/sonar"},
	{"POST", "/api/compat/chat/completions", `{"model":"openrouter/openai/gpt-4o-mini","messages":[]}`, false, "openrouter", "gw:/openrouter/v1/chat/completions", "openai/gpt-4o-mini"},
	{"POST", "/api/compat/chat/completions", `{"model":"siliconflow/Qwen/Qwen2.5-7B-Instruct","messages":[]}`, false, "siliconflow", "/v1/chat/completions", "Qwen/Qwen2.5-7B-Instruct"},
}

// send makes one route's request with the suite's token, tagged with id.
func (g *gatewaySuite) send(t *testing.T, c routeCase, id string) response {
	t.Helper()
	body, ctype := c.body, "application/json"
	if c.multipart {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.WriteField("model", c.body)
		fw, _ := mw.CreateFormFile("file", "a.wav")
		fw.Write([]byte("RIFF fake audio"))
		mw.Close()
		body, ctype = b.String(), mw.FormDataContentType()
	}
	h := map[string]string{"Authorization": "Bearer " + g.tok, "X-Test-Id": id}
	if body != "" {
		h["Content-Type"] = ctype
	}
	return g.w.do(t, c.method, c.path, h, body)
}

func (g *gatewaySuite) testRoutes(t *testing.T) {
	for i, c := range gatewayRoutes {
		id := "gw-route-" + strconv.Itoa(i)
		r := g.send(t, c, id)
		if r.status != http.StatusOK {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
			continue
		}
		q := findRequest(t, g.w.up, id)
		want, viaGateway := c.upstream, false
		if rest, ok := strings.CutPrefix(want, "gw:"); ok {
			want, viaGateway = g.gw()+rest, true
		}
		what := c.method + " " + c.path + " (" + c.prov + ")"
		if q.Path != want {
			t.Errorf("%s: upstream path %s, want %s", what, q.Path, want)
		}
		if q.Key != g.keys[c.prov] {
			t.Errorf("%s: upstream key %q, want the pool's %s key", what, mask(q.Key+"....."), c.prov)
		}
		if c.model != "" && gjson.GetBytes(q.Body, "model").String() != c.model {
			t.Errorf("%s: upstream model %q, want %q", what, gjson.GetBytes(q.Body, "model").String(), c.model)
		}
		g.noClientToken(t, what, q)
		g.gatewayHeaders(t, what, q, viaGateway, r.header.Get("X-Keypool-Key"))
	}
}

// noClientToken fails when the client's token reached the upstream.
func (g *gatewaySuite) noClientToken(t *testing.T, what string, q fakeupstream.Request) {
	t.Helper()
	if strings.Contains(q.Query, g.tok) || bytes.Contains(q.Body, []byte(g.tok)) {
		t.Errorf("%s: the client token reached the upstream in the query or body", what)
	}
	for name, vs := range q.Header {
		for _, v := range vs {
			if strings.Contains(v, g.tok) {
				t.Errorf("%s: the client token reached the upstream in %s", what, name)
			}
		}
	}
}

// gatewayHeaders checks the gateway's own headers: its token and the
// metadata naming the client token and the key through the gateway,
// no cf-aig-* header at all on a direct request. keyID "" skips the
// key's id (requests keypool makes on its own).
func (g *gatewaySuite) gatewayHeaders(t *testing.T, what string, q fakeupstream.Request, viaGateway bool, keyID string) gjson.Result {
	t.Helper()
	if !viaGateway {
		for name := range q.Header {
			if strings.HasPrefix(strings.ToLower(name), "cf-aig-") {
				t.Errorf("%s: %s sent straight to a provider", what, name)
			}
		}
		return gjson.Result{}
	}
	if got := q.Header.Get("Cf-Aig-Authorization"); got != "Bearer "+g.w.gwTok {
		t.Errorf("%s: cf-aig-authorization %q, want keypool's gateway token", what, got)
	}
	raw := q.Header.Get("Cf-Aig-Metadata")
	md := gjson.Parse(raw)
	if !gjson.Valid(raw) || !md.IsObject() {
		t.Errorf("%s: cf-aig-metadata %q, want a JSON object", what, raw)
		return md
	}
	n := 0
	md.ForEach(func(_, v gjson.Result) bool {
		n++
		if v.IsObject() || v.IsArray() {
			t.Errorf("%s: cf-aig-metadata value %s: the gateway takes strings, numbers and booleans", what, v.Raw)
		}
		return true
	})
	if n > 5 {
		t.Errorf("%s: cf-aig-metadata has %d entries; the gateway keeps 5", what, n)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x20 || raw[i] > 0x7e {
			t.Errorf("%s: cf-aig-metadata is not printable ASCII: %q", what, raw)
			break
		}
	}
	if keyID != "" {
		if md.Get("keypool_token").Int() != g.tokID || md.Get("keypool_token_name").String() != g.tokName ||
			md.Get("keypool_key").String() != keyID {
			t.Errorf("%s: cf-aig-metadata %s, want token %d %q and key %s", what, raw, g.tokID, g.tokName, keyID)
		}
	}
	return md
}

// testModelLists: the first /v1/models fetches each provider's list, from
// the gateway for the providers it knows, with a cached answer refused.
func (g *gatewaySuite) testModelLists(t *testing.T) {
	before := len(g.w.up.Requests())
	r := g.w.do(t, "GET", "/v1/models", map[string]string{"Authorization": "Bearer " + g.tok}, "")
	if r.status != http.StatusOK {
		t.Fatalf("/v1/models: %d %s", r.status, r.body)
	}
	want := map[string]string{
		"openai":           "gw:/openai/models",
		"google-ai-studio": "gw:/google-ai-studio/v1beta/openai/models",
		"anthropic":        "gw:/anthropic/v1/models",
		"groq":             "gw:/groq/models",
		"workers-ai":       "gw:/workers-ai/v1/models",
		"siliconflow":      "/v1/models",
		"azure-openai":     "/openai/v1/models",
	}
	g.wantFetches(t, "model list", g.w.up.Requests()[before:], want)
	if !strings.Contains(string(r.body), `"google-ai-studio/gemini-2.0-flash"`) {
		t.Errorf("/v1/models lacks Gemini's list: %s", r.body)
	}
}

// wantFetches checks the requests keypool made on its own with each
// provider's key: its last one goes to the path wanted.
func (g *gatewaySuite) wantFetches(t *testing.T, what string, reqs []fakeupstream.Request, want map[string]string) {
	t.Helper()
	for prov, path := range want {
		var seen []string
		var last *fakeupstream.Request
		for i := range reqs {
			if reqs[i].Key == g.keys[prov] {
				seen, last = append(seen, reqs[i].Path), &reqs[i]
			}
		}
		if last == nil {
			t.Errorf("%s: no request with the %s key", what, prov)
			continue
		}
		via := strings.HasPrefix(path, "gw:")
		if via {
			path = g.gw() + path[3:]
		}
		if last.Path != path {
			t.Errorf("%s for %s: upstream paths %v, want the last at %s", what, prov, seen, path)
		}
		md := g.gatewayHeaders(t, what+" for "+prov, *last, via, "")
		if via {
			if md.Get("keypool_key").Int() <= 0 || last.Header.Get("Cf-Aig-Skip-Cache") != "true" {
				t.Errorf("%s for %s: metadata %s, cf-aig-skip-cache %q; want the key's id and true",
					what, prov, md.Raw, last.Header.Get("Cf-Aig-Skip-Cache"))
			}
		}
	}
}

// testChecks: a check job reads balances straight from the provider (the
// gateway's provider paths are its inference APIs) and falls back to the
// model list, through the gateway where it knows the provider.
func (g *gatewaySuite) testChecks(t *testing.T) {
	before := len(g.w.up.Requests())
	for _, prov := range []string{"siliconflow", "deepseek", "openai", "google-ai-studio"} {
		r := g.w.adminCall(t, "POST", "/admin/api/checks", `{"provider":"`+prov+`"}`)
		if r.status != http.StatusAccepted {
			t.Fatalf("check job for %s: %d %s", prov, r.status, r.body)
		}
		id := r.json().Get("id").String()
		deadline := time.Now().Add(30 * time.Second)
		for r.json().Get("state").String() == "running" && time.Now().Before(deadline) {
			r = g.w.adminCall(t, "GET", "/admin/api/checks/"+id, "")
		}
		if r.json().Get("state").String() != "done" {
			t.Fatalf("check job for %s: %s", prov, r.body)
		}
	}
	reqs := g.w.up.Requests()[before:]
	for prov, path := range map[string]string{"siliconflow": "/v1/user/info", "deepseek": "/user/balance"} {
		found := false
		for _, q := range reqs {
			if q.Key == g.keys[prov] && q.Path == path {
				found = true
				g.gatewayHeaders(t, prov+" balance", q, false, "")
			}
		}
		if !found {
			t.Errorf("no %s balance read at %s (direct)", prov, path)
		}
	}
	g.wantFetches(t, "check", reqs, map[string]string{
		"siliconflow":      "/v1/models",
		"deepseek":         "gw:/deepseek/models",
		"openai":           "gw:/openai/models",
		"google-ai-studio": "gw:/google-ai-studio/v1beta/openai/models",
	})
}

// testRotation: a pool with a revoked key and a cooling one serves every
// request through the gateway, each bad key tried once.
func (g *gatewaySuite) testRotation(t *testing.T) {
	const model = "llama-3.3-70b-versatile"
	revoked, cooling := "gsk_revoked"+randomHex(10), "gsk_cooling"+randomHex(10)
	g.w.up.SetRule(revoked, fakeupstream.OpenAIInvalidKey(mask(revoked)))
	g.w.up.SetRule(cooling, fakeupstream.OpenAIRateLimited(model, 120))
	g.w.importKeys(t, "groq", revoked, cooling)
	before := len(g.w.up.Requests())
	for i := 0; i < 12; i++ {
		id := "gw-rot-" + strconv.Itoa(i)
		path, body := "/v1/chat/completions", `{"model":"groq/`+model+`","messages":[]}`
		if i%2 == 1 {
			path, body = "/api/groq/chat/completions", `{"model":"`+model+`","messages":[]}`
		}
		r := g.w.do(t, "POST", path, map[string]string{"Authorization": "Bearer " + g.tok, "X-Test-Id": id}, body)
		if r.status != http.StatusOK {
			t.Fatalf("request %d (%s): %d %s", i, path, r.status, r.body)
		}
	}
	calls := map[string]int{}
	for _, q := range g.w.up.Requests()[before:] {
		calls[q.Key]++
		if want := g.gw() + "/groq/chat/completions"; q.Path != want {
			t.Errorf("rotation: upstream path %s, want %s", q.Path, want)
		}
		g.noClientToken(t, "rotation", q)
		g.gatewayHeaders(t, "rotation", q, true, "")
	}
	if calls[revoked] > 1 || calls[cooling] > 1 || calls[g.keys["groq"]] != 12 {
		t.Errorf("calls per key: revoked %d, cooling %d, good %d; want ≤1, ≤1, 12", calls[revoked], calls[cooling], calls[g.keys["groq"]])
	}
	if calls[revoked] == 1 {
		eventually(t, "the revoked key blocked", func() bool {
			return g.w.keyState(t, "groq", revoked).Get("status").String() == "blocked"
		})
	}
}

// testProviders: the admin's provider list says, per provider, whether
// its routes go through the gateway and at which base URL.
func (g *gatewaySuite) testProviders(t *testing.T) {
	r := g.w.adminCall(t, "GET", "/admin/api/providers", "")
	if r.status != http.StatusOK {
		t.Fatalf("providers: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), g.w.gwTok) {
		t.Errorf("the provider list shows the gateway token")
	}
	base := g.w.up.URL + g.gw()
	want := map[string][4]string{ // /v1 base, via, /api base, via
		"openai":           {base + "/openai", "true", base + "/openai", "true"},
		"google-ai-studio": {base + "/google-ai-studio/v1beta/openai", "true", base + "/google-ai-studio", "true"},
		"siliconflow":      {g.w.up.URL + "/v1", "false", g.w.up.URL, "false"},
		"azure-openai":     {g.w.up.URL + "/openai/v1", "false", base + "/azure-openai", "true"},
	}
	for _, p := range r.json().Get("providers").Array() {
		w, ok := want[p.Get("name").String()]
		if !ok {
			continue
		}
		delete(want, p.Get("name").String())
		got := [4]string{p.Get("openai.base_url").String(), p.Get("openai.gateway").Raw, p.Get("native.base_url").String(), p.Get("native.gateway").Raw}
		if got != w {
			t.Errorf("provider %s: %v, want %v (%s)", p.Get("name"), got, w, p.Raw)
		}
	}
	if len(want) > 0 {
		t.Errorf("providers missing from the list: %v", want)
	}
}
