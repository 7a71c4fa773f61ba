package proxy

import (
	"context"
	"database/sql"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/usage"
)

// Usage accounting: every proxied request lands in a rollup (minute and
// day × token × key × provider × model) with its outcome, the tokens the
// upstream reported (or an estimate) and its latency. Counts gather in the
// isolate's Shared memory and are written in one statement at most every
// USAGE_FLUSH_SECONDS, with the key counters.

// Outcome classes of a proxied request.
const (
	classSuccess  = string(rotation.ClassSuccess)
	classClient   = string(rotation.ClassClient)
	classUpstream = string(rotation.ClassUpstream)
	classRejected = string(rotation.ClassRejected)
)

// served is one proxied request, for the rollups.
type served struct {
	started  time.Time
	token    int64 // 0: AUTH_KEY
	key      int64 // the key that answered; 0: none
	prov     string
	model    string
	class    string
	latency  time.Duration
	reqBytes int64
	textIn   bool // the request is text (JSON) an estimate may be made from
	counted  bool
	// For the request log: the client's answer, the attempts, and whether
	// a successful request was drawn for the log's sample.
	answer  *answerWriter
	uses    []rotation.KeyUse
	sampled bool
}

const rollupKey = "rollup"

// count adds a finished request to the isolate's pending rollups, and
// its tokens to its client token's quota counters.
func (px *Proxy) count(s served, u usage.Usage, found bool, answerBytes int64, textOut bool) {
	if !found && s.class == classSuccess && (s.textIn || textOut) {
		in, out := int64(0), int64(0)
		if s.textIn {
			in = s.reqBytes
		}
		if textOut {
			out = answerBytes
		}
		u = usage.Estimate(in, out)
	}
	c := store.Counts{Requests: 1, PromptTokens: u.Prompt, CompletionTokens: u.Completion, CachedTokens: u.Cached,
		LatencyMS: s.latency.Milliseconds()}
	switch s.class {
	case classSuccess:
		c.Successes = 1
	case classClient:
		c.ClientErrors = 1
	case classUpstream:
		c.UpstreamErrors = 1
	default:
		c.Rejected = 1
	}
	if u.Estimated {
		c.Estimated = 1
	}
	groups := px.Pool.AddRollup(store.Rollup{Minute: s.started.UnixMilli() / 60000 * 60000, TokenID: s.token,
		KeyID: s.key, Provider: s.prov, Model: s.model, Counts: c})
	if groups > maxPendingRollups {
		// Each request reads and rewrites them all: write them at once.
		px.Pool.FlushSoon()
	}
	if s.token > 0 && u.Total() > 0 {
		now := px.Now()
		px.Pool.CountToken(s.token, utcDay(now), 0, u.Total(), now.UnixMilli())
	}
	px.logRequest(s, u)
}

// pending is the isolate's coalesced counts, taken to be written.
type pending struct {
	keys     []store.KeyUsage
	rollups  []store.Rollup
	tokens   []store.TokenUsage
	requests []store.LoggedRequest
	dropped  int64 // request log entries dropped since the last flush
}

func (p pending) empty() bool {
	return len(p.keys) == 0 && len(p.rollups) == 0 && len(p.tokens) == 0 && len(p.requests) == 0
}

// takePending takes the counts when they are due to be written (every
// USAGE_FLUSH_SECONDS at most; 0: after every request).
// A zero now takes them whether due or not.
func (px *Proxy) takePending(now time.Time) pending {
	interval := px.Config().UsageFlush
	if ms := px.Pool.Flushed(); !now.IsZero() && ms != 0 && now.Sub(time.UnixMilli(ms)) < interval {
		return pending{}
	}
	if now.IsZero() {
		now = px.Now()
	}
	p := pending{keys: px.Pool.TakeKeyUsage(), rollups: px.Pool.TakeRollups(), tokens: px.Pool.TakeTokenUsage()}
	p.requests, p.dropped = px.Pool.TakeRequests()
	if !p.empty() {
		px.Pool.SetFlushed(now.UnixMilli())
	}
	return p
}

// writePending writes the counts, one statement per kind, and settles
// the token use it carried. Counts D1 did not take because it is
// unavailable go back to the pool, to be written with the next flush;
// other failures are logged and the counts dropped (a retry would fail
// the same way).
func (px *Proxy) writePending(ctx context.Context, db *sql.DB, p pending) {
	on := store.On(db, px.Queries)
	if err := on.Keys().AddUsage(ctx, p.keys); err != nil {
		log.Printf("keypool: writing key usage: %v", err)
		if store.Unavailable(err) {
			px.Pool.ReturnKeyUsage(p.keys)
		}
	}
	if err := on.Rollups().Add(ctx, p.rollups); err != nil {
		log.Printf("keypool: writing usage rollups: %v", err)
		if store.Unavailable(err) {
			px.Pool.ReturnRollups(p.rollups)
		}
	}
	if err := on.Requests().Add(ctx, p.requests); err != nil {
		log.Printf("keypool: writing the request log: %v", err)
		if store.Unavailable(err) {
			px.Pool.ReturnRequests(p.requests)
		}
	}
	if p.dropped > 0 {
		log.Printf("keypool: request log: %d entries dropped (at most %d wait for one flush)", p.dropped, pool.MaxPendingRequests)
	}
	err := on.Tokens().AddUsage(ctx, p.tokens)
	if err != nil {
		log.Printf("keypool: writing token usage: %v", err)
	}
	px.Pool.SettleTokenUsage(p.tokens, err == nil)
}

// flushDue writes the pending counts when they are due, at once (for work
// already running after the response).
func (px *Proxy) flushDue() {
	if p := px.takePending(px.Now()); !p.empty() {
		if db, err := px.DB(); err == nil {
			px.writePending(context.Background(), db, p)
		}
	}
}

// FlushNow writes the pending counts at once, due or not (before the
// stats are read).
func (px *Proxy) FlushNow() {
	if p := px.takePending(time.Time{}); !p.empty() {
		if db, err := px.DB(); err == nil {
			px.writePending(context.Background(), db, p)
		}
	}
}

// relayServed sends a successful answer to the client and reads what it
// used on the way: the usage a JSON answer or an SSE stream reports (the
// usage chunk keypool asked for is taken out of the stream), else its
// size. On Workers the body stays in JS (see relayer) and done is called
// after the response, once the body is over; otherwise it is copied
// through Go and done is called at once.
func (px *Proxy) relayServed(w http.ResponseWriter, resp *http.Response, attempts int, keyID int64, strip bool,
	done func(r usage.Relayed, text bool)) {
	defer resp.Body.Close()
	ct := strings.ToLower(resp.Header.Get("Content-Type"))
	sse := strings.HasPrefix(ct, "text/event-stream")
	text := sse || strings.Contains(ct, "json") || strings.HasPrefix(ct, "text/")
	kind := usage.KindOther
	switch {
	case sse:
		kind = usage.KindSSE
	case strings.Contains(ct, "json"):
		kind = usage.KindJSON
	}
	strip = strip && sse
	hd := w.Header()
	copyResponseHeaders(hd, resp.Header)
	hd.Set("X-Keypool-Attempts", strconv.Itoa(attempts))
	hd.Set("X-Keypool-Key", strconv.FormatInt(keyID, 10))
	if strip {
		// The length changes with the chunk taken out.
		hd.Del("Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	report := func(r usage.Relayed) {
		if r.Bytes == 0 && kind == usage.KindOther {
			r.Bytes = resp.ContentLength
		}
		r.Bytes = max(r.Bytes, 0)
		done(r, text)
	}
	if rb, ok := resp.Body.(relayer); ok {
		if wait, ok := rb.Relay(w, strip, kind, px.Config().StreamIdle); ok {
			px.Defer(func() {
				report(wait())
				px.flushDue()
			})
			return
		}
	}
	report(copyRelay(w, resp.Body, strip, kind))
}
