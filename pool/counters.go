package pool

import (
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// Counters of the whole isolate, coalesced here and written to D1 in one
// statement per kind every USAGE_FLUSH_SECONDS (the handler decides when).
const (
	keyUsageKey  = "usage"           // []store.KeyUsage
	rollupKey    = "rollup"          // []store.Rollup
	flushedKey   = "usage-flushed"   // unix ms of the last write
	tokenKey     = "tusage"          // []TokenPending
	inflightKey  = "tusage-inflight" // []store.TokenUsage
	rateKey      = "rpm"             // []Rate
	rateWindowMS = 60000
)

func keyUsageFields(u *store.KeyUsage, f *Fields) {
	f.Int(&u.KeyID)
	f.Int(&u.Requests)
	f.Int(&u.Successes)
	f.Int(&u.Failures)
	f.Int(&u.LastUsed)
}

// CountKeyUses adds a request's attempts (at ms) to the key counters.
func (st *State) CountKeyUses(uses []rotation.KeyUse, ms int64) {
	if len(uses) == 0 {
		return
	}
	list := readList(st.s, keyUsageKey, keyUsageFields)
	for _, use := range uses {
		entry(&list, func(u *store.KeyUsage) bool { return u.KeyID == use.Key }, store.KeyUsage{}).Add(use, ms)
	}
	writeList(st.s, keyUsageKey, list, keyUsageFields)
}

// ReturnKeyUsage gives back key counters D1 did not take, to be written
// with the next ones.
func (st *State) ReturnKeyUsage(back []store.KeyUsage) {
	if len(back) == 0 {
		return
	}
	list := readList(st.s, keyUsageKey, keyUsageFields)
	for _, b := range back {
		u := entry(&list, func(u *store.KeyUsage) bool { return u.KeyID == b.KeyID }, store.KeyUsage{KeyID: b.KeyID})
		u.Requests += b.Requests
		u.Successes += b.Successes
		u.Failures += b.Failures
		u.LastUsed = max(u.LastUsed, b.LastUsed)
	}
	writeList(st.s, keyUsageKey, list, keyUsageFields)
}

// TakeKeyUsage returns the key counters and resets them.
func (st *State) TakeKeyUsage() []store.KeyUsage {
	list := readList(st.s, keyUsageKey, keyUsageFields)
	st.s.Delete(keyUsageKey)
	return list
}

func countsFields(c *store.Counts, f *Fields) {
	f.Int(&c.Requests)
	f.Int(&c.Successes)
	f.Int(&c.ClientErrors)
	f.Int(&c.UpstreamErrors)
	f.Int(&c.Rejected)
	f.Int(&c.PromptTokens)
	f.Int(&c.CompletionTokens)
	f.Int(&c.Estimated)
	f.Int(&c.LatencyMS)
	f.Int(&c.CachedTokens)
}

func rollupFields(r *store.Rollup, f *Fields) {
	f.Int(&r.Minute)
	f.Int(&r.TokenID)
	f.Int(&r.KeyID)
	f.String(&r.Provider)
	f.String(&r.Model)
	countsFields(&r.Counts, f)
}

// AddRollup adds r's counts to its group (minute, token, key, provider,
// model) and returns how many groups are pending.
func (st *State) AddRollup(r store.Rollup) int { return st.addRollups([]store.Rollup{r}) }

// ReturnRollups gives back rollups D1 did not take, to be written with
// the next ones.
func (st *State) ReturnRollups(list []store.Rollup) { st.addRollups(list) }

func (st *State) addRollups(rs []store.Rollup) int {
	list := readList(st.s, rollupKey, rollupFields)
	for _, r := range rs {
		group := entry(&list, func(g *store.Rollup) bool {
			return g.Minute == r.Minute && g.TokenID == r.TokenID && g.KeyID == r.KeyID && g.Provider == r.Provider && g.Model == r.Model
		}, store.Rollup{Minute: r.Minute, TokenID: r.TokenID, KeyID: r.KeyID, Provider: r.Provider, Model: r.Model})
		group.Counts.Add(r.Counts)
	}
	writeList(st.s, rollupKey, list, rollupFields)
	return len(list)
}

// TakeRollups returns the pending rollups and resets them.
func (st *State) TakeRollups() []store.Rollup {
	list := readList(st.s, rollupKey, rollupFields)
	st.s.Delete(rollupKey)
	return list
}

// Flushed is when the counters were last taken to be written (unix ms; 0:
// never, or due at once).
func (st *State) Flushed() int64 { return st.readInt(flushedKey) }

// SetFlushed records that the counters were taken at ms.
func (st *State) SetFlushed(ms int64) { st.setInt(flushedKey, ms) }

// FlushSoon makes the counters due at once.
func (st *State) FlushSoon() { st.s.Delete(flushedKey) }

// TokenPending is a client token's use counted here and not yet taken to
// be written: on Day, and on an earlier day (Carried*) when a new day
// began with the old one's use still pending.
type TokenPending struct {
	ID, Day, Requests, Tokens, LastUsed int64

	CarriedDay, CarriedRequests, CarriedTokens int64
}

func tokenPendingFields(p *TokenPending, f *Fields) {
	f.Int(&p.ID)
	f.Int(&p.Day)
	f.Int(&p.Requests)
	f.Int(&p.Tokens)
	f.Int(&p.LastUsed)
	f.Int(&p.CarriedDay)
	f.Int(&p.CarriedRequests)
	f.Int(&p.CarriedTokens)
}

// PendingToken returns token id's pending use (zero when none).
func (st *State) PendingToken(id int64) TokenPending {
	for _, p := range readList(st.s, tokenKey, tokenPendingFields) {
		if p.ID == id {
			return p
		}
	}
	return TokenPending{}
}

// CountToken adds requests and tokens used on day (at unix ms) to token
// id's pending use.
func (st *State) CountToken(id, day, requests, tokens, at int64) {
	list := readList(st.s, tokenKey, tokenPendingFields)
	p := entry(&list, func(p *TokenPending) bool { return p.ID == id }, TokenPending{ID: id, Day: day})
	if p.Day != day {
		// A new day began with use of the old one still pending: it is
		// kept apart and written under its own day, so that it counts in
		// the totals but not against the new day's quotas.
		p.CarriedDay = max(p.CarriedDay, p.Day)
		p.CarriedRequests += p.Requests
		p.CarriedTokens += p.Tokens
		p.Day, p.Requests, p.Tokens = day, 0, 0
	}
	p.Requests += requests
	p.Tokens += tokens
	p.LastUsed = max(p.LastUsed, at)
	writeList(st.s, tokenKey, list, tokenPendingFields)
}

// TakeTokenUsage returns the pending token use and resets it. The use
// stays counted as in flight until SettleTokenUsage says it is in D1:
// until then the token's cached record does not include it, and a request
// arriving meanwhile must still see it.
func (st *State) TakeTokenUsage() []store.TokenUsage {
	pending := readList(st.s, tokenKey, tokenPendingFields)
	st.s.Delete(tokenKey)
	var out []store.TokenUsage
	for _, p := range pending {
		if p.CarriedRequests > 0 || p.CarriedTokens > 0 {
			out = append(out, store.TokenUsage{ID: p.ID, Day: p.CarriedDay, Requests: p.CarriedRequests,
				Tokens: p.CarriedTokens, LastUsed: p.LastUsed})
		}
		out = append(out, store.TokenUsage{ID: p.ID, Day: p.Day, Requests: p.Requests, Tokens: p.Tokens, LastUsed: p.LastUsed})
	}
	st.addInflight(out, 1)
	return out
}

// SettleTokenUsage ends the flight of use taken by TakeTokenUsage:
// written (the tokens' cached records count it from now on, as D1 does)
// or not (it goes back to pending, to be written next time).
func (st *State) SettleTokenUsage(list []store.TokenUsage, written bool) {
	st.addInflight(list, -1)
	for _, u := range list {
		if written {
			st.countCachedToken(u)
		} else {
			st.CountToken(u.ID, u.Day, u.Requests, u.Tokens, u.LastUsed)
		}
	}
}

func inflightFields(u *store.TokenUsage, f *Fields) {
	f.Int(&u.ID)
	f.Int(&u.Day)
	f.Int(&u.Requests)
	f.Int(&u.Tokens)
}

// addInflight adds (sign 1) or removes (-1) use from the in-flight counts.
func (st *State) addInflight(list []store.TokenUsage, sign int64) {
	if len(list) == 0 {
		return
	}
	all := readList(st.s, inflightKey, inflightFields)
	for _, u := range list {
		f := entry(&all, func(f *store.TokenUsage) bool { return f.ID == u.ID && f.Day == u.Day }, store.TokenUsage{ID: u.ID, Day: u.Day})
		f.Requests += sign * u.Requests
		f.Tokens += sign * u.Tokens
	}
	kept := all[:0]
	for _, u := range all {
		if u.Requests > 0 || u.Tokens > 0 {
			kept = append(kept, u)
		}
	}
	writeList(st.s, inflightKey, kept, inflightFields)
}

// Inflight returns token id's use in flight, per day.
func (st *State) Inflight(id int64) []store.TokenUsage {
	var out []store.TokenUsage
	for _, u := range readList(st.s, inflightKey, inflightFields) {
		if u.ID == id {
			out = append(out, u)
		}
	}
	return out
}

// Rate is the times (unix ms) of a token's requests in the last minute.
type Rate struct {
	ID    int64
	Times []int64
}

func rateFields(r *Rate, f *Fields) {
	f.Int(&r.ID)
	f.Ints(&r.Times)
}

// RecentRequests returns the times of token id's requests in the minute
// before ms, oldest first.
func (st *State) RecentRequests(id, ms int64) []int64 {
	for _, r := range readList(st.s, rateKey, rateFields) {
		if r.ID == id {
			return within(r.Times, ms)
		}
	}
	return nil
}

// RecordRequest adds a request of token id at ms; times older than a
// minute are dropped, for every token.
func (st *State) RecordRequest(id, ms int64) {
	list := readList(st.s, rateKey, rateFields)
	kept, found := list[:0], false
	for _, r := range list {
		r.Times = within(r.Times, ms)
		if r.ID == id {
			r.Times, found = append(r.Times, ms), true
		}
		if len(r.Times) > 0 {
			kept = append(kept, r)
		}
	}
	if !found {
		kept = append(kept, Rate{ID: id, Times: []int64{ms}})
	}
	writeList(st.s, rateKey, kept, rateFields)
}

func within(times []int64, ms int64) []int64 {
	var out []int64
	for _, t := range times {
		if ms-t < rateWindowMS {
			out = append(out, t)
		}
	}
	return out
}
