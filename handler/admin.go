package handler

import (
	"database/sql"
	"errors"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// maxAdminBody bounds an admin request: enough for a paste of ~100 000 keys.
const maxAdminBody = 16 << 20

// maxLabel bounds a key label.
const maxLabel = 200

// admin serves /admin/api/*. Every route needs the admin password as a
// bearer token.
func (h *Handler) admin(w http.ResponseWriter, r *http.Request) {
	if !h.checkAdmin(w, r) {
		return
	}
	p := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/admin/api"), "/")
	switch {
	case p == "/keys":
		switch r.Method {
		case http.MethodGet:
			h.listKeys(w, r)
		case http.MethodPost:
			h.addKeys(w, r)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case strings.HasPrefix(p, "/keys/"):
		id, err := strconv.ParseInt(strings.TrimPrefix(p, "/keys/"), 10, 64)
		if err != nil || id <= 0 {
			badRequest("key id must be a positive integer", "id").write(w)
			return
		}
		switch r.Method {
		case http.MethodGet:
			h.getKey(w, r, id)
		case http.MethodDelete:
			h.deleteKey(w, r, id)
		default:
			methodNotAllowed(w, "GET, DELETE")
		}
	case p == "/checks" || strings.HasPrefix(p, "/checks/"):
		if db, ok := h.db(w); ok {
			h.adminChecks(w, r, db, strings.TrimPrefix(strings.TrimPrefix(p, "/checks"), "/"))
		}
	case p == "/settings":
		if db, ok := h.db(w); ok {
			h.adminSettings(w, r, db)
		}
	case p == "/providers":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		h.listProviders(w)
	case p == "/debug/panic" && h.d.Getenv("KEYPOOL_DEBUG") == "1":
		// Lets the end-to-end suite prove that a panic becomes a 500 and
		// leaves the worker serving, on both compilers. Off unless the
		// KEYPOOL_DEBUG var is 1, and behind the admin password anyway.
		panic("debug panic requested")
	case p == "/debug/sleep" && h.d.Getenv("KEYPOOL_DEBUG") == "1":
		// Sleeps ?ms= and leaves a timer of ?leave= ms armed after the
		// response: the end-to-end suite uses it to prove that a reused Go
		// instance's timers still fire.
		q := r.URL.Query()
		sleep, _ := strconv.Atoi(q.Get("ms"))
		leave, _ := strconv.Atoi(q.Get("leave"))
		if leave > 0 {
			time.AfterFunc(time.Duration(min(leave, 10000))*time.Millisecond, func() {})
		}
		time.Sleep(time.Duration(min(sleep, 10000)) * time.Millisecond)
		var b jsonout.Builder
		writeJSON(w, http.StatusOK, b.Object().Key("slept_ms").Int(int64(sleep)).EndObject().Bytes())
	case p == "/debug/stats" && h.d.Getenv("KEYPOOL_DEBUG") == "1":
		var b jsonout.Builder
		b.Object().Key("d1_queries")
		if h.d.Queries != nil {
			b.Int(h.d.Queries.Load())
		} else {
			b.Null()
		}
		writeJSON(w, http.StatusOK, b.EndObject().Bytes())
	default:
		notFound("no admin route " + r.Method + " " + r.URL.Path).write(w)
	}
}

func (h *Handler) checkAdmin(w http.ResponseWriter, r *http.Request) bool {
	want := h.d.Getenv("ADMIN_PASSWORD")
	if want == "" {
		apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
			Message: "the admin password is not set: run `wrangler secret put ADMIN_PASSWORD` (locally, put ADMIN_PASSWORD in .dev.vars)"}.write(w)
		return false
	}
	got := ""
	if v := r.Header.Get("Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		got = strings.TrimSpace(v[7:])
	}
	if got == "" || !secretEqual(got, want) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keypool admin"`)
		apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_admin_password",
			Message: "admin routes need the admin password as Authorization: Bearer <ADMIN_PASSWORD>"}.write(w)
		return false
	}
	return true
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: "method not allowed; use " + allow}.write(w)
}

func (h *Handler) keys(w http.ResponseWriter) (*store.Keys, bool) {
	db, ok := h.db(w)
	if !ok {
		return nil, false
	}
	return store.NewKeys(db).Counting(h.d.Queries), true
}

// db returns the database, or answers 500 saying it is missing.
func (h *Handler) db(w http.ResponseWriter) (*sql.DB, bool) {
	db, err := h.d.DB()
	if err != nil {
		log.Printf("keypool: database unavailable: %v", err)
		internalError("keypool's database is not available (is the D1 binding DB configured?)").write(w)
		return nil, false
	}
	return db, true
}

// addKeys imports pasted key text: {"provider": "...", "keys": "<text>",
// "label": "..."}. keys may also be a JSON array of strings. The answer
// lists what was added, what was already there and what was rejected and
// why; one bad line never fails the rest.
func (h *Handler) addKeys(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil {
		badRequest(`send a JSON body: {"provider": "openai", "keys": "sk-...\nsk-..."}`, "").write(w)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		badRequest("could not read the request body: "+err.Error(), "").write(w)
		return
	}
	if len(body) > maxAdminBody {
		apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
			Message: "import at most " + strconv.Itoa(maxAdminBody>>20) + " MiB at a time; split the list"}.write(w)
		return
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		badRequest(`body must be a JSON object: {"provider": "openai", "keys": "sk-...\nsk-..."}`, "").write(w)
		return
	}
	pv := gjson.GetBytes(body, "provider")
	if pv.Type != gjson.String || pv.String() == "" {
		badRequest("provider is required; one of: "+strings.Join(provider.Names(), ", "), "provider").write(w)
		return
	}
	prov, ok := provider.Lookup(pv.String())
	if !ok {
		badRequest("unknown provider "+strconv.Quote(pv.String())+"; one of: "+strings.Join(provider.Names(), ", "), "provider").write(w)
		return
	}
	kv := gjson.GetBytes(body, "keys")
	var text string
	switch {
	case kv.Type == gjson.String:
		text = kv.String()
	case kv.IsArray():
		var lines []string
		for i, e := range kv.Array() {
			if e.Type != gjson.String {
				badRequest("keys["+strconv.Itoa(i)+"] is not a string", "keys").write(w)
				return
			}
			lines = append(lines, e.String())
		}
		text = strings.Join(lines, "\n")
	default:
		badRequest("keys is required: a string of keys separated by newlines, commas, spaces, semicolons or tabs, or an array of strings", "keys").write(w)
		return
	}
	label := ""
	if lv := gjson.GetBytes(body, "label"); lv.Exists() {
		if lv.Type != gjson.String {
			badRequest("label must be a string", "label").write(w)
			return
		}
		label = strings.TrimSpace(lv.String())
		if len([]rune(label)) > maxLabel {
			badRequest("label is longer than "+strconv.Itoa(maxLabel)+" characters", "label").write(w)
			return
		}
	}
	parsed := prov.ParseKeys(text)
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	added, dups, err := keys.Add(r.Context(), prov.Name, label, parsed.Keys, h.d.Now().UnixMilli())
	if len(added) > 0 {
		h.invalidate()
	}
	if err != nil {
		// Keys added before the failure stay added; say so.
		log.Printf("keypool: importing keys: %v", err)
		internalError("the import stopped after " + strconv.Itoa(len(added)) + " keys were added: database error; send the list again to add the rest (keys already added count as duplicates)").write(w)
		return
	}
	var b jsonout.Builder
	b.Object().Key("provider").String(prov.Name).
		Key("added").Int(int64(len(added))).
		Key("duplicates").Int(int64(len(dups) + len(parsed.Duplicates))).
		Key("rejected").Int(int64(len(parsed.Rejected)))
	b.Key("added_keys").Array()
	for _, k := range added {
		b.Object().Key("id").Int(k.ID).Key("key").String(provider.Mask(k.Secret)).EndObject()
	}
	b.EndArray().Key("duplicate_keys").Array()
	for _, s := range dups {
		b.String(provider.Mask(s))
	}
	for _, s := range parsed.Duplicates {
		b.String(s) // already masked
	}
	b.EndArray().Key("rejected_lines").Array()
	for _, rj := range parsed.Rejected {
		b.Object().Key("line").Int(int64(rj.Line)).Key("value").String(rj.Value).Key("reason").String(rj.Reason).EndObject()
	}
	b.EndArray().EndObject()
	status := http.StatusOK
	if len(added) > 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, b.Bytes())
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request) {
	prov := r.URL.Query().Get("provider")
	if prov != "" {
		if _, ok := provider.Lookup(prov); !ok {
			badRequest("unknown provider "+strconv.Quote(prov), "provider").write(w)
			return
		}
	}
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	list, err := keys.List(r.Context(), prov)
	if err != nil {
		log.Printf("keypool: listing keys: %v", err)
		internalError("could not read the key pool").write(w)
		return
	}
	now := h.d.Now().UnixMilli()
	var b jsonout.Builder
	b.Object().Key("total").Int(int64(len(list))).Key("keys").Array()
	for _, k := range list {
		writeKey(&b, k, now)
		b.EndObject()
	}
	b.EndArray().EndObject()
	writeJSON(w, http.StatusOK, b.Bytes())
}

func (h *Handler) getKey(w http.ResponseWriter, r *http.Request, id int64) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	k, events, err := keys.Get(r.Context(), id, 50)
	if errors.Is(err, store.ErrNotFound) {
		notFound("no key with id " + strconv.FormatInt(id, 10)).write(w)
		return
	}
	if err != nil {
		log.Printf("keypool: reading key %d: %v", id, err)
		internalError("could not read the key").write(w)
		return
	}
	var b jsonout.Builder
	writeKey(&b, k, h.d.Now().UnixMilli())
	b.Key("events").Array()
	for _, e := range events {
		b.Object().Key("at").Int(e.At).Key("model").String(e.Model).
			Key("from").String(e.From).Key("to").String(e.To).
			Key("reason").String(e.Reason).Key("status").Int(e.Status).
			Key("excerpt").String(e.Excerpt).EndObject()
	}
	b.EndArray().EndObject()
	writeJSON(w, http.StatusOK, b.Bytes())
}

// writeKey writes a key as an open JSON object (the caller closes it), its
// secret masked. Cooldowns that have ended are left out.
func writeKey(b *jsonout.Builder, k store.Key, now int64) {
	b.Object().Key("id").Int(k.ID).Key("provider").String(k.Provider).
		Key("key").String(provider.Mask(k.Secret)).Key("label").String(k.Label).
		Key("status").String(k.Status).Key("status_reason").String(k.StatusReason)
	b.Key("balance")
	if k.Balance.Valid {
		b.Float(k.Balance.Float64)
	} else {
		b.Null()
	}
	b.Key("created_at").Int(k.CreatedAt).Key("updated_at").Int(k.UpdatedAt).
		Key("last_used_at").Int(k.LastUsedAt).Key("requests").Int(k.Requests).
		Key("successes").Int(k.Successes).Key("failures").Int(k.Failures)
	b.Key("models").Array()
	for _, m := range k.Models {
		if m.State == store.ModelCooling && m.Until <= now {
			continue
		}
		b.Object().Key("model").String(m.Model).Key("state").String(m.State)
		if m.State == store.ModelCooling {
			b.Key("until").Int(m.Until)
		}
		b.Key("reason").String(m.Reason).Key("streak").Int(m.Streak).EndObject()
	}
	b.EndArray()
}

func (h *Handler) deleteKey(w http.ResponseWriter, r *http.Request, id int64) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	err := keys.Delete(r.Context(), id)
	h.invalidate()
	if errors.Is(err, store.ErrNotFound) {
		notFound("no key with id " + strconv.FormatInt(id, 10)).write(w)
		return
	}
	if err != nil {
		log.Printf("keypool: deleting key %d: %v", id, err)
		internalError("could not delete the key").write(w)
		return
	}
	var b jsonout.Builder
	b.Object().Key("deleted").Int(id).EndObject()
	writeJSON(w, http.StatusOK, b.Bytes())
}

func (h *Handler) listProviders(w http.ResponseWriter) {
	var b jsonout.Builder
	b.Object().Key("default").String(h.defaultProvider()).Key("providers").Array()
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		p = p.WithOrigin(h.d.Getenv(p.BaseURLVar()))
		b.Object().Key("name").String(p.Name).Key("base_url").String(p.Origin).
			Key("base_url_var").String(p.BaseURLVar()).Key("gateway").Bool(p.Gateway).
			Key("key_header").String(p.KeyHeader).EndObject()
	}
	b.EndArray().EndObject()
	writeJSON(w, http.StatusOK, b.Bytes())
}
