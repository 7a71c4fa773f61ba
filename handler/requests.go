package handler

import (
	"database/sql"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/proxy"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/store"
)

// listRequests serves GET /admin/api/requests: the request log, newest
// first, a page at a time, with filters: from and to (unix ms), status
// (2xx, 4xx, 5xx), class, token (0 is AUTH_KEY), key (any key tried),
// provider, model, route; before (a request id) and limit page on. A bad
// parameter answers 400 naming it.
func (h *Handler) listRequests(w http.ResponseWriter, r *http.Request) {
	f, limit, bad := requestFilter(r)
	if bad.Status != 0 {
		bad.Write(w)
		return
	}
	db, ok := h.db(w)
	if !ok {
		return
	}
	h.proxy().FlushNow() // what this isolate still holds is listed too
	page, err := store.On(db, h.d.Queries).Requests().Page(r.Context(), f, limit)
	if err != nil {
		reply.Failed(w, err, "could not read the request log", "reading the request log")
		return
	}
	masks, err := h.keyMasks(r, db, page)
	if err != nil {
		reply.Failed(w, err, "could not read the request log's keys", "reading the request log's keys")
		return
	}
	var b jsonout.Builder
	b.Object().Key("requests").Array()
	for _, e := range page {
		writeLoggedRequest(&b, e, masks)
	}
	b.EndArray().Key("next_before")
	if len(page) == limit {
		b.String(strconv.FormatInt(page[len(page)-1].ID, 36))
	} else {
		b.Null()
	}
	reply.JSON(w, http.StatusOK, b.EndObject().Bytes())
}

// getRequest serves GET /admin/api/requests/{id}: one entry, found by the
// X-Keypool-Request-Id its answer carried.
func (h *Handler) getRequest(w http.ResponseWriter, r *http.Request, raw string) {
	id, ok := proxy.ParseRequestID(raw)
	if !ok {
		reply.BadRequest("not a request id: "+strconv.Quote(raw)+" (the "+proxy.RequestIDHeader+" of an answer)", "id").Write(w)
		return
	}
	db, ok := h.db(w)
	if !ok {
		return
	}
	h.proxy().FlushNow()
	e, err := store.On(db, h.d.Queries).Requests().Get(r.Context(), id)
	if errors.Is(err, store.ErrRequestNotFound) {
		reply.NotFound("no request " + raw + " in the request log: it kept only failed, refused, retried and sampled requests, " +
			"and prunes old ones").Write(w)
		return
	}
	if err != nil {
		reply.Failed(w, err, "could not read the request log", "reading the request log")
		return
	}
	masks, err := h.keyMasks(r, db, []store.LoggedRequest{e})
	if err != nil {
		reply.Failed(w, err, "could not read the request log's keys", "reading the request log's keys")
		return
	}
	var b jsonout.Builder
	writeLoggedRequest(&b, e, masks)
	reply.JSON(w, http.StatusOK, b.Bytes())
}

// requestFilter reads listRequests' parameters.
func requestFilter(r *http.Request) (f store.RequestFilter, limit int, bad reply.Error) {
	q := r.URL.Query()
	limit = 50
	num := func(name string, into *int64) bool {
		v := q.Get(name)
		if v == "" {
			return true
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			bad = reply.BadRequest(name+" must be a whole number ≥ 0", name)
			return false
		}
		*into = n
		return true
	}
	var lim int64
	if !num("from", &f.From) || !num("to", &f.To) || !num("key", &f.KeyID) || !num("limit", &lim) {
		return f, limit, bad
	}
	if lim > 0 {
		limit = int(min(lim, 500))
	}
	if v := q.Get("token"); v != "" {
		if !num("token", &f.TokenID) {
			return f, limit, bad
		}
		f.HasToken = true
	}
	if v := q.Get("before"); v != "" {
		id, ok := proxy.ParseRequestID(v)
		if !ok {
			return f, limit, reply.BadRequest("before must be a request id (next_before of the page before)", "before")
		}
		f.Before = id
	}
	switch v := strings.ToLower(q.Get("status")); v {
	case "":
	case "2xx", "4xx", "5xx":
		f.Status = int(v[0] - '0')
	default:
		return f, limit, reply.BadRequest("status must be 2xx, 4xx or 5xx", "status")
	}
	switch f.Class = q.Get("class"); f.Class {
	case "", "success", "client", "upstream", "rejected":
	default:
		return f, limit, reply.BadRequest("class must be success, client, upstream or rejected", "class")
	}
	if f.Provider = q.Get("provider"); f.Provider != "" {
		if _, known := provider.Lookup(f.Provider); !known {
			return f, limit, reply.BadRequest("unknown provider "+strconv.Quote(f.Provider), "provider")
		}
	}
	f.Model, f.Route = q.Get("model"), q.Get("route")
	return f, limit, bad
}

// keyMasks is the masked form of every key the entries name (a deleted
// key has none).
func (h *Handler) keyMasks(r *http.Request, db *sql.DB, page []store.LoggedRequest) (map[int64]string, error) {
	var ids []int64
	for _, e := range page {
		ids = append(ids, e.Keys...)
	}
	return store.On(db, h.d.Queries).Keys().Masks(r.Context(), ids)
}

func writeLoggedRequest(b *jsonout.Builder, e store.LoggedRequest, masks map[int64]string) {
	b.Object().Key("id").String(strconv.FormatInt(e.ID, 36)).Key("at").Int(e.At()).
		Key("token").Int(e.TokenID).Key("provider").String(e.Provider).Key("model").String(e.Model).
		Key("route").String(e.Route).Key("status").Int(int64(e.Status)).Key("class").String(e.Class).
		Key("key").Int(e.KeyID).Key("key_masked").String(masks[e.KeyID]).
		Key("prompt_tokens").Int(e.Prompt).Key("completion_tokens").Int(e.Completion).
		Key("cached_tokens").Int(e.Cached).Key("estimated").Bool(e.Estimated).Key("latency_ms").Int(e.LatencyMS)
	// The attempts as logged, each with its key's masked form.
	b.Key("attempts").Array()
	for i, a := range gjson.Parse(e.Attempts).Array() {
		k := int64(0)
		if i < len(e.Keys) {
			k = e.Keys[i]
		}
		b.Object().Key("key").Int(k).Key("key_masked").String(masks[k]).
			Key("status").Int(a.Get("status").Int()).Key("verdict").String(a.Get("verdict").String()).
			Key("reason").String(a.Get("reason").String()).Key("ms").Int(a.Get("ms").Int()).EndObject()
	}
	b.EndArray().EndObject()
}
