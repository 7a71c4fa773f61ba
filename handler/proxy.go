package handler

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
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/usage"
)

const (
	defaultMaxAttempts = 3
	// defaultMaxBodyBytes: a body at the limit costs one Go copy in the
	// instance serving it (two for a chat stream keypool asks for usage,
	// three when the model is also rewritten) plus the JS bytes replayed to
	// the upstream; four such requests at once, each in its own ~6 MiB
	// instance, stay near 100 MB of the isolate's 128 MB.
	defaultMaxBodyBytes = 6 << 20
	// candidateLimit bounds the keys read from D1 per request: enough for
	// every attempt plus room to spread load, never the whole pool.
	candidateLimit = 8
	// errorBodyLimit bounds how much of a failed answer is read for the
	// key's history before the next key is tried.
	errorBodyLimit    = 16 << 10
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
	// client is who called: its token's scope and quotas apply.
	client client
}

// readBody buffers the request body (so that retries can replay it) up to
// the configured cap. GET and HEAD never carry one upstream.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil, true
	}
	limit := h.maxBodyBytes()
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

func (h *Handler) maxBodyBytes() int64 {
	return h.intVar("MAX_BODY_BYTES", defaultMaxBodyBytes, 1024, 100<<20)
}

func readAll(r *http.Request, limit int64) ([]byte, bool, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	return body, int64(len(body)) <= limit, err
}

// modelRequired lists the /v1 routes whose POST must name a model.
var modelRequired = map[string]bool{
	"/chat/completions": true, "/completions": true, "/embeddings": true, "/responses": true,
	"/audio/speech": true, "/audio/transcriptions": true, "/audio/translations": true, "/rerank": true,
}

// proxyOpenAI serves /v1/*: the OpenAI-compatible surface. The provider
// comes from an alias, a "provider/model" model name, else
// DEFAULT_PROVIDER. Paths keypool does not know pass through to the
// provider's OpenAI-compatible API.
func (h *Handler) proxyOpenAI(w http.ResponseWriter, r *http.Request) {
	c, ok := h.checkClient(w, r)
	if !ok {
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v1")
	up, ok := escapePath(w, rest)
	if !ok {
		return
	}
	db, ok := h.db(w)
	if !ok {
		return
	}
	set := h.settings(r.Context(), db)
	if rest == "/models" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		h.listModels(w, r, db, set, c)
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	m, bad := h.requestModel(r.Header.Get("Content-Type"), body, set, false)
	if bad.Status != 0 {
		bad.write(w)
		return
	}
	if m.name == "" && r.Method == http.MethodPost && modelRequired[rest] {
		badRequest("model is required", "model").write(w)
		return
	}
	prov, ok := h.provider(w, m.prov)
	if !ok {
		return
	}
	if prov.NoOpenAI {
		badRequest(prov.Name+" has no OpenAI-compatible API; call it at /api/"+prov.Name+"/...", "model").write(w)
		return
	}
	if m.name == "" && strings.HasPrefix(rest, "/models/") {
		m.model = strings.TrimPrefix(rest, "/models/") // GET /v1/models/<id>
	}
	h.forward(w, r, db, set, upstreamCall{
		prov: prov, model: m.model, body: m.body, openAIRoute: true, client: c,
		url: h.origin(prov) + h.expand(prov.OpenAIPrefix) + up + upstreamQuery(r.URL),
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
func (h *Handler) requestModel(contentType string, body []byte, set settings, compat bool) (requestModel, apiError) {
	m := requestModel{prov: h.defaultProvider(), body: body}
	var rewrite func(string) []byte
	switch boundary := multipartBoundary(contentType); {
	case len(body) == 0:
	case boundary != "":
		if start, end, ok := multipartField(body, boundary, "model"); ok {
			m.name = strings.TrimSpace(string(body[start:end]))
			rewrite = func(s string) []byte { return replaceRange(body, start, end, s) }
		}
	case isJSON(contentType):
		// Only the model is read; the body is not validated as a whole (that
		// would scan every byte of a large body), the upstream does that.
		v := gjson.GetBytes(body, "model")
		if v.Exists() && v.Type != gjson.String {
			return m, badRequest("model must be a string", "model")
		}
		m.name = v.String()
		rewrite = func(s string) []byte { return replaceString(body, v, s) }
	}
	m.model = m.name
	target := m.name
	if a, ok := set.aliases[m.name]; ok {
		target = a
	}
	if pre, bare, found := strings.Cut(target, "/"); found {
		if _, known := provider.Lookup(pre); known {
			m.prov, m.model = pre, bare
		}
	}
	if compat {
		if m.prov == h.defaultProvider() && !strings.HasPrefix(target, m.prov+"/") {
			return m, badRequest("model must be \"provider/model\" on /api/compat (e.g. \"openai/gpt-4o-mini\"); known providers: "+
				strings.Join(provider.Names(), ", "), "model")
		}
		// The gateway's compat endpoint reads the provider from the model.
		m.model = m.prov + "/" + m.model
	}
	if m.model != m.name && rewrite != nil {
		m.body = rewrite(m.model)
	}
	if compat {
		m.model = strings.TrimPrefix(m.model, m.prov+"/")
	}
	return m, apiError{}
}

// proxyNative serves /api/<provider>/<path>: the provider's own API, through
// Cloudflare AI Gateway when CF_ACCOUNT_ID and AI_GATEWAY are set, and
// /api/compat/chat/completions, the gateway's OpenAI-compatible endpoint
// for every provider.
func (h *Handler) proxyNative(w http.ResponseWriter, r *http.Request) {
	c, ok := h.checkClient(w, r)
	if !ok {
		return
	}
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/"), "/")
	up, ok := escapePath(w, rest)
	if !ok {
		return
	}
	if name == "compat" {
		h.proxyCompat(w, r, up, c)
		return
	}
	prov, ok := h.provider(w, name)
	if !ok {
		return
	}
	db, ok := h.db(w)
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
		if model == "" {
			model = gjson.GetBytes(body, "model_id").String() // ElevenLabs
		}
	}
	if model == "" {
		model = modelFromPath(rest)
	}
	if model == "" && strings.HasPrefix(rest, "@") {
		model = rest // Workers AI: /api/workers-ai/@cf/meta/llama-3.1-8b-instruct
	}
	if strings.Contains(prov.NativePrefix, "{account}") && h.d.Getenv("CF_ACCOUNT_ID") == "" {
		apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
			Message: prov.Name + " needs the CF_ACCOUNT_ID var (its API path names your account)"}.write(w)
		return
	}
	target := h.origin(prov) + h.expand(prov.NativePrefix) + "/" + up
	gw, viaGateway := h.gateway(prov)
	if viaGateway {
		target = gw + "/" + prov.Name + "/" + up
	}
	h.forward(w, r, db, h.settings(r.Context(), db), upstreamCall{prov: prov, model: model, body: body, viaGateway: viaGateway,
		url: target + upstreamQuery(r.URL), client: c})
}

// proxyCompat serves /api/compat/<path> (chat/completions; rest escaped,
// see escapePath): the model is
// "provider/model"; the key is that provider's, sent as a bearer token.
// Through the gateway the body goes as it is; without one, to the
// provider's OpenAI-compatible API with the bare model.
func (h *Handler) proxyCompat(w http.ResponseWriter, r *http.Request, rest string, c client) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	set := h.settings(r.Context(), db)
	m, bad := h.requestModel(r.Header.Get("Content-Type"), body, set, true)
	if bad.Status != 0 {
		bad.write(w)
		return
	}
	if m.name == "" {
		badRequest("model is required, as \"provider/model\"", "model").write(w)
		return
	}
	prov, ok := h.provider(w, m.prov)
	if !ok {
		return
	}
	call := upstreamCall{prov: prov, model: m.model, body: m.body, openAIRoute: true, client: c}
	if gw, ok := h.gateway(prov); ok {
		call.url, call.viaGateway = gw+"/compat/"+rest+upstreamQuery(r.URL), true
	} else {
		// Direct: the provider wants its own bare model name.
		call.body = replaceString(m.body, gjson.GetBytes(m.body, "model"), m.model)
		call.url = h.origin(prov) + h.expand(prov.OpenAIPrefix) + "/" + rest + upstreamQuery(r.URL)
	}
	h.forward(w, r, db, set, call)
}

// gateway returns the AI Gateway base URL for prov
// (…/v1/<account>/<gateway>) when one is configured and knows prov.
func (h *Handler) gateway(prov provider.Provider) (string, bool) {
	acct, gw := h.d.Getenv("CF_ACCOUNT_ID"), h.d.Getenv("AI_GATEWAY")
	if acct == "" || gw == "" || !prov.Gateway {
		return "", false
	}
	base := strings.TrimRight(h.d.Getenv("AI_GATEWAY_URL"), "/")
	if base == "" {
		base = defaultGatewayURL
	}
	return base + "/" + url.PathEscape(acct) + "/" + url.PathEscape(gw), true
}

// origin is prov's origin, or its <NAME>_BASE_URL override.
func (h *Handler) origin(prov provider.Provider) string {
	return prov.WithOrigin(h.d.Getenv(prov.BaseURLVar())).Origin
}

// expand fills the account id into paths that need it (Workers AI).
func (h *Handler) expand(path string) string {
	if strings.Contains(path, "{account}") {
		return strings.ReplaceAll(path, "{account}", url.PathEscape(h.d.Getenv("CF_ACCOUNT_ID")))
	}
	return path
}

func (h *Handler) defaultProvider() string {
	if p := strings.TrimSpace(h.d.Getenv("DEFAULT_PROVIDER")); p != "" {
		return p
	}
	return "openai"
}

// provider looks a provider up.
func (h *Handler) provider(w http.ResponseWriter, name string) (provider.Provider, bool) {
	p, ok := provider.Lookup(name)
	if !ok {
		notFound("unknown provider " + strconv.Quote(name) + "; known: " + strings.Join(provider.Names(), ", ")).write(w)
		return p, false
	}
	return p, true
}

// failedAnswer is a failed upstream answer kept to be relayed later.
type failedAnswer struct {
	resp *http.Response
	body []byte // the start of the body, read for classification
	key  int64
}

// forward runs the rotation loop: pick a key, call upstream, classify the
// answer, and either relay it or record what it says about the key and
// try the next one. Retries happen only before any byte reaches the
// client, within MAX_ATTEMPTS failed attempts (see failed below), at most
// candidateLimit keys, and RETRY_BUDGET_SECONDS.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, db *sql.DB, set settings, call upstreamCall) {
	if _, err := url.Parse(call.url); err != nil {
		apiError{Status: http.StatusBadGateway, Type: "server_error", Code: "bad_upstream_url",
			Message: "keypool's upstream URL for " + call.prov.Name + " is not valid: check " + call.prov.BaseURLVar() +
				" and AI_GATEWAY_URL"}.write(w)
		return
	}
	b, ok := h.needBox(w)
	if !ok {
		return
	}
	started := h.d.Now()
	// The request's line in the usage rollups; a request that never
	// reaches an answer from a key counts as rejected.
	fin := served{started: started, token: call.client.id(), prov: call.prov.Name, model: call.model, class: classRejected,
		reqBytes: int64(len(call.body)), textIn: len(call.body) > 0 && isJSON(r.Header.Get("Content-Type"))}
	keys := store.NewKeys(db).Counting(h.d.Queries).Sealing(b)
	var outcomes, missing []store.Outcome
	var lift []int64
	var liftSince int64
	defer func() {
		if !fin.counted {
			fin.latency = h.d.Now().Sub(started)
			h.count(fin, usage.Usage{}, false, 0, false)
		}
		h.record(db, keys, call.prov.Name, outcomes, lift, liftSince)
	}()
	if !h.admit(w, call.client, call) {
		return
	}
	// An OpenAI-compatible chat stream is asked for its usage, where the
	// provider accepts the option; when the client did not ask, the extra
	// chunk is taken out of what it sees.
	strip := false
	if call.openAIRoute && call.prov.StreamUsage && strings.HasSuffix(strings.SplitN(call.url, "?", 2)[0], "/chat/completions") {
		call.body, strip = usage.AskForUsage(call.body)
	}
	ctx := r.Context()
	prov := call.prov.Name
	free := set.isFree(prov, call.model)
	storm := h.storm(prov)
	if storm.Active(started) {
		h.stormAnswer(w, call, storm, started, 0)
		return
	}
	cands, err := h.candidates(ctx, keys, prov, call.model, started, free)
	if err != nil {
		log.Printf("keypool: reading candidate keys: %v", err)
		internalError("keypool could not read its key pool").write(w)
		return
	}
	maxAttempts := int(h.intVar("MAX_ATTEMPTS", defaultMaxAttempts, 1, 10))
	budget := time.Duration(h.intVar("RETRY_BUDGET_SECONDS", 30, 1, 600)) * time.Second
	policy := rotation.Policy{
		DefaultCooldown: time.Duration(h.intVar("COOLDOWN_SECONDS", int64(rotation.DefaultCooldown/time.Second), 1, 86400)) * time.Second,
		MaxCooldown:     time.Duration(h.intVar("MAX_COOLDOWN_SECONDS", int64(rotation.DefaultMaxCooldown/time.Second), 1, 86400)) * time.Second,
	}
	stormPolicy := rotation.StormPolicy{
		Keys:   int(h.intVar("STORM_KEYS", 5, 2, 1000)),
		Window: time.Duration(h.intVar("STORM_WINDOW_SECONDS", 30, 1, 3600)) * time.Second,
		Hold:   time.Duration(h.intVar("STORM_HOLD_SECONDS", 10, 1, 60)) * time.Second,
	}

	tried := map[int64]bool{}
	var last rotation.Verdict
	// attempt counts every key tried; failed counts the failures that may
	// be the request's or the upstream's (5xx, timeouts, "no such model"),
	// which MAX_ATTEMPTS bounds. A key that is simply rejected (invalid,
	// exhausted, rate limited) does not use up an attempt: the next key is
	// as likely to serve, and the candidates read (8) bound the tries.
	var lastStatus, attempt, failed int
	var denied *failedAnswer // the last "model not found" answer
	waited := false
	headerTimeout := time.Duration(h.intVar("UPSTREAM_TIMEOUT_SECONDS", 300, 0, 3600)) * time.Second
	coolEnd := map[int64]int64{} // ends (unix ms) of the cooldowns this request decided
	for failed < maxAttempts && attempt < candidateLimit && (attempt == 0 || h.d.Now().Sub(started) < budget) {
		key, ok := rotation.Pick(cands, tried, h.d.IntN)
		if !ok {
			// Every key is out for this model. When the first cooling one is
			// back soon enough, wait for it once instead of answering 429.
			if waited || set.wait <= 0 || denied != nil || last.Action == rotation.Retry {
				break
			}
			waited = true
			end := h.nextCoolingEnd(keys, call, free, outcomes)
			d := time.Duration(end-h.d.Now().UnixMilli()) * time.Millisecond
			// A key tried already needs the budget left to be tried again.
			if end == 0 || d > time.Duration(set.wait)*time.Second || attempt > 0 && h.d.Now().Add(d).Sub(started) >= budget {
				break
			}
			time.Sleep(d)
			if attempt > 0 && h.d.Now().Sub(started) >= budget {
				break
			}
			// A key this request cooled has served its cooldown while the
			// request waited: it may be tried again, and the cooldown is not
			// recorded (it would start only once the response has gone).
			back := h.d.Now().UnixMilli()
			for i := range outcomes {
				o := &outcomes[i]
				if end, ok := coolEnd[o.KeyID]; ok && o.Verdict.Action == rotation.Cool && !o.Blameless && end <= back {
					o.Blameless = true
					delete(tried, o.KeyID)
				}
			}
			if cands, err = h.freshCandidates(ctx, keys, prov, call.model, free); err != nil {
				break
			}
			continue
		}
		attempt++
		tried[key.ID] = true
		actx := ctx
		if headerTimeout > 0 {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, headerTimeout)
			defer cancel() // after the relay: the body may still be read
		}
		resp, err := h.d.Fetch(h.upstreamRequest(actx, r, call, key.Secret))
		now := h.d.Now()
		a := rotation.Answer{Provider: prov, Family: call.prov.Family, Streak: key.StreakAt(now)}
		if err == nil {
			a.Status, a.Header = resp.StatusCode, resp.Header
			if a.Status < 200 || a.Status > 299 {
				a.Body, _ = io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
			}
		}
		v := policy.Classify(a, now)
		if call.model == "" && (v.Action == rotation.ModelMissing || v.Action == rotation.BlockModel) {
			// No model to block: state under "" would take the key out of
			// every request that names none. The answer is the client's.
			v = rotation.Verdict{Action: rotation.Return}
		}
		if v.Action == rotation.Cool {
			coolEnd[key.ID] = now.UnixMilli() + v.Cooldown.Milliseconds()
		}
		o := store.Outcome{KeyID: key.ID, Model: call.model, Verdict: v, Status: a.Status, Streak: key.Streak}
		if denied != nil && (v.Action == rotation.Serve || v.Action == rotation.Return) {
			denied.resp.Body.Close() // this answer goes to the client instead
		}
		switch v.Action {
		case rotation.Serve:
			outcomes = append(outcomes, o)
			// Another key serves the model: the keys that were told it does
			// not exist may not use it.
			for _, m := range missing {
				m.Verdict = rotation.Verdict{Action: rotation.BlockModel, Reason: "model not available to this key (" +
					strconv.Itoa(m.Status) + "; another key serves it)"}
				outcomes = append(outcomes, m)
			}
			if storm.Since != 0 {
				h.setStorm(prov, storm.Succeed())
			}
			fin.key, fin.class, fin.latency, fin.counted = key.ID, classSuccess, now.Sub(started), true
			f := fin
			h.relayServed(w, resp, attempt, key.ID, strip, func(u usage.Usage, found bool, n int64, text bool) {
				h.count(f, u, found, n, text)
			})
			return
		case rotation.Return:
			outcomes = append(outcomes, o)
			fin.key, fin.class, fin.latency = key.ID, classClient, now.Sub(started)
			relay(w, resp, a.Body, attempt, key.ID)
			return
		}
		if err != nil {
			o.Excerpt = store.MaskExcerpt([]byte(err.Error()), key.Secret)
		} else {
			o.Excerpt = store.MaskExcerpt(a.Body, key.Secret)
		}
		if v.Action == rotation.Retry || v.Action == rotation.ModelMissing {
			failed++
		}
		if v.Action == rotation.ModelMissing {
			// Kept, not yet blamed: the model may not exist at all.
			if denied != nil {
				denied.resp.Body.Close()
			}
			denied = &failedAnswer{resp: resp, body: a.Body, key: key.ID}
			missing = append(missing, o)
			continue
		}
		if err == nil {
			resp.Body.Close()
		}
		if v.Storm {
			hint, _ := rotation.RetryAfter(a.Header, now)
			var inStorm, begun bool
			storm, inStorm, begun = stormPolicy.Fail(storm, key.ID, a.Status == http.StatusTooManyRequests, hint, now)
			h.setStorm(prov, storm)
			if begun {
				lift, liftSince = storm.Keys, storm.Since
				log.Printf("keypool: %s: %d keys failed within %s (last: HTTP %d); pausing for %s without blaming keys",
					prov, len(storm.Keys), stormPolicy.Window, a.Status, storm.Wait(now).Round(time.Second))
			}
			if inStorm {
				o.Blameless = true
				outcomes = append(outcomes, o)
				if denied != nil {
					denied.resp.Body.Close()
				}
				h.stormAnswer(w, call, storm, now, attempt)
				return
			}
		}
		outcomes = append(outcomes, o)
		last, lastStatus = v, a.Status
		log.Printf("keypool: %s key %d for %q: %s; trying another key", prov, key.ID, call.model, v.Reason)
	}
	for _, m := range missing {
		// No key served the model: those that said it does not exist are
		// not blamed.
		m.Blameless = true
		outcomes = append(outcomes, m)
	}
	if denied != nil && len(outcomes) == len(missing) {
		// Every key tried said so: the answer is about the request.
		fin.key, fin.class = denied.key, classClient
		relay(w, denied.resp, denied.body, attempt, denied.key)
		return
	}
	if denied != nil {
		// Another key failed otherwise (rate limited, down) and may have
		// the model: say that, not "no such model".
		denied.resp.Body.Close()
	}
	if attempt > 0 && last.Action == rotation.Retry {
		fin.class = classUpstream
	}
	h.noKeyLeft(w, keys, call, free, attempt, last, lastStatus, outcomes)
}

// freshCandidates reads the candidates from D1, bypassing the cache, and
// caches them.
func (h *Handler) freshCandidates(ctx context.Context, keys *store.Keys, prov, model string, free bool) ([]rotation.Candidate, error) {
	now := h.d.Now().UnixMilli()
	list, err := keys.Candidates(ctx, prov, model, now, candidateLimit, free)
	if err == nil && len(list) > 0 {
		h.d.Shared.Set(candKey(prov, model, free), encodeCands(now, list))
	}
	return list, err
}

// record applies a request's outcomes: at once to the isolate's cache,
// then to D1 after the response. State changes (cool, block, exhaust,
// streak reset) are written right away, since other isolates must see
// them; usage counters are coalesced and written every
// USAGE_FLUSH_SECONDS at most. lift lists keys whose cooldowns since
// liftSince a storm showed to be the upstream's fault.
func (h *Handler) record(db *sql.DB, keys *store.Keys, prov string, outcomes []store.Outcome, lift []int64, liftSince int64) {
	now := h.d.Now()
	h.observe(prov, outcomes, now)
	p := h.takePending(now)
	var states, resets []store.Outcome
	for _, o := range outcomes {
		switch {
		case o.ChangesState():
			states = append(states, o)
		case o.Verdict.Action == rotation.Serve && o.Streak > 0:
			resets = append(resets, o)
		}
	}
	if p.empty() && len(states) == 0 && len(resets) == 0 && len(lift) == 0 {
		return
	}
	if len(lift) > 0 {
		h.clearCands()
	}
	ms := now.UnixMilli()
	h.d.Defer(func() {
		ctx := context.Background()
		h.writePending(ctx, db, p)
		for _, o := range states {
			if err := keys.ApplyVerdict(ctx, o, ms); err != nil {
				log.Printf("keypool: recording key %d state: %v", o.KeyID, err)
			}
		}
		for _, o := range resets {
			if err := keys.ResetStreak(ctx, o.KeyID, o.Model, ms); err != nil {
				log.Printf("keypool: resetting key %d streak: %v", o.KeyID, err)
			}
		}
		if len(lift) > 0 {
			if _, err := keys.LiftCooldowns(ctx, lift, liftSince, ms, "storm: many keys failed at once, not this key's fault"); err != nil {
				log.Printf("keypool: lifting storm cooldowns: %v", err)
			}
		}
	})
}

// nextCoolingEnd is when the first key cooling for the request's model
// comes back (unix ms, 0 if none), counting the cooldowns just decided.
func (h *Handler) nextCoolingEnd(keys *store.Keys, call upstreamCall, free bool, outcomes []store.Outcome) int64 {
	now := h.d.Now().UnixMilli()
	next, err := keys.NextCoolingEnd(context.Background(), call.prov.Name, call.model, now, free)
	if err != nil {
		log.Printf("keypool: reading cooldowns: %v", err)
	}
	for _, o := range outcomes {
		if o.Verdict.Action == rotation.Cool && !o.Blameless {
			if end := now + o.Verdict.Cooldown.Milliseconds(); next == 0 || end < next {
				next = end
			}
		}
	}
	return next
}

// noKeyLeft answers when no attempt succeeded, saying why in terms the
// client can act on.
func (h *Handler) noKeyLeft(w http.ResponseWriter, keys *store.Keys, call upstreamCall, free bool, attempts int, last rotation.Verdict, lastStatus int, outcomes []store.Outcome) {
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
			msg += " (last: network error or timeout)"
		}
		apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_error", Message: msg}.write(w)
		return
	}
	// Every key is out of rotation for this model. Tell the client when the
	// first cooling key comes back.
	now := h.d.Now().UnixMilli()
	var retry int64
	if next := h.nextCoolingEnd(keys, call, free, outcomes); next > now {
		retry = (next - now + 999) / 1000
	}
	if retry > 0 {
		// Waiting helps: a key that is only cooling comes back.
		apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited", RetryAfter: retry,
			Message: "every usable " + what + " is rate limited; retry after " + strconv.FormatInt(retry, 10) + "s"}.write(w)
		return
	}
	apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_available_key",
		Message: "no usable " + what + ": every key is blocked, disabled, exhausted or cooling down; add keys or wait"}.write(w)
}

// stormAnswer tells the client that the provider is failing for many keys
// at once, and when to come back.
func (h *Handler) stormAnswer(w http.ResponseWriter, call upstreamCall, s rotation.Storm, now time.Time, attempts int) {
	retry := max(int64((s.Wait(now)+time.Second-1)/time.Second), 1)
	w.Header().Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	e := apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_storm", RetryAfter: retry}
	what := "failing"
	if s.Rate {
		e.Status, e.Type, what = http.StatusTooManyRequests, "rate_limit_error", "rate limiting"
	}
	e.Message = "upstream " + call.prov.Name + " is " + what + " " + strconv.Itoa(len(s.Keys)) +
		" keys at once, which points at the provider or a limit on keypool's IP or account rather than at the keys; " +
		"keypool pauses calls to it and blames no key; retry after " + strconv.FormatInt(retry, 10) + "s"
	e.write(w)
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
		// forward checked the URL before the first attempt.
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
// body, streamed as it arrives (SSE chunks are not buffered). read is the
// start of the body already read to classify a failed answer.
func relay(w http.ResponseWriter, resp *http.Response, read []byte, attempts int, keyID int64) {
	defer resp.Body.Close()
	h := w.Header()
	copyResponseHeaders(h, resp.Header)
	h.Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	// The key's id, not even its masked form: clients need not know
	// anything about the secret, and the admin can look the id up.
	h.Set("X-Keypool-Key", strconv.FormatInt(keyID, 10))
	w.WriteHeader(resp.StatusCode)
	if read != nil {
		// A failed answer: what was read, then whatever was left unread.
		w.Write(read)
		if _, err := io.Copy(w, struct{ io.Reader }{resp.Body}); err != nil {
			log.Printf("keypool: relaying upstream body: %v", err)
		}
		return
	}
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

// escapePath turns the decoded rest of a client path into the path part of
// an upstream URL, escaped so that it reads back as the client's path: a
// decoded "%", "?", "#" or control character must not change the URL (or
// fail to parse). A "." or ".." segment (from "..%2F") is refused with 400:
// the runtime's fetch would resolve it, leaving the provider's API prefix
// with a pool key (on Workers AI, the rest of the Cloudflare API).
func escapePath(w http.ResponseWriter, p string) (string, bool) {
	for _, s := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if s == "." || s == ".." {
			badRequest("the path may not contain \".\" or \"..\" segments", "").write(w)
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
