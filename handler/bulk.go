package handler

import (
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
		bad.Write(w)
		return nil, false
	}
	return ids, true
}

// keyIDs reads field's value v, an array of at most max key ids (0: any
// number), or the error naming it.
func keyIDs(v gjson.Result, field string, max int) ([]int64, reply.Error) {
	if !v.IsArray() || max > 0 && len(v.Array()) > max {
		if max > 0 {
			return nil, reply.BadRequest(field+": want an array of at most "+strconv.Itoa(max)+" key ids", field)
		}
		return nil, reply.BadRequest(field+": want an array of key ids", field)
	}
	var ids []int64
	for _, x := range v.Array() {
		if x.Type != gjson.Number || x.Int() <= 0 || x.Float() != float64(x.Int()) {
			return nil, reply.BadRequest(field+": "+x.Raw+" is not a key id", field)
		}
		ids = append(ids, x.Int())
	}
	return ids, reply.Error{}
}

// bulkKeys serves POST /admin/api/keys/bulk {"ids":[…], "action":
// "enable" | "disable" | "delete" | "clear_models"}.
func (h *Handler) bulkKeys(w http.ResponseWriter, r *http.Request) {
	keys, in, ok := h.keysChange(w, r)
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
		reply.BadRequest("action: enable, disable, delete or clear_models", "action").Write(w)
		return
	}
	n, err := keys.Bulk(r.Context(), ids, action, h.d.Now().UnixMilli())
	h.invalidate()
	if err != nil {
		reply.Failed(w, err, "could not apply the bulk action", "bulk %s", action)
		return
	}
	auditNote(w, action+" "+strconv.Itoa(len(ids))+" keys")
	var b jsonout.Builder
	reply.JSON(w, http.StatusOK, b.Object().Key("action").String(action).Key("requested").Int(int64(len(ids))).
		Key("changed").Int(n).EndObject().Bytes())
}

// exportKeys serves POST /admin/api/keys/export: the keys in full as
// text, {"ids"?: […] (a selection), "provider"?, "only": "all" | "valid"
// | "balance", "min_balance"?: n, "with_balance"?: true, "separator"?:
// "\n"}. Each line is the key, or "key<separator2>balance" with a
// balance, where separator2 is a tab unless the separator is one. The
// export is audited.
func (h *Handler) exportKeys(w http.ResponseWriter, r *http.Request) {
	keys, in, ok := h.keysChange(w, r)
	if !ok {
		return
	}
	ids, ok := readIDs(w, in, "ids", false)
	if !ok {
		return
	}
	q, bad := readExport(in)
	if bad.Status != 0 {
		bad.Write(w)
		return
	}
	list, err := keys.Export(r.Context(), ids, q.provider, q.validOnly, q.hasMin, q.minBalance)
	if err != nil {
		reply.Failed(w, err, "could not export the keys", "export")
		return
	}
	inner := "\t" // between a key and its balance
	if q.sep == "\t" {
		inner = " "
	}
	parts := make([]string, 0, len(list))
	for _, k := range list {
		line := k.Secret
		if q.withBalance {
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
	w.Write([]byte(strings.Join(parts, q.sep)))
}

// exportQuery is what an export asks for, besides the ids.
type exportQuery struct {
	provider          string
	validOnly, hasMin bool
	minBalance        float64
	sep               string
	withBalance       bool
}

// readExport checks an export's fields, naming the wrong one.
func readExport(in gjson.Result) (exportQuery, reply.Error) {
	q := exportQuery{provider: in.Get("provider").String(), sep: "\n", withBalance: in.Get("with_balance").Bool()}
	if q.provider != "" {
		if _, known := provider.Lookup(q.provider); !known {
			return q, reply.BadRequest("provider: unknown provider "+strconv.Quote(q.provider), "provider")
		}
	}
	switch in.Get("only").String() {
	case "", "all":
	case "valid":
		q.validOnly = true
	case "balance":
		v := in.Get("min_balance")
		if v.Type != gjson.Number {
			return q, reply.BadRequest("min_balance: a number, with only \"balance\"", "min_balance")
		}
		q.hasMin, q.minBalance = true, v.Float()
	default:
		return q, reply.BadRequest(`only: "all", "valid" or "balance"`, "only")
	}
	if v := in.Get("separator"); v.Exists() {
		q.sep = v.String()
		if v.Type != gjson.String || q.sep == "" || len(q.sep) > 10 {
			return q, reply.BadRequest("separator: a string of 1 to 10 characters", "separator")
		}
	}
	return q, reply.Error{}
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
	points, err := store.On(db, h.d.Queries).Checks().BalanceTrend(r.Context(), since, r.URL.Query().Get("provider"))
	if err != nil {
		reply.Failed(w, err, "could not read the balance history", "balance trend")
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
	reply.JSON(w, http.StatusOK, b.EndArray().EndObject().Bytes())
}
