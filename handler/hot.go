package handler

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// hotState is what the proxy path reads and writes, kept in the Go
// instance between requests (the entry module reuses instances), so that a
// warm request reads D1 rarely and writes to it at most every few seconds:
//   - candidate keys per provider and model, read through with a short TTL
//     and updated at once by this instance's own outcomes;
//   - usage counters, coalesced and written in one statement.
//
// Changes other instances make are seen through the isolate-wide
// generation (Deps.Generation: any change bumps it and every instance drops
// its cache) and, for other isolates, when the TTL runs out.
type hotState struct {
	mu        sync.Mutex
	gen       int64
	cands     map[candKey]candEntry
	usage     map[int64]*store.Usage
	lastFlush time.Time
}

type candKey struct{ provider, model string }

type candEntry struct {
	read time.Time
	list []rotation.Candidate // least recently used first
}

func newHotState() *hotState {
	return &hotState{cands: map[candKey]candEntry{}, usage: map[int64]*store.Usage{}}
}

// sync drops the cache when another instance of the isolate changed state.
func (s *hotState) sync(gen int64) {
	if gen != s.gen {
		s.gen = gen
		clear(s.cands)
	}
}

// candidates returns the keys that may serve provider/model, from the
// cache when it is younger than ttl, else from the store (one query).
func (h *Handler) candidates(ctx context.Context, keys *store.Keys, prov, model string, now time.Time) ([]rotation.Candidate, error) {
	s := h.hot
	ttl := time.Duration(h.intVar("CACHE_SECONDS", 5, 0, 300)) * time.Second
	s.mu.Lock()
	s.sync(h.generation())
	e, ok := s.cands[candKey{prov, model}]
	s.mu.Unlock()
	if ok && now.Sub(e.read) < ttl {
		return append([]rotation.Candidate(nil), e.list...), nil
	}
	list, err := keys.Candidates(ctx, prov, model, now.UnixMilli(), candidateLimit)
	if err != nil || len(list) == 0 || ttl == 0 {
		return list, err // an empty pool is not cached: keys may be added any time
	}
	s.mu.Lock()
	s.cands[candKey{prov, model}] = candEntry{read: now, list: append([]rotation.Candidate(nil), list...)}
	s.mu.Unlock()
	return list, nil
}

// observe applies one request's outcomes to the cache and the usage
// counters. It reports whether state changed in a way the rest of the
// isolate must see (a key cooled or blocked).
func (s *hotState) observe(prov string, outcomes []store.Outcome, now time.Time) (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := now.UnixMilli()
	for _, o := range outcomes {
		u := s.usage[o.KeyID]
		if u == nil {
			u = &store.Usage{}
			s.usage[o.KeyID] = u
		}
		u.Add(o, ms)
		switch o.Verdict.Action {
		case rotation.Cool:
			changed = true
			s.drop(prov, o.Model, o.KeyID)
		case rotation.BlockKey:
			changed = true
			for k := range s.cands {
				if k.provider == prov {
					s.drop(prov, k.model, o.KeyID)
				}
			}
		default:
			s.touch(prov, o.Model, o.KeyID, ms)
		}
	}
	return changed
}

// drop removes a key from the cached candidates of provider/model.
func (s *hotState) drop(prov, model string, id int64) {
	k := candKey{prov, model}
	e, ok := s.cands[k]
	if !ok {
		return
	}
	out := e.list[:0:0]
	for _, c := range e.list {
		if c.ID != id {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		delete(s.cands, k)
		return
	}
	e.list = out
	s.cands[k] = e
}

// touch marks a key used now, keeping the list least recently used first.
func (s *hotState) touch(prov, model string, id, ms int64) {
	e, ok := s.cands[candKey{prov, model}]
	if !ok {
		return
	}
	for i := range e.list {
		if e.list[i].ID == id {
			e.list[i].LastUsed = ms
		}
	}
	sort.SliceStable(e.list, func(i, j int) bool { return e.list[i].LastUsed < e.list[j].LastUsed })
}

// takeUsage returns the coalesced counters when they are due to be written
// (every interval at most; 0 writes after every request), and resets them.
func (s *hotState) takeUsage(now time.Time, interval time.Duration) []store.Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.usage) == 0 || now.Sub(s.lastFlush) < interval {
		return nil
	}
	s.lastFlush = now
	list := make([]store.Usage, 0, len(s.usage))
	for _, u := range s.usage {
		list = append(list, *u)
	}
	clear(s.usage)
	return list
}

// generation reads the isolate-wide state generation (0 without one).
func (h *Handler) generation() int64 {
	if h.d.Generation == nil {
		return 0
	}
	return h.d.Generation.Load()
}

// publish tells the other instances of the isolate that state changed;
// this instance's cache is already up to date.
func (h *Handler) publish() {
	if h.d.Generation == nil {
		return
	}
	gen := h.d.Generation.Add(1)
	h.hot.mu.Lock()
	h.hot.gen = gen
	h.hot.mu.Unlock()
}

// invalidate drops every instance's cache after an admin change.
func (h *Handler) invalidate() {
	h.publish()
	h.hot.mu.Lock()
	clear(h.hot.cands)
	h.hot.mu.Unlock()
}
