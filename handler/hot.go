package handler

import (
	"context"
	"slices"
	"sort"
	"strings"
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
//
// Entries whose key begins with CachePrefix are a cache, keyed in part by
// what clients send (models, token hashes): an implementation keeps at
// most CacheEntries of them and CacheBytes of their keys and values,
// dropping the oldest written first. The other entries are state the handler bounds itself
// (counters per key, token and provider) and are never dropped.
type Shared interface {
	Get(key string) (string, bool)
	Set(key, value string)
	Delete(key string)
	Clear()
}

// The cache's bounds (see Shared).
const (
	CachePrefix  = "cands\x00"
	CacheEntries = 1024
	CacheBytes   = 4 << 20
)

// localShared is Shared for one process (tests, and when no JS is there).
type localShared struct {
	mu         sync.Mutex
	m          map[string]string
	order      []string // cache keys, oldest written first
	cacheBytes int
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
	if !strings.HasPrefix(k, CachePrefix) {
		l.m[k] = v
		return
	}
	l.forget(k)
	l.m[k] = v
	l.order = append(l.order, k)
	l.cacheBytes += len(k) + len(v)
	for len(l.order) > CacheEntries || l.cacheBytes > CacheBytes {
		l.forget(l.order[0])
	}
}

// forget drops a cache entry and its accounting.
func (l *localShared) forget(k string) {
	v, ok := l.m[k]
	if !ok {
		return
	}
	delete(l.m, k)
	l.cacheBytes -= len(k) + len(v)
	if i := slices.Index(l.order, k); i >= 0 {
		l.order = slices.Delete(l.order, i, i+1)
	}
}

func (l *localShared) Delete(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.HasPrefix(k, CachePrefix) {
		l.forget(k)
		return
	}
	delete(l.m, k)
}

func (l *localShared) Clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.m)
	l.order, l.cacheBytes = nil, 0
}

// CacheSize reports the cache's entries and bytes (debug stats).
func (l *localShared) CacheSize() (entries, bytes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order), l.cacheBytes
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
	k := CachePrefix + prov + "\x00" + model
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

// candidates returns the keys that may serve provider/model, from the
// cache when it is younger than CACHE_SECONDS, else from the store (one
// query).
func (h *Handler) candidates(ctx context.Context, keys *store.Keys, prov, model string, now time.Time, free bool) ([]rotation.Candidate, error) {
	ttl := h.cfg().CacheTTL
	if v, ok := h.d.Shared.Get(candKey(prov, model, free)); ok && ttl > 0 {
		if read, list := decodeCands(v); now.Sub(time.UnixMilli(read)) < ttl && len(list) > 0 {
			return list, nil
		}
	}
	list, err := keys.Candidates(ctx, prov, model, now.UnixMilli(), candidateLimit, free)
	list = h.withoutHeldOut(list, prov, model, now.UnixMilli())
	if err != nil || len(list) == 0 || ttl == 0 {
		return list, err // an empty pool is not cached: keys may be added any time
	}
	h.d.Shared.Set(candKey(prov, model, free), encodeCands(now.UnixMilli(), list))
	return list, nil
}

// countKeyUses adds a request's attempts to the isolate's key counters.
func (h *Handler) countKeyUses(uses []rotation.KeyUse, now time.Time) {
	if len(uses) == 0 {
		return
	}
	ms := now.UnixMilli()
	v, _ := h.d.Shared.Get(usageKey)
	usage := decodeUsage(v)
	for _, use := range uses {
		u := usage[use.Key]
		if u == nil {
			u = &store.Usage{}
			usage[use.Key] = u
		}
		u.Add(use, ms)
	}
	h.d.Shared.Set(usageKey, encodeUsage(usage))
}

// applyCache applies the cache updates rotation decided to the cached
// candidates of prov (a list is kept least recently used first).
func (h *Handler) applyCache(prov string, updates []rotation.CacheUpdate, now time.Time) {
	ms := now.UnixMilli()
	for _, u := range updates {
		switch u.Op {
		case rotation.CacheForgetAll:
			h.clearCands()
		case rotation.CacheRemove:
			h.updateCands(prov, u.Model, func(c *rotation.Candidate) bool { return c.ID != u.Key })
		case rotation.CacheFailed:
			h.updateCands(prov, u.Model, func(c *rotation.Candidate) bool {
				if c.ID == u.Key {
					c.Streak, c.CoolEnd = c.Streak+1, ms
				}
				return true
			})
		case rotation.CacheUsed, rotation.CacheServed:
			h.updateCands(prov, u.Model, func(c *rotation.Candidate) bool {
				if c.ID == u.Key {
					c.LastUsed = ms
					if u.Op == rotation.CacheServed {
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
	read, list := decodeCands(v)
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
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastUsed < out[j].LastUsed })
	h.d.Shared.Set(k, encodeCands(read, out))
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
func (h *Handler) invalidate() {
	h.clearCands()
	h.d.Shared.Delete(heldOutKey)
}

// A key this isolate took out of rotation (blocked, exhausted, cooling,
// blocked for a model) is written to D1 after the response, in waitUntil.
// A candidate read from D1 before that write lands would bring the key
// back, and the next request would try it again; so the isolate holds
// such keys out of what it reads for heldOutFor. An admin change in this
// isolate (invalidate) ends the hold.
const (
	heldOutKey  = "held-out"
	heldOutFor  = 10 * time.Second
	heldOutKeep = 256 // entries; the oldest go first
)

// holdOutChanged holds out the keys changes take out of rotation (a
// storm's lift lets its keys back at once).
func (h *Handler) holdOutChanged(prov string, changes []rotation.Change, ms int64) {
	lifted := map[int64]bool{}
	for _, c := range changes {
		if c.Kind == rotation.ChangeLiftCooldowns {
			for _, k := range c.Keys {
				lifted[k] = true
			}
		}
	}
	for _, c := range changes {
		switch {
		case lifted[c.Key]:
		case c.Kind == rotation.ChangeBlockKey || c.Kind == rotation.ChangeExhaustKey:
			h.holdOut(prov, c.Key, "", ms, ms+heldOutFor.Milliseconds())
		case c.Kind == rotation.ChangeBlockModel:
			h.holdOut(prov, c.Key, c.Model, ms, ms+heldOutFor.Milliseconds())
		case c.Kind == rotation.ChangeCool && c.Until > ms:
			// A cooldown shorter than the hold ends the hold with it.
			h.holdOut(prov, c.Key, c.Model, ms, min(c.Until, ms+heldOutFor.Milliseconds()))
		}
	}
}

// holdOut records that key (for model, or every model when "") of prov
// is out of rotation until the unix ms until.
func (h *Handler) holdOut(prov string, key int64, model string, ms, until int64) {
	v, _ := h.d.Shared.Get(heldOutKey)
	var b jsonout.Builder
	b.Array()
	entries := gjson.Parse(v).Array()
	for i := max(0, len(entries)-heldOutKeep+1); i < len(entries); i++ {
		e := entries[i].Array()
		if len(e) == 4 && e[3].Int() > ms {
			b.Array().String(e[0].String()).Int(e[1].Int()).String(e[2].String()).Int(e[3].Int()).EndArray()
		}
	}
	b.Array().String(prov).Int(key).String(model).Int(until).EndArray()
	h.d.Shared.Set(heldOutKey, string(b.EndArray().Bytes()))
}

// withoutHeldOut drops from a list read from D1 the keys held out for
// prov/model.
func (h *Handler) withoutHeldOut(list []rotation.Candidate, prov, model string, ms int64) []rotation.Candidate {
	v, ok := h.d.Shared.Get(heldOutKey)
	if !ok || len(list) == 0 {
		return list
	}
	out := map[int64]bool{}
	for _, e := range gjson.Parse(v).Array() {
		f := e.Array()
		if len(f) == 4 && f[0].String() == prov && (f[2].String() == "" || f[2].String() == model) &&
			f[3].Int() > ms {
			out[f[1].Int()] = true
		}
	}
	if len(out) == 0 {
		return list
	}
	kept := list[:0:0]
	for _, c := range list {
		if !out[c.ID] {
			kept = append(kept, c)
		}
	}
	return kept
}

// clearCands drops every cached candidate list and the settings, keeping
// the counters and storm states.
func (h *Handler) clearCands() {
	keep := []string{usageKey, flushedKey, tokenUsageKey, tokenInflightKey, rateKey, rollupKey, heldOutKey}
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
