// Package rotation holds keypool's decisions, free of I/O: which key serves
// a request next, and what an upstream answer says about the key that got it.
// The handler feeds it facts (candidates, statuses, headers, the clock) and
// the store persists what it decides.
package rotation

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Candidate is a key that may serve the current request: active, and
// neither cooling nor blocked for the requested model.
type Candidate struct {
	ID       int64
	Secret   string
	LastUsed int64 // unix ms; 0 = never
}

// spread is how many of the least recently used untried candidates a pick
// chooses among. Choosing at random among a few, not always the single
// oldest, keeps concurrent requests in different isolates (which cannot see
// each other's picks) from all landing on the same key.
const spread = 4

// Pick chooses the next key to try. cands must be sorted by LastUsed,
// oldest first (the store returns them that way). Keys already tried for
// this request are skipped; intn(n) draws from [0, n) (rand.IntN in
// production, a fixed function in tests). ok is false when none is left.
func Pick(cands []Candidate, tried map[int64]bool, intn func(int) int) (c Candidate, ok bool) {
	var pool [spread]int
	n := 0
	for i := range cands {
		if tried[cands[i].ID] {
			continue
		}
		pool[n] = i
		n++
		if n == spread {
			break
		}
	}
	if n == 0 {
		return Candidate{}, false
	}
	return cands[pool[intn(n)]], true
}

// Action is what to do after an upstream answer.
type Action int

const (
	// Serve: pass the answer to the client; the key did its job.
	Serve Action = iota
	// Return: pass the answer to the client unchanged; it is about the
	// request (bad parameters, unknown model…), so the key is not blamed.
	Return
	// Retry: try another key; nothing is recorded against this one.
	Retry
	// Cool: the key is rate limited for this model; rest it for the
	// verdict's Cooldown, then try another key.
	Cool
	// BlockKey: the upstream rejected the credential; take the key out of
	// rotation for every model, then try another key.
	BlockKey
)

var actionNames = [...]string{"serve", "return", "retry", "cool", "block_key"}

func (a Action) String() string { return actionNames[a] }

// Verdict is the classification of one upstream answer.
type Verdict struct {
	Action   Action
	Cooldown time.Duration // for Cool
	Reason   string        // short, for the key's history
}

// DefaultCooldown is how long a rate-limited key-model rests when the
// provider gives no hint.
const DefaultCooldown = 60 * time.Second

// maxCooldown caps a provider's hint so one odd header cannot shelve a key
// for days.
const maxCooldown = 24 * time.Hour

// Policy holds the tunable parts of classification.
type Policy struct {
	// DefaultCooldown rests a rate-limited key-model when the provider
	// gives no hint; DefaultCooldown (the constant) when zero.
	DefaultCooldown time.Duration
}

// Classify maps an upstream status and headers to a verdict. now is used to
// read an HTTP-date Retry-After. A network error is classified with
// status 0.
func (p Policy) Classify(status int, h http.Header, now time.Time) Verdict {
	switch {
	case status >= 200 && status < 300:
		return Verdict{Action: Serve}
	case status == 0:
		return Verdict{Action: Retry, Reason: "network error"}
	case status < 200 || status > 599:
		// A Worker cannot relay 1xx or out-of-range statuses.
		return Verdict{Action: Retry, Reason: "invalid upstream status " + strconv.Itoa(status)}
	case status == http.StatusUnauthorized:
		return Verdict{Action: BlockKey, Reason: "credential rejected (401)"}
	case status == http.StatusTooManyRequests:
		d, hinted := RetryAfter(h, now)
		if !hinted {
			d = p.DefaultCooldown
			if d <= 0 {
				d = DefaultCooldown
			}
		}
		return Verdict{Action: Cool, Cooldown: d, Reason: "rate limited (429)"}
	case status >= 500:
		return Verdict{Action: Retry, Reason: "upstream error (" + strconv.Itoa(status) + ")"}
	default:
		return Verdict{Action: Return}
	}
}

// RetryAfter reads the provider's wait hint from the standard Retry-After
// header (seconds or HTTP date) or the retry-after-ms header some
// OpenAI-compatible services send. ok is false when there is no usable hint.
func RetryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			if d, ok := secondsToCooldown(ms / 1000); ok {
				return d, true
			}
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		return secondsToCooldown(s)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return clampCooldown(d), true
		}
	}
	return 0, false
}

// secondsToCooldown turns a hint in seconds into a cooldown. The float is
// bounded before it becomes a Duration, which would overflow.
func secondsToCooldown(s float64) (time.Duration, bool) {
	if math.IsNaN(s) || s <= 0 {
		return 0, false
	}
	if s > maxCooldown.Seconds() {
		return maxCooldown, true
	}
	return clampCooldown(time.Duration(s * float64(time.Second))), true
}

func clampCooldown(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	if d > maxCooldown {
		return maxCooldown
	}
	return d
}
