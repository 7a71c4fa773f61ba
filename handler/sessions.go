package handler

import (
	"context"
	"log"
	"net/http"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/access"
	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/store"
)

// Session revocation: every session cookie carries its role's generation
// (store.Sessions), and one of an older generation is refused. The
// generations are cached per isolate for CACHE_SECONDS, so a session costs
// no D1 read on most requests; a revocation applies at once in the isolate
// that made it and within CACHE_SECONDS in the others.

const sessionGenKey = "session-generations"

// sessionGeneration returns role's current generation, from the cache
// unless fresh or older than CACHE_SECONDS.
func (h *Handler) sessionGeneration(ctx context.Context, role string, fresh bool) (int64, error) {
	v, _, err := h.readThrough(sessionGenKey, fresh, func() (string, bool, error) {
		db, err := h.d.DB()
		if err != nil {
			return "", false, err
		}
		gens, err := store.On(db, h.d.Queries).Sessions().Generations(ctx)
		if err != nil {
			return "", false, err
		}
		var b jsonout.Builder
		b.Object()
		for _, r := range []string{"a", "g"} {
			b.Key(r).Int(gens[r])
		}
		return string(b.EndObject().Bytes()), true, nil
	})
	if err != nil {
		return 0, err
	}
	return gjson.Get(v, role).Int(), nil
}

// currentGeneration reports whether a verified cookie's generation gen is
// role's current one. A cookie newer than the cache was made after the
// cache was read (a login in another isolate): read again.
func (h *Handler) currentGeneration(ctx context.Context, role string, gen int64) bool {
	cur, err := h.sessionGeneration(ctx, role, false)
	if err == nil && gen > cur {
		cur, err = h.sessionGeneration(ctx, role, true)
	}
	if err != nil {
		log.Printf("keypool: reading the session generation: %v", err)
		return false
	}
	return gen == cur
}

// revokeSessions ends every session of roles.
func (h *Handler) revokeSessions(ctx context.Context, roles ...string) error {
	db, err := h.d.DB()
	if err != nil {
		return err
	}
	_, err = store.On(db, h.d.Queries).Sessions().Bump(ctx, roles...)
	h.pool.Forget(sessionGenKey)
	return err
}

// revokeAllSessions serves POST /admin/api/sessions/revoke, "log out
// everywhere": every admin and guest session ends, this one included.
func (h *Handler) revokeAllSessions(w http.ResponseWriter, r *http.Request) {
	if err := h.revokeSessions(r.Context(), "a", "g"); err != nil {
		reply.Failed(w, err, "could not end the sessions", "ending every session")
		return
	}
	w.Header().Add("Set-Cookie", access.SessionCookie(r, adminCookie, "", 0))
	w.Header().Add("Set-Cookie", access.SessionCookie(r, guestCookie, "", 0))
	var out jsonout.Builder
	reply.JSON(w, http.StatusOK, out.Object().Key("revoked").Array().String("admin").String("guest").EndArray().EndObject().Bytes())
}
