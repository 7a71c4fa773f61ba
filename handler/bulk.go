package handler

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// maxBulk bounds the keys one bulk request names.
const maxBulk = 10000

// readIDs reads a JSON array of key ids at field, answering 400 itself.
func readIDs(w http.ResponseWriter, in gjson.Result, field string, required bool) ([]int64, bool) {
	v := in.Get(field)
	if !v.Exists() && !required {
		return nil, true
	}
	ids, bad := keyIDs(v, field, maxBulk)
	if bad.Status != 0 {
		bad.write(w)
		return nil, false
	}
	return ids, true
}

// keyIDs reads field's value v, an array of at most max key ids (0: any
// number), or the error naming it.
func keyIDs(v gjson.Result, field string, max int) ([]int64, apiError) {
	if !v.IsArray() || max > 0 && len(v.Array()) > max {
		if max > 0 {
			return nil, badRequest(field+": want an array of at most "+strconv.Itoa(max)+" key ids", field)
		}
		return nil, badRequest(field+": want an array of key ids", field)
	}
	var ids []int64
	for _, x := range v.Array() {
		if x.Type != gjson.Number || x.Int() <= 0 || x.Float() != float64(x.Int()) {
			return nil, badRequest(field+": "+x.Raw+" is not a key id", field)
		}
		ids = append(ids, x.Int())
	}
	return ids, apiError{}
}

// bulkKeys serves POST /admin/api/keys/bulk {"ids":[…], "action":
// "enable" | "disable" | "delete" | "clear_models"}.
func (h *Handler) bulkKeys(w http.ResponseWriter, r *http.Request) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	in, ok := jsonObject(w, h, r)
	if !ok {
		return
	}
	ids, ok := readIDs(w, in, "ids", true)
	if !ok {
		return
	}
	action := in.Get("action").String()
	switch action {
	case "enable", "disable", "delete", "clear_models":
	default:
		badRequest("action: enable, disable, delete or clear_models", "action").write(w)
		return
	}
	n, err := keys.Bulk(r.Context(), ids, action, h.d.Now().UnixMilli())
	h.invalidate()
	if err != nil {
		failed(w, err, "could not apply the bulk action", "bulk %s", action)
		return
	}
	auditNote(w, action+" "+strconv.Itoa(len(ids))+" keys")
	var b jsonout.Builder
	writeJSON(w, http.StatusOK, b.Object().Key("action").String(action).Key("requested").Int(int64(len(ids))).
		Key("changed").Int(n).EndObject().Bytes())
}

// exportKeys serves POST /admin/api/keys/export: the keys in full as
// text, {"ids"?: […] (a selection), "provider"?, "only": "all" | "valid"
// | "balance", "min_balance"?: n, "with_balance"?: true, "separator"?:
// "\n"}. Each line is the key, or "key<separator2>balance" with a
// balance, where separator2 is a tab unless the separator is one. The
// export is audited.
func (h *Handler) exportKeys(w http.ResponseWriter, r *http.Request) {
	keys, ok := h.keys(w)
	if !ok {
		return
	}
	in, ok := jsonObject(w, h, r)
	if !ok {
		return
	}
	ids, ok := readIDs(w, in, "ids", false)
	if !ok {
		return
	}
	prov := in.Get("provider").String()
	if prov != "" {
		if _, known := provider.Lookup(prov); !known {
			badRequest("provider: unknown provider "+strconv.Quote(prov), "provider").write(w)
			return
		}
	}
	only := in.Get("only").String()
	var validOnly, hasMin bool
	var minBalance float64
	switch only {
	case "", "all":
	case "valid":
		validOnly = true
	case "balance":
		v := in.Get("min_balance")
		if v.Type != gjson.Number {
			badRequest("min_balance: a number, with only \"balance\"", "min_balance").write(w)
			return
		}
		hasMin, minBalance = true, v.Float()
	default:
		badRequest(`only: "all", "valid" or "balance"`, "only").write(w)
		return
	}
	sep := "\n"
	if v := in.Get("separator"); v.Exists() {
		sep = v.String()
		if v.Type != gjson.String || sep == "" || len(sep) > 10 {
			badRequest("separator: a string of 1 to 10 characters", "separator").write(w)
			return
		}
	}
	withBalance := in.Get("with_balance").Bool()
	inner := "\t"
	if sep == "\t" {
		inner = " "
	}
	list, err := keys.Export(r.Context(), ids, prov, validOnly, hasMin, minBalance)
	if err != nil {
		failed(w, err, "could not export the keys", "export")
		return
	}
	parts := make([]string, 0, len(list))
	for _, k := range list {
		line := k.Secret
		if withBalance {
			bal := ""
			if k.Balance.Valid {
				bal = strconv.FormatFloat(k.Balance.Float64, 'f', -1, 64)
			}
			line += inner + bal
		}
		parts = append(parts, line)
	}
	auditNote(w, "exported "+strconv.Itoa(len(list))+" keys")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Keypool-Count", strconv.Itoa(len(list)))
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(strings.Join(parts, sep)))
}

// balanceTrend serves GET /admin/api/balance/trend?days=7|30|0 (0: all)
// &provider=: per UTC day, the pool's balance from each key's last
// reading that day (total, keys, and the readings for outlier filters).
func (h *Handler) balanceTrend(w http.ResponseWriter, r *http.Request) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	days, err := strconv.ParseInt(r.URL.Query().Get("days"), 10, 64)
	if err != nil || days < 0 || days > 3650 {
		days = 30
	}
	since := int64(0)
	if days > 0 {
		since = h.d.Now().Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
	}
	points, err := store.NewChecks(db).Counting(h.d.Queries).BalanceTrend(r.Context(), since, r.URL.Query().Get("provider"))
	if err != nil {
		failed(w, err, "could not read the balance history", "balance trend")
		return
	}
	var b jsonout.Builder
	b.Object().Key("days").Int(days).Key("points").Array()
	for _, p := range points {
		b.Object().Key("day").Int(p.Day).Key("keys").Int(p.Keys).Key("total").Float(p.Total).Key("balances").Array()
		for _, x := range p.Balance {
			b.Float(x)
		}
		b.EndArray().EndObject()
	}
	writeJSON(w, http.StatusOK, b.EndArray().EndObject().Bytes())
}
