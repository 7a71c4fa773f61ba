package handler

import "github.com/keypool/keypool/pool"

// readThrough reads the cached record name through load (pool.ReadThrough)
// with CACHE_SECONDS as its TTL.
func (h *Handler) readThrough(name string, fresh bool, load pool.Load) (payload string, hit bool, err error) {
	return h.pool.ReadThrough(name, h.cfg().CacheTTL, h.d.Now(), fresh, load)
}
