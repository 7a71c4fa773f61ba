package handler

import (
	"database/sql"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/store"
)

// maxAdminBody bounds an admin request: enough for a paste of ~100 000 keys.
const maxAdminBody = 16 << 20

// maxLabel bounds a key label.
const maxLabel = 200

// keys returns the key store, sealing with KEYPOOL_SECRET; it answers
// 503 itself when the secret or the database is missing.
func (h *Handler) keys(w http.ResponseWriter) (*store.Keys, bool) {
	b, ok := h.needBox(w)
	if !ok {
		return nil, false
	}
	db, ok := h.db(w)
	if !ok {
		return nil, false
	}
	return store.On(db, h.d.Queries).Keys().Sealing(b), true
}

// keysChange is the key pool and the request's JSON object, for a change
// to keys; false: answered.
func (h *Handler) keysChange(w http.ResponseWriter, r *http.Request) (*store.Keys, gjson.Result, bool) {
	keys, ok := h.keys(w)
	if !ok {
		return nil, gjson.Result{}, false
	}
	in, ok := jsonObject(w, h, r)
	return keys, in, ok
}

// db returns the database, or answers 500 saying it is missing.
func (h *Handler) db(w http.ResponseWriter) (*sql.DB, bool) {
	db, err := h.d.DB()
	if err != nil {
		reply.Failed(w, err, "keypool's database is not available (is the D1 binding DB configured?)", "database unavailable")
		return nil, false
	}
	return db, true
}

// addKeys imports pasted key text: {"provider": "...", "keys": "<text>",
// "label": "..."}. keys may also be a JSON array of strings. The answer
// lists what was added, what was already there and what was rejected and
// why; one bad line never fails the rest.
func (h *Handler) addKeys(w http.ResponseWriter, r *http.Request) {
	in, ok := readImport(w, r)
	if !ok {
		return
	}
	parsed := in.prov.ParseKeys(in.text)
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	added, dups, err := keys.Add(r.Context(), in.prov.Name, in.label, parsed.Keys, h.d.Now().UnixMilli())
	if len(added) > 0 {
		h.invalidate()
	}
	if err != nil {
		// Keys added before the failure stay added; say so.
		reply.Failed(w, err, "the import stopped after "+strconv.Itoa(len(added))+" keys were added: database error; send the list again to add the rest (keys already added count as duplicates)", "importing keys")
		return
	}
	status := http.StatusOK
	if len(added) > 0 {
		status = http.StatusCreated
	}
	reply.JSON(w, status, importResult(in.prov.Name, added, dups, parsed))
}

// importRequest is a POST /admin/api/keys body, checked.
type importRequest struct {
	prov  provider.Provider
	text  string // the keys, one text however they were sent
	label string
}

// readImport reads and checks an import body; when it is not right it
// answers which field is wrong.
func readImport(w http.ResponseWriter, r *http.Request) (importRequest, bool) {
	var in importRequest
	if r.Body == nil {
		reply.BadRequest(`send a JSON body: {"provider": "openai", "keys": "sk-...\nsk-..."}`, "").Write(w)
		return in, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		reply.BadRequest("could not read the request body: "+err.Error(), "").Write(w)
		return in, false
	}
	if len(body) > maxAdminBody {
		reply.Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
			Message: "import at most " + strconv.Itoa(maxAdminBody>>20) + " MiB at a time; split the list"}.Write(w)
		return in, false
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		reply.BadRequest(`body must be a JSON object: {"provider": "openai", "keys": "sk-...\nsk-..."}`, "").Write(w)
		return in, false
	}
	pv := gjson.GetBytes(body, "provider")
	if pv.Type != gjson.String || pv.String() == "" {
		reply.BadRequest("provider is required; one of: "+strings.Join(provider.Names(), ", "), "provider").Write(w)
		return in, false
	}
	var ok bool
	if in.prov, ok = provider.Lookup(pv.String()); !ok {
		reply.BadRequest("unknown provider "+strconv.Quote(pv.String())+"; one of: "+strings.Join(provider.Names(), ", "), "provider").Write(w)
		return in, false
	}
	if in.text, ok = importText(w, gjson.GetBytes(body, "keys")); !ok {
		return in, false
	}
	if lv := gjson.GetBytes(body, "label"); lv.Exists() {
		if lv.Type != gjson.String {
			reply.BadRequest("label must be a string", "label").Write(w)
			return in, false
		}
		in.label = strings.TrimSpace(lv.String())
		if len([]rune(in.label)) > maxLabel {
			reply.BadRequest("label is longer than "+strconv.Itoa(maxLabel)+" characters", "label").Write(w)
			return in, false
		}
	}
	return in, true
}

// importText is the "keys" of an import, a string or an array of strings,
// as one text.
func importText(w http.ResponseWriter, kv gjson.Result) (string, bool) {
	switch {
	case kv.Type == gjson.String:
		return kv.String(), true
	case kv.IsArray():
		var lines []string
		for i, e := range kv.Array() {
			if e.Type != gjson.String {
				reply.BadRequest("keys["+strconv.Itoa(i)+"] is not a string", "keys").Write(w)
				return "", false
			}
			lines = append(lines, e.String())
		}
		return strings.Join(lines, "\n"), true
	}
	reply.BadRequest("keys is required: a string of keys separated by newlines, commas, spaces, semicolons or tabs, or an array of strings", "keys").Write(w)
	return "", false
}

// importResult is the answer to an import: the keys added, duplicate
// (already stored, or twice in the text) and rejected, each masked.
func importResult(prov string, added []store.Key, dups []string, parsed provider.ParsedKeys) []byte {
	var b jsonout.Builder
	b.Object().Key("provider").String(prov).
		Key("added").Int(int64(len(added))).
		Key("duplicates").Int(int64(len(dups) + len(parsed.Duplicates))).
		Key("rejected").Int(int64(len(parsed.Rejected)))
	b.Key("added_keys").Array()
	for _, k := range added {
		b.Object().Key("id").Int(k.ID).Key("key").String(k.Masked).EndObject()
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
	return b.EndArray().EndObject().Bytes()
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request) {
	prov := r.URL.Query().Get("provider")
	if prov != "" {
		if _, ok := provider.Lookup(prov); !ok {
			reply.BadRequest("unknown provider "+strconv.Quote(prov), "provider").Write(w)
			return
		}
	}
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	list, err := keys.List(r.Context(), prov)
	if err != nil {
		reply.Failed(w, err, "could not read the key pool", "listing keys")
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
	reply.JSON(w, http.StatusOK, b.Bytes())
}

func (h *Handler) getKey(w http.ResponseWriter, r *http.Request, id int64) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	k, events, err := keys.Get(r.Context(), id, 50)
	if errors.Is(err, store.ErrNotFound) {
		reply.NotFound("no key with id " + strconv.FormatInt(id, 10)).Write(w)
		return
	}
	if err != nil {
		reply.Failed(w, err, "could not read the key", "reading key %d", id)
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
	reply.JSON(w, http.StatusOK, b.Bytes())
}

// writeKey writes a key as an open JSON object (the caller closes it), its
// secret masked. Cooldowns that have ended are left out.
func writeKey(b *jsonout.Builder, k store.Key, now int64) {
	b.Object().Key("id").Int(k.ID).Key("provider").String(k.Provider).
		Key("key").String(k.Masked).Key("label").String(k.Label).
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
		reply.NotFound("no key with id " + strconv.FormatInt(id, 10)).Write(w)
		return
	}
	if err != nil {
		reply.Failed(w, err, "could not delete the key", "deleting key %d", id)
		return
	}
	var b jsonout.Builder
	b.Object().Key("deleted").Int(id).EndObject()
	reply.JSON(w, http.StatusOK, b.Bytes())
}

// listProviders serves GET /admin/api/providers: each provider's origin
// and override variable, whether AI Gateway knows it, and where its
// routes go in this deployment: the base URL of /v1/* ("openai") and of
// /api/<name>/* ("native"), each with whether that is the gateway, and
// where /api/compat sends its models and its balance is read.
func (h *Handler) listProviders(w http.ResponseWriter) {
	var b jsonout.Builder
	b.Object().Key("default").String(h.cfg().DefaultProvider).Key("providers").Array()
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		t := h.proxy().Target(p)
		b.Object().Key("name").String(p.Name).Key("base_url").String(t.Origin).
			Key("base_url_var").String(p.BaseURLVar()).Key("gateway").Bool(p.Gateway).
			Key("key_header").String(p.KeyHeader)
		if !p.NoOpenAI {
			base, via := p.OpenAIBase(t)
			b.Key("openai").Object().Key("base_url").String(base).Key("gateway").Bool(via).EndObject()
		}
		base, via := p.NativeBase(t)
		b.Key("native").Object().Key("base_url").String(base).Key("gateway").Bool(via).EndObject()
		if c := p.CompatBase(t); c != "" {
			b.Key("compat").Object().Key("base_url").String(c).Key("model_prefix").String(p.GatewayCompat + "/").EndObject()
		}
		if p.Balance != provider.NoBalance {
			b.Key("balance_url").String(p.BalanceURL(t))
		}
		b.EndObject()
	}
	b.EndArray().EndObject()
	reply.JSON(w, http.StatusOK, b.Bytes())
}

// patchKey serves PATCH /admin/api/keys/{id}: {"status": "active" |
// "disabled", "label": "…", "clear_models": true}.
func (h *Handler) patchKey(w http.ResponseWriter, r *http.Request, id int64) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		reply.BadRequest(`want a JSON object, e.g. {"status":"disabled"}`, "").Write(w)
		return
	}
	in := gjson.ParseBytes(body)
	status := ""
	if v := in.Get("status"); v.Exists() {
		status = v.String()
		if v.Type != gjson.String || status != store.StatusActive && status != store.StatusDisabled {
			reply.BadRequest(`status: "active" or "disabled" (blocked and exhausted are set by keypool)`, "status").Write(w)
			return
		}
	}
	var label *string
	if v := in.Get("label"); v.Exists() {
		l := strings.TrimSpace(v.String())
		if v.Type != gjson.String || len(l) > maxLabel {
			reply.BadRequest("label: a string of at most "+strconv.Itoa(maxLabel)+" bytes", "label").Write(w)
			return
		}
		label = &l
	}
	err := keys.AdminUpdate(r.Context(), id, status, label, in.Get("clear_models").Bool(), h.d.Now().UnixMilli())
	h.invalidate()
	if errors.Is(err, store.ErrNotFound) {
		reply.NotFound("no key with id " + strconv.FormatInt(id, 10)).Write(w)
		return
	}
	if err != nil {
		reply.Failed(w, err, "could not update the key", "updating key %d", id)
		return
	}
	h.getKey(w, r, id)
}

// revealKey serves POST /admin/api/keys/{id}/reveal: the full key, for
// the admin who asked (the request is audited like every change).
func (h *Handler) revealKey(w http.ResponseWriter, r *http.Request, id int64) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	secret, err := keys.Reveal(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		reply.NotFound("no key with id " + strconv.FormatInt(id, 10)).Write(w)
		return
	}
	if err != nil {
		reply.Failed(w, err, "could not open the key (was KEYPOOL_SECRET changed?)", "revealing key %d", id)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	var b jsonout.Builder
	reply.JSON(w, http.StatusOK, b.Object().Key("id").Int(id).Key("key").String(secret).EndObject().Bytes())
}

// keyBalance serves GET /admin/api/keys/{id}/balance?days=30: the key's
// balance readings, oldest first.
func (h *Handler) keyBalance(w http.ResponseWriter, r *http.Request, id int64) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	days, err := strconv.ParseInt(r.URL.Query().Get("days"), 10, 64)
	if err != nil || days <= 0 || days > 3650 {
		days = 30
	}
	since := h.d.Now().Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
	points, err := store.On(db, h.d.Queries).Checks().BalanceHistory(r.Context(), id, since)
	if err != nil {
		reply.Failed(w, err, "could not read the balance history", "reading key %d balance history", id)
		return
	}
	var b jsonout.Builder
	b.Object().Key("id").Int(id).Key("points").Array()
	for _, p := range points {
		b.Array().Int(p.At).Float(p.Balance).EndArray()
	}
	reply.JSON(w, http.StatusOK, b.EndArray().EndObject().Bytes())
}

// listAudit serves GET /admin/api/audit?before=<id>&limit=: the audit
// log, newest first, a page at a time.
func (h *Handler) listAudit(w http.ResponseWriter, r *http.Request) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 || limit > 500 {
		limit = 50
	}
	entries, err := store.On(db, h.d.Queries).Audit().Page(r.Context(), before, limit)
	if err != nil {
		reply.Failed(w, err, "could not read the audit log", "reading the audit log")
		return
	}
	var b jsonout.Builder
	b.Object().Key("entries").Array()
	for _, e := range entries {
		b.Object().Key("id").Int(e.ID).Key("at").Int(e.At).Key("actor").String(e.Actor).Key("ip").String(e.IP).
			Key("action").String(e.Action).Key("target").String(e.Target).Key("detail").String(e.Detail).EndObject()
	}
	b.EndArray().Key("next_before")
	if len(entries) == limit {
		b.Int(entries[len(entries)-1].ID)
	} else {
		b.Null()
	}
	reply.JSON(w, http.StatusOK, b.EndObject().Bytes())
}
