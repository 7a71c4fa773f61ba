package handler

import (
	"database/sql"
	"log"
	"net/http"
	"sort"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/store"
)

// checkCombined refuses changes that, with the stored settings, would
// leave guest_reveal_keys on in open mode: full keys for anyone who asks.
func (h *Handler) checkCombined(r *http.Request, st *store.Settings, changes map[string]string) (apiError, bool) {
	m, err := st.All(r.Context())
	if err != nil {
		log.Printf("keypool: reading settings: %v", err)
		return internalError("could not read the settings"), false
	}
	for k, v := range changes {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	if s := parseSettings(m); s.accessMode == modeOpen && s.guestRevealKeys {
		return badRequest(settingGuestReveal+": full keys cannot be shown when access_mode is \"open\" (anyone could read them); "+
			"use \"restricted\" with a guest password, or turn guest_reveal_keys off", settingGuestReveal), false
	}
	return apiError{}, true
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
			bad.write(w)
			return
		}
		if err := st.Set(ctx, changes, h.d.Now().UnixMilli()); err != nil {
			failed(w, err, "could not save the settings", "saving settings")
			return
		}
		h.invalidate()
	default:
		methodNotAllowed(w, "GET, PUT")
		return
	}
	m, err := st.All(ctx)
	if err != nil {
		failed(w, err, "could not read the settings", "reading settings")
		return
	}
	writeJSON(w, http.StatusOK, settingsJSON(parseSettings(m)))
}

// settingChanges reads a PUT body into the stored form of each setting
// ("" resets it to its default), or the error naming the wrong field.
func (h *Handler) settingChanges(body []byte) (map[string]string, apiError) {
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		return nil, badRequest("want a JSON object of settings, e.g. {\"aliases\":{\"fast\":\"groq/llama-3.1-8b-instant\"}}", "")
	}
	changes := map[string]string{}
	var bad apiError
	gjson.ParseBytes(body).ForEach(func(k, v gjson.Result) bool {
		name := k.String()
		check, known := settingChecks[name]
		if !known {
			bad = badRequest(name+": unknown setting; known: "+strings.Join(settingNames(), ", "), name)
			return false
		}
		if v.Type == gjson.Null {
			changes[name] = ""
			return true
		}
		raw := v.Raw
		if v.Type == gjson.Number || v.Type == gjson.String && (name == settingWait || name == settingPageSize) {
			raw = v.String()
		}
		if msg := check(raw); msg != "" {
			bad = badRequest(name+": "+msg, name)
			return false
		}
		if name == settingGuestPassword {
			// Kept only as a fingerprint under KEYPOOL_SECRET.
			b, err := h.box()
			if err != nil {
				bad = apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
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

// settingsJSON is the settings as GET /admin/api/settings shows them:
// the guest password only as whether one is set.
func settingsJSON(s settings) []byte {
	var b jsonout.Builder
	b.Object().Key(settingFreeModels).Array()
	for _, p := range s.freeModels {
		b.String(p)
	}
	b.EndArray()
	writeSortedMap(&b, settingAliases, s.aliases)
	b.Key(settingWait).Int(s.wait)
	writeSortedMap(&b, settingCheckModels, s.checkModels)
	b.Key(settingAccessMode).String(s.accessMode).
		Key("guest_password_set").Bool(s.guestPassword != "").
		Key(settingGuestReveal).Bool(s.guestRevealKeys).Key(settingPageSize).Int(s.pageSize)
	writeStrings(&b, settingForwardHeaders, s.forwardHeaders)
	writeStrings(&b, settingGatewayHeaders, s.gatewayHeaders)
	return b.EndObject().Bytes()
}

// writeSortedMap writes key: {name: value…} into the open object of b,
// names in order.
func writeSortedMap(b *jsonout.Builder, key string, m map[string]string) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	b.Key(key).Object()
	for _, n := range names {
		b.Key(n).String(m[n])
	}
	b.EndObject()
}

// writeStrings writes key: [list…] into the open object of b.
func writeStrings(b *jsonout.Builder, key string, list []string) {
	b.Key(key).Array()
	for _, v := range list {
		b.String(v)
	}
	b.EndArray()
}
