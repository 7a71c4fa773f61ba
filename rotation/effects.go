package rotation

import "time"

// What one request's attempts do, once the attempt machine has decided:
// the state changes to write, the cache updates, the key counters, the
// storm state and the answer for the client. The handler applies them
// without deciding anything.

// ChangeKind is a kind of stored state change.
type ChangeKind int

const (
	// ChangeCool rests Key for Model until Until (unix ms), counting one
	// more failure in its streak; an Until not after the write only counts
	// the failure.
	ChangeCool ChangeKind = iota + 1
	// ChangeBlockModel takes Model away from Key for good.
	ChangeBlockModel
	// ChangeBlockKey blocks Key for every model, when its status is one
	// of From.
	ChangeBlockKey
	// ChangeExhaustKey marks Key exhausted, when its status is one of From.
	ChangeExhaustKey
	// ChangeResetStreak forgets Key's failure streak for Model, once its
	// cooldown has ended; a block stays.
	ChangeResetStreak
	// ChangeLiftCooldowns ends the cooldowns and streaks given to Keys
	// since Since (unix ms): a storm showed they were not the keys' fault.
	ChangeLiftCooldowns
)

// Change is one state change for the store to write.
type Change struct {
	Kind  ChangeKind
	Key   int64
	Model string
	Until int64 // ChangeCool
	// Reason, Status (0 for a network error) and Excerpt (masked) go to
	// the key's history.
	Reason  string
	Status  int
	Excerpt string
	From    []string // ChangeBlockKey, ChangeExhaustKey: the statuses it applies to
	Keys    []int64  // ChangeLiftCooldowns
	Since   int64    // ChangeLiftCooldowns
}

// CacheOp is a change to the isolate's cached candidate lists.
type CacheOp int

const (
	// CacheExpireAll makes every cached list stale (read again before it
	// serves, kept for a D1 outage): a key left all of them, or
	// cooldowns were lifted.
	CacheExpireAll CacheOp = iota + 1
	// CacheRemove takes Key out of Model's list.
	CacheRemove
	// CacheFailed counts a failure in Key's streak for Model; it stays.
	CacheFailed
	// CacheUsed moves Key to the back of Model's list.
	CacheUsed
	// CacheServed is CacheUsed, and Key's streak for Model is forgotten.
	CacheServed
)

// CacheUpdate is one change to the cached candidates of the provider.
type CacheUpdate struct {
	Op    CacheOp
	Key   int64
	Model string
}

// KeyUse is one attempt, for the key's counters.
type KeyUse struct {
	Key    int64
	Served bool // the answer went to the client (a success or the client's own error)
	// What the attempt met, for the request log: the upstream's status
	// (0: none, a network error or timeout), the verdict (Action's name)
	// and its reason, and when the answer came (unix ms).
	Status  int
	Verdict string
	Reason  string
	At      int64
}

// Class is the request's line in the usage statistics.
type Class string

const (
	ClassSuccess  Class = "success"  // 2xx
	ClassClient   Class = "client"   // the upstream's 4xx, returned
	ClassUpstream Class = "upstream" // 5xx, timeouts: keypool answered 502
	ClassRejected Class = "rejected" // keypool refused: no usable key, a storm, a token limit
)

// ReplyKind is what the client is told.
type ReplyKind int

const (
	// ReplyServe relays attempt Attempt's successful answer.
	ReplyServe ReplyKind = iota + 1
	// ReplyRelay relays attempt Attempt's failed answer as it is: the
	// client's own error, or the "no such model" every key gave.
	ReplyRelay
	// ReplyRateLimited is 429 rate_limited: every usable key is cooling;
	// retry after RetryAfter seconds.
	ReplyRateLimited
	// ReplyUpstreamError is 502 upstream_error: the last attempts failed
	// upstream (LastStatus; 0 for a network error or timeout).
	ReplyUpstreamError
	// ReplyNoKey is 503 no_available_key.
	ReplyNoKey
	// ReplyStorm is 429 (Rate) or 503 upstream_storm with RetryAfter:
	// StormKeys keys of the provider failed at once.
	ReplyStorm
	// ReplyStoreError is 503 store_unavailable: the key pool could not be
	// read, and the isolate had no list cached.
	ReplyStoreError
)

// Reply is the answer for the client.
type Reply struct {
	Kind       ReplyKind
	Attempt    int   // ReplyServe, ReplyRelay: whose answer (1-based)
	Key        int64 // ReplyServe, ReplyRelay: the key that got it
	Attempts   int   // keys tried, for X-Keypool-Attempts
	RetryAfter int64 // seconds: ReplyRateLimited, ReplyStorm
	LastStatus int   // ReplyUpstreamError
	Rate       bool  // ReplyStorm: rate limits (429) rather than server errors (503)
	StormKeys  int   // ReplyStorm
}

// Effects is everything a request's attempts do.
type Effects struct {
	Reply   Reply
	Class   Class
	Changes []Change      // for the store, in order
	Cache   []CacheUpdate // for the isolate's cache, in order
	Uses    []KeyUse      // every attempt, in order
	// Storm is the provider's storm state after the request; write it
	// when StormChanged.
	Storm        Storm
	StormChanged bool
	Notes        []string // for the log
}

// liftReason is the history line of a cooldown a storm lifted.
const liftReason = "storm: many keys failed at once, not this key's fault"

// try is one attempt as the machine judged it.
type try struct {
	key       int64
	streak    int64 // the key-model's stored streak before the attempt
	verdict   Verdict
	status    int
	excerpt   string
	at        int64 // unix ms of the answer
	missing   bool  // "model not found", not yet judged
	blameless bool  // counted in the key's use, but changes no state
}

func (t try) coolEnd() int64 { return t.at + t.verdict.Cooldown.Milliseconds() }

// change is the state change t calls for.
func (t try) change(model string) (Change, bool) {
	if t.blameless {
		return Change{}, false
	}
	c := Change{Key: t.key, Model: model, Reason: t.verdict.Reason, Status: t.status, Excerpt: t.excerpt}
	switch t.verdict.Action {
	case BlockKey:
		// An upstream answer never overrides the admin's "disabled".
		c.Kind, c.Model, c.From = ChangeBlockKey, "", []string{KeyActive, KeyExhausted}
	case ExhaustKey:
		// Nor brings a blocked key back as exhausted.
		c.Kind, c.Model, c.From = ChangeExhaustKey, "", []string{KeyActive}
	case BlockModel:
		c.Kind = ChangeBlockModel
	case Cool, Retry:
		c.Kind, c.Until = ChangeCool, t.coolEnd()
	case Serve:
		if t.streak <= 0 {
			return Change{}, false
		}
		c = Change{Kind: ChangeResetStreak, Key: t.key, Model: model}
	default:
		return Change{}, false
	}
	return c, true
}

// cacheUpdate is what t does to the cached candidates.
func (t try) cacheUpdate(model string) (CacheUpdate, bool) {
	u := CacheUpdate{Key: t.key, Model: model}
	v := t.verdict
	switch {
	case t.blameless:
		return u, false
	case v.Action == BlockKey || v.Action == ExhaustKey:
		// The provider's other models' lists are not known: drop them all.
		u.Op = CacheExpireAll
	case v.Action == BlockModel || (v.Action == Cool || v.Action == Retry) && v.Cooldown > 0:
		u.Op = CacheRemove
	case v.Action == Retry:
		// Counted in the streak, so that the next failure rests it.
		u.Op = CacheFailed
	case v.Action == Serve:
		u.Op = CacheServed
	default:
		u.Op = CacheUsed
	}
	return u, true
}

// Effects returns what the request's attempts do. It is complete once
// Next has returned StepDone.
func (m *Attempts) Effects() Effects {
	e := Effects{Reply: m.reply, Class: m.class, Storm: m.storm, StormChanged: m.stormChanged, Notes: m.notes}
	forget := false
	for _, t := range m.tries {
		a := t.verdict.Action
		e.Uses = append(e.Uses, KeyUse{Key: t.key, Served: a == Serve || a == Return, Status: t.status,
			Verdict: a.String(), Reason: t.verdict.Reason, At: t.at})
		if c, ok := t.change(m.req.Model); ok {
			e.Changes = append(e.Changes, c)
		}
		if u, ok := t.cacheUpdate(m.req.Model); ok {
			forget = forget || u.Op == CacheExpireAll
			e.Cache = append(e.Cache, u)
		}
	}
	if len(m.lift) > 0 {
		e.Changes = append(e.Changes, Change{Kind: ChangeLiftCooldowns, Keys: m.lift, Since: m.liftSince, Reason: liftReason})
		forget = true
	}
	if forget {
		// Dropping every list makes the other updates moot.
		e.Cache = []CacheUpdate{{Op: CacheExpireAll}}
	}
	return e
}

// stormReply tells the client to come back when the storm's hold ends.
func (m *Attempts) stormReply(now time.Time) Step {
	s := m.storm
	retry := max(int64((s.Wait(now)+time.Second-1)/time.Second), 1)
	return m.done(Reply{Kind: ReplyStorm, Attempts: m.attempt, RetryAfter: retry, Rate: s.Rate, StormKeys: len(s.Keys)},
		ClassRejected)
}

// BrokenAnswer is what a served answer whose body broke off does to its
// key-model: the upstream cut it before its end, or sent nothing for the
// stream idle limit (why says which). Like a first 5xx: one failure in
// the key-model's streak, so that the next failure rests it, and never a
// block; the client has already been answered, so nothing is retried.
func BrokenAnswer(key int64, model, why string, now int64) (Change, CacheUpdate) {
	return Change{Kind: ChangeCool, Key: key, Model: model, Until: now, Reason: why, Status: 200},
		CacheUpdate{Op: CacheFailed, Key: key, Model: model}
}
