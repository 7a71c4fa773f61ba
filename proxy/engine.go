package proxy

import (
	"context"
	"database/sql"
	"io"
	"log"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/usage"
)

// The proxy engine: rotation's attempt machine decides everything about a
// request (keys tried, what each answer means, storms, what to write and
// what to tell the client); forward does the I/O it asks for. One read of
// the candidates (the isolate's cache, D1 only when cold), the upstream
// calls, then one apply of the effects: the isolate's cache at once, D1
// after the response.

// proxyRun is one proxied request's I/O for the attempt machine.
type proxyRun struct {
	px      *Proxy
	r       *http.Request
	call    upstreamCall
	keys    *store.Keys
	free    bool
	started time.Time
	timeout time.Duration // for an attempt's response headers; 0: none
	cancels []context.CancelFunc
}

// attemptAnswer is one upstream attempt's answer, kept open while it may
// still go to the client.
type attemptAnswer struct {
	attempt int
	resp    *http.Response // nil after a network error
	answer  rotation.Answer
	excerpt string
	at      time.Time
}

// forward serves a proxied request through the attempt machine. Retries
// happen only before any byte reaches the client.
func (px *Proxy) forward(w http.ResponseWriter, r *http.Request, db *sql.DB, set settings.Settings, call upstreamCall) {
	if _, err := url.Parse(call.url); err != nil {
		reply.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "bad_upstream_url",
			Message: "keypool's upstream URL for " + call.prov.Name + " is not valid: check " + call.prov.BaseURLVar() +
				" and AI_GATEWAY_URL"}.Write(w)
		return
	}
	b, ok := px.needBox(w)
	if !ok {
		return
	}
	started := px.Now()
	// The request's line in the usage rollups; a request that never
	// reaches an answer from a key counts as rejected.
	fin := served{started: started, token: call.client.id(), prov: call.prov.Name, model: call.model,
		class: classRejected, reqBytes: int64(len(call.body)), textIn: len(call.body) > 0 && isJSON(r.Header.Get("Content-Type")),
		answer: answerOf(w), sampled: sampled(set.RequestLogSample)}
	keys := store.On(db, px.Queries).Keys().Sealing(b)
	if !px.admit(w, call.client, call) {
		px.finish(db, keys, fin, nil)
		return
	}
	call.headers = ruleFor(set, call.prov.Family, call.viaGateway)
	if set.AffinityOn(call.prov) {
		call.conversation = conversation(r.Header, call, fin.textIn)
	}
	// An OpenAI-compatible chat stream is asked for its usage, where the
	// provider accepts the option; when the client did not ask, the extra
	// chunk is taken out of what it sees.
	strip := false
	if call.openAIRoute && call.prov.StreamUsage && strings.HasSuffix(strings.SplitN(call.url, "?", 2)[0], "/chat/completions") {
		call.body, strip = usage.AskForUsage(call.body)
	}
	run := &proxyRun{px: px, r: r, call: call, keys: keys, free: set.IsFree(call.prov.Name, call.model), started: started,
		timeout: px.Config().UpstreamTimeout}
	m := rotation.Start(px.attemptRequest(call, set, started))
	held := run.drive(m)
	defer run.cancel() // after the relay: the body may still be read
	eff := m.Effects()
	fin.uses = eff.Uses
	px.applyHot(call.prov.Name, eff)
	fin = px.reply(w, call, eff, held, strip, fin)
	px.finish(db, keys, fin, eff.Changes)
}

// attemptRequest is what the attempt machine knows of call when it starts.
func (px *Proxy) attemptRequest(call upstreamCall, set settings.Settings, started time.Time) rotation.Request {
	c := px.Config()
	return rotation.Request{
		Provider: call.prov.Name, Family: call.prov.Family, Model: call.model, Started: started,
		Storm:       px.Pool.Storm(call.prov.Name),
		Policy:      c.Cooldown,
		StormPolicy: c.Storm,
		Limits: rotation.Limits{
			MaxAttempts: c.MaxAttempts,
			MaxKeys:     candidateLimit,
			Budget:      c.RetryBudget,
			Wait:        time.Duration(set.Wait) * time.Second,
		},
		IntN:         px.IntN,
		Conversation: call.conversation,
	}
}

// drive does what m asks until m has decided, and returns the upstream
// answer m may relay, still open (nil: none). Every other answer is closed.
func (p *proxyRun) drive(m *rotation.Attempts) *attemptAnswer {
	var held *attemptAnswer
	for step := m.Next(p.px.Now()); step.Kind != rotation.StepDone; step = m.Next(p.px.Now()) {
		switch step.Kind {
		case rotation.StepRead:
			m.Candidates(p.candidates(step.Fresh))
		case rotation.StepCoolingEnd:
			m.CoolingEnd(p.coolingEnd())
		case rotation.StepWait:
			time.Sleep(step.Until.Sub(p.px.Now()))
		case rotation.StepTry:
			got := p.try(step)
			m.Observe(got.answer, got.excerpt, got.at)
			held = keepOpen(held, &got, m.Keep())
		}
	}
	return keepOpen(held, nil, m.Keep())
}

// keepOpen closes the answers the machine will not relay: held unless it
// is still kept, got unless it is.
func keepOpen(held, got *attemptAnswer, keep int) *attemptAnswer {
	if held != nil && held.attempt != keep {
		held.close()
		held = nil
	}
	if got == nil {
		return held
	}
	if got.attempt == keep {
		return got
	}
	got.close()
	return held
}

func (a *attemptAnswer) close() {
	if a.resp != nil {
		a.resp.Body.Close()
	}
}

// try makes one upstream attempt and reads what the machine needs of a
// failed answer: its status, headers and the start of its body.
func (p *proxyRun) try(step rotation.Step) attemptAnswer {
	ctx := p.r.Context()
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		p.cancels = append(p.cancels, cancel)
	}
	resp, err := p.px.Fetch(p.px.upstreamRequest(ctx, p.r, p.call, step.Key.Secret, step.Key.ID))
	got := attemptAnswer{attempt: step.Attempt, at: p.px.Now()}
	if err != nil {
		got.excerpt = provider.MaskExcerpt([]byte(err.Error()), step.Key.Secret)
		return got
	}
	got.resp, got.answer.Status, got.answer.Header = resp, resp.StatusCode, resp.Header
	got.answer.Upgrade = p.call.socket
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && !(p.call.socket && resp.StatusCode == http.StatusSwitchingProtocols) {
		got.answer.Body, _ = io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
		got.excerpt = provider.MaskExcerpt(got.answer.Body, step.Key.Secret)
	}
	return got
}

func (p *proxyRun) cancel() {
	for _, c := range p.cancels {
		c()
	}
}

// candidates reads the keys that may serve the request: from the
// isolate's cache when it is warm, else (and when fresh) from D1.
func (p *proxyRun) candidates(fresh bool) ([]rotation.Candidate, bool) {
	ctx, prov, model := p.r.Context(), p.call.prov.Name, p.call.model
	var list []rotation.Candidate
	var err error
	if fresh {
		list, err = p.px.freshCandidates(ctx, p.keys, prov, model, p.free)
	} else {
		list, err = p.px.candidates(ctx, p.keys, prov, model, p.started, p.free)
	}
	if err != nil {
		log.Printf("keypool: reading candidate keys: %v", err)
		return nil, false
	}
	return list, true
}

// freshCandidates reads the candidates from D1, bypassing the cache, and
// caches them.
func (px *Proxy) freshCandidates(ctx context.Context, keys *store.Keys, prov, model string, free bool) ([]rotation.Candidate, error) {
	now := px.Now().UnixMilli()
	list, err := keys.Candidates(ctx, prov, model, now, candidateLimit, free)
	if err == nil && len(list) > 0 {
		px.Pool.SetCandidates(prov, model, free, pool.Candidates{Read: now, List: list})
	}
	return list, err
}

// coolingEnd is when the first key cooling for the request's model comes
// back (unix ms, 0 if none), as D1 knows it.
func (p *proxyRun) coolingEnd() int64 {
	next, err := p.keys.NextCoolingEnd(context.Background(), p.call.prov.Name, p.call.model, p.px.Now().UnixMilli(), p.free)
	if err != nil {
		log.Printf("keypool: reading cooldowns: %v", err)
	}
	return next
}

// applyHot applies a request's effects to the isolate at once: the storm
// state, the key counters and the cached candidates.
func (px *Proxy) applyHot(prov string, eff rotation.Effects) {
	for _, n := range eff.Notes {
		log.Printf("keypool: %s", n)
	}
	if eff.StormChanged {
		px.Pool.SetStorm(prov, eff.Storm)
	}
	now := px.Now()
	px.Pool.CountKeyUses(eff.Uses, now.UnixMilli())
	px.applyCache(prov, eff.Cache, now)
	px.holdOutChanged(prov, eff.Changes, now.UnixMilli())
}

// reply gives the client the answer the machine decided, and returns the
// request's usage line.
func (px *Proxy) reply(w http.ResponseWriter, call upstreamCall, eff rotation.Effects, held *attemptAnswer, strip bool, fin served) served {
	rep := eff.Reply
	fin.class, fin.key = string(eff.Class), rep.Key
	switch rep.Kind {
	case rotation.ReplyServe:
		if call.socket {
			return px.relaySocket(w, call, held.resp, rep.Attempts, rep.Key, fin)
		}
		fin.latency, fin.counted = px.Now().Sub(fin.started), true
		f := fin
		px.relayServed(w, held.resp, rep.Attempts, rep.Key, strip, func(r usage.Relayed, text bool) {
			px.count(f, r.Usage, r.Found, r.Bytes, text)
			if r.Broke != "" {
				px.broken(call, rep.Key, r.Broke)
			}
		})
	case rotation.ReplyRelay:
		relay(w, held.resp, held.answer.Body, rep.Attempts, rep.Key, px.Config().StreamIdle)
	case rotation.ReplyStorm:
		stormAnswer(w, call, rep)
	case rotation.ReplyStoreError:
		e := reply.StoreUnavailable()
		e.Message = "keypool's database (D1) is not answering, and this isolate has no " + call.prov.Name + " keys cached for this model; try again shortly"
		e.Write(w)
	default:
		noKeyLeft(w, call, rep)
	}
	return fin
}

// finish counts the request in the usage rollups (unless its relay does)
// and writes the state changes and due counters to D1 after the response.
func (px *Proxy) finish(db *sql.DB, keys *store.Keys, fin served, changes []rotation.Change) {
	now := px.Now()
	if !fin.counted {
		fin.latency = now.Sub(fin.started)
		px.count(fin, usage.Usage{}, false, 0, false)
	}
	p := px.takePending(now)
	// Changes kept from an outage go with the next write (the next flush
	// at the latest): checking for them here would cost every request a
	// read of the isolate's state.
	if p.empty() && len(changes) == 0 {
		return
	}
	ms := now.UnixMilli()
	px.Defer(func() {
		ctx := context.Background()
		px.writePending(ctx, db, p)
		px.writeChanges(ctx, keys, changes, ms)
	})
}

// broken marks the key-model of a served answer whose body broke off
// (usage.Relayed.Broke: "cut" or "stalled") with one transient failure:
// in this isolate's candidates at once, in D1 now. It runs after the
// response, once the body is over.
func (px *Proxy) broken(call upstreamCall, key int64, why string) {
	now := px.Now()
	reason := "the upstream cut its answer before the end"
	if why == "stalled" {
		reason = "the upstream's answer sent nothing for STREAM_IDLE_SECONDS"
	}
	log.Printf("keypool: %s key %d, model %q: %s", call.prov.Name, key, call.model, reason)
	c, u := rotation.BrokenAnswer(key, call.model, reason, now.UnixMilli())
	px.applyCache(call.prov.Name, []rotation.CacheUpdate{u}, now)
	db, err := px.DB()
	if err != nil {
		px.Pool.KeepUnwritten([]pool.Unwritten{{At: now.UnixMilli(), Change: c}})
		return
	}
	px.writeChanges(context.Background(), store.On(db, px.Queries).Keys(), []rotation.Change{c}, now.UnixMilli())
}

// writeChanges writes the key state changes decided at ms, after those
// D1 did not take before (pool.Unwritten). A change D1 does not take
// because it is unavailable is kept for the next write; one it refuses
// is logged and dropped.
func (px *Proxy) writeChanges(ctx context.Context, keys *store.Keys, changes []rotation.Change, ms int64) {
	todo := px.Pool.TakeUnwritten()
	for _, c := range changes {
		todo = append(todo, pool.Unwritten{At: ms, Change: c})
	}
	var kept []pool.Unwritten
	for i, u := range todo {
		err := keys.Apply(ctx, []rotation.Change{u.Change}, u.At)
		if store.Unavailable(err) {
			log.Printf("keypool: recording key state (kept for the next write): %v", err)
			kept = todo[i:] // D1 is down: the rest would fail too
			break
		}
		if err != nil {
			log.Printf("keypool: recording key state: %v", err)
		}
	}
	if n := px.Pool.KeepUnwritten(kept); n > 0 {
		log.Printf("keypool: %d key state changes dropped: D1 has not taken them and at most %d are kept", n, pool.MaxUnwritten)
	}
}

// noKeyLeft answers when no attempt succeeded, saying why in terms the
// client can act on.
func noKeyLeft(w http.ResponseWriter, call upstreamCall, rep rotation.Reply) {
	what := call.prov.Name + " key"
	if call.model != "" {
		what += " for model " + strconv.Quote(call.model)
	}
	w.Header().Set("X-Keypool-Attempts", strconv.Itoa(rep.Attempts))
	switch rep.Kind {
	case rotation.ReplyUpstreamError:
		msg := "upstream " + call.prov.Name + " failed on " + strconv.Itoa(rep.Attempts) + " attempt(s)"
		if rep.LastStatus != 0 {
			msg += " (last: HTTP " + strconv.Itoa(rep.LastStatus) + ")"
		} else {
			msg += " (last: network error or timeout)"
		}
		reply.Error{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_error", Message: msg}.Write(w)
	case rotation.ReplyRateLimited:
		// Waiting helps: a key that is only cooling comes back.
		retry := strconv.FormatInt(rep.RetryAfter, 10)
		reply.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited", RetryAfter: rep.RetryAfter,
			Message: "every usable " + what + " is rate limited; retry after " + retry + "s"}.Write(w)
	default:
		reply.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_available_key",
			Message: "no usable " + what + ": every key is blocked, disabled, exhausted or cooling down; add keys or wait"}.Write(w)
	}
}

// stormAnswer tells the client that the provider is failing for many keys
// at once, and when to come back.
func stormAnswer(w http.ResponseWriter, call upstreamCall, rep rotation.Reply) {
	w.Header().Set("X-Keypool-Attempts", strconv.Itoa(rep.Attempts))
	e := reply.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_storm", RetryAfter: rep.RetryAfter}
	what := "failing"
	if rep.Rate {
		e.Status, e.Type, what = http.StatusTooManyRequests, "rate_limit_error", "rate limiting"
	}
	e.Message = "upstream " + call.prov.Name + " is " + what + " " + strconv.Itoa(rep.StormKeys) +
		" keys at once, which points at the provider or a limit on keypool's IP or account rather than at the keys; " +
		"keypool pauses calls to it and blames no key; retry after " + strconv.FormatInt(rep.RetryAfter, 10) + "s"
	e.Write(w)
}
