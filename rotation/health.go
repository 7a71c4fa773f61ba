package rotation

import (
	"time"
)

// Key statuses, as the store keeps them.
const (
	KeyActive    = "active"
	KeyDisabled  = "disabled"
	KeyBlocked   = "blocked"
	KeyExhausted = "exhausted"
)

// CheckOutcome is what a health check found out about a key.
type CheckOutcome string

const (
	CheckOK           CheckOutcome = "ok"           // the key works (and has credit, if Funded)
	CheckInvalid      CheckOutcome = "invalid"      // the credential is rejected
	CheckExhausted    CheckOutcome = "exhausted"    // no balance or quota left
	CheckLimited      CheckOutcome = "limited"      // valid, but rate limited right now
	CheckError        CheckOutcome = "error"        // the upstream failed; nothing learnt
	CheckInconclusive CheckOutcome = "inconclusive" // an answer that says nothing about the key
)

// CheckResult is one check of one key.
type CheckResult struct {
	Outcome CheckOutcome
	// Funded: the check proves the key can spend (a positive balance, or a
	// paid call that succeeded), so an exhausted key may come back. A
	// models list only proves the key is valid.
	Funded     bool
	HasBalance bool
	Balance    float64
	Status     int    // upstream HTTP status; 0 for none
	Detail     string // short: balance fields, or a masked error excerpt
}

// CheckOf classifies a check call's answer with the same rules as the
// proxy (a check is a request like any other). funded says whether a
// success proves credit (a completion call) or only validity (a list).
func (p Policy) CheckOf(a Answer, funded bool, now time.Time) CheckResult {
	r := CheckResult{Status: a.Status}
	v := p.Classify(a, now)
	switch v.Action {
	case Return:
		// A check sends only keypool's own request: a 401 or 403 keypool
		// cannot read is about the key.
		r.Outcome = CheckInconclusive
		if v.Suspect {
			r.Outcome = CheckInvalid
		}
	case Serve:
		r.Outcome, r.Funded = CheckOK, funded
	case BlockKey:
		r.Outcome = CheckInvalid
	case ExhaustKey:
		r.Outcome = CheckExhausted
	case Cool:
		r.Outcome = CheckLimited
	case Retry:
		r.Outcome = CheckError
	default:
		r.Outcome = CheckInconclusive
	}
	return r
}

// WithBalance applies a known balance: none left means exhausted, some
// means funded.
func (r CheckResult) WithBalance(balance float64) CheckResult {
	r.HasBalance, r.Balance = true, balance
	if r.Outcome == CheckOK {
		if balance <= 0 {
			r.Outcome, r.Funded = CheckExhausted, false
		} else {
			r.Funded = true
		}
	}
	return r
}

// HealthPolicy sets how often keys are checked.
type HealthPolicy struct {
	// Interval between checks of a healthy key (default 6 h).
	Interval time.Duration
	// ProbeBase is the first wait before probing a blocked or exhausted
	// key again (default 10 min); it doubles with each failed probe up to
	// ProbeMax (default 24 h). A dead key is not given up for good: keys
	// that come back (a revoked key restored, a top-up) return by
	// themselves.
	ProbeBase time.Duration
	ProbeMax  time.Duration
	// ErrorRetry is the wait after a check that learnt nothing (default 15 min).
	ErrorRetry time.Duration
}

func (p HealthPolicy) defaults() HealthPolicy {
	if p.Interval <= 0 {
		p.Interval = 6 * time.Hour
	}
	if p.ProbeBase <= 0 {
		p.ProbeBase = 10 * time.Minute
	}
	if p.ProbeMax <= 0 {
		p.ProbeMax = 24 * time.Hour
	}
	if p.ProbeMax < p.ProbeBase {
		p.ProbeMax = p.ProbeBase
	}
	if p.ErrorRetry <= 0 {
		p.ErrorRetry = 15 * time.Minute
	}
	return p
}

// Transition is what a check does to a key.
type Transition struct {
	Status string    // the key's new status
	Fails  int64     // failed recovery probes in a row
	Next   time.Time // when the key is due again
	Reason string    // for the key's history when Status changed
}

// After decides a key's state after a check. A disabled key is the
// admin's to change and stays as it is.
func (p HealthPolicy) After(status string, fails int64, r CheckResult, now time.Time) Transition {
	p = p.defaults()
	probe := func(fails int64) Transition {
		return Transition{Status: status, Fails: fails, Next: now.Add(backoff(p.ProbeBase, p.ProbeMax, fails-1))}
	}
	if status == KeyDisabled {
		return Transition{Status: status, Fails: fails, Next: now.Add(p.Interval)}
	}
	switch r.Outcome {
	case CheckInvalid:
		if status == KeyBlocked {
			return probe(fails + 1)
		}
		t := probe(1)
		t.Status, t.Reason = KeyBlocked, "check: credential rejected"
		return t
	case CheckExhausted:
		switch status {
		case KeyExhausted:
			return probe(fails + 1)
		case KeyBlocked:
			// The credential works again, but has no money: a step back up.
			t := probe(1)
			t.Status, t.Reason = KeyExhausted, "check: credential accepted again, but no balance"
			return t
		}
		t := probe(1)
		t.Status, t.Reason = KeyExhausted, "check: no balance or quota left"
		return t
	case CheckOK, CheckLimited:
		// A 429 proves the credential is accepted: it is valid.
		switch {
		case status == KeyBlocked && r.Outcome == CheckOK && !r.Funded && r.HasBalance:
			t := probe(1)
			t.Status, t.Reason = KeyExhausted, "check: credential accepted again, but no balance"
			return t
		case status == KeyBlocked:
			return Transition{Status: KeyActive, Next: now.Add(p.Interval), Reason: "check: credential accepted again"}
		case status == KeyExhausted && r.Funded:
			return Transition{Status: KeyActive, Next: now.Add(p.Interval), Reason: "check: balance available again"}
		case status == KeyExhausted:
			// Valid, but nothing proves there is money: probe again later.
			return probe(fails + 1)
		}
		return Transition{Status: KeyActive, Next: now.Add(p.Interval)}
	}
	// Error or inconclusive: nothing learnt, look again soon.
	return Transition{Status: status, Fails: fails, Next: now.Add(p.ErrorRetry)}
}
