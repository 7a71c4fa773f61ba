// Package rotation holds keypool's decisions, free of I/O: which key serves
// a request next, and what an upstream answer says about the key that got it.
// The handler feeds it facts (candidates, statuses, headers, the clock) and
// the store persists what it decides.
package rotation

// Candidate is a key that may serve the current request: active, and
// neither cooling nor blocked for the requested model.
type Candidate struct {
	ID       int64
	Secret   string
	LastUsed int64 // unix ms; 0 = never
	// Streak counts this key-model's failures in a row (429s, 5xx) and
	// CoolEnd is when its last cooldown ended (unix ms); both 0 when it
	// has none. They grow the next cooldown (see Policy.backoff).
	Streak  int64
	CoolEnd int64
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
