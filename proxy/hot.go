package proxy

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
func (px *Proxy) candidates(ctx context.Context, keys *store.Keys, prov, model string, now time.Time, free bool) ([]rotation.Candidate, error) {
	ttl := px.Config().CacheTTL
	c, cached := px.Pool.Candidates(prov, model, free)
	cached = cached && ttl > 0 && len(c.List) > 0
	if cached && now.Sub(time.UnixMilli(c.Read)) < ttl && px.Pool.Fresh(c) {
		return c.List, nil
	}
	list, err := keys.Candidates(ctx, prov, model, now.UnixMilli(), candidateLimit, free)
	if err != nil && cached && now.Sub(time.UnixMilli(c.Read)) < pool.StaleFor && store.Unavailable(err) {
		// D1 is down: serve on what this isolate last knew, with its own
		// outcomes since applied (applyCache); the list keeps its age.
		return px.Pool.WithoutHeldOut(c.List, prov, model, now.UnixMilli()), nil
	}
	list = px.Pool.WithoutHeldOut(list, prov, model, now.UnixMilli())
	if err != nil || len(list) == 0 || ttl == 0 {
		return list, err // an empty pool is not cached: keys may be added any time
	}
	px.Pool.SetCandidates(prov, model, free, pool.Candidates{Read: now.UnixMilli(), List: list})
	return list, nil
}

// applyCache applies the cache updates rotation decided to the cached
// candidates of prov (a list is kept least recently used first).
func (px *Proxy) applyCache(prov string, updates []rotation.CacheUpdate, now time.Time) {
	ms := now.UnixMilli()
	for _, u := range updates {
		switch u.Op {
		case rotation.CacheExpireAll:
			px.Pool.ExpireCandidates(ms)
		case rotation.CacheRemove:
			px.Pool.EditCandidates(prov, u.Model, func(c *rotation.Candidate) bool { return c.ID != u.Key })
		case rotation.CacheFailed:
			px.Pool.EditCandidates(prov, u.Model, func(c *rotation.Candidate) bool {
				if c.ID == u.Key {
					c.Streak, c.CoolEnd = c.Streak+1, ms
				}
				return true
			})
		case rotation.CacheUsed, rotation.CacheServed:
			px.Pool.EditCandidates(prov, u.Model, func(c *rotation.Candidate) bool {
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

// holdOutChanged holds out the keys changes take out of rotation (a
// storm's lift lets its keys back at once).
func (px *Proxy) holdOutChanged(prov string, changes []rotation.Change, ms int64) {
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
			px.Pool.HoldOut(pool.Hold{Provider: prov, Key: c.Key, Until: end}, ms)
		case c.Kind == rotation.ChangeBlockModel:
			px.Pool.HoldOut(pool.Hold{Provider: prov, Key: c.Key, Model: c.Model, Until: end}, ms)
		case c.Kind == rotation.ChangeCool && c.Until > ms:
			// A cooldown shorter than the hold ends the hold with it.
			px.Pool.HoldOut(pool.Hold{Provider: prov, Key: c.Key, Model: c.Model, Until: min(c.Until, end)}, ms)
		}
	}
}
