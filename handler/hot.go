package handler

import (
	"context"
	"time"

	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// The proxy path's state lives in the isolate's pool (package pool):
// candidate keys per provider and model are read through with a short TTL
// and updated at once by this isolate's own outcomes and admin changes;
// other isolates see changes within the TTL.

// heldOutFor is how long a key this isolate took out of rotation is held
// out of what it reads from D1 (see pool.Hold): long enough for the
// write after the response to land.
const heldOutFor = 10 * time.Second

// candidates returns the keys that may serve provider/model, from the
// cache when it is younger than CACHE_SECONDS, else from the store (one
// query).
func (h *Handler) candidates(ctx context.Context, keys *store.Keys, prov, model string, now time.Time, free bool) ([]rotation.Candidate, error) {
	ttl := h.cfg().CacheTTL
	if c, ok := h.pool.Candidates(prov, model, free); ok && ttl > 0 {
		if now.Sub(time.UnixMilli(c.Read)) < ttl && len(c.List) > 0 {
			return c.List, nil
		}
	}
	list, err := keys.Candidates(ctx, prov, model, now.UnixMilli(), candidateLimit, free)
	list = h.pool.WithoutHeldOut(list, prov, model, now.UnixMilli())
	if err != nil || len(list) == 0 || ttl == 0 {
		return list, err // an empty pool is not cached: keys may be added any time
	}
	h.pool.SetCandidates(prov, model, free, pool.Candidates{Read: now.UnixMilli(), List: list})
	return list, nil
}

// applyCache applies the cache updates rotation decided to the cached
// candidates of prov (a list is kept least recently used first).
func (h *Handler) applyCache(prov string, updates []rotation.CacheUpdate, now time.Time) {
	ms := now.UnixMilli()
	for _, u := range updates {
		switch u.Op {
		case rotation.CacheForgetAll:
			h.pool.ForgetCache()
		case rotation.CacheRemove:
			h.pool.EditCandidates(prov, u.Model, func(c *rotation.Candidate) bool { return c.ID != u.Key })
		case rotation.CacheFailed:
			h.pool.EditCandidates(prov, u.Model, func(c *rotation.Candidate) bool {
				if c.ID == u.Key {
					c.Streak, c.CoolEnd = c.Streak+1, ms
				}
				return true
			})
		case rotation.CacheUsed, rotation.CacheServed:
			h.pool.EditCandidates(prov, u.Model, func(c *rotation.Candidate) bool {
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

// invalidate drops the isolate's cache after an admin change, and ends
// the holds (the change is in D1 already).
func (h *Handler) invalidate() {
	h.pool.ForgetCache()
	h.pool.EndHolds()
}

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
	end := ms + heldOutFor.Milliseconds()
	for _, c := range changes {
		switch {
		case lifted[c.Key]:
		case c.Kind == rotation.ChangeBlockKey || c.Kind == rotation.ChangeExhaustKey:
			h.pool.HoldOut(pool.Hold{Provider: prov, Key: c.Key, Until: end}, ms)
		case c.Kind == rotation.ChangeBlockModel:
			h.pool.HoldOut(pool.Hold{Provider: prov, Key: c.Key, Model: c.Model, Until: end}, ms)
		case c.Kind == rotation.ChangeCool && c.Until > ms:
			// A cooldown shorter than the hold ends the hold with it.
			h.pool.HoldOut(pool.Hold{Provider: prov, Key: c.Key, Model: c.Model, Until: min(c.Until, end)}, ms)
		}
	}
}
