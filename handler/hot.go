package handler

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// Shared is memory every Go instance of the isolate sees (a JS Map on
// Workers). The entry module starts an instance per concurrent request, so
// a cache in one instance's Go memory would start cold in each new one.
type Shared interface {
	Get(key string) (string, bool)
	Set(key, value string)
	Delete(key string)
	Clear()
}

// localShared is Shared for one process (tests, and when no JS is there).
type localShared struct {
	mu sync.Mutex
	m  map[string]string
}

func (l *localShared) Get(k string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.m[k]
	return v, ok
}

func (l *localShared) Set(k, v string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[k] = v
}

func (l *localShared) Delete(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, k)
}

func (l *localShared) Clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.m)
}

// The proxy path's state lives in Shared, so that a warm request reads D1
// rarely and writes to it at most every few seconds, whichever Go instance
// serves it:
//   - candidate keys per provider and model, read through with a short TTL
//     and updated at once by this isolate's own outcomes and admin
//     changes; other isolates see changes within the TTL;
//   - usage counters of the whole isolate, coalesced and written in one
//     statement every USAGE_FLUSH_SECONDS.
const (
	usageKey   = "usage"
	flushedKey = "usage-flushed"
)

// candKey names a cached candidate list; free lists include exhausted keys.
func candKey(prov, model string, free bool) string {
	k := "cands\x00" + prov + "\x00" + model
	if free {
		k += "\x00free"
	}
	return k
}

// encodeCands and decodeCands keep a candidate list in Shared.
func encodeCands(read int64, list []rotation.Candidate) string {
	var b jsonout.Builder
	b.Array().Int(read)
	for _, c := range list {
		b.Int(c.ID).Int(c.LastUsed).Int(c.Streak).Int(c.CoolEnd).String(c.Secret)
	}
	return string(b.EndArray().Bytes())
}

func decodeCands(s string) (read int64, list []rotation.Candidate) {
	a := gjson.Parse(s).Array()
	if len(a) == 0 {
		return 0, nil
	}
	read = a[0].Int()
	for i := 1; i+4 < len(a); i += 5 {
		list = append(list, rotation.Candidate{ID: a[i].Int(), LastUsed: a[i+1].Int(),
			Streak: a[i+2].Int(), CoolEnd: a[i+3].Int(), Secret: a[i+4].String()})
	}
	return read, list
}

// decoded remembers, per Shared key, the last string this Go instance
// read or wrote there and what it decodes to: a request that finds the
// string seen last (the usual case while one instance serves a client)
// skips the JSON parse. Values are copied out, never shared; a string is
// its own validation, so a change by another instance is always seen.
var decoded = struct {
	sync.Mutex
	cands map[string]candsMemo
	usage usageMemo
}{cands: map[string]candsMemo{}}

type candsMemo struct {
	raw  string
	read int64
	list []rotation.Candidate
}

type usageMemo struct {
	raw  string
	list []store.Usage
}

// maxCandsMemo bounds the memo: clients choose model names.
const maxCandsMemo = 256

// readCands decodes the candidate list s found under key k.
func readCands(k, s string) (read int64, list []rotation.Candidate) {
	decoded.Lock()
	defer decoded.Unlock()
	if m, ok := decoded.cands[k]; ok && m.raw == s {
		return m.read, slices.Clone(m.list)
	}
	read, list = decodeCands(s)
	rememberCands(k, s, read, list)
	return read, list
}

// writeCands encodes a candidate list for key k.
func writeCands(k string, read int64, list []rotation.Candidate) string {
	s := encodeCands(read, list)
	decoded.Lock()
	defer decoded.Unlock()
	rememberCands(k, s, read, list)
	return s
}

func rememberCands(k, s string, read int64, list []rotation.Candidate) {
	if len(decoded.cands) >= maxCandsMemo {
		clear(decoded.cands)
	}
	decoded.cands[k] = candsMemo{raw: s, read: read, list: slices.Clone(list)}
}

// readUsage and writeUsage are decodeUsage and encodeUsage through the memo.
func readUsage(s string) map[int64]*store.Usage {
	decoded.Lock()
	defer decoded.Unlock()
	if decoded.usage.raw != s || s == "" {
		m := decodeUsage(s)
		decoded.usage = usageMemo{raw: s, list: usageList(m)}
		return m
	}
	m := make(map[int64]*store.Usage, len(decoded.usage.list))
	for _, u := range decoded.usage.list {
		c := u // the caller changes the counters: its own copy
		m[c.KeyID] = &c
	}
	return m
}

func writeUsage(m map[int64]*store.Usage) string {
	s := encodeUsage(m)
	decoded.Lock()
	defer decoded.Unlock()
	decoded.usage = usageMemo{raw: s, list: usageList(m)}
	return s
}

func usageList(m map[int64]*store.Usage) []store.Usage {
	list := make([]store.Usage, 0, len(m))
	for _, u := range m {
		list = append(list, *u)
	}
	return list
}

// candidates returns the keys that may serve provider/model, from the
// cache when it is younger than CACHE_SECONDS, else from the store (one
// query).
func (h *Handler) candidates(ctx context.Context, keys *store.Keys, prov, model string, now time.Time, free bool) ([]rotation.Candidate, error) {
	ttl := time.Duration(h.intVar("CACHE_SECONDS", 5, 0, 300)) * time.Second
	k := candKey(prov, model, free)
	if v, ok := h.d.Shared.Get(k); ok && ttl > 0 {
		if read, list := readCands(k, v); now.Sub(time.UnixMilli(read)) < ttl && len(list) > 0 {
			return list, nil
		}
	}
	list, err := keys.Candidates(ctx, prov, model, now.UnixMilli(), candidateLimit, free)
	if err != nil || len(list) == 0 || ttl == 0 {
		return list, err // an empty pool is not cached: keys may be added any time
	}
	h.d.Shared.Set(k, writeCands(k, now.UnixMilli(), list))
	return list, nil
}

// observe applies one request's outcomes to the cached candidates (a
// cooled key leaves the model's list, a blocked one every list of the
// provider, a used one goes to the back) and to the usage counters.
func (h *Handler) observe(prov string, outcomes []store.Outcome, now time.Time) {
	ms := now.UnixMilli()
	v, _ := h.d.Shared.Get(usageKey)
	usage := readUsage(v)
	for _, o := range outcomes {
		u := usage[o.KeyID]
		if u == nil {
			u = &store.Usage{}
			usage[o.KeyID] = u
		}
		u.Add(o, ms)
	}
	h.d.Shared.Set(usageKey, writeUsage(usage))
	for _, o := range outcomes {
		v := o.Verdict
		switch {
		case o.Blameless:
		case v.Action == rotation.BlockKey || v.Action == rotation.ExhaustKey:
			// The other models' lists of this provider cannot be listed
			// cheaply in Shared; drop them all, they are read again.
			h.clearCands()
		case v.Action == rotation.BlockModel || (v.Action == rotation.Cool || v.Action == rotation.Retry) && v.Cooldown > 0:
			h.updateCands(prov, o.Model, func(c *rotation.Candidate) bool { return c.ID != o.KeyID })
		case v.Action == rotation.Retry:
			// Counted in the streak, so that the next failure rests it.
			h.updateCands(prov, o.Model, func(c *rotation.Candidate) bool {
				if c.ID == o.KeyID {
					c.Streak, c.CoolEnd = c.Streak+1, ms
				}
				return true
			})
		default:
			h.updateCands(prov, o.Model, func(c *rotation.Candidate) bool {
				if c.ID == o.KeyID {
					c.LastUsed = ms
					if v.Action == rotation.Serve {
						c.Streak = 0
					}
				}
				return true
			})
		}
	}
}

// updateCands rewrites the cached list of provider/model: keep reports
// whether a candidate stays (and may change it); the list is kept least
// recently used first.
func (h *Handler) updateCands(prov, model string, keep func(*rotation.Candidate) bool) {
	for _, free := range []bool{false, true} {
		h.updateCandList(candKey(prov, model, free), keep)
	}
}

func (h *Handler) updateCandList(k string, keep func(*rotation.Candidate) bool) {
	v, ok := h.d.Shared.Get(k)
	if !ok {
		return
	}
	read, list := readCands(k, v)
	out := list[:0]
	for i := range list {
		if keep(&list[i]) {
			out = append(out, list[i])
		}
	}
	if len(out) == 0 {
		h.d.Shared.Delete(k)
		return
	}
	// slices, not sort.SliceStable: no reflection on the hot path.
	slices.SortStableFunc(out, func(a, b rotation.Candidate) int { return cmp.Compare(a.LastUsed, b.LastUsed) })
	h.d.Shared.Set(k, writeCands(k, read, out))
}

// takeKeyUsage returns the isolate's coalesced key counters and resets
// them.
func (h *Handler) takeKeyUsage() []store.Usage {
	v, ok := h.d.Shared.Get(usageKey)
	if !ok {
		return nil
	}
	h.d.Shared.Delete(usageKey)
	usage := decodeUsage(v)
	list := make([]store.Usage, 0, len(usage))
	for _, u := range usage {
		list = append(list, *u)
	}
	return list
}

// encodeUsage and decodeUsage keep the counters in Shared as
// [id, requests, successes, failures, last used, ...].
func encodeUsage(m map[int64]*store.Usage) string {
	var b jsonout.Builder
	b.Array()
	for _, u := range m {
		b.Int(u.KeyID).Int(u.Requests).Int(u.Successes).Int(u.Failures).Int(u.LastUsed)
	}
	return string(b.EndArray().Bytes())
}

func decodeUsage(s string) map[int64]*store.Usage {
	m := map[int64]*store.Usage{}
	a := gjson.Parse(s).Array()
	for i := 0; i+4 < len(a); i += 5 {
		m[a[i].Int()] = &store.Usage{KeyID: a[i].Int(), Requests: a[i+1].Int(), Successes: a[i+2].Int(),
			Failures: a[i+3].Int(), LastUsed: a[i+4].Int()}
	}
	return m
}

// invalidate drops the isolate's cache after an admin change.
func (h *Handler) invalidate() { h.clearCands() }

// clearCands drops every cached candidate list and the settings, keeping
// the counters and storm states.
func (h *Handler) clearCands() {
	keep := []string{usageKey, flushedKey, tokenUsageKey, tokenInflightKey, rateKey, rollupKey}
	for _, p := range provider.Names() {
		keep = append(keep, stormKey(p))
	}
	saved := map[string]string{}
	for _, k := range keep {
		if v, ok := h.d.Shared.Get(k); ok {
			saved[k] = v
		}
	}
	h.d.Shared.Clear()
	for k, v := range saved {
		h.d.Shared.Set(k, v)
	}
}

func stormKey(prov string) string { return "storm\x00" + prov }

// storm returns the isolate's storm state of prov. Each isolate judges
// storms by what it sees itself: a storm is about the upstream, which
// every isolate meets alike, so none needs another's view.
func (h *Handler) storm(prov string) rotation.Storm {
	v, ok := h.d.Shared.Get(stormKey(prov))
	if !ok {
		return rotation.Storm{}
	}
	a := gjson.Parse(v).Array()
	if len(a) < 5 {
		return rotation.Storm{}
	}
	s := rotation.Storm{Since: a[0].Int(), Last: a[1].Int(), Until: a[2].Int(), Rate: a[3].Int() == 1, Declared: a[4].Int() == 1}
	for _, x := range a[5:] {
		s.Keys = append(s.Keys, x.Int())
	}
	return s
}

func (h *Handler) setStorm(prov string, s rotation.Storm) {
	if s.Since == 0 && s.Until == 0 {
		h.d.Shared.Delete(stormKey(prov))
		return
	}
	flag := func(b bool) int64 {
		if b {
			return 1
		}
		return 0
	}
	var b jsonout.Builder
	b.Array().Int(s.Since).Int(s.Last).Int(s.Until).Int(flag(s.Rate)).Int(flag(s.Declared))
	for _, k := range s.Keys {
		b.Int(k)
	}
	h.d.Shared.Set(stormKey(prov), string(b.EndArray().Bytes()))
}
