package handler

import (
	"database/sql"
	"log"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// checkCombined refuses changes that, with the stored settings.Settings, would
// leave guest_reveal_keys on in open mode: full keys for anyone who asks.
func (h *Handler) checkCombined(r *http.Request, st *store.Settings, changes map[string]string) (reply.Error, bool) {
	m, err := st.All(r.Context())
	if err != nil {
		log.Printf("keypool: reading settings: %v", err)
		return reply.Internal("could not read the settings"), false
	}
	for k, v := range changes {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	if s := settings.Parse(m); s.AccessMode == settings.AccessOpen && s.GuestRevealKeys {
		return reply.BadRequest(settings.GuestReveal+": full keys cannot be shown when access_mode is \"open\" (anyone could read them); "+
			"use \"restricted\" with a guest password, or turn guest_reveal_keys off", settings.GuestReveal), false
	}
	return reply.Error{}, true
}

func stringMap(r gjson.Result) map[string]string {
	m := map[string]string{}
	r.ForEach(func(k, v gjson.Result) bool {
		m[k.String()] = v.String()
		return true
	})
	return m
}

// adminSettings serves GET and PUT /admin/api/settings. PUT takes a JSON
// object of the settings to change (null resets one to its default) and
// names the field that is wrong, changing nothing, when one is.
func (h *Handler) adminSettings(w http.ResponseWriter, r *http.Request, db *sql.DB) {
	st := store.On(db, h.d.Queries).Settings()
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
	case http.MethodPut, http.MethodPatch:
		body, ok := h.readBody(w, r)
		if !ok {
			return
		}
		changes, bad := h.settingChanges(body)
		if bad.Status == 0 {
			bad, _ = h.checkCombined(r, st, changes)
		}
		if bad.Status != 0 {
			bad.Write(w)
			return
		}
		if err := st.Set(ctx, changes, h.d.Now().UnixMilli()); err != nil {
			reply.Failed(w, err, "could not save the settings", "saving settings")
			return
		}
		h.invalidate()
	default:
		reply.MethodNotAllowed(w, "GET, PUT")
		return
	}
	m, err := st.All(ctx)
	if err != nil {
		reply.Failed(w, err, "could not read the settings", "reading settings")
		return
	}
	reply.JSON(w, http.StatusOK, settings.JSON(settings.Parse(m)))
}

// settingChanges reads a PUT body into the stored form of each setting
// ("" resets it to its default), or the error naming the wrong field.
func (h *Handler) settingChanges(body []byte) (map[string]string, reply.Error) {
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		return nil, reply.BadRequest("want a JSON object of settings.Settings, e.g. {\"aliases\":{\"fast\":\"groq/llama-3.1-8b-instant\"}}", "")
	}
	changes := map[string]string{}
	var bad reply.Error
	gjson.ParseBytes(body).ForEach(func(k, v gjson.Result) bool {
		name := k.String()
		check, known := settings.Check(name)
		if !known {
			bad = reply.BadRequest(name+": unknown setting; known: "+strings.Join(settings.Names(), ", "), name)
			return false
		}
		if v.Type == gjson.Null {
			changes[name] = ""
			return true
		}
		raw := v.Raw
		if v.Type == gjson.Number || v.Type == gjson.String && (name == settings.Wait || name == settings.PageSize) {
			raw = v.String()
		}
		if msg := check(raw); msg != "" {
			bad = reply.BadRequest(name+": "+msg, name)
			return false
		}
		if name == settings.GuestPassword {
			// Kept only as a fingerprint under KEYPOOL_SECRET.
			b, err := h.box()
			if err != nil {
				bad = reply.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
					Message: "a guest password needs KEYPOOL_SECRET: " + err.Error()}
				return false
			}
			raw = string(jsonout.AppendString(nil, b.Fingerprint(v.String(), "guest")))
		}
		changes[name] = raw
		return true
	})
	return changes, bad
}
