package handler

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
)

// Access says which credentials a route takes.
type Access string

const (
	Public Access = "public" // none (login, logout)
	Client Access = "client" // a client token (AUTH_KEY or one the admin made)
	Admin  Access = "admin"  // an admin session (+ CSRF token on changes) or the admin password
	Guest  Access = "guest"  // whatever the access_mode setting asks
	Debug  Access = "debug"  // admin, and only when KEYPOOL_DEBUG=1
)

// Route is one route of the worker.
type Route struct {
	Method string // "*" for any
	Path   string // "{id}" stands for a positive integer, a trailing "*" for anything
	Access Access
}

// adminRoute is a route under /admin/api with its handler.
type adminRoute struct {
	method, path string
	debug        bool
	serve        func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall)
}

// adminCall is what a matched admin route gets.
type adminCall struct {
	actor string // "password" or "session"
	id    int64  // the {id} in the path, if any
	raw   string // the {rid} in the path (a request id), if any
}

var adminRoutes = []adminRoute{
	{"GET", "/keys", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.listKeys(w, r) }},
	{"POST", "/keys", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.addKeys(w, r) }},
	{"POST", "/keys/bulk", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.bulkKeys(w, r) }},
	{"POST", "/keys/export", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.exportKeys(w, r) }},
	{"GET", "/balance/trend", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.balanceTrend(w, r) }},
	{"GET", "/keys/{id}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.getKey(w, r, a.id) }},
	{"PATCH", "/keys/{id}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.patchKey(w, r, a.id) }},
	{"DELETE", "/keys/{id}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.deleteKey(w, r, a.id) }},
	{"POST", "/keys/{id}/reveal", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.revealKey(w, r, a.id) }},
	{"GET", "/keys/{id}/balance", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.keyBalance(w, r, a.id) }},
	{"GET", "/providers", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.listProviders(w) }},
	{"GET", "/settings", false, (*Handler).settingsRoute},
	{"PUT", "/settings", false, (*Handler).settingsRoute},
	{"PATCH", "/settings", false, (*Handler).settingsRoute},
	{"GET", "/checks", false, (*Handler).listCheckJobs},
	{"POST", "/checks", false, (*Handler).startCheckJob},
	{"GET", "/checks/{id}", false, (*Handler).showCheckJob},
	{"DELETE", "/checks/{id}", false, (*Handler).stopCheckJob},
	{"POST", "/checks/{id}/resume", false, (*Handler).resumeCheckJob},
	{"GET", "/tokens", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.listTokens(w, r) }},
	{"POST", "/tokens", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.createToken(w, r) }},
	{"GET", "/tokens/{id}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.getToken(w, r, a.id) }},
	{"PATCH", "/tokens/{id}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.patchToken(w, r, a.id) }},
	{"DELETE", "/tokens/{id}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.deleteToken(w, r, a.id) }},
	{"GET", "/requests", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.listRequests(w, r) }},
	{"GET", "/requests/{rid}", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.getRequest(w, r, a.raw) }},
	{"GET", "/audit", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.listAudit(w, r) }},
	{"POST", "/sessions/revoke", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.revokeAllSessions(w, r) }},
	{"GET", "/stats", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.stats(w, r) }},
	{"GET", "/stats/now", false, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.statsNow(w, r) }},
	{"GET", "/debug/panic", true, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) {
		// Lets the end-to-end suite prove that a panic becomes a 500 and
		// leaves the worker serving, on both compilers.
		panic("debug panic requested")
	}},
	{"GET", "/debug/sleep", true, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.debugSleep(w, r) }},
	{"GET", "/debug/stats", true, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.debugStats(w) }},
	{"POST", "/debug/faults", true, func(h *Handler, w http.ResponseWriter, r *http.Request, a adminCall) { h.debugFaults(w, r) }},
}

// Routes lists every route the worker serves, with the credentials it
// takes: the README's tables and the auth-matrix test are checked
// against it.
func Routes() []Route {
	out := []Route{
		{"*", "/v1/*", Client},
		{"*", "/api/*", Client},
		{"POST", "/admin/login", Public},
		{"POST", "/admin/logout", Public},
		{"POST", "/guest/login", Public},
		{"GET", "/guest/api/summary", Guest},
	}
	for _, a := range adminRoutes {
		acc := Admin
		if a.debug {
			acc = Debug
		}
		out = append(out, Route{a.method, "/admin/api" + a.path, acc})
	}
	return out
}

// matchPath matches a path against a pattern whose "{id}" segments are
// positive integers; id is the last one; a "{rid}" segment is any
// non-empty text, returned as raw. badID: the path has the pattern's
// shape but an id that is not a positive integer.
func matchPath(pattern, path string) (id int64, raw string, ok, badID bool) {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return 0, "", false, false
	}
	for i := range ps {
		if ps[i] == "{rid}" && xs[i] != "" {
			raw = xs[i]
			continue
		}
		if ps[i] == "{id}" {
			n, err := strconv.ParseInt(xs[i], 10, 64)
			if err != nil || n <= 0 {
				badID = true
				continue
			}
			id = n
			continue
		}
		if ps[i] != xs[i] {
			return 0, "", false, false
		}
	}
	return id, raw, !badID, badID
}

// admin serves /admin/api/*: authentication first, then the route table.
// Every change (any method but GET) is written to the audit log.
func (h *Handler) admin(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/admin/api"), "/")
	queries := h.d.Queries
	if p == "/debug/stats" {
		queries = nil // reading the D1 query count does not change it
	}
	actor, ok := h.adminActor(w, r, queries)
	if !ok {
		return
	}
	debug := h.cfg().Debug
	var allow []string
	badID := false
	for _, rt := range adminRoutes {
		if rt.debug && !debug {
			continue
		}
		id, raw, ok, bad := matchPath(rt.path, p)
		badID = badID || bad
		if !ok {
			continue
		}
		if rt.method != r.Method {
			allow = append(allow, rt.method)
			continue
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			rt.serve(h, w, r, adminCall{actor: actor, id: id, raw: raw})
			return
		}
		sw := &statusWriter{Recorder: reply.NewRecorder(w)}
		rt.serve(h, sw, r, adminCall{actor: actor, id: id, raw: raw})
		if db, err := h.d.DB(); err == nil {
			target := ""
			if id > 0 {
				target = strings.TrimPrefix(rt.path[:strings.Index(rt.path, "{id}")], "/") + strconv.FormatInt(id, 10)
			}
			h.audit(r, db, actor, r.Method+" /admin/api"+rt.path, target, "status "+strconv.Itoa(sw.status())+sw.note)
		}
		return
	}
	if len(allow) > 0 {
		reply.MethodNotAllowed(w, strings.Join(allow, ", "))
		return
	}
	if badID {
		reply.BadRequest("the id in the path must be a positive integer", "id").Write(w)
		return
	}
	reply.NotFound("no admin route " + r.Method + " " + r.URL.Path).Write(w)
}

// statusWriter remembers the status an admin change answered, and a note
// the handler may leave for the audit log (never a secret).
type statusWriter struct {
	reply.Recorder
	note string
}

func (s *statusWriter) status() int {
	if s.Status() == 0 {
		return http.StatusOK
	}
	return s.Status()
}

// auditNote leaves a note for the audit log entry of this change.
func auditNote(w http.ResponseWriter, note string) {
	if s, ok := w.(*statusWriter); ok {
		s.note += "; " + note
	}
}

func (h *Handler) settingsRoute(w http.ResponseWriter, r *http.Request, _ adminCall) {
	if db, ok := h.db(w); ok {
		h.adminSettings(w, r, db)
	}
}

// debugSleep sleeps ?ms= and leaves a timer of ?leave= ms armed after the
// response: the end-to-end suite proves with it that a reused Go
// instance's timers still fire.
func (h *Handler) debugSleep(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sleep, _ := strconv.Atoi(q.Get("ms"))
	leave, _ := strconv.Atoi(q.Get("leave"))
	if leave > 0 {
		time.AfterFunc(time.Duration(min(leave, 10000))*time.Millisecond, func() {})
	}
	time.Sleep(time.Duration(min(sleep, 10000)) * time.Millisecond)
	var b jsonout.Builder
	reply.JSON(w, http.StatusOK, b.Object().Key("slept_ms").Int(int64(sleep)).EndObject().Bytes())
}

// debugFaults injects a fault for the fault suite:
// ?d1=down|slow|none&seconds=N[&delay_ms=M]. A fault lifts itself after
// N seconds (at most 300): with D1 down, no admin route (this one
// included) can authenticate to lift it.
func (h *Handler) debugFaults(w http.ResponseWriter, r *http.Request) {
	if h.d.InjectFault == nil {
		reply.Error{Status: http.StatusNotImplemented, Type: "server_error", Code: "not_supported",
			Message: "faults can be injected only on Workers"}.Write(w)
		return
	}
	q := r.URL.Query()
	mode := q.Get("d1")
	if mode != "down" && mode != "slow" && mode != "none" {
		reply.BadRequest("d1 must be down, slow or none", "d1").Write(w)
		return
	}
	seconds, err := strconv.Atoi(q.Get("seconds"))
	if mode != "none" && (err != nil || seconds < 1 || seconds > 300) {
		reply.BadRequest("seconds must be an integer from 1 to 300: how long the fault lasts", "seconds").Write(w)
		return
	}
	delay := 2000
	if v := q.Get("delay_ms"); v != "" {
		if delay, err = strconv.Atoi(v); err != nil || delay < 1 || delay > 30000 {
			reply.BadRequest("delay_ms must be an integer from 1 to 30000", "delay_ms").Write(w)
			return
		}
	}
	until := h.d.Now().Add(time.Duration(seconds) * time.Second).UnixMilli()
	if mode == "none" {
		mode, until = "", 0
	}
	h.d.InjectFault("d1", mode, time.Duration(delay)*time.Millisecond, until)
	var b jsonout.Builder
	reply.JSON(w, http.StatusOK, b.Object().Key("d1").String(q.Get("d1")).Key("until").Int(until).EndObject().Bytes())
}

// debugStats reports the D1 queries counted by the store, for make bench.
func (h *Handler) debugStats(w http.ResponseWriter) {
	var b jsonout.Builder
	b.Object().Key("d1_queries")
	if h.d.Queries != nil {
		b.Int(h.d.Queries.Load())
	} else {
		b.Null()
	}
	if c, ok := h.pool.Shared().(interface{ CacheSize() (int, int) }); ok {
		n, size := c.CacheSize()
		b.Key("cache_entries").Int(int64(n)).Key("cache_bytes").Int(int64(size))
	}
	b.Key("max_body_bytes").Int(h.cfg().MaxBodyBytes)
	if h.d.Memory != nil {
		n, bytes, peak := h.d.Memory()
		b.Key("instances").Int(int64(n)).Key("wasm_bytes").Int(bytes).Key("wasm_peak_bytes").Int(peak)
	}
	reply.JSON(w, http.StatusOK, b.EndObject().Bytes())
}
