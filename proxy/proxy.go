package proxy

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/usage"
)

const (
	// candidateLimit bounds the keys read from D1 per request: enough for
	// every attempt plus room to spread load, never the whole pool.
	candidateLimit = 8
	// errorBodyLimit bounds how much of a failed answer is read for the
	// key's history before the next key is tried.
	errorBodyLimit = 16 << 10
)

// upstreamCall is one proxied request, resolved: where it goes, with which
// body, and which model's key state it concerns.
type upstreamCall struct {
	prov  provider.Provider
	model string // "" when the route names no model
	url   string
	body  []byte // replayed byte for byte on every attempt
	// openAIRoute: the key goes in Authorization: Bearer, as every
	// provider's OpenAI-compatible API expects, instead of the provider's
	// native key header.
	openAIRoute bool
	// viaGateway: the request goes to Cloudflare AI Gateway, the only
	// place the gateway token may be sent.
	viaGateway bool
	// client is who called: its token's scope and quotas apply.
	client client
	// headers picks the client headers that go upstream (set by forward).
	headers forwardRule
	// conversation identifies the conversation the request continues,
	// when prompt-cache affinity is on for the provider (set by forward).
	conversation uint64
	// socket: a WebSocket handshake (see serveSocket).
	socket bool
}

// dbAndBody is the database and the request's body; false: answered.
func (px *Proxy) dbAndBody(w http.ResponseWriter, r *http.Request) (*sql.DB, []byte, bool) {
	db, ok := px.db(w)
	if !ok {
		return nil, nil, false
	}
	body, ok := px.RequestBody(w, r)
	return db, body, ok
}

// RequestBody buffers the request body (so that retries can replay it) up to
// the configured cap. GET and HEAD never carry one upstream.
func (px *Proxy) RequestBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil, true
	}
	limit := px.maxBodyBytes()
	read := px.ReadBody
	if read == nil {
		read = ReadAll
	}
	body, ok, err := read(r, limit)
	if err != nil {
		reply.BadRequest("could not read the request body: "+err.Error(), "").Write(w)
		return nil, false
	}
	if !ok {
		reply.Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
			Message: "request body is larger than this keypool accepts (" + strconv.FormatInt(limit, 10) + " bytes, MAX_BODY_BYTES)"}.Write(w)
		return nil, false
	}
	return body, true
}

func (px *Proxy) maxBodyBytes() int64 {
	return px.Config().MaxBodyBytes
}

// ReadAll reads a body of at most limit bytes in Go (ok false: larger).
func ReadAll(r *http.Request, limit int64) ([]byte, bool, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	return body, int64(len(body)) <= limit, err
}

// modelRequired lists the /v1 routes whose POST must name a model.
var modelRequired = map[string]bool{
	"/chat/completions": true, "/completions": true, "/embeddings": true, "/responses": true,
	"/audio/speech": true, "/audio/transcriptions": true, "/audio/translations": true, "/rerank": true,
}

// ServeOpenAI serves /v1/*: the OpenAI-compatible surface. The provider
// comes from an alias, a "provider/model" model name, else
// DEFAULT_PROVIDER. Paths keypool does not know pass through to the
// provider's OpenAI-compatible API.
func (px *Proxy) ServeOpenAI(rw http.ResponseWriter, r *http.Request) {
	w := answering(rw, r)
	c, ok := px.checkClient(w, r)
	if !ok {
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v1")
	up, ok := escapePath(w, rest)
	if !ok || !px.endpointAllowed(w, r, c, "/v1", rest) {
		return
	}
	db, ok := px.db(w)
	if !ok {
		return
	}
	set := px.Settings(r.Context(), db)
	if isSocket(r) {
		px.serveSocket(w, r, db, set, c, rest, up)
		return
	}
	if rest == "/models" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		px.listModels(w, r, db, set, c)
		return
	}
	body, ok := px.RequestBody(w, r)
	if !ok {
		return
	}
	m, bad := px.requestModel(r.Header.Get("Content-Type"), body, set, false)
	if bad.Status != 0 {
		bad.Write(w)
		return
	}
	if m.name == "" && r.Method == http.MethodPost && modelRequired[rest] {
		reply.BadRequest("model is required", "model").Write(w)
		return
	}
	prov, ok := px.provider(w, m.prov)
	if !ok {
		return
	}
	if prov.NoOpenAI {
		reply.BadRequest(prov.Name+" has no OpenAI-compatible API; call it at /api/"+prov.Name+"/...", "model").Write(w)
		return
	}
	if m, bad = pathOverBody(m, rest); bad.Status != 0 {
		bad.Write(w)
		return
	}
	if px.refuseOutOfScope(w, c, prov.Name, m.model) {
		return
	}
	base, viaGateway := prov.OpenAIBase(px.Target(prov))
	px.forward(w, r, db, set, upstreamCall{
		prov: prov, model: m.model, body: m.body, openAIRoute: true, client: c,
		url: base + up + upstreamQuery(r.URL), viaGateway: viaGateway,
	})
}

// requestModel is the model a request names and where it goes.
type requestModel struct {
	name  string // as the client wrote it
	prov  string
	model string // as the provider knows it
	body  []byte // with the model rewritten when it changed
}

// requestModel reads the model from a JSON or multipart body and resolves
// it: an alias first, then a "provider/model" prefix, else the default
// provider. When compat is set the model must name its provider. The body
// is rewritten only where the model changes; every other byte is kept.
func (px *Proxy) requestModel(contentType string, body []byte, set settings.Settings, compat bool) (requestModel, reply.Error) {
	m := requestModel{prov: px.defaultProvider(), body: body}
	fields, bad := readBodyModels(contentType, body)
	if bad.Status != 0 {
		return m, bad
	}
	m.name = fields.model.value
	m.model = m.name
	target := m.name
	if a, ok := set.Aliases[m.name]; ok {
		target = a
	}
	if pre, bare, found := strings.Cut(target, "/"); found {
		if _, known := provider.Lookup(pre); known {
			m.prov, m.model = pre, bare
		}
	}
	if compat {
		if m.prov == px.defaultProvider() && !strings.HasPrefix(target, m.prov+"/") {
			return m, reply.BadRequest("model must be \"provider/model\" on /api/compat (e.g. \"openai/gpt-4o-mini\"); known providers: "+
				strings.Join(provider.Names(), ", "), "model")
		}
		// The gateway's compat endpoint reads the provider from the model.
		m.model = m.prov + "/" + m.model
	}
	if m.model != m.name && fields.model.found {
		m.body = fields.model.rewrite(body, m.model)
	}
	if compat {
		m.model = strings.TrimPrefix(m.model, m.prov+"/")
	}
	return m, reply.Error{}
}

// ServeNative serves /api/<provider>/<path>: the provider's own API, through
// Cloudflare AI Gateway when CF_ACCOUNT_ID and AI_GATEWAY are set, and
// /api/compat/chat/completions, the gateway's OpenAI-compatible endpoint
// for every provider.
func (px *Proxy) ServeNative(rw http.ResponseWriter, r *http.Request) {
	w := answering(rw, r)
	c, ok := px.checkClient(w, r)
	if !ok {
		return
	}
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/"), "/")
	up, ok := escapePath(w, rest)
	if !ok || !px.endpointAllowed(w, r, c, "/api/"+name, "/"+rest) {
		return
	}
	if isSocket(r) {
		refuseSocket(w, r.Method+" /api/"+name+"/"+rest)
		return
	}
	if name == "compat" {
		px.proxyCompat(w, r, up, c)
		return
	}
	prov, ok := px.provider(w, name)
	if !ok {
		return
	}
	db, body, ok := px.dbAndBody(w, r)
	if !ok {
		return
	}
	model, bad := nativeModel(prov, rest, r.Header.Get("Content-Type"), body)
	if bad.Status != 0 {
		bad.Write(w)
		return
	}
	if px.refuseOutOfScope(w, c, prov.Name, model) {
		return
	}
	if strings.Contains(prov.NativePrefix, "{account}") && px.Config().AccountID == "" {
		reply.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
			Message: prov.Name + " needs the CF_ACCOUNT_ID var (its API path names your account)"}.Write(w)
		return
	}
	base, viaGateway := prov.NativeBase(px.Target(prov))
	px.forward(w, r, db, px.Settings(r.Context(), db), upstreamCall{prov: prov, model: model, body: body, viaGateway: viaGateway,
		url: base + "/" + up + upstreamQuery(r.URL), client: c})
}

// proxyCompat serves /api/compat/<path> (chat/completions; rest escaped,
// see escapePath): the model is "provider/model"; the key is that
// provider's, sent as a bearer token. The gateway's compat endpoint gets
// the model under the provider's compat name; a provider it does not
// serve there (or no gateway) gets the bare model at its OpenAI-compatible
// API, through the gateway when the gateway knows it.
func (px *Proxy) proxyCompat(w http.ResponseWriter, r *http.Request, rest string, c client) {
	db, body, ok := px.dbAndBody(w, r)
	if !ok {
		return
	}
	set := px.Settings(r.Context(), db)
	m, bad := px.requestModel(r.Header.Get("Content-Type"), body, set, true)
	if bad.Status != 0 {
		bad.Write(w)
		return
	}
	if m.name == "" {
		reply.BadRequest("model is required, as \"provider/model\"", "model").Write(w)
		return
	}
	prov, ok := px.provider(w, m.prov)
	if !ok || px.refuseOutOfScope(w, c, prov.Name, m.model) {
		return
	}
	if prov.NoOpenAI {
		reply.BadRequest(prov.Name+" has no OpenAI-compatible API; call it at /api/"+prov.Name+"/...", "model").Write(w)
		return
	}
	call := upstreamCall{prov: prov, model: m.model, body: m.body, openAIRoute: true, client: c}
	t := px.Target(prov)
	base := prov.CompatBase(t)
	if base != "" {
		call.viaGateway = true
		if prov.GatewayCompat != prov.Name {
			call.body = replaceString(m.body, gjson.GetBytes(m.body, "model"), prov.GatewayCompat+"/"+m.model)
		}
	} else {
		call.body = replaceString(m.body, gjson.GetBytes(m.body, "model"), m.model)
		base, call.viaGateway = prov.OpenAIBase(t)
	}
	call.url = base + "/" + rest + upstreamQuery(r.URL)
	px.forward(w, r, db, set, call)
}

// origin is prov's origin, or its <NAME>_BASE_URL override.
func (px *Proxy) origin(prov provider.Provider) string {
	return prov.WithOrigin(px.Config().BaseURL(prov)).Origin
}

func (px *Proxy) defaultProvider() string {
	return px.Config().DefaultProvider
}

// provider looks a provider up.
func (px *Proxy) provider(w http.ResponseWriter, name string) (provider.Provider, bool) {
	p, ok := provider.Lookup(name)
	if !ok {
		reply.NotFound("unknown provider " + strconv.Quote(name) + "; known: " + strings.Join(provider.Names(), ", ")).Write(w)
		return p, false
	}
	return p, true
}

// upstreamRequest builds one attempt's request with the pool key in place
// of the client's credential.
func (px *Proxy) upstreamRequest(ctx context.Context, r *http.Request, call upstreamCall, secret string, keyID int64) *http.Request {
	var body io.Reader
	if len(call.body) > 0 {
		body = bytes.NewReader(call.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, call.url, body)
	if err != nil {
		// forward checked the URL before the first attempt.
		panic(err)
	}
	req.Header = upstreamHeaders(r.Header, call.headers)
	if call.socket {
		// The runtime's fetch makes the handshake (key, version) itself.
		req.Header.Set("Upgrade", "websocket")
		if p := r.Header.Get("Sec-Websocket-Protocol"); p != "" {
			req.Header.Set("Sec-Websocket-Protocol", p)
		}
	}
	call.prov.Authorize(req.Header, secret, call.openAIRoute)
	if call.viaGateway {
		// A client's own metadata reaches here only when gateway_headers allows it.
		px.GatewayHeaders(req.Header, clientMetadata(call.client, keyID, req.Header.Get("Cf-Aig-Metadata")), false)
	}
	req.ContentLength = int64(len(call.body))
	return req
}

// relay sends the upstream answer to the client: headers first, then the
// body, streamed as it arrives (SSE chunks are not buffered). read is the
// start of the body already read to classify a failed answer. On Workers
// the whole body goes as a JS stream, read part included, without passing
// through Go.
func relay(w http.ResponseWriter, resp *http.Response, read []byte, attempts int, keyID int64, idle time.Duration) {
	defer resp.Body.Close()
	h := w.Header()
	copyResponseHeaders(h, resp.Header)
	h.Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	// The key's id, not even its masked form: clients need not know
	// anything about the secret, and the admin can look the id up.
	h.Set("X-Keypool-Key", strconv.FormatInt(keyID, 10))
	w.WriteHeader(resp.StatusCode)
	if rb, ok := resp.Body.(relayer); ok {
		if _, ok := rb.Relay(w, false, usage.KindNone, idle); ok {
			return
		}
	}
	// A failed answer: what was read, then whatever was left unread.
	if len(read) > 0 {
		w.Write(read)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		log.Printf("keypool: relaying upstream body: %v", err)
	}
}

// escapePath turns the decoded rest of a client path into the path part of
// an upstream URL, escaped so that it reads back as the client's path: a
// decoded "%", "?", "#" or control character must not change the URL (or
// fail to parse). A "." or ".." segment (from "..%2F") is refused with 400:
// the runtime's fetch would resolve it, leaving the provider's API prefix
// with a pool key (on Workers AI, the rest of the Cloudflare API).
func escapePath(w http.ResponseWriter, p string) (string, bool) {
	for _, s := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if s == "." || s == ".." {
			reply.BadRequest("the path may not contain \".\" or \"..\" segments", "").Write(w)
			return "", false
		}
	}
	return (&url.URL{Path: p}).EscapedPath(), true
}

// upstreamQuery keeps the client's query string minus its ?key= credential.
func upstreamQuery(u *url.URL) string {
	if u.RawQuery == "" {
		return ""
	}
	q := u.Query()
	q.Del("key")
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func isJSON(contentType string) bool {
	return contentType == "" || strings.Contains(strings.ToLower(contentType), "json")
}

// modelFromPath finds the model in native paths such as
// v1beta/models/gemini-2.0-flash:generateContent.
func modelFromPath(p string) string {
	i := strings.Index(p, "models/")
	if i < 0 {
		return ""
	}
	m := p[i+len("models/"):]
	if j := strings.IndexAny(m, ":/?"); j >= 0 {
		m = m[:j]
	}
	return m
}

// replaceString returns body with the JSON string value found at v
// replaced by s; the rest of the body is kept byte for byte.
func replaceString(body []byte, v gjson.Result, s string) []byte {
	if v.Index <= 0 || v.Index+len(v.Raw) > len(body) {
		return body
	}
	out := make([]byte, 0, len(body)+len(s)-len(v.Raw)+2)
	out = append(out, body[:v.Index]...)
	out = jsonout.AppendString(out, s)
	return append(out, body[v.Index+len(v.Raw):]...)
}
