package provider

import "strings"

// Endpoint scope: a client token reaches, by default, only the inference
// endpoints below (text, embeddings, images, audio, rerank and the model
// lists). Everything else a provider offers under the same key — stored
// completions and responses, files, batches, fine-tuning, assistants,
// vector stores, cached contents, endpoints that mint temporary
// credentials, account and admin APIs — needs a token with full
// pass-through. The lists are allow-lists on purpose: a path keypool does
// not know is not inference.

// Surface is how keypool sends a client's path upstream.
type Surface int

const (
	// SurfaceOpenAI is keypool's /v1/<path>: the path follows the
	// provider's OpenAIPrefix.
	SurfaceOpenAI Surface = iota
	// SurfaceNative is /api/<provider>/<path> straight to the provider:
	// the path follows its NativePrefix.
	SurfaceNative
	// SurfaceGateway is /api/<provider>/<path> through AI Gateway, which
	// maps /<provider>/<path> onto the provider's NativePrefix too (Azure
	// OpenAI and Workers AI have their own gateway forms as well).
	SurfaceGateway
	// SurfaceCompat is /api/compat/<path>, the gateway's (or the
	// provider's) OpenAI-compatible chat endpoint.
	SurfaceCompat
)

// endpoint is one allowed request shape. Segments of path are literal,
// or "{id}" (one segment: a name such as a model or voice id),
// "{id}:verb" (a name and a fixed method, Gemini's models/x:generateContent)
// or, last, "{ids}" (one or more such segments: ids with slashes).
type endpoint struct {
	method string // "GET" also allows HEAD
	path   string
}

func eps(method string, paths ...string) []endpoint {
	out := make([]endpoint, len(paths))
	for i, p := range paths {
		out[i] = endpoint{method, p}
	}
	return out
}

// openAIInference is the OpenAI-compatible inference surface, as paths
// after the provider's OpenAI-compatible prefix. GET/DELETE of
// /responses/{id} and GET /chat/completions read stored conversations and
// are not here.
var openAIInference = concat(
	eps("POST", "/chat/completions", "/completions", "/embeddings", "/moderations",
		"/images/generations", "/images/edits", "/images/variations",
		"/audio/speech", "/audio/transcriptions", "/audio/translations",
		"/rerank", "/responses", "/responses/input_tokens"),
	eps("GET", "/models", "/models/{ids}"),
	// The Responses API over WebSocket (a GET with Upgrade: websocket).
	eps(MethodSocket, "/responses"),
)

// MethodSocket is the method Inference is asked about for a WebSocket
// handshake: a GET that opens a socket is not the GET of the same path.
const MethodSocket = "WEBSOCKET"

var (
	geminiVerbs = []string{"generateContent", "streamGenerateContent", "countTokens", "embedContent",
		"batchEmbedContents", "predict"}
	geminiInference = geminiEndpoints()

	anthropicInference = concat(
		eps("POST", "/v1/messages", "/v1/messages/count_tokens", "/v1/complete"),
		eps("GET", "/v1/models", "/v1/models/{id}"))

	elevenLabsInference = concat(
		eps("POST", "/v1/text-to-speech/{id}", "/v1/text-to-speech/{id}/stream",
			"/v1/text-to-speech/{id}/with-timestamps", "/v1/text-to-speech/{id}/stream/with-timestamps",
			"/v1/speech-to-text"),
		eps("GET", "/v1/models"))

	cohereInference = concat(
		eps("POST", "/v1/chat", "/v2/chat", "/v1/embed", "/v2/embed", "/v1/rerank", "/v2/rerank", "/v1/generate"),
		eps("GET", "/v1/models", "/v1/models/{id}"))

	// DeepSeek serves its API with and without /v1, and FIM and prefix
	// completion under /beta.
	deepSeekInference = concat(under("", openAIInference), under("/beta", eps("POST", "/completions", "/chat/completions")))

	mistralInference = eps("POST", "/v1/fim/completions", "/v1/chat/moderations")

	// Workers AI: /ai/run/<model> runs a model (@cf/…, @hf/…); through the
	// gateway, /workers-ai/v1/… is its OpenAI-compatible API.
	workersAIInference = concat(eps("POST", "/@cf/{ids}", "/@hf/{ids}"), under("/v1", openAIInference))

	// Azure OpenAI: per deployment, direct (/openai/deployments/<d>/…)
	// or in the gateway's form (/<resource>/<deployment>/…).
	azureOps          = eps("POST", "/chat/completions", "/completions", "/embeddings", "/images/generations", "/audio/speech", "/audio/transcriptions", "/audio/translations")
	azureInference    = under("/openai/deployments/{id}", azureOps)
	azureGatewayForms = under("/{id}/{id}", azureOps)
)

func geminiEndpoints() []endpoint {
	var out []endpoint
	for _, v := range []string{"/v1", "/v1beta", "/v1alpha"} {
		for _, verb := range geminiVerbs {
			out = append(out, endpoint{"POST", v + "/models/{id}:" + verb})
		}
		out = append(out, eps("GET", v+"/models", v+"/models/{id}")...)
	}
	return out
}

func concat(lists ...[]endpoint) []endpoint {
	var out []endpoint
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// under puts prefix in front of every path of list.
func under(prefix string, list []endpoint) []endpoint {
	out := make([]endpoint, len(list))
	for i, e := range list {
		out[i] = endpoint{e.method, prefix + e.path}
	}
	return out
}

// Inference reports whether method path on surface s of p is one of the
// inference endpoints a token without full pass-through may reach. path
// is the decoded path the client sent after keypool's route prefix (/v1
// or /api/<provider>), starting with "/"; keypool sends it upstream
// escaped so that the provider reads back exactly this path. Matching is
// exact and case-sensitive: an empty segment ("//", a trailing "/"), a
// "." or ".." segment, or a name with characters outside model and voice
// ids is no inference endpoint.
func Inference(p Provider, s Surface, method, path string) bool {
	switch s {
	case SurfaceOpenAI:
		return matchAny(openAIInference, method, path)
	case SurfaceCompat:
		return method == "POST" && path == "/chat/completions"
	}
	// What the provider acts on: its native prefix, then the path. An
	// OpenAI-compatible API below the native one takes the OpenAI list.
	full := p.NativePrefix + path
	if !p.NoOpenAI {
		if rest, ok := strings.CutPrefix(full, p.OpenAIPrefix); ok && strings.HasPrefix(rest, "/") &&
			matchAny(openAIInference, method, rest) {
			return true
		}
	}
	if p.Name == "azure-openai" && s == SurfaceGateway && matchAny(azureGatewayForms, method, path) {
		return true
	}
	return matchAny(nativeInference[p.Name], method, path)
}

// nativeInference is each provider's own inference endpoints, as paths
// after /api/<provider>.
var nativeInference = map[string][]endpoint{
	"google-ai-studio": geminiInference,
	"anthropic":        anthropicInference,
	"elevenlabs":       elevenLabsInference,
	"cohere":           cohereInference,
	"deepseek":         deepSeekInference,
	"mistral":          mistralInference,
	"workers-ai":       workersAIInference,
	"azure-openai":     azureInference,
}

func matchAny(list []endpoint, method, path string) bool {
	if method == "HEAD" {
		method = "GET"
	}
	got := strings.Split(path, "/")
	if len(got) < 2 || got[0] != "" {
		return false
	}
	for _, e := range list {
		if e.method == method && matchPath(strings.Split(e.path, "/")[1:], got[1:]) {
			return true
		}
	}
	return false
}

// matchPath matches the segments of a path against those of a pattern.
func matchPath(pattern, got []string) bool {
	for i, p := range pattern {
		if p == "{ids}" { // the rest: one or more names
			if i >= len(got) {
				return false
			}
			for _, g := range got[i:] {
				if !isName(g, true) {
					return false
				}
			}
			return true
		}
		if i >= len(got) || !matchSegment(p, got[i]) {
			return false
		}
	}
	return len(got) == len(pattern)
}

func matchSegment(pattern, got string) bool {
	switch {
	case pattern == "{id}":
		return isName(got, true)
	case strings.HasPrefix(pattern, "{id}:"):
		name, ok := strings.CutSuffix(got, pattern[len("{id}"):])
		return ok && isName(name, false)
	}
	return pattern == got
}

// isName reports whether s may be a model, voice or deployment id:
// letters, digits and "-._~@" (and ":" when colon, for ids such as
// "ft:gpt-4o-mini:org:x" or "llama-3.1-8b:free"), not "." or "..". No
// "%", "\\", ";" or spaces, which servers may read as something else.
func isName(s string, colon bool) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == '@':
		case c == ':' && colon:
		default:
			return false
		}
	}
	return true
}
