package handler

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/store"
)

// Admin API for tokens.

const maxTokenName = 100

// readTokenFields reads a token's fields from a create or patch body into
// t; create requires a name. It answers 400 naming the field itself.
func (h *Handler) readTokenFields(w http.ResponseWriter, in gjson.Result, t *store.Token, create bool) bool {
	e := tokenScope(in, t, create)
	if e.Status == 0 {
		e = tokenLimits(in, t, h.d.Now())
	}
	if e.Status != 0 {
		e.Write(w)
		return false
	}
	return true
}

func fieldError(field, msg string) reply.Error { return reply.BadRequest(field+": "+msg, field) }

// tokenScope reads the name, providers, models, endpoints and disabled.
func tokenScope(in gjson.Result, t *store.Token, create bool) reply.Error {
	if v := in.Get("name"); v.Exists() || create {
		name := strings.TrimSpace(v.String())
		if v.Type != gjson.String || name == "" || len(name) > maxTokenName {
			return fieldError("name", "a non-empty string of at most "+strconv.Itoa(maxTokenName)+" bytes")
		}
		t.Name = name
	}
	var e reply.Error
	if in.Get("providers").Exists() {
		if t.Providers, e = stringList(in, "providers", func(s string) string {
			if _, known := provider.Lookup(s); !known {
				return "unknown provider " + strconv.Quote(s) + "; known: " + strings.Join(provider.Names(), ", ")
			}
			return ""
		}); e.Status != 0 {
			return e
		}
	}
	if in.Get("models").Exists() {
		if t.Models, e = stringList(in, "models", func(string) string { return "" }); e.Status != 0 {
			return e
		}
	}
	if v := in.Get("endpoints"); v.Exists() {
		if v.Type != gjson.String || v.String() != store.EndpointsInference && v.String() != store.EndpointsAll {
			return fieldError("endpoints", `want "`+store.EndpointsInference+`" (the inference endpoints keypool knows) or "`+
				store.EndpointsAll+`" (full pass-through: every provider endpoint)`)
		}
		t.Endpoints = v.String()
	}
	if v := in.Get("disabled"); v.Exists() {
		if v.Type != gjson.True && v.Type != gjson.False {
			return fieldError("disabled", "want true or false")
		}
		t.Disabled = v.Bool()
	}
	return reply.Error{}
}

// stringList reads field, an array of non-empty strings each of which
// check accepts (check says what is wrong, "" when nothing is).
func stringList(in gjson.Result, field string, check func(string) string) ([]string, reply.Error) {
	v := in.Get(field)
	if !v.IsArray() {
		return nil, fieldError(field, "want an array of strings")
	}
	out := []string{}
	for _, x := range v.Array() {
		s := strings.TrimSpace(x.String())
		if x.Type != gjson.String || s == "" {
			return nil, fieldError(field, "want an array of non-empty strings")
		}
		if msg := check(s); msg != "" {
			return nil, fieldError(field, msg)
		}
		out = append(out, s)
	}
	return out, reply.Error{}
}

// tokenLimits reads the expiry (expires_at or expires_in_days from now),
// the rate limit and the quotas.
func tokenLimits(in gjson.Result, t *store.Token, now time.Time) reply.Error {
	ints := []struct {
		name string
		dst  *int64
	}{
		{"expires_at", &t.ExpiresAt}, {"rpm", &t.RPM}, {"requests_day", &t.RequestsDay},
		{"requests_total", &t.RequestsTotal}, {"tokens_day", &t.TokensDay}, {"tokens_total", &t.TokensTotal},
	}
	for _, f := range ints {
		if v := in.Get(f.name); v.Exists() {
			if v.Type != gjson.Number || v.Float() != float64(v.Int()) || v.Int() < 0 {
				return fieldError(f.name, "want a whole number ≥ 0 (0: no limit)")
			}
			*f.dst = v.Int()
		}
	}
	if v := in.Get("expires_in_days"); v.Exists() {
		if v.Type != gjson.Number || v.Float() <= 0 || v.Float() > 36500 {
			return fieldError("expires_in_days", "want a number of days from 0 to 36500")
		}
		t.ExpiresAt = now.Add(time.Duration(v.Float() * float64(24*time.Hour))).UnixMilli()
	}
	return reply.Error{}
}

func (h *Handler) tokens(w http.ResponseWriter) (*store.Tokens, bool) {
	db, ok := h.db(w)
	if !ok {
		return nil, false
	}
	return store.On(db, h.d.Queries).Tokens(), true
}

// tokensChange is the tokens and the request's JSON object, for a change
// to a token; false: answered.
func (h *Handler) tokensChange(w http.ResponseWriter, r *http.Request) (*store.Tokens, gjson.Result, bool) {
	st, ok := h.tokens(w)
	if !ok {
		return nil, gjson.Result{}, false
	}
	in, ok := jsonObject(w, h, r)
	return st, in, ok
}

func jsonObject(w http.ResponseWriter, h *Handler, r *http.Request) (gjson.Result, bool) {
	body, ok := h.readBody(w, r)
	if !ok {
		return gjson.Result{}, false
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		reply.BadRequest("want a JSON object", "").Write(w)
		return gjson.Result{}, false
	}
	return gjson.ParseBytes(body), true
}

// createToken serves POST /admin/api/tokens: the new token's secret is in
// the answer, once; D1 keeps only its hash.
func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) {
	st, in, ok := h.tokensChange(w, r)
	if !ok {
		return
	}
	var t store.Token
	if !h.readTokenFields(w, in, &t, true) {
		return
	}
	secret := seal.NewToken()
	t.Prefix = secret[:7]
	t, err := st.Create(r.Context(), t, seal.HashToken(secret), h.d.Now().UnixMilli())
	if err != nil {
		reply.Failed(w, err, "could not create the token", "creating a token")
		return
	}
	auditNote(w, "token "+t.Prefix+"…")
	w.Header().Set("Cache-Control", "no-store")
	var b jsonout.Builder
	writeToken(&b, t)
	b.Key("token").String(secret).EndObject()
	reply.JSON(w, http.StatusCreated, b.Bytes())
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) {
	st, ok := h.tokens(w)
	if !ok {
		return
	}
	list, err := st.List(r.Context())
	if err != nil {
		reply.Failed(w, err, "could not read the tokens", "listing tokens")
		return
	}
	var b jsonout.Builder
	b.Object().Key("tokens").Array()
	for _, t := range list {
		writeToken(&b, t)
		b.EndObject()
	}
	reply.JSON(w, http.StatusOK, b.EndArray().EndObject().Bytes())
}

func (h *Handler) getToken(w http.ResponseWriter, r *http.Request, id int64) {
	st, ok := h.tokens(w)
	if !ok {
		return
	}
	t, err := st.Get(r.Context(), id)
	if !tokenFound(w, err, id) {
		return
	}
	var b jsonout.Builder
	writeToken(&b, t)
	reply.JSON(w, http.StatusOK, b.EndObject().Bytes())
}

// patchToken serves PATCH /admin/api/tokens/{id}; a change applies at
// once (the token cache is dropped).
func (h *Handler) patchToken(w http.ResponseWriter, r *http.Request, id int64) {
	st, in, ok := h.tokensChange(w, r)
	if !ok {
		return
	}
	t, err := st.Get(r.Context(), id)
	if !tokenFound(w, err, id) {
		return
	}
	if !h.readTokenFields(w, in, &t, false) {
		return
	}
	err = st.Update(r.Context(), t, h.d.Now().UnixMilli())
	h.invalidate()
	if !tokenFound(w, err, id) {
		return
	}
	auditNote(w, "token "+t.Prefix+"…")
	h.getToken(w, r, id)
}

func (h *Handler) deleteToken(w http.ResponseWriter, r *http.Request, id int64) {
	st, ok := h.tokens(w)
	if !ok {
		return
	}
	err := st.Delete(r.Context(), id)
	h.invalidate()
	if !tokenFound(w, err, id) {
		return
	}
	var b jsonout.Builder
	reply.JSON(w, http.StatusOK, b.Object().Key("deleted").Int(id).EndObject().Bytes())
}

func tokenFound(w http.ResponseWriter, err error, id int64) bool {
	if errors.Is(err, store.ErrTokenNotFound) {
		reply.NotFound("no token with id " + strconv.FormatInt(id, 10)).Write(w)
		return false
	}
	if err != nil {
		reply.Failed(w, err, "could not read or write the token", "token %d", id)
		return false
	}
	return true
}

// writeToken writes a token as an open JSON object (the caller closes it):
// never its secret, only the prefix.
func writeToken(b *jsonout.Builder, t store.Token) {
	b.Object().Key("id").Int(t.ID).Key("name").String(t.Name).Key("prefix").String(t.Prefix + "…").
		Key("providers").Raw(jsonout.StringArray(orEmpty(t.Providers))).Key("models").Raw(jsonout.StringArray(orEmpty(t.Models))).
		Key("expires_at").Int(t.ExpiresAt).Key("rpm").Int(t.RPM).
		Key("requests_day").Int(t.RequestsDay).Key("requests_total").Int(t.RequestsTotal).
		Key("tokens_day").Int(t.TokensDay).Key("tokens_total").Int(t.TokensTotal).Key("disabled").Bool(t.Disabled).
		Key("endpoints").String(t.EndpointScope()).
		Key("used").Object().Key("requests").Int(t.UsedRequests).Key("tokens").Int(t.UsedTokens).
		Key("day").Int(t.Day).Key("day_requests").Int(t.DayRequests).Key("day_tokens").Int(t.DayTokens).EndObject().
		Key("last_used_at").Int(t.LastUsedAt).Key("created_at").Int(t.CreatedAt).Key("updated_at").Int(t.UpdatedAt)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
