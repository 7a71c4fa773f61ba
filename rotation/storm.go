package rotation

import (
	"slices"
	"time"
)

// A storm is many distinct keys of one provider failing with rate limits
// or server errors within a short window and no success between: the
// upstream is down or limits keypool's IP or account, and blaming keys one
// by one would empty the pool (the mistake keypool must not repeat). While
// a storm lasts, requests are answered at once with Retry-After and no key
// is cooled or blocked for it.

// StormPolicy sets when a storm is declared and how long it holds; a zero
// field takes DefaultStorm's.
type StormPolicy struct {
	Keys   int           // distinct failing keys that make a storm
	Window time.Duration // within this time, with no success
	Hold   time.Duration // how long a declared storm holds
}

// DefaultStorm is the policy when nothing is configured.
var DefaultStorm = StormPolicy{Keys: 5, Window: 30 * time.Second, Hold: 10 * time.Second}

func (p StormPolicy) defaults() StormPolicy {
	if p.Keys <= 0 {
		p.Keys = DefaultStorm.Keys
	}
	if p.Window <= 0 {
		p.Window = DefaultStorm.Window
	}
	if p.Hold <= 0 {
		p.Hold = DefaultStorm.Hold
	}
	return p
}

// maxStormHold caps a storm's length, even when the upstream asks for more:
// after it, one request probes the upstream again.
const maxStormHold = time.Minute

// Storm is one provider's recent failures. The zero Storm is calm.
type Storm struct {
	Since int64   // first failure of the current run, unix ms
	Last  int64   // latest failure of the run, unix ms
	Keys  []int64 // distinct keys that failed in the run
	Until int64   // a declared storm holds until then, unix ms; 0 = none
	Rate  bool    // the last failure was a 429 (else 5xx or network)
	// Declared is set once the run has been declared a storm.
	Declared bool
}

// Active reports whether requests should be answered without calling the
// upstream at now.
func (s Storm) Active(now time.Time) bool { return now.UnixMilli() < s.Until }

// Wait is how long a client should wait before retrying at now.
func (s Storm) Wait(now time.Time) time.Duration {
	return max(time.Duration(s.Until-now.UnixMilli())*time.Millisecond, 0)
}

// Fail records a storm-kind failure of key (see Verdict.Storm) and reports
// whether it is part of a storm: then the failure must not be held against
// the key. started is true when this failure declared a new storm, so that
// the cooldowns given to the run's earlier keys can be lifted. hint is the
// upstream's own wait hint, if any.
func (p StormPolicy) Fail(s Storm, key int64, rate bool, hint time.Duration, now time.Time) (next Storm, storm, started bool) {
	p = p.defaults()
	ms := now.UnixMilli()
	// A run is failures with no success between, its first Keys distinct
	// keys within Window; once declared a storm, it lasts while failures
	// keep coming within Window of each other.
	anchor := s.Since
	if s.Declared {
		anchor = s.Last
	}
	if s.Since == 0 || ms-anchor > p.Window.Milliseconds() {
		s = Storm{Since: ms, Until: s.Until}
	}
	s.Last = ms
	if !slices.Contains(s.Keys, key) && len(s.Keys) < p.Keys {
		s.Keys = append(slices.Clone(s.Keys), key)
	}
	s.Rate = rate
	if len(s.Keys) < p.Keys {
		return s, false, false
	}
	// A storm: hold it. The run stays open while failures go on, so the
	// probe after each hold re-declares it at once.
	hold := min(max(p.Hold, hint), maxStormHold)
	started = !s.Declared
	s.Declared = true
	s.Until = max(s.Until, ms+hold.Milliseconds())
	return s, true, started
}

// Succeed ends any storm: the upstream answers again.
func (Storm) Succeed() Storm { return Storm{} }
