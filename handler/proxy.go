package handler

import (
	"bytes"
	"context"
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
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

const (
	defaultMaxAttempts  = 3
	defaultMaxBodyBytes = 32 << 20
	// candidateLimit bounds the keys read from D1 per request: enough for
	// every attempt plus room to spread load, never the whole pool.
	candidateLimit = 8
	// errorBodyLimit bounds how much of a failed answer is read for the
	// key's history before the next key is tried.
	errorBodyLimit    = 4 << 10
	defaultGatewayURL = "https://gateway.ai.cloudflare.com/v1"
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
}

// checkClient answers 401/503 and returns false unless the request carries
// the client token.
func (h *Handler) checkClient(w http.ResponseWriter, r *http.Request) bool {
	want := h.d.Getenv("AUTH_KEY")
	if want == "" {
		apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
			Message: "keypool has no client token configured: set the AUTH_KEY secret (wrangler secret put AUTH_KEY)"}.write(w)
		return false
	}
	got := clientCredential(r)
	if got == "" {
		apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "missing_api_key",
			Message: "no API key given: send your keypool token as Authorization: Bearer <token>"}.write(w)
		return false
	}
	if !secretEqual(got, want) {
		apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key",
			Message: "invalid API key for this keypool"}.write(w)
		return false
	}
	return true
}

// readBody buffers the request body (so that retries can replay it) up to
// the configured cap. GET and HEAD never carry one upstream.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil, true
	}
	limit := h.intVar("MAX_BODY_BYTES", defaultMaxBodyBytes, 1024, 100<<20)
	read := h.d.ReadBody
	if read == nil {
		read = readAll
	}
	body, ok, err := read(r, limit)
	if err != nil {
		badRequest("could not read the request body: "+err.Error(), "").write(w)
		return nil, false
	}
	if !ok {
		apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
			Message: "request body is larger than this keypool accepts (" + strconv.FormatInt(limit, 10) + " bytes, MAX_BODY_BYTES)"}.write(w)
		return nil, false
	}
	return body, true
}

func readAll(r *http.Request, limit int64) ([]byte, bool, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	return body, int64(len(body)) <= limit, err
}

// proxyOpenAI serves /v1/*: the OpenAI-compatible surface. The provider
// comes from a "provider/model" model name, else DEFAULT_PROVIDER.
func (h *Handler) proxyOpenAI(w http.ResponseWriter, r *http.Request) {
	if !h.checkClient(w, r) {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v1")
	provName := h.defaultProvider()
	model := ""
	if len(body) > 0 && isJSON(r.Header.Get("Content-Type")) {
		// Only the model is read; the body is not validated as a whole (that
		// would scan every byte of a large body), the upstream does that.
		m := gjson.GetBytes(body, "model")
		if m.Exists() && m.Type != gjson.String {
			badRequest("model must be a string", "model").write(w)
			return
		}
		model = m.String()
		if pre, bare, found := strings.Cut(model, "/"); found {
			if _, known := provider.Lookup(pre); known {
				provName, model = pre, bare
				body = replaceString(body, m, bare)
			}
		}
	}
	if model == "" && r.Method == http.MethodPost && (rest == "/chat/completions" || rest == "/completions" || rest == "/embeddings") {
		badRequest("model is required", "model").write(w)
		return
	}
	prov, ok := h.provider(w, provName)
	if !ok {
		return
	}
	h.forward(w, r, upstreamCall{
		prov: prov, model: model, body: body, openAIRoute: true,
		url: prov.Origin + prov.OpenAIPrefix + rest + upstreamQuery(r.URL),
	})
}

// proxyNative serves /api/<provider>/<path>: the provider's own API, through
// Cloudflare AI Gateway when CF_ACCOUNT_ID and AI_GATEWAY are set.
func (h *Handler) proxyNative(w http.ResponseWriter, r *http.Request) {
	if !h.checkClient(w, r) {
		return
	}
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/"), "/")
	prov, ok := h.provider(w, name)
	if !ok {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	model := ""
	if len(body) > 0 && isJSON(r.Header.Get("Content-Type")) {
		model = gjson.GetBytes(body, "model").String()
	}
	if model == "" {
		model = modelFromPath(rest)
	}
	target := prov.Origin + prov.NativePrefix + "/" + rest
	viaGateway := false
	if acct, gw := h.d.Getenv("CF_ACCOUNT_ID"), h.d.Getenv("AI_GATEWAY"); acct != "" && gw != "" && prov.Gateway {
		base := strings.TrimRight(h.d.Getenv("AI_GATEWAY_URL"), "/")
		if base == "" {
			base = defaultGatewayURL
		}
		target = base + "/" + url.PathEscape(acct) + "/" + url.PathEscape(gw) + "/" + prov.Name + "/" + rest
		viaGateway = true
	}
	h.forward(w, r, upstreamCall{prov: prov, model: model, body: body, viaGateway: viaGateway, url: target + upstreamQuery(r.URL)})
}

func (h *Handler) defaultProvider() string {
	if p := strings.TrimSpace(h.d.Getenv("DEFAULT_PROVIDER")); p != "" {
		return p
	}
	return "openai"
}

// provider looks a provider up and applies its base URL override.
func (h *Handler) provider(w http.ResponseWriter, name string) (provider.Provider, bool) {
	p, ok := provider.Lookup(name)
	if !ok {
		notFound("unknown provider " + strconv.Quote(name) + "; known: " + strings.Join(provider.Names(), ", ")).write(w)
		return p, false
	}
	return p.WithOrigin(h.d.Getenv(p.BaseURLVar())), true
}

// forward runs the rotation loop: pick a key, call upstream, classify the
// answer, and either relay it or record the failure and try the next key.
// Retries happen only before any byte reaches the client.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, call upstreamCall) {
	db, err := h.d.DB()
	if err != nil {
		log.Printf("keypool: database unavailable: %v", err)
		internalError("keypool's database is not available (is the D1 binding DB configured?)").write(w)
		return
	}
	keys := store.NewKeys(db).Counting(h.d.Queries)
	ctx := r.Context()
	started := h.d.Now()
	cands, err := h.candidates(ctx, keys, call.prov.Name, call.model, started)
	if err != nil {
		log.Printf("keypool: reading candidate keys: %v", err)
		internalError("keypool could not read its key pool").write(w)
		return
	}
	maxAttempts := int(h.intVar("MAX_ATTEMPTS", defaultMaxAttempts, 1, 10))
	policy := rotation.Policy{
		DefaultCooldown: time.Duration(h.intVar("COOLDOWN_SECONDS", int64(rotation.DefaultCooldown/time.Second), 1, 86400)) * time.Second,
	}

	var outcomes []store.Outcome
	defer func() { h.record(keys, call.prov.Name, outcomes) }()

	tried := map[int64]bool{}
	var last rotation.Verdict
	var lastStatus int
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		key, ok := rotation.Pick(cands, tried, h.d.IntN)
		if !ok {
			break
		}
		tried[key.ID] = true
		resp, err := h.d.Fetch(h.upstreamRequest(ctx, r, call, key.Secret))
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		v := policy.Classify(status, headerOf(resp), h.d.Now())
		o := store.Outcome{KeyID: key.ID, Model: call.model, Verdict: v, Status: status}
		switch v.Action {
		case rotation.Serve, rotation.Return:
			outcomes = append(outcomes, o)
			relay(w, resp, attempt, key.ID)
			return
		}
		if err != nil {
			o.Excerpt = store.MaskExcerpt([]byte(err.Error()), key.Secret)
		} else {
			errBody, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
			resp.Body.Close()
			o.Excerpt = store.MaskExcerpt(errBody, key.Secret)
		}
		outcomes = append(outcomes, o)
		last, lastStatus = v, status
		log.Printf("keypool: %s key %d for %q: %s; trying another key", call.prov.Name, key.ID, call.model, v.Reason)
	}
	h.noKeyLeft(w, keys, call, len(tried), last, lastStatus, outcomes)
}

// record applies a request's outcomes: at once to this instance's cache,
// then to D1 after the response. State changes (cool, block) are written
// right away, since other isolates must see them; usage counters are
// coalesced and written every USAGE_FLUSH_SECONDS at most.
func (h *Handler) record(keys *store.Keys, prov string, outcomes []store.Outcome) {
	if len(outcomes) == 0 {
		return
	}
	now := h.d.Now()
	h.observe(prov, outcomes, now)
	interval := time.Duration(h.intVar("USAGE_FLUSH_SECONDS", 5, 0, 3600)) * time.Second
	usage := h.takeUsage(now, interval)
	var states []store.Outcome
	for _, o := range outcomes {
		if o.Verdict.Action == rotation.Cool || o.Verdict.Action == rotation.BlockKey {
			states = append(states, o)
		}
	}
	if len(usage) == 0 && len(states) == 0 {
		return
	}
	ms := now.UnixMilli()
	h.d.Defer(func() {
		ctx := context.Background()
		if err := keys.AddUsage(ctx, usage); err != nil {
			log.Printf("keypool: writing key usage: %v", err)
		}
		for _, o := range states {
			if err := keys.ApplyVerdict(ctx, o, ms); err != nil {
				log.Printf("keypool: recording key %d state: %v", o.KeyID, err)
			}
		}
	})
}

// noKeyLeft answers when no attempt succeeded, saying why in terms the
// client can act on.
func (h *Handler) noKeyLeft(w http.ResponseWriter, keys *store.Keys, call upstreamCall, attempts int, last rotation.Verdict, lastStatus int, outcomes []store.Outcome) {
	what := call.prov.Name + " key"
	if call.model != "" {
		what += " for model " + strconv.Quote(call.model)
	}
	w.Header().Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	if attempts > 0 && last.Action == rotation.Retry {
		msg := "upstream " + call.prov.Name + " failed on " + strconv.Itoa(attempts) + " attempt(s)"
		if lastStatus != 0 {
			msg += " (last: HTTP " + strconv.Itoa(lastStatus) + ")"
		} else {
			msg += " (last: network error)"
		}
		apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_error", Message: msg}.write(w)
		return
	}
	// Every key is out of rotation for this model. Tell the client when the
	// first cooling key comes back, counting the cooldowns just decided.
	now := h.d.Now().UnixMilli()
	next, err := keys.NextCoolingEnd(context.Background(), call.prov.Name, call.model, now)
	if err != nil {
		log.Printf("keypool: reading cooldowns: %v", err)
	}
	for _, o := range outcomes {
		if o.Verdict.Action == rotation.Cool {
			if end := now + o.Verdict.Cooldown.Milliseconds(); next == 0 || end < next {
				next = end
			}
		}
	}
	var retry int64
	if next > now {
		retry = (next - now + 999) / 1000
	}
	if retry > 0 {
		// Waiting helps: a key that is only cooling comes back.
		apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited", RetryAfter: retry,
			Message: "every usable " + what + " is rate limited; retry after " + strconv.FormatInt(retry, 10) + "s"}.write(w)
		return
	}
	apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_available_key", RetryAfter: retry,
		Message: "no usable " + what + ": every key is blocked, disabled, exhausted or cooling down; add keys or wait"}.write(w)
}

// upstreamRequest builds one attempt's request with the pool key in place
// of the client's credential.
func (h *Handler) upstreamRequest(ctx context.Context, r *http.Request, call upstreamCall, secret string) *http.Request {
	var body io.Reader
	if len(call.body) > 0 {
		body = bytes.NewReader(call.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, call.url, body)
	if err != nil {
		// The URL was built from a parsed one; this cannot fail in practice.
		panic(err)
	}
	req.Header = upstreamHeaders(r.Header)
	if call.openAIRoute {
		req.Header.Set("Authorization", "Bearer "+secret)
	} else {
		call.prov.SetKey(req.Header, secret)
	}
	if call.prov.Family == provider.FamilyAnthropic && req.Header.Get("Anthropic-Version") == "" {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	if tok := h.d.Getenv("CF_AIG_TOKEN"); tok != "" && call.viaGateway {
		req.Header.Set("Cf-Aig-Authorization", "Bearer "+tok)
	}
	req.ContentLength = int64(len(call.body))
	return req
}

// relay sends the upstream answer to the client: headers first, then the
// body, streamed as it arrives (SSE chunks are not buffered).
func relay(w http.ResponseWriter, resp *http.Response, attempts int, keyID int64) {
	defer resp.Body.Close()
	h := w.Header()
	copyResponseHeaders(h, resp.Header)
	h.Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	// The key's id, not even its masked form: clients need not know
	// anything about the secret, and the admin can look the id up.
	h.Set("X-Keypool-Key", strconv.FormatInt(keyID, 10))
	w.WriteHeader(resp.StatusCode)
	// Unwrap to the runtime's writer: on Workers it takes the upstream
	// stream as the response body directly, with no copy through Go.
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		log.Printf("keypool: relaying upstream body: %v", err)
	}
}

func headerOf(resp *http.Response) http.Header {
	if resp == nil {
		return http.Header{}
	}
	return resp.Header
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
