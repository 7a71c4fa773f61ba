package rotation

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keypool/keypool/provider"
)

// Action is what to do after an upstream answer.
type Action int

const (
	// Serve: pass the answer to the client; the key did its job.
	Serve Action = iota
	// Return: pass the answer to the client unchanged; it is about the
	// request (bad parameters, unknown model, too long…) or about where
	// keypool runs (region), so no key is blamed.
	Return
	// Retry: the upstream failed (5xx, timeout, network); try another key.
	// The key-model rests for Cooldown, which is 0 on a first failure.
	Retry
	// Cool: the key is rate limited for this model; rest it for Cooldown,
	// then try another key.
	Cool
	// ModelMissing: the upstream says the model does not exist or this key
	// may not use it, and cannot tell which. Try another key; if another
	// key serves the model, this key gets BlockModel, otherwise the answer
	// goes to the client and no key is blamed.
	ModelMissing
	// BlockModel: this key may not use this model; it still serves others.
	BlockModel
	// BlockKey: the upstream rejected the credential; take the key out of
	// rotation for every model.
	BlockKey
	// ExhaustKey: the key has no balance or quota left; it comes back when
	// a balance check sees money again. Free models may still use it.
	ExhaustKey
)

var actionNames = [...]string{"serve", "return", "retry", "cool", "model_missing", "block_model", "block_key", "exhaust_key"}

func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return "action(" + strconv.Itoa(int(a)) + ")"
	}
	return actionNames[a]
}

// Verdict is the classification of one upstream answer.
type Verdict struct {
	Action   Action
	Cooldown time.Duration // for Cool and Retry
	Reason   string        // short, for the key's history
	// Storm marks failures that, when many keys of a provider show them at
	// once, point at the upstream or keypool's IP rather than at keys:
	// plain rate limits (not daily quotas), 5xx and network errors.
	Storm bool
	// Suspect marks a Return for a 401 or 403 whose body keypool does not
	// recognise: it may be about the key or about what the client sent, so
	// a proxied request blames no key, but a health check (which sends
	// nothing of a client's) takes it as the key's.
	Suspect bool
}

// Answer is what came back from one upstream attempt.
type Answer struct {
	Provider string // provider name: picks the daily-quota reset time
	Family   provider.Family
	Status   int // HTTP status; 0 for a network error or timeout
	Header   http.Header
	// Body is the start of a failed answer's body (nil for 2xx): enough
	// for the error object every provider sends.
	Body []byte
	// Upgrade: the request asked to switch protocols (a WebSocket
	// handshake), so 101 is the success and any 2xx a refusal.
	Upgrade bool
	// Streak is the key-model's failures in a row before this one, used
	// to grow cooldowns (see Candidate).
	Streak int64
}

// Defaults of Policy.
const (
	DefaultCooldown       = 60 * time.Second
	DefaultMaxCooldown    = 30 * time.Minute
	DefaultServerCooldown = 5 * time.Second
	maxServerCooldown     = 2 * time.Minute
	// maxCooldown caps any cooldown, hinted or not, so one odd hint cannot
	// shelve a key for days. A daily quota resets within 24 hours.
	maxCooldown = 24 * time.Hour
)

// Policy holds the tunable parts of classification. The zero Policy uses
// the defaults.
type Policy struct {
	// DefaultCooldown rests a rate-limited key-model when the provider
	// gives no hint; it doubles with each 429 in a row up to MaxCooldown.
	DefaultCooldown time.Duration
	MaxCooldown     time.Duration
	// ServerCooldown rests a key-model after its second 5xx or network
	// error in a row (the first only moves on to another key), doubling
	// up to two minutes.
	ServerCooldown time.Duration
}

func (p Policy) defaults() Policy {
	if p.DefaultCooldown <= 0 {
		p.DefaultCooldown = DefaultCooldown
	}
	if p.MaxCooldown <= 0 {
		p.MaxCooldown = DefaultMaxCooldown
	}
	if p.MaxCooldown < p.DefaultCooldown {
		p.MaxCooldown = p.DefaultCooldown
	}
	if p.ServerCooldown <= 0 {
		p.ServerCooldown = DefaultServerCooldown
	}
	return p
}

// backoff doubles base for each earlier failure in a row, up to max.
func backoff(base, max time.Duration, streak int64) time.Duration {
	d := base
	for i := int64(0); i < streak && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// StreakMemory is how long after its last cooldown ended a key-model's
// failure streak is remembered: a key that behaved for that long starts
// again from the default cooldown.
const StreakMemory = 15 * time.Minute

// StreakAt is c's failure streak as it counts at now.
func (c Candidate) StreakAt(now time.Time) int64 {
	if c.Streak <= 0 || now.UnixMilli()-c.CoolEnd > StreakMemory.Milliseconds() {
		return 0
	}
	return c.Streak
}

// Classify maps an upstream answer to a verdict. now reads HTTP-date
// hints and places daily resets.
func (p Policy) Classify(a Answer, now time.Time) Verdict {
	p = p.defaults()
	s := a.Status
	switch {
	case a.Upgrade && s == http.StatusSwitchingProtocols:
		return Verdict{Action: Serve}
	case a.Upgrade && s >= 200 && s < 300:
		// An upstream that ignored the upgrade; the client sees its answer.
		return Verdict{Action: Return}
	case s >= 200 && s < 300:
		return Verdict{Action: Serve}
	case s == 0:
		return p.serverError(a, "network error or timeout")
	case s < 200 || s > 599:
		// A Worker cannot relay 1xx or out-of-range statuses.
		return Verdict{Action: Retry, Reason: "invalid upstream status " + strconv.Itoa(s)}
	}
	e := parseError(a.Body)
	why := " (" + strconv.Itoa(s) + e.suffix() + ")"
	// On a 400 the message may quote the client's input: only a message
	// that starts with the phrase counts (see errorInfo.has).
	strict := s == http.StatusBadRequest
	// A key is blocked or exhausted only when the body says the key itself
	// is bad: a client must not be able to take keys out of rotation with
	// what it sends (an organisation header makes OpenAI answer 401).
	switch {
	case (s == 400 || s == 401 || s == 403) && e.aboutClient():
		return Verdict{Action: Return}
	case (s == 400 || s == 401 || s == 403) && e.invalidKey(strict):
		return Verdict{Action: BlockKey, Reason: "credential rejected" + why}
	case (s == 400 || s == 402 || s == 403 || s == 429) && e.noCredit(strict):
		return Verdict{Action: ExhaustKey, Reason: "no balance or quota left" + why}
	case s == http.StatusUnauthorized:
		return Verdict{Action: Return, Suspect: true}
	case s == http.StatusPaymentRequired:
		return Verdict{Action: ExhaustKey, Reason: "payment required" + why}
	case (s == 400 || s == 403) && e.region(strict):
		// The same for every key: it is about where keypool runs.
		return Verdict{Action: Return}
	case (s == 403 || s == 429) && e.aboutRequest():
		return Verdict{Action: Return}
	case s == http.StatusForbidden && e.notJSON:
		// An HTML page: a firewall or CDN in front of the provider, which
		// would refuse every key alike. Move on, and let a storm stop it.
		return p.serverError(a, "refused by a proxy in front of the provider"+why)
	case s == http.StatusForbidden && e.aboutModel():
		return Verdict{Action: BlockModel, Reason: "no permission for this model" + why}
	case s == http.StatusForbidden:
		return Verdict{Action: Return, Suspect: true}
	case s == http.StatusNotFound && e.aboutModel():
		return Verdict{Action: ModelMissing, Reason: "model not available to this key" + why}
	case s == http.StatusTooManyRequests && e.busy():
		// "System is too busy": the service's load, not this key's quota.
		return p.serverError(a, "upstream busy"+why)
	case s == http.StatusTooManyRequests:
		return p.rateLimited(a, e, now, why)
	case s == http.StatusRequestTimeout || s >= 500:
		return p.serverError(a, "upstream error"+why)
	default:
		return Verdict{Action: Return}
	}
}

func (p Policy) serverError(a Answer, reason string) Verdict {
	var d time.Duration
	if a.Streak > 0 {
		d = backoff(p.ServerCooldown, maxServerCooldown, a.Streak-1)
	}
	return Verdict{Action: Retry, Cooldown: d, Reason: reason, Storm: true}
}

// rateLimited decides a 429's cooldown: a daily quota rests the key-model
// until the provider's daily reset; otherwise the provider's hint is
// followed; otherwise the default grows with the streak.
func (p Policy) rateLimited(a Answer, e errorInfo, now time.Time, why string) Verdict {
	if e.daily() {
		hint, hinted := hintOf(a, e, now)
		// Gemini's RetryInfo on a daily quota names seconds, not the reset:
		// its quota ids say which quota ran out, so trust those.
		if a.Family == provider.FamilyGemini || !hinted {
			return Verdict{Action: Cool, Cooldown: clampCooldown(DailyReset(a.Provider, now).Sub(now)),
				Reason: "daily quota used up" + why}
		}
		return Verdict{Action: Cool, Cooldown: hint, Reason: "daily quota used up" + why}
	}
	if d, ok := hintOf(a, e, now); ok {
		return Verdict{Action: Cool, Cooldown: d, Reason: "rate limited" + why, Storm: true}
	}
	return Verdict{Action: Cool, Cooldown: backoff(p.DefaultCooldown, p.MaxCooldown, a.Streak),
		Reason: "rate limited" + why, Storm: true}
}

// hintOf finds the provider's wait hint: headers first, then the body
// (Gemini RetryInfo, "try again in 18.642s" in a message).
func hintOf(a Answer, e errorInfo, now time.Time) (time.Duration, bool) {
	if d, ok := RetryAfter(a.Header, now); ok {
		return d, true
	}
	if e.retryDelay != "" {
		if d, ok := parseGoDuration(e.retryDelay); ok {
			return d, true
		}
	}
	return TryAgainIn(e.message)
}
