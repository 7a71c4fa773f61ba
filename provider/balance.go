package provider

import (
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// BalanceAPI names the shape of a provider's balance endpoint.
type BalanceAPI int

const (
	NoBalance          BalanceAPI = iota
	BalanceSiliconFlow            // GET /v1/user/info
	BalanceDeepSeek               // GET /user/balance
	BalanceOpenRouter             // GET /api/v1/credits
)

// Balance is what a balance endpoint said.
type Balance struct {
	Total  float64 // what the key can still spend
	Detail string  // the fields as the provider sent them, JSON
}

// ParseBalance reads a balance endpoint's 200 answer. ok is false for any
// body that is not the expected shape (an HTML error page, a missing or
// non-numeric field): an unreadable balance is not a zero balance.
func ParseBalance(api BalanceAPI, body []byte) (b Balance, ok bool) {
	if !gjson.ValidBytes(body) {
		return b, false
	}
	root := gjson.ParseBytes(body)
	switch api {
	case BalanceSiliconFlow:
		// {"code":20000,"status":true,"data":{"balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88",…}}
		d := root.Get("data")
		total, ok := amount(d.Get("totalBalance"))
		if !ok {
			return b, false
		}
		return Balance{Total: total, Detail: fields(d, "balance", "chargeBalance", "totalBalance")}, true
	case BalanceDeepSeek:
		// {"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",…}]}
		// One entry per currency (CNY, USD): the largest is what tells
		// whether the key can spend.
		infos := root.Get("balance_infos").Array()
		best := -1
		var total float64
		for i, info := range infos {
			t, ok := amount(info.Get("total_balance"))
			if !ok {
				return b, false
			}
			if best < 0 || t > total {
				best, total = i, t
			}
		}
		if best < 0 {
			return b, false
		}
		if root.Get("is_available").Type == gjson.False {
			total = 0
		}
		return Balance{Total: total, Detail: fields(infos[best], "currency", "total_balance", "granted_balance", "topped_up_balance")}, true
	case BalanceOpenRouter:
		// {"data":{"total_credits":15,"total_usage":2.33}}
		d := root.Get("data")
		credits, ok1 := amount(d.Get("total_credits"))
		usage, ok2 := amount(d.Get("total_usage"))
		if !ok1 || !ok2 {
			return b, false
		}
		if math.IsInf(credits-usage, 0) || math.IsNaN(credits-usage) {
			return b, false
		}
		return Balance{Total: credits - usage, Detail: fields(d, "total_credits", "total_usage")}, true
	}
	return b, false
}

// amount reads a money value sent as a number or a numeric string.
func amount(r gjson.Result) (float64, bool) {
	switch r.Type {
	case gjson.Number:
		f := r.Float()
		return f, !math.IsInf(f, 0) && !math.IsNaN(f)
	case gjson.String:
		f, err := strconv.ParseFloat(strings.TrimSpace(r.String()), 64)
		return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
	}
	return 0, false
}

// fields copies the named fields of obj as a small JSON object.
func fields(obj gjson.Result, names ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	n := 0
	for _, name := range names {
		v := obj.Get(name)
		if !v.Exists() || len(v.Raw) > 64 {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(name) + ":" + v.Raw)
		n++
	}
	b.WriteByte('}')
	return b.String()
}
