package handler

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/access"
	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// The guest page shows the pool's health to people who are not admins,
// as the access_mode setting allows: "open" (anyone), "restricted" (with
// the guest password), "private" (admins only, the default). Guests see
// counts, balances and masked keys; full keys only when the admin turns
// on guest_reveal_keys. The guest API is read-only.

// guestLogin serves POST /guest/login {"password"}: a guest session when
// the page is restricted. Failures are throttled like admin logins.
func (h *Handler) guestLogin(w http.ResponseWriter, r *http.Request) {
	b, db, ok := h.loginRequest(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	set := h.settings(ctx, db)
	if set.AccessMode != settings.AccessRestricted || set.GuestPassword == "" {
		reply.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "guest_login_off",
			Message: "guest login is only used when access_mode is \"restricted\" and a guest password is set"}.Write(w)
		return
	}
	_, ok = h.passwordLogin(w, r, b, db, loginRole{
		name: "guest", session: "g", cookie: guestCookie, throttle: "guest:", failAction: "guest.login.fail",
		wrongCode: "invalid_guest_password", boundTo: set.GuestPassword,
		right: func(got string) bool { return access.SecretEqual(b.Fingerprint(got, "guest"), set.GuestPassword) },
	})
	if !ok {
		return
	}
	var out jsonout.Builder
	reply.JSON(w, http.StatusOK, out.Object().Key("guest").Bool(true).EndObject().Bytes())
}

// guestSummary serves GET /guest/api/summary: key counts by status and
// provider, balance figures, and the keys, masked (full when
// guest_reveal_keys is on), ?page= and ?page_size= at a time.
func (h *Handler) guestSummary(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		reply.MethodNotAllowed(w, "GET")
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
	case admin || set.AccessMode == settings.AccessOpen:
	case set.AccessMode == settings.AccessRestricted:
		if _, ok := h.readSession(r, guestCookie, "g", set.GuestPassword); !ok {
			reply.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "guest_login_required",
				Message: "this keypool's status page needs the guest password: POST /guest/login"}.Write(w)
			return
		}
	default:
		reply.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "guest_page_private",
			Message: "this keypool's status page is private"}.Write(w)
		return
	}
	b, ok := h.needBox(w)
	if !ok {
		return
	}
	keys := store.On(db, h.d.Queries).Keys().Sealing(b)
	reveal := set.GuestRevealKeys && !admin
	var view guestView
	var err error
	if reveal {
		view, err = h.readGuestView(ctx, keys) // full keys are never cached
	} else {
		view, err = h.cachedGuestView(ctx, keys)
	}
	if err != nil {
		reply.Failed(w, err, "could not read the pool", "guest summary")
		return
	}
	page, size := guestPaging(r.URL.Query(), set.PageSize)
	var out jsonout.Builder
	out.Object()
	gjson.Parse(view.head).ForEach(func(k, v gjson.Result) bool {
		out.Key(k.String()).Raw([]byte(v.Raw))
		return true
	})
	out.Key("page").Int(page).Key("page_size").Int(size).Key("keys").Array()
	h.writeGuestPage(ctx, &out, view, keys, reveal, page, size)
	reply.JSON(w, http.StatusOK, out.EndArray().EndObject().Bytes())
}

// writeGuestPage writes the keys of one page (none past the last page),
// in full when reveal.
func (h *Handler) writeGuestPage(ctx context.Context, out *jsonout.Builder, view guestView, keys *store.Keys, reveal bool, page, size int64) {
	n, first := int64(len(view.keys)), page-1
	if first >= (n+size-1)/size {
		return
	}
	now := h.d.Now().UnixMilli()
	for i := first * size; i < n && i < (first+1)*size; i++ {
		if !reveal {
			out.Raw([]byte(view.keys[i]))
			continue
		}
		k := view.list[i]
		if full, err := keys.Reveal(ctx, k.ID); err == nil {
			k.Masked = full
		}
		writeKey(out, k, now)
		out.EndObject()
	}
}

// guestPaging reads ?page= (from 1) and ?page_size= (at most 500; the
// page_size setting when absent or not a positive number).
func guestPaging(q url.Values, defaultSize int64) (page, size int64) {
	page, err := strconv.ParseInt(q.Get("page"), 10, 64)
	if err != nil || page < 1 {
		page = 1
	}
	size, err = strconv.ParseInt(q.Get("page_size"), 10, 64)
	if err != nil || size < 1 {
		size = defaultSize
	}
	return page, max(1, min(size, 500))
}

// guestView is the pool as the guest summary shows it: the figures (a
// JSON object) and each key's JSON object, masked; list holds the keys
// themselves when they were read for this request.
type guestView struct {
	head string
	keys []string
	list []store.Key
}

// The guest summary's view is cached per isolate for CACHE_SECONDS, up to
// guestViewMaxBytes: an open status page is not a way to make keypool read
// the whole pool on every request. Admin changes drop it (invalidate).
const (
	guestViewKey      = "guest-view"
	guestViewMaxBytes = 2 << 20
)

func (h *Handler) cachedGuestView(ctx context.Context, keys *store.Keys) (guestView, error) {
	var view guestView
	v, hit, err := h.readThrough(guestViewKey, false, func() (string, bool, error) {
		var err error
		if view, err = h.readGuestView(ctx, keys); err != nil {
			return "", false, err
		}
		size := len(view.head)
		for _, k := range view.keys {
			size += len(k) + 1
		}
		if size > guestViewMaxBytes {
			return "", false, nil
		}
		var b jsonout.Builder
		b.Object().Key("head").Raw([]byte(view.head)).Key("keys").Array()
		for _, k := range view.keys {
			b.Raw([]byte(k))
		}
		return string(b.EndArray().EndObject().Bytes()), true, nil
	})
	if err != nil || !hit {
		return view, err
	}
	c := gjson.Parse(v)
	view = guestView{head: c.Get("head").Raw}
	for _, k := range c.Get("keys").Array() {
		view.keys = append(view.keys, k.Raw)
	}
	return view, nil
}

// readGuestView reads the pool and renders its figures and masked keys.
func (h *Handler) readGuestView(ctx context.Context, keys *store.Keys) (guestView, error) {
	list, err := keys.List(ctx, "")
	if err != nil {
		return guestView{}, err
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
	view := guestView{head: string(out.EndObject().Bytes()), list: list, keys: make([]string, len(list))}
	now := h.d.Now().UnixMilli()
	for i, k := range list {
		var kb jsonout.Builder
		writeKey(&kb, k, now)
		view.keys[i] = string(kb.EndObject().Bytes())
	}
	return view, nil
}

// isAdmin reports whether r carries admin credentials (without
// answering). A bearer token counts in the login throttle here too: the
// guest summary must not be a free way to guess the admin password.
func (h *Handler) isAdmin(r *http.Request) bool {
	want := h.cfg().AdminPassword
	if !adminPasswordLongEnough(want) {
		return false
	}
	if v := r.Header.Get("Authorization"); v != "" {
		a, _ := h.bearerAttempt(r, v, want, h.d.Queries)
		return a == attemptOK
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
