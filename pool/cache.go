package pool

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// The read-through cache: what keypool reads from D1 on the request path
// is kept with the time it was read and reused for a TTL (0: never). A
// cache record is the read time in Unix ms, a NUL, the payload.

// Load reads a value afresh: its payload, whether to keep it (a record
// too large for the cache is not), or an error (nothing is kept).
type Load func() (payload string, keep bool, err error)

// StaleFor is how long a cached record may still be served when D1 fails
// to give a fresh one (store.Unavailable): warm requests go on being
// served through an outage, on what the isolate knew when it began.
const StaleFor = time.Hour

// ReadThrough returns the payload cached under name when it is younger
// than ttl at now (and fresh is false), with hit true; otherwise load's,
// which replaces the record (or, when load says not to keep it, drops the
// old one). When load fails because D1 is unavailable, a record younger
// than StaleFor is returned instead, with hit true.
func (st *State) ReadThrough(name string, ttl time.Duration, now time.Time, fresh bool, load Load) (payload string, hit bool, err error) {
	key := CachePrefix + name
	cached, age, found := "", time.Duration(0), false
	if ttl > 0 {
		if v, ok := st.s.Get(key); ok {
			at, p, ok := strings.Cut(v, "\x00")
			if ms, perr := strconv.ParseInt(at, 10, 64); ok && perr == nil {
				cached, age, found = p, now.Sub(time.UnixMilli(ms)), true
			}
		}
	}
	if found && !fresh && age < ttl {
		return cached, true, nil
	}
	payload, keep, err := load()
	switch {
	case err != nil && found && age < StaleFor && store.Unavailable(err):
		return cached, true, nil
	case err != nil:
		return "", false, err
	case ttl > 0 && keep:
		st.s.Set(key, strconv.FormatInt(now.UnixMilli(), 10)+"\x00"+payload)
	case ttl > 0:
		st.s.Delete(key)
	}
	return payload, false, nil
}

// Forget drops the cached record name.
func (st *State) Forget(name string) { st.s.Delete(CachePrefix + name) }

// Candidates are the keys that may serve a provider and model, as read
// from D1 at Read (unix ms), least recently used first.
type Candidates struct {
	Read int64
	List []rotation.Candidate
}

func candidateFields(c *rotation.Candidate, f *Fields) {
	f.Int(&c.ID)
	f.Int(&c.LastUsed)
	f.Int(&c.Streak)
	f.Int(&c.CoolEnd)
	f.String(&c.Secret)
}

func candidatesFields(c *Candidates, f *Fields) {
	f.Int(&c.Read)
	records(f, &c.List, candidateFields)
}

// candKey names a cached candidate list; free lists include exhausted keys.
func candKey(prov, model string, free bool) string {
	k := CachePrefix + "cands\x00" + prov + "\x00" + model
	if free {
		k += "\x00free"
	}
	return k
}

// Candidates returns the cached candidates of prov/model.
func (st *State) Candidates(prov, model string, free bool) (Candidates, bool) {
	v, ok := st.s.Get(candKey(prov, model, free))
	if !ok {
		return Candidates{}, false
	}
	return decode(v, candidatesFields)
}

// candidatesExpiredKey holds when every cached candidate list was last
// made stale (ExpireCandidates), as unix ms.
const candidatesExpiredKey = "candidates-expired"

// ExpireCandidates makes every cached candidate list stale at ms (a key
// left the lists of models this isolate cannot name, or cooldowns were
// lifted): each is read again before it serves, but stays to be served
// through a D1 outage, as a list past its TTL does. Dropping them would
// leave a warm isolate with nothing to serve on while D1 is down.
func (st *State) ExpireCandidates(ms int64) { st.setInt(candidatesExpiredKey, ms) }

// Fresh reports whether c was read after the last ExpireCandidates.
func (st *State) Fresh(c Candidates) bool { return c.Read > st.readInt(candidatesExpiredKey) }

// SetCandidates caches the candidates of prov/model.
func (st *State) SetCandidates(prov, model string, free bool, c Candidates) {
	st.s.Set(candKey(prov, model, free), encode(&c, candidatesFields))
}

// EditCandidates rewrites both cached lists of prov/model: keep reports
// whether a candidate stays (and may change it); a list is kept least
// recently used first, and dropped when none stays.
func (st *State) EditCandidates(prov, model string, keep func(*rotation.Candidate) bool) {
	for _, free := range []bool{false, true} {
		c, ok := st.Candidates(prov, model, free)
		if !ok {
			continue
		}
		out := c.List[:0]
		for i := range c.List {
			if keep(&c.List[i]) {
				out = append(out, c.List[i])
			}
		}
		if len(out) == 0 {
			st.s.Delete(candKey(prov, model, free))
			continue
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].LastUsed < out[j].LastUsed })
		c.List = out
		st.SetCandidates(prov, model, free, c)
	}
}

// A client token is cached as a record of the fields the proxy reads.
func tokenFields(t *store.Token, f *Fields) {
	f.Int(&t.ID)
	f.String(&t.Name) // for the AI Gateway's metadata
	f.Bool(&t.Disabled)
	f.Int(&t.ExpiresAt)
	f.Strings(&t.Providers)
	f.Strings(&t.Models)
	f.String(&t.Endpoints)
	f.Int(&t.RPM)
	f.Int(&t.RequestsDay)
	f.Int(&t.RequestsTotal)
	f.Int(&t.TokensDay)
	f.Int(&t.TokensTotal)
	f.Int(&t.UsedRequests)
	f.Int(&t.UsedTokens)
	f.Int(&t.Day)
	f.Int(&t.DayRequests)
	f.Int(&t.DayTokens)
}

// EncodeToken and DecodeToken are a token's cache payload.
func EncodeToken(t store.Token) string { return encode(&t, tokenFields) }

func DecodeToken(s string) (store.Token, bool) { return decode(s, tokenFields) }

// TokenName is the cache name of the token with hash.
func TokenName(hash string) string { return "token\x00" + hash }

func tokenIDKey(id int64) string { return CachePrefix + "tokenid\x00" + strconv.FormatInt(id, 10) }

// IndexToken remembers which hash token id has, so that the use written
// for it can be added to its record (countCachedToken). Written after the record, so
// that the cache's bound drops the record first.
func (st *State) IndexToken(id int64, hash string) { st.s.Set(tokenIDKey(id), hash) }

// countCachedToken adds use D1 has just taken to the cached record of
// its token, the way store.Tokens.AddUsage adds it to the row, and keeps
// the record's read time: the record stays as true as the row without a
// read, and it is there to serve through a D1 outage (dropping it would
// send the next request to D1).
func (st *State) countCachedToken(u store.TokenUsage) {
	hash, ok := st.s.Get(tokenIDKey(u.ID))
	if !ok {
		return
	}
	key := CachePrefix + TokenName(hash)
	v, ok := st.s.Get(key)
	at, payload, cut := strings.Cut(v, "\x00")
	tok, decoded := DecodeToken(payload)
	if !ok || !cut || !decoded || tok.ID != u.ID {
		return
	}
	tok.UsedRequests += u.Requests
	tok.UsedTokens += u.Tokens
	switch {
	case tok.Day == u.Day:
		tok.DayRequests += u.Requests
		tok.DayTokens += u.Tokens
	case u.Day > tok.Day:
		tok.Day, tok.DayRequests, tok.DayTokens = u.Day, u.Requests, u.Tokens
	}
	st.s.Set(key, at+"\x00"+EncodeToken(tok))
}
