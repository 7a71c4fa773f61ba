package handler

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/seal"
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
func (h *Handler) checkClient(w http.ResponseWriter, r *http.Request) (client, bool) {
	got := clientCredential(r)
	if got == "" {
		apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "missing_api_key",
			Message: "no API key given: send your keypool token as Authorization: Bearer <token>"}.write(w)
		return client{}, false
	}
	if want := h.cfg().AuthKey; want != "" && secretEqual(got, want) {
		return client{}, true
	}
	invalid := apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key",
		Message: "invalid API key for this keypool"}
	if !strings.HasPrefix(got, "kp-") {
		invalid.write(w)
		return client{}, false
	}
	tok, err := h.token(r.Context(), seal.HashToken(got))
	if errors.Is(err, store.ErrTokenNotFound) {
		invalid.write(w)
		return client{}, false
	}
	if err != nil {
		failed(w, err, "keypool could not check the token", "reading a client token")
		return client{}, false
	}
	now := h.d.Now().UnixMilli()
	switch {
	case tok.Disabled:
		invalid.Code, invalid.Message = "token_disabled", "this keypool token has been disabled"
	case tok.ExpiresAt > 0 && now >= tok.ExpiresAt:
		invalid.Code, invalid.Message = "token_expired", "this keypool token expired"
	default:
		return client{tok: &tok}, true
	}
	invalid.write(w)
	return client{}, false
}

// token returns the token with hash, from the isolate's cache when it is
// younger than CACHE_SECONDS; any admin change drops the cache.
func (h *Handler) token(ctx context.Context, hash string) (store.Token, error) {
	var tok store.Token
	v, hit, err := h.readThrough(tokenCacheKey(hash), false, func() (string, bool, error) {
		db, err := h.d.DB()
		if err != nil {
			return "", false, err
		}
		tok, err = store.NewTokens(db).Counting(h.d.Queries).ByHash(ctx, hash)
		switch {
		case errors.Is(err, store.ErrTokenNotFound):
			return "", true, nil // no such token, remembered too
		case err != nil:
			return "", false, err
		}
		var b jsonout.Builder
		encodeToken(&b, tok)
		return string(b.Bytes()), true, nil
	})
	switch {
	case err != nil:
		return store.Token{}, err
	case v == "":
		return store.Token{}, store.ErrTokenNotFound
	case hit:
		return decodeToken(gjson.Parse(v)), nil
	}
	if h.cfg().CacheTTL > 0 {
		// Lets takeTokenUsage drop the record once its use is written.
		// Written after the record, so that the cache's bound drops the
		// record first.
		h.d.Shared.Set(tokenIDKey(tok.ID), hash)
	}
	return tok, nil
}

// tokenCacheKey names a cached token record, tokenIDKey the hash of a
// token's record; both are dropped with the candidate lists.
func tokenCacheKey(hash string) string { return CachePrefix + "token\x00" + hash }
func tokenIDKey(id int64) string       { return CachePrefix + "tokenid\x00" + strconv.FormatInt(id, 10) }

func encodeToken(b *jsonout.Builder, t store.Token) {
	b.Array().Int(t.ID).Bool(t.Disabled).Int(t.ExpiresAt).Int(t.RPM).Int(t.RequestsDay).Int(t.RequestsTotal).
		Int(t.TokensDay).Int(t.TokensTotal).Int(t.UsedRequests).Int(t.UsedTokens).Int(t.Day).Int(t.DayRequests).
		Int(t.DayTokens).Raw(jsonout.StringArray(t.Providers)).Raw(jsonout.StringArray(t.Models)).String(t.Endpoints).
		String(t.Name).EndArray() // the name: for the AI Gateway's metadata
}

func decodeToken(r gjson.Result) store.Token {
	a := r.Array()
	if len(a) < 15 {
		return store.Token{}
	}
	t := store.Token{ID: a[0].Int(), Disabled: a[1].Bool(), ExpiresAt: a[2].Int(), RPM: a[3].Int(),
		RequestsDay: a[4].Int(), RequestsTotal: a[5].Int(), TokensDay: a[6].Int(), TokensTotal: a[7].Int(),
		UsedRequests: a[8].Int(), UsedTokens: a[9].Int(), Day: a[10].Int(), DayRequests: a[11].Int(), DayTokens: a[12].Int()}
	for _, x := range a[13].Array() {
		t.Providers = append(t.Providers, x.String())
	}
	for _, x := range a[14].Array() {
		t.Models = append(t.Models, x.String())
	}
	if len(a) > 16 {
		t.Endpoints, t.Name = a[15].String(), a[16].String()
	}
	return t
}

// utcDay is the unix ms of the UTC midnight that starts t's day.
func utcDay(t time.Time) int64 {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMilli()
}

// Keys in Shared for token accounting (kept across cache drops).
const (
	tokenUsageKey   = "tusage"         // {id: [day, requests, tokens, last used, earlier day, requests, tokens]} not yet written
	tokenFlushedKey = "tusage-flushed" // when they were last written
	rateKey         = "rpm"            // {id: [request times in the last minute]}
)

// admit checks a token's scope, quotas and rate limit for a call, and
// counts the request against them when it is let through. It answers
// 403/429 itself.
func (h *Handler) admit(w http.ResponseWriter, c client, call upstreamCall) bool {
	t := c.tok
	if t == nil {
		return true
	}
	now := h.d.Now()
	e := scopeRefusal(t, call)
	if e.Status == 0 {
		e = quotaRefusal(t, h.tokenUse(t, now), now)
	}
	if e.Status == 0 {
		e = h.rateRefusal(t, now)
	}
	if e.Status != 0 {
		e.write(w)
		return false
	}
	h.countToken(t.ID, utcDay(now), 1, 0, now.UnixMilli())
	return true
}

// scopeRefusal is the 403 for a call outside the token's providers or
// models, zero when the call is inside them.
func scopeRefusal(t *store.Token, call upstreamCall) apiError {
	if len(t.Providers) > 0 && !slices.Contains(t.Providers, call.prov.Name) {
		return apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "provider_not_allowed",
			Message: "this keypool token may not use provider " + strconv.Quote(call.prov.Name) + "; allowed: " + strings.Join(t.Providers, ", ")}
	}
	if len(t.Models) > 0 && !modelAllowed(t.Models, call.prov.Name, call.model) {
		return apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed",
			Message: "this keypool token may not use model " + strconv.Quote(call.model) + "; allowed: " + strings.Join(t.Models, ", ")}
	}
	return apiError{}
}

// tokenUsed is what a token has used, today and in all, as far as this
// isolate knows.
type tokenUsed struct{ dayReq, dayTok, totalReq, totalTok int64 }

// tokenUse adds to the stored record the use counted here but not yet
// written, and the use being written.
func (h *Handler) tokenUse(t *store.Token, now time.Time) tokenUsed {
	day := utcDay(now)
	var u tokenUsed
	pending := gjson.Parse(h.sharedOr(tokenUsageKey, "{}")).Get(strconv.FormatInt(t.ID, 10)).Array()
	var pDay, pReq, pTok, cReq, cTok int64
	if len(pending) == 7 {
		pDay, pReq, pTok = pending[0].Int(), pending[1].Int(), pending[2].Int()
		cReq, cTok = pending[5].Int(), pending[6].Int() // an earlier day's, in the totals only
	}
	if t.Day == day {
		u.dayReq, u.dayTok = t.DayRequests, t.DayTokens
	}
	if pDay == day {
		u.dayReq, u.dayTok = u.dayReq+pReq, u.dayTok+pTok
	}
	u.totalReq, u.totalTok = t.UsedRequests+pReq+cReq, t.UsedTokens+pTok+cTok
	// Use taken for writing but not yet in D1 (nor in the cached record).
	for _, f := range h.inflight(t.ID) {
		if f.Day == day {
			u.dayReq, u.dayTok = u.dayReq+f.Requests, u.dayTok+f.Tokens
		}
		u.totalReq, u.totalTok = u.totalReq+f.Requests, u.totalTok+f.Tokens
	}
	return u
}

// quotaRefusal is the 429 for a token whose use u has reached one of its
// quotas, zero while none is reached.
func quotaRefusal(t *store.Token, u tokenUsed, now time.Time) apiError {
	untilMidnight := (utcDay(now) + 86400000 - now.UnixMilli() + 999) / 1000
	quota := func(what string, limit, retry int64) apiError {
		e := apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "quota_exceeded", RetryAfter: retry,
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
	return apiError{}
}

// rateRefusal is the 429 for a token past its requests per minute (per
// isolate), zero otherwise; a request let through is recorded.
func (h *Handler) rateRefusal(t *store.Token, now time.Time) apiError {
	if t.RPM <= 0 {
		return apiError{}
	}
	rates := gjson.Parse(h.sharedOr(rateKey, "{}"))
	id := strconv.FormatInt(t.ID, 10)
	ms := now.UnixMilli()
	var recent []int64
	for _, x := range rates.Get(id).Array() {
		if ms-x.Int() < 60000 {
			recent = append(recent, x.Int())
		}
	}
	if int64(len(recent)) >= t.RPM {
		retry := max((recent[0]+60000-ms+999)/1000, 1)
		return apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limited", RetryAfter: retry,
			Message: "this keypool token may make " + strconv.FormatInt(t.RPM, 10) + " requests per minute; retry after " +
				strconv.FormatInt(retry, 10) + "s"}
	}
	h.d.Shared.Set(rateKey, setField(rates, id, string(jsonout.IntArray(append(recent, ms)))))
	return apiError{}
}

// countToken adds use to a token's pending counters.
func (h *Handler) countToken(id, day, requests, tokens, at int64) {
	all := gjson.Parse(h.sharedOr(tokenUsageKey, "{}"))
	key := strconv.FormatInt(id, 10)
	p := all.Get(key).Array()
	var pReq, pTok, last, cDay, cReq, cTok int64
	if len(p) == 7 {
		last, cDay, cReq, cTok = p[3].Int(), p[4].Int(), p[5].Int(), p[6].Int()
		if p[0].Int() == day {
			pReq, pTok = p[1].Int(), p[2].Int()
		} else {
			// A new day began with use of the old one still pending: it is
			// kept apart and written under its own day, so that it counts
			// in the totals but not against the new day's quotas.
			cDay, cReq, cTok = max(cDay, p[0].Int()), cReq+p[1].Int(), cTok+p[2].Int()
		}
	}
	h.d.Shared.Set(tokenUsageKey, setField(all, key, string(jsonout.IntArray(
		[]int64{day, pReq + requests, pTok + tokens, max(last, at), cDay, cReq, cTok}))))
}

// takeTokenUsage returns the pending token use and resets it. The use
// stays counted as in flight until settleTokenUsage says it is in D1:
// until then the token's cached record does not include it, and a request
// arriving meanwhile must still see it.
func (h *Handler) takeTokenUsage() []store.TokenUsage {
	v, ok := h.d.Shared.Get(tokenUsageKey)
	if !ok {
		return nil
	}
	h.d.Shared.Delete(tokenUsageKey)
	var out []store.TokenUsage
	gjson.Parse(v).ForEach(func(k, x gjson.Result) bool {
		a := x.Array() // [day, requests, tokens, last used, carried day, requests, tokens]
		if len(a) == 7 {
			if a[5].Int() > 0 || a[6].Int() > 0 {
				out = append(out, store.TokenUsage{ID: k.Int(), Day: a[4].Int(), Requests: a[5].Int(), Tokens: a[6].Int(), LastUsed: a[3].Int()})
			}
			out = append(out, store.TokenUsage{ID: k.Int(), Day: a[0].Int(), Requests: a[1].Int(), Tokens: a[2].Int(), LastUsed: a[3].Int()})
		}
		return true
	})
	h.addInflight(out, 1)
	return out
}

// settleTokenUsage ends the flight of use taken by takeTokenUsage: written
// (the tokens' cached records are dropped, so that their next read has
// it) or not (it goes back to pending, to be written next time).
func (h *Handler) settleTokenUsage(list []store.TokenUsage, written bool) {
	h.addInflight(list, -1)
	for _, u := range list {
		if written {
			if hash, ok := h.d.Shared.Get(tokenIDKey(u.ID)); ok {
				h.d.Shared.Delete(tokenCacheKey(hash))
			}
		} else {
			h.countToken(u.ID, u.Day, u.Requests, u.Tokens, u.LastUsed)
		}
	}
}

const tokenInflightKey = "tusage-inflight" // {"id:day": [requests, tokens]}

// addInflight adds (sign 1) or removes (-1) use from the in-flight counts.
func (h *Handler) addInflight(list []store.TokenUsage, sign int64) {
	if len(list) == 0 {
		return
	}
	all := gjson.Parse(h.sharedOr(tokenInflightKey, "{}"))
	m := map[string][2]int64{}
	all.ForEach(func(k, v gjson.Result) bool {
		a := v.Array()
		if len(a) == 2 {
			m[k.String()] = [2]int64{a[0].Int(), a[1].Int()}
		}
		return true
	})
	for _, u := range list {
		k := strconv.FormatInt(u.ID, 10) + ":" + strconv.FormatInt(u.Day, 10)
		c := m[k]
		c[0] += sign * u.Requests
		c[1] += sign * u.Tokens
		if c[0] <= 0 && c[1] <= 0 {
			delete(m, k)
		} else {
			m[k] = c
		}
	}
	var b jsonout.Builder
	b.Object()
	for k, c := range m {
		b.Key(k).Array().Int(c[0]).Int(c[1]).EndArray()
	}
	h.d.Shared.Set(tokenInflightKey, string(b.EndObject().Bytes()))
}

// inflight returns a token's use in flight, per day.
func (h *Handler) inflight(id int64) []store.TokenUsage {
	var out []store.TokenUsage
	prefix := strconv.FormatInt(id, 10) + ":"
	gjson.Parse(h.sharedOr(tokenInflightKey, "{}")).ForEach(func(k, v gjson.Result) bool {
		if rest, ok := strings.CutPrefix(k.String(), prefix); ok {
			day, _ := strconv.ParseInt(rest, 10, 64)
			a := v.Array()
			if len(a) == 2 {
				out = append(out, store.TokenUsage{ID: id, Day: day, Requests: a[0].Int(), Tokens: a[1].Int()})
			}
		}
		return true
	})
	return out
}

// sharedOr reads a Shared value, def when it is absent.
func (h *Handler) sharedOr(key, def string) string {
	if v, ok := h.d.Shared.Get(key); ok {
		return v
	}
	return def
}

// setField returns the JSON object obj with field set to the raw JSON val.
func setField(obj gjson.Result, field, val string) string {
	var b jsonout.Builder
	b.Object()
	obj.ForEach(func(k, v gjson.Result) bool {
		if k.String() != field {
			b.Key(k.String()).Raw([]byte(v.Raw))
		}
		return true
	})
	return string(b.Key(field).Raw([]byte(val)).EndObject().Bytes())
}

// modelAllowed matches a model against a token's patterns, written bare
// ("gemini-*") or with a provider ("groq/llama-*").
func modelAllowed(patterns []string, prov, model string) bool {
	for _, p := range patterns {
		if globMatch(p, model) || globMatch(p, prov+"/"+model) {
			return true
		}
	}
	return false
}
