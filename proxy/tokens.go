package proxy

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/access"
	"github.com/keypool/keypool/pool"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// Client tokens: the admin makes them (the secret is shown once, D1 keeps
// a hash), each scoped to providers and models, with an expiry, quotas
// and a rate limit. The proxy checks them before choosing a key.

// client is who is calling the proxy: AUTH_KEY (tok nil) or a token.
type client struct {
	tok *store.Token
}

// id is the token's id; 0 for AUTH_KEY.
func (c client) id() int64 {
	if c.tok == nil {
		return 0
	}
	return c.tok.ID
}

// checkClient identifies the caller of a proxy route, answering 401 when
// it cannot.
func (px *Proxy) checkClient(w http.ResponseWriter, r *http.Request) (client, bool) {
	got := access.Credential(r)
	if got == "" {
		reply.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "missing_api_key",
			Message: "no API key given: send your keypool token as Authorization: Bearer <token>"}.Write(w)
		return client{}, false
	}
	if want := px.Config().AuthKey; want != "" && access.SecretEqual(got, want) {
		return client{}, true
	}
	invalid := reply.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key",
		Message: "invalid API key for this keypool"}
	if !strings.HasPrefix(got, "kp-") {
		invalid.Write(w)
		return client{}, false
	}
	tok, err := px.token(r.Context(), seal.HashToken(got))
	if errors.Is(err, store.ErrTokenNotFound) {
		invalid.Write(w)
		return client{}, false
	}
	if err != nil {
		reply.Failed(w, err, "keypool could not check the token", "reading a client token")
		return client{}, false
	}
	now := px.Now().UnixMilli()
	switch {
	case tok.Disabled:
		invalid.Code, invalid.Message = "token_disabled", "this keypool token has been disabled"
	case tok.ExpiresAt > 0 && now >= tok.ExpiresAt:
		invalid.Code, invalid.Message = "token_expired", "this keypool token expired"
	default:
		return client{tok: &tok}, true
	}
	invalid.Write(w)
	return client{}, false
}

// token returns the token with hash, from the isolate's cache when it is
// younger than CACHE_SECONDS; any admin change drops the cache.
func (px *Proxy) token(ctx context.Context, hash string) (store.Token, error) {
	var tok store.Token
	v, hit, err := px.readThrough(pool.TokenName(hash), false, func() (string, bool, error) {
		db, err := px.DB()
		if err != nil {
			return "", false, err
		}
		tok, err = store.On(db, px.Queries).Tokens().ByHash(ctx, hash)
		switch {
		case errors.Is(err, store.ErrTokenNotFound):
			return "", true, nil // no such token, remembered too
		case err != nil:
			return "", false, err
		}
		return pool.EncodeToken(tok), true, nil
	})
	switch {
	case err != nil:
		return store.Token{}, err
	case v == "":
		return store.Token{}, store.ErrTokenNotFound
	case hit:
		cached, _ := pool.DecodeToken(v)
		return cached, nil
	}
	if px.Config().CacheTTL > 0 {
		px.Pool.IndexToken(tok.ID, hash)
	}
	return tok, nil
}

// utcDay is the unix ms of the UTC midnight that starts t's day.
func utcDay(t time.Time) int64 {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMilli()
}

// admit checks a token's scope, quotas and rate limit for a call, and
// counts the request against them when it is let through. It answers
// 403/429 itself.
func (px *Proxy) admit(w http.ResponseWriter, c client, call upstreamCall) bool {
	t := c.tok
	if t == nil {
		return true
	}
	now := px.Now()
	e := scopeRefusal(t, call)
	if e.Status == 0 {
		e = quotaRefusal(t, px.tokenUse(t, now), now)
	}
	if e.Status == 0 {
		e = px.rateRefusal(t, now)
	}
	if e.Status != 0 {
		e.Write(w)
		return false
	}
	px.Pool.CountToken(t.ID, utcDay(now), 1, 0, now.UnixMilli())
	return true
}

// scopeRefusal is the 403 for a call outside the token's providers or
// models, zero when the call is inside them. A WebSocket handshake names
// no model: its session's models are checked message by message.
func scopeRefusal(t *store.Token, call upstreamCall) reply.Error {
	if len(t.Providers) > 0 && !slices.Contains(t.Providers, call.prov.Name) {
		return reply.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "provider_not_allowed",
			Message: "this keypool token may not use provider " + strconv.Quote(call.prov.Name) + "; allowed: " + strings.Join(t.Providers, ", ")}
	}
	if len(t.Models) > 0 && !call.socket && !modelAllowed(t.Models, call.prov.Name, call.model) {
		return reply.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed",
			Message: "this keypool token may not use model " + strconv.Quote(call.model) + "; allowed: " + strings.Join(t.Models, ", ")}
	}
	return reply.Error{}
}

// tokenUsed is what a token has used, today and in all, as far as this
// isolate knows.
type tokenUsed struct{ dayReq, dayTok, totalReq, totalTok int64 }

// tokenUse adds to the stored record the use counted here but not yet
// written, and the use being written.
func (px *Proxy) tokenUse(t *store.Token, now time.Time) tokenUsed {
	day := utcDay(now)
	var u tokenUsed
	p := px.Pool.PendingToken(t.ID)
	if t.Day == day {
		u.dayReq, u.dayTok = t.DayRequests, t.DayTokens
	}
	if p.Day == day {
		u.dayReq, u.dayTok = u.dayReq+p.Requests, u.dayTok+p.Tokens
	}
	// An earlier day's pending use counts in the totals only.
	u.totalReq = t.UsedRequests + p.Requests + p.CarriedRequests
	u.totalTok = t.UsedTokens + p.Tokens + p.CarriedTokens
	// Use taken for writing but not yet in D1 (nor in the cached record).
	for _, f := range px.Pool.Inflight(t.ID) {
		if f.Day == day {
			u.dayReq, u.dayTok = u.dayReq+f.Requests, u.dayTok+f.Tokens
		}
		u.totalReq, u.totalTok = u.totalReq+f.Requests, u.totalTok+f.Tokens
	}
	return u
}

// quotaRefusal is the 429 for a token whose use u has reached one of its
// quotas, zero while none is reached.
func quotaRefusal(t *store.Token, u tokenUsed, now time.Time) reply.Error {
	untilMidnight := (utcDay(now) + 86400000 - now.UnixMilli() + 999) / 1000
	quota := func(what string, limit, retry int64) reply.Error {
		e := reply.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "quota_exceeded", RetryAfter: retry,
			Message: "this keypool token has used its " + what + " (" + strconv.FormatInt(limit, 10) + ")"}
		if retry > 0 {
			e.Message += "; it resets in " + strconv.FormatInt(retry, 10) + "s (midnight UTC)"
		}
		return e
	}
	switch {
	case t.RequestsTotal > 0 && u.totalReq >= t.RequestsTotal:
		return quota("total request quota", t.RequestsTotal, 0)
	case t.TokensTotal > 0 && u.totalTok >= t.TokensTotal:
		return quota("total token quota", t.TokensTotal, 0)
	case t.RequestsDay > 0 && u.dayReq >= t.RequestsDay:
		return quota("daily request quota", t.RequestsDay, untilMidnight)
	case t.TokensDay > 0 && u.dayTok >= t.TokensDay:
		return quota("daily token quota", t.TokensDay, untilMidnight)
	}
	return reply.Error{}
}

// rateRefusal is the 429 for a token past its requests per minute (per
// isolate), zero otherwise; a request let through is recorded.
func (px *Proxy) rateRefusal(t *store.Token, now time.Time) reply.Error {
	if t.RPM <= 0 {
		return reply.Error{}
	}
	ms := now.UnixMilli()
	recent := px.Pool.RecentRequests(t.ID, ms)
	if int64(len(recent)) >= t.RPM {
		retry := max((recent[0]+60000-ms+999)/1000, 1)
		return reply.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited", RetryAfter: retry,
			Message: "this keypool token may make " + strconv.FormatInt(t.RPM, 10) + " requests per minute; retry after " +
				strconv.FormatInt(retry, 10) + "s"}
	}
	px.Pool.RecordRequest(t.ID, ms)
	return reply.Error{}
}

// modelAllowed matches a model against a token's patterns, written bare
// ("gemini-*") or with a provider ("groq/llama-*").
func modelAllowed(patterns []string, prov, model string) bool {
	for _, p := range patterns {
		if settings.GlobMatch(p, model) || settings.GlobMatch(p, prov+"/"+model) {
			return true
		}
	}
	return false
}
