package handler

import (
	"strconv"
	"strings"
	"time"
)

// The read-through cache: what keypool reads from D1 on the request path
// (settings, client tokens, the model list, the session generations, the
// guest summary) is kept in the isolate's shared map with the time it was
// read, and reused for CACHE_SECONDS (0: never). Every record has the
// same encoding: the read time in Unix ms, a NUL, the payload.

// cacheLoad reads a value afresh: its payload, whether to keep it (a
// record too large for the cache is not), or an error (nothing is kept).
type cacheLoad func() (payload string, keep bool, err error)

// readThrough returns the payload cached under key when it is younger
// than CACHE_SECONDS (and fresh is false), with hit true; otherwise
// load's, which replaces the record (or, when load says not to keep it,
// drops the old one).
func (h *Handler) readThrough(key string, fresh bool, load cacheLoad) (payload string, hit bool, err error) {
	ttl := h.cfg().CacheTTL
	now := h.d.Now()
	if ttl > 0 && !fresh {
		if v, ok := h.d.Shared.Get(key); ok {
			at, p, found := strings.Cut(v, "\x00")
			if ms, perr := strconv.ParseInt(at, 10, 64); found && perr == nil && now.Sub(time.UnixMilli(ms)) < ttl {
				return p, true, nil
			}
		}
	}
	payload, keep, err := load()
	switch {
	case err != nil:
		return "", false, err
	case ttl > 0 && keep:
		h.d.Shared.Set(key, strconv.FormatInt(now.UnixMilli(), 10)+"\x00"+payload)
	case ttl > 0:
		h.d.Shared.Delete(key)
	}
	return payload, false, nil
}
