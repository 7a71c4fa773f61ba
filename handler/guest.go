package handler

import (
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// The guest page shows the pool's health to people who are not admins,
// as the access_mode setting allows: "open" (anyone), "restricted" (with
// the guest password), "private" (admins only, the default). Guests see
// counts, balances and masked keys; full keys only when the admin turns
// on guest_reveal_keys. The guest API is read-only.

const (
	modeOpen       = "open"
	modeRestricted = "restricted"
	modePrivate    = "private"
)

// guestLogin serves POST /guest/login {"password"}: a guest session when
// the page is restricted. Failures are throttled like admin logins.
func (h *Handler) guestLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	b, ok := h.needBox(w)
	if !ok {
		return
	}
	db, ok := h.db(w)
	if !ok {
		return
	}
	ctx := r.Context()
	set := h.settings(ctx, db)
	if set.accessMode != modeRestricted || set.guestPassword == "" {
		apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "guest_login_off",
			Message: "guest login is only used when access_mode is \"restricted\" and a guest password is set"}.write(w)
		return
	}
	audit := store.NewAudit(db).Counting(h.d.Queries)
	ip := "guest:" + clientIP(r)
	now := h.d.Now()
	if h.loginThrottled(w, r, audit, ip) {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	got := gjson.GetBytes(body, "password").String()
	if got == "" || !secretEqual(b.Fingerprint(got, "guest"), set.guestPassword) {
		if _, err := audit.LoginFailure(ctx, ip, now.UnixMilli(), loginWindow.Milliseconds()); err != nil {
			log.Printf("keypool: recording a failed guest login: %v", err)
		}
		apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_guest_password",
			Message: "wrong guest password"}.write(w)
		return
	}
	audit.LoginSuccess(ctx, ip)
	value, _ := h.newSession(b, "g", set.guestPassword, h.sessionTTL())
	w.Header().Add("Set-Cookie", sessionCookie(r, guestCookie, value, int(h.sessionTTL().Seconds())))
	var out jsonout.Builder
	writeJSON(w, http.StatusOK, out.Object().Key("guest").Bool(true).EndObject().Bytes())
}

// guestSummary serves GET /guest/api/summary: key counts by status and
// provider, balance figures, and the keys, masked (full when
// guest_reveal_keys is on), ?page= and ?page_size= at a time.
func (h *Handler) guestSummary(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	db, ok := h.db(w)
	if !ok {
		return
	}
	ctx := r.Context()
	set := h.settings(ctx, db)
	admin := h.isAdmin(r)
	switch {
	case admin || set.accessMode == modeOpen:
	case set.accessMode == modeRestricted:
		if _, ok := h.readSession(r, guestCookie, "g", set.guestPassword); !ok {
			apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "guest_login_required",
				Message: "this keypool's status page needs the guest password: POST /guest/login"}.write(w)
			return
		}
	default:
		apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "guest_page_private",
			Message: "this keypool's status page is private"}.write(w)
		return
	}
	b, ok := h.needBox(w)
	if !ok {
		return
	}
	keys := store.NewKeys(db).Counting(h.d.Queries).Sealing(b)
	list, err := keys.List(ctx, "")
	if err != nil {
		log.Printf("keypool: guest summary: %v", err)
		internalError("could not read the pool").write(w)
		return
	}
	byStatus := map[string]int64{}
	byProvider := map[string]map[string]int64{}
	var balances []float64
	for _, k := range list {
		byStatus[k.Status]++
		if byProvider[k.Provider] == nil {
			byProvider[k.Provider] = map[string]int64{}
		}
		byProvider[k.Provider][k.Status]++
		if k.Balance.Valid {
			balances = append(balances, k.Balance.Float64)
		}
	}
	var out jsonout.Builder
	out.Object().Key("total").Int(int64(len(list))).Key("by_status").Object()
	for _, s := range []string{rotation.KeyActive, rotation.KeyBlocked, rotation.KeyExhausted, rotation.KeyDisabled} {
		out.Key(s).Int(byStatus[s])
	}
	out.EndObject().Key("by_provider").Object()
	provs := make([]string, 0, len(byProvider))
	for p := range byProvider {
		provs = append(provs, p)
	}
	sort.Strings(provs)
	for _, p := range provs {
		out.Key(p).Object()
		for _, s := range []string{rotation.KeyActive, rotation.KeyBlocked, rotation.KeyExhausted, rotation.KeyDisabled} {
			out.Key(s).Int(byProvider[p][s])
		}
		out.EndObject()
	}
	out.EndObject()
	writeBalanceStats(&out, balances)
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	size, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
	if size <= 0 {
		size = int(set.pageSize)
	}
	size = max(1, min(size, 500))
	page = max(page, 1)
	reveal := set.guestRevealKeys && !admin
	out.Key("page").Int(int64(page)).Key("page_size").Int(int64(size)).Key("keys").Array()
	now := h.d.Now().UnixMilli()
	for i := (page - 1) * size; i < len(list) && i < page*size; i++ {
		k := list[i]
		if reveal {
			if full, err := keys.Reveal(ctx, k.ID); err == nil {
				k.Masked = full
			}
		}
		writeKey(&out, k, now)
		out.EndObject()
	}
	writeJSON(w, http.StatusOK, out.EndArray().EndObject().Bytes())
}

// isAdmin reports whether r carries admin credentials (without answering).
func (h *Handler) isAdmin(r *http.Request) bool {
	want := h.d.Getenv("ADMIN_PASSWORD")
	if want == "" {
		return false
	}
	if v := r.Header.Get("Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") &&
		secretEqual(strings.TrimSpace(v[7:]), want) {
		return true
	}
	_, ok := h.readSession(r, adminCookie, "a", want)
	return ok
}

// writeBalanceStats writes the figures of the known balances.
func writeBalanceStats(b *jsonout.Builder, bs []float64) {
	b.Key("balance").Object().Key("known").Int(int64(len(bs)))
	if len(bs) == 0 {
		b.Key("total").Null().Key("average").Null().Key("median").Null().Key("min").Null().Key("max").Null()
		b.EndObject()
		return
	}
	sort.Float64s(bs)
	total := 0.0
	for _, x := range bs {
		total += x
	}
	median := bs[len(bs)/2]
	if len(bs)%2 == 0 {
		median = (bs[len(bs)/2-1] + bs[len(bs)/2]) / 2
	}
	b.Key("total").Float(total).Key("average").Float(total / float64(len(bs))).Key("median").Float(median).
		Key("min").Float(bs[0]).Key("max").Float(bs[len(bs)-1]).EndObject()
}
