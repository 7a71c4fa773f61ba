package rotation

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keypool/keypool/provider"
)

// The attempt machine decides one proxied request: which key to try next,
// what each upstream answer means, when to wait for a cooling key, when
// to stop, and what that does (Effects). It does no I/O: the handler does
// what each Step asks and reports back, so the machine is tested without
// HTTP or a database.

// Limits bound one request's attempts.
type Limits struct {
	// MaxAttempts bounds the failures that may be the request's or the
	// upstream's (5xx, timeouts, "no such model"). A key that is simply
	// rejected (invalid, exhausted, rate limited) does not use one up: the
	// next key is as likely to serve.
	MaxAttempts int
	// MaxKeys bounds the keys tried, whatever they answer.
	MaxKeys int
	// Budget: no attempt after the first starts later than this after
	// Started.
	Budget time.Duration
	// Wait is how long a request may wait for a cooling key to come back
	// (wait_for_cooldown_seconds); 0 never waits.
	Wait time.Duration
}

// Request is what the machine knows of a request when it starts.
type Request struct {
	Provider    string
	Family      provider.Family
	Model       string // "" when the request names none
	Started     time.Time
	Storm       Storm // the provider's storm state, as the isolate sees it
	Policy      Policy
	StormPolicy StormPolicy
	Limits      Limits
	IntN        func(n int) int // draws in [0, n), for Pick; required
	// Conversation, when not 0, identifies the conversation the request
	// continues: keys are picked by PickAffine, so that its turns reach
	// the same provider account and its prompt cache.
	Conversation uint64
}

// StepKind is what the handler must do next.
type StepKind int

const (
	// StepRead: read the candidates (from the cache unless Fresh) and
	// report them with Candidates.
	StepRead StepKind = iota + 1
	// StepTry: call the upstream with Key and report with Observe.
	StepTry
	// StepCoolingEnd: read when the first key cooling for the model comes
	// back (unix ms, 0: none) and report it with CoolingEnd.
	StepCoolingEnd
	// StepWait: sleep until Until, then call Next.
	StepWait
	// StepDone: the request is decided; see Effects.
	StepDone
)

// Step is the machine's next request to the handler.
type Step struct {
	Kind    StepKind
	Fresh   bool      // StepRead
	Key     Candidate // StepTry
	Attempt int       // StepTry: 1 for the first key tried
	Until   time.Time // StepWait
}

type phase int

const (
	phaseStart phase = iota
	phaseAwait       // waiting for the handler's report of m.pending
	phasePick
	phaseWaitDecide // the cooling end is known: wait or stop
	phaseSlept
	phaseEndLoop
	phaseEndDecide // the cooling end is known: 429 or 503
	phaseDone
)

// Attempts is one request's attempt machine. Drive it with Next until it
// returns StepDone, doing what each step asks.
type Attempts struct {
	req          Request
	phase        phase
	pending      Step
	after        phase // what a CoolingEnd report leads to
	cands        []Candidate
	tried        map[int64]bool
	cur          Candidate
	storm        Storm
	stormChanged bool
	// attempt counts the keys tried; failed the failures MAX_ATTEMPTS bounds.
	attempt, failed int
	last            Verdict
	lastStatus      int
	waited          bool
	tries           []try
	denied          int // the attempt whose "model not found" answer is kept; 0: none
	keep            int // the attempt whose answer may still go to the client; 0: none
	coolingEnd      int64
	lift            []int64
	liftSince       int64
	reply           Reply
	class           Class
	notes           []string
}

// Start begins a request's attempts.
func Start(req Request) *Attempts {
	return &Attempts{req: req, storm: req.Storm, tried: map[int64]bool{}}
}

// Keep is the attempt whose upstream answer the handler must keep open,
// because it may still go to the client; every other answer may be
// closed. 0: none.
func (m *Attempts) Keep() int { return m.keep }

// Next returns what to do at now. Until the handler has reported on the
// last step, it returns that step again.
func (m *Attempts) Next(now time.Time) Step {
	switch m.phase {
	case phaseStart:
		if m.storm.Active(m.req.Started) {
			return m.stormReply(m.req.Started)
		}
		return m.await(Step{Kind: StepRead})
	case phasePick:
		return m.pick(now)
	case phaseWaitDecide:
		return m.wait(now)
	case phaseSlept:
		return m.woke(now)
	case phaseEndLoop:
		return m.endLoop()
	case phaseEndDecide:
		return m.noKeyLeft(now)
	case phaseDone:
		return Step{Kind: StepDone}
	}
	return m.pending
}

func (m *Attempts) await(s Step) Step {
	m.phase, m.pending = phaseAwait, s
	return s
}

// Candidates reports the keys read for StepRead; ok is false when they
// could not be read.
func (m *Attempts) Candidates(list []Candidate, ok bool) {
	if m.phase != phaseAwait || m.pending.Kind != StepRead {
		return
	}
	switch {
	case ok:
		m.cands, m.phase = list, phasePick
	case !m.waited:
		m.done(Reply{Kind: ReplyStoreError}, ClassRejected)
	default:
		m.phase = phaseEndLoop
	}
}

// CoolingEnd reports the stored cooling end for StepCoolingEnd (0: none
// or unknown). The cooldowns this request decided count too.
func (m *Attempts) CoolingEnd(end int64) {
	if m.phase != phaseAwait || m.pending.Kind != StepCoolingEnd {
		return
	}
	for _, t := range m.tries {
		if t.verdict.Action == Cool && !t.blameless && (end == 0 || t.coolEnd() < end) {
			end = t.coolEnd()
		}
	}
	m.coolingEnd, m.phase = end, m.after
}

// pick tries the next key, within the limits.
func (m *Attempts) pick(now time.Time) Step {
	l := m.req.Limits
	if m.failed >= l.MaxAttempts || m.attempt >= l.MaxKeys || m.attempt > 0 && now.Sub(m.req.Started) >= l.Budget {
		return m.endLoop()
	}
	var key Candidate
	var ok bool
	if m.req.Conversation != 0 {
		key, ok = PickAffine(m.cands, m.tried, m.req.Conversation)
	} else {
		key, ok = Pick(m.cands, m.tried, m.req.IntN)
	}
	if !ok {
		// Every key is out for this model. When the first cooling one is
		// back soon enough, wait for it once instead of answering 429.
		if m.waited || l.Wait <= 0 || m.denied != 0 || m.last.Action == Retry {
			return m.endLoop()
		}
		m.waited, m.after = true, phaseWaitDecide
		return m.await(Step{Kind: StepCoolingEnd})
	}
	m.attempt++
	m.tried[key.ID] = true
	m.cur = key
	return m.await(Step{Kind: StepTry, Key: key, Attempt: m.attempt})
}

// wait decides whether the first cooling key is worth waiting for.
func (m *Attempts) wait(now time.Time) Step {
	l := m.req.Limits
	end := m.coolingEnd
	d := time.Duration(end-now.UnixMilli()) * time.Millisecond
	// A key tried already needs the budget left to be tried again.
	if end == 0 || d > l.Wait || m.attempt > 0 && now.Add(d).Sub(m.req.Started) >= l.Budget {
		return m.endLoop()
	}
	m.phase = phaseSlept
	return Step{Kind: StepWait, Until: now.Add(d)}
}

// woke goes on after a wait, with the candidates read afresh.
func (m *Attempts) woke(now time.Time) Step {
	if m.attempt > 0 && now.Sub(m.req.Started) >= m.req.Limits.Budget {
		return m.endLoop()
	}
	// A key this request cooled has served its cooldown while the request
	// waited: it may be tried again, and the cooldown is not recorded (it
	// would start only once the response has gone).
	back := now.UnixMilli()
	for i := range m.tries {
		if t := &m.tries[i]; t.verdict.Action == Cool && !t.blameless && t.coolEnd() <= back {
			t.blameless = true
			delete(m.tried, t.key)
		}
	}
	return m.await(Step{Kind: StepRead, Fresh: true})
}

// Observe reports the answer to StepTry at now. Provider, Family and
// Streak are filled in from the request and the key; excerpt is the start
// of a failed answer's body (or the network error), masked, for the key's
// history.
func (m *Attempts) Observe(a Answer, excerpt string, now time.Time) {
	if m.phase != phaseAwait || m.pending.Kind != StepTry {
		return
	}
	a.Provider, a.Family, a.Streak = m.req.Provider, m.req.Family, m.cur.StreakAt(now)
	m.judge(m.req.Policy.Classify(a, now), a, excerpt, now)
}

// judge acts on the verdict v about answer a to the current attempt.
func (m *Attempts) judge(v Verdict, a Answer, excerpt string, now time.Time) {
	key := m.cur
	if m.req.Model == "" && (v.Action == ModelMissing || v.Action == BlockModel) {
		// No model to block: state under "" would take the key out of
		// every request that names none. The answer is the client's.
		v = Verdict{Action: Return}
	}
	t := try{key: key.ID, streak: key.Streak, verdict: v, status: a.Status, at: now.UnixMilli()}
	switch v.Action {
	case Serve:
		m.serve(t)
		return
	case Return:
		m.tries, m.keep = append(m.tries, t), m.attempt
		m.done(Reply{Kind: ReplyRelay, Attempt: m.attempt, Key: key.ID, Attempts: m.attempt}, ClassClient)
		return
	}
	t.excerpt = excerpt
	if v.Action == Retry || v.Action == ModelMissing {
		m.failed++
	}
	m.phase = phasePick
	if v.Action == ModelMissing {
		// Kept, not yet blamed: the model may not exist at all.
		t.missing = true
		m.tries, m.denied, m.keep = append(m.tries, t), m.attempt, m.attempt
		return
	}
	if v.Storm && m.stormFailure(t, a.Header, now) {
		return
	}
	m.tries = append(m.tries, t)
	m.last, m.lastStatus = v, a.Status
	m.note(m.req.Provider + " key " + strconv.FormatInt(key.ID, 10) + " for " + strconv.Quote(m.req.Model) + ": " +
		v.Reason + "; trying another key")
}

// serve ends the request with t's success. Another key serving the model
// shows that the keys told it does not exist may not use it.
func (m *Attempts) serve(t try) {
	for i := range m.tries {
		if x := &m.tries[i]; x.missing {
			x.missing = false
			x.verdict = Verdict{Action: BlockModel, Reason: "model not available to this key (" +
				strconv.Itoa(x.status) + "; another key serves it)"}
		}
	}
	m.tries, m.keep = append(m.tries, t), m.attempt
	if m.storm.Since != 0 {
		m.storm, m.stormChanged = m.storm.Succeed(), true
	}
	m.done(Reply{Kind: ReplyServe, Attempt: m.attempt, Key: t.key, Attempts: m.attempt}, ClassSuccess)
}

// stormFailure counts t, a storm-kind failure, in the provider's storm
// state and reports whether it ended the request: a storm holds.
func (m *Attempts) stormFailure(t try, h http.Header, now time.Time) bool {
	hint, _ := RetryAfter(h, now)
	s, inStorm, begun := m.req.StormPolicy.Fail(m.storm, t.key, t.status == http.StatusTooManyRequests, hint, now)
	m.storm, m.stormChanged = s, true
	if begun {
		m.lift, m.liftSince = s.Keys, s.Since
		m.note(m.req.Provider + ": " + strconv.Itoa(len(s.Keys)) + " keys failed within " + m.req.StormPolicy.Window.String() +
			" (last: HTTP " + strconv.Itoa(t.status) + "); pausing for " + s.Wait(now).Round(time.Second).String() +
			" without blaming keys")
	}
	if !inStorm {
		return false
	}
	t.blameless = true
	m.tries, m.keep = append(m.tries, t), 0
	m.stormReply(now)
	return true
}

// endLoop answers once no key is left to try.
func (m *Attempts) endLoop() Step {
	every404 := m.denied != 0
	for _, t := range m.tries {
		every404 = every404 && t.missing
	}
	if every404 {
		// Every key tried said the model does not exist: the answer is
		// about the request.
		return m.done(Reply{Kind: ReplyRelay, Attempt: m.denied, Key: m.tries[m.denied-1].key, Attempts: m.attempt},
			ClassClient)
	}
	// Another key failed otherwise (rate limited, down) and may have the
	// model: say that, not "no such model".
	m.keep = 0
	if m.attempt > 0 && m.last.Action == Retry {
		return m.done(Reply{Kind: ReplyUpstreamError, Attempts: m.attempt, LastStatus: m.lastStatus}, ClassUpstream)
	}
	m.after = phaseEndDecide
	return m.await(Step{Kind: StepCoolingEnd})
}

// noKeyLeft answers when every key is out for the model: 429 when one is
// only cooling, saying when it is back, else 503.
func (m *Attempts) noKeyLeft(now time.Time) Step {
	if ms := now.UnixMilli(); m.coolingEnd > ms {
		return m.done(Reply{Kind: ReplyRateLimited, Attempts: m.attempt, RetryAfter: (m.coolingEnd - ms + 999) / 1000},
			ClassRejected)
	}
	return m.done(Reply{Kind: ReplyNoKey, Attempts: m.attempt}, ClassRejected)
}

// done decides the request. "Model not found" answers no other key
// contradicted blame nobody.
func (m *Attempts) done(r Reply, c Class) Step {
	for i := range m.tries {
		if t := &m.tries[i]; t.missing {
			t.missing, t.blameless = false, true
		}
	}
	m.reply, m.class, m.phase = r, c, phaseDone
	return Step{Kind: StepDone}
}

func (m *Attempts) note(s string) { m.notes = append(m.notes, s) }
