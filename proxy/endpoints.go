package proxy

import (
	"net/http"
	"strings"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/usage"
)

// Endpoint scope: a client reaches only the inference endpoints keypool
// knows (provider.Inference) unless it has full pass-through: a token
// made with "endpoints":"all", or AUTH_KEY with AUTH_KEY_PASSTHROUGH=1.
// Files, batches, fine-tuning, stored conversations and the endpoints
// that mint temporary provider credentials would otherwise hand a pool key's
// account to any client, past every quota.

// maxPathInError bounds how much of a refused path an error repeats.
const maxPathInError = 200

// allEndpoints reports whether c may call any provider path.
func (px *Proxy) allEndpoints(c client) bool {
	if c.tok == nil {
		return px.Config().AuthKeyPassthrough
	}
	return c.tok.AllEndpoints()
}

// endpointAllowed checks the endpoint scope of a proxied request before
// its body is read: prefix is the route, "/v1" or "/api/<provider>" (or
// "/api/compat"); rest is the decoded path after it, from "/". A refusal
// answers 403 endpoint_not_allowed naming the path, and counts as
// rejected.
func (px *Proxy) endpointAllowed(w http.ResponseWriter, r *http.Request, c client, prefix, rest string) bool {
	if px.allEndpoints(c) {
		return true
	}
	var p provider.Provider
	surface := provider.SurfaceOpenAI
	switch name, native := strings.CutPrefix(prefix, "/api/"); {
	case !native:
	case name == "compat":
		surface = provider.SurfaceCompat
	default:
		known := false
		if p, known = provider.Lookup(name); !known {
			return true // answered 404 next, before anything goes upstream
		}
		surface = provider.SurfaceNative
		if _, ok := p.NativeBase(px.Target(p)); ok {
			surface = provider.SurfaceGateway
		}
	}
	method := r.Method
	if isSocket(r) {
		method = provider.MethodSocket
	}
	if provider.Inference(p, surface, method, rest) {
		return true
	}
	shown := method + " " + prefix + rest
	if len(shown) > maxPathInError {
		shown = strings.ToValidUTF8(shown[:maxPathInError], "") + "…"
	}
	who, how := "this keypool token", `a token with full pass-through ("endpoints": "`+store.EndpointsAll+`")`
	if c.tok == nil {
		who, how = "AUTH_KEY", "AUTH_KEY_PASSTHROUGH=1"
	}
	reply.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "endpoint_not_allowed",
		Message: who + " may not call " + shown + ": it may call the inference endpoints keypool knows " +
			"(chat, completions, embeddings, images, audio, rerank, responses, models; Gemini generateContent…; " +
			"Anthropic messages…); other provider endpoints need " + how}.Write(w)
	px.count(served{started: px.Now(), token: c.id(), prov: p.Name, model: RefusedModel, class: classRejected, answer: answerOf(w)},
		usage.Usage{}, false, 0, false)
	return false
}
