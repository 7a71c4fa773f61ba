package provider_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/keypool/keypool/provider"
)

const (
	sfInfo = `{"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username","image":"","email":"","isAdmin":false,"balance":"0.88","status":"normal","introduction":"","role":"","chargeBalance":"88.00","totalBalance":"88.88"}}`
	dsInfo = `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"}]}`
	orInfo = `{"data":{"total_credits":15,"total_usage":2.5}}`
)

func TestParseBalance(t *testing.T) {
	sf, ds, or := provider.BalanceSiliconFlow, provider.BalanceDeepSeek, provider.BalanceOpenRouter
	tests := []struct {
		name   string
		api    provider.BalanceAPI
		body   string
		ok     bool
		total  float64
		detail string // "" when !ok
	}{
		// SiliconFlow GET /v1/user/info.
		{"siliconflow real answer", sf, sfInfo, true, 88.88,
			`{"balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88"}`},
		{"siliconflow numbers", sf, `{"code":20000,"status":true,"data":{"balance":0.88,"chargeBalance":88,"totalBalance":88.88}}`, true, 88.88,
			`{"balance":0.88,"chargeBalance":88,"totalBalance":88.88}`},
		{"siliconflow zero", sf, `{"code":20000,"status":true,"data":{"balance":"0","chargeBalance":"0","totalBalance":"0"}}`, true, 0,
			`{"balance":"0","chargeBalance":"0","totalBalance":"0"}`},
		{"siliconflow 0.00", sf, `{"code":20000,"status":true,"data":{"balance":"0.00","chargeBalance":"0.00","totalBalance":"0.00"}}`, true, 0,
			`{"balance":"0.00","chargeBalance":"0.00","totalBalance":"0.00"}`},
		{"siliconflow only the total", sf, `{"data":{"totalBalance":"5"}}`, true, 5, `{"totalBalance":"5"}`},
		{"siliconflow negative", sf, `{"data":{"totalBalance":"-1.50"}}`, true, -1.5, `{"totalBalance":"-1.50"}`},
		{"siliconflow spaces around the amount", sf, `{"data":{"totalBalance":" 12.5 "}}`, true, 12.5, `{"totalBalance":" 12.5 "}`},
		{"siliconflow whitespace in the JSON", sf, "{\n  \"data\": {\n    \"balance\" : \"1\",\n    \"totalBalance\" : \"2\"\n  }\n}\n", true, 2,
			`{"balance":"1","totalBalance":"2"}`},
		{"siliconflow missing totalBalance", sf, `{"code":20000,"status":true,"data":{"balance":"0.88","chargeBalance":"88.00"}}`, false, 0, ""},
		{"siliconflow totalBalance abc", sf, `{"code":20000,"status":true,"data":{"balance":"0.88","totalBalance":"abc"}}`, false, 0, ""},
		{"siliconflow totalBalance NaN", sf, `{"code":20000,"status":true,"data":{"totalBalance":"NaN"}}`, false, 0, ""},
		{"siliconflow totalBalance empty", sf, `{"data":{"totalBalance":""}}`, false, 0, ""},
		{"siliconflow totalBalance null", sf, `{"data":{"totalBalance":null}}`, false, 0, ""},
		{"siliconflow totalBalance bool", sf, `{"data":{"totalBalance":true}}`, false, 0, ""},
		{"siliconflow totalBalance object", sf, `{"data":{"totalBalance":{"value":"1"}}}`, false, 0, ""},
		{"siliconflow totalBalance out of range", sf, `{"data":{"totalBalance":"1e999"}}`, false, 0, ""},
		{"siliconflow error", sf, `{"code":20012,"message":"Model does not exist. Please check it carefully.","data":null}`, false, 0, ""},
		{"siliconflow invalid token", sf, `"Invalid token"`, false, 0, ""},
		{"siliconflow total at the top level", sf, `{"totalBalance":"5"}`, false, 0, ""},
		{"HTML page", sf, `<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>`, false, 0, ""},
		{"truncated JSON", sf, `{"code":20000,"data":{"totalBalance":"88.88"`, false, 0, ""},
		{"empty body", sf, ``, false, 0, ""},

		// DeepSeek GET /user/balance.
		{"deepseek real answer", ds, dsInfo, true, 110,
			`{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"}`},
		{"deepseek not available", ds, `{"is_available":false,"balance_infos":[{"currency":"CNY","total_balance":"0.00","granted_balance":"0.00","topped_up_balance":"0.00"}]}`, true, 0,
			`{"currency":"CNY","total_balance":"0.00","granted_balance":"0.00","topped_up_balance":"0.00"}`},
		{"deepseek not available with money", ds, `{"is_available":false,"balance_infos":[{"currency":"USD","total_balance":"3.00"}]}`, true, 0,
			`{"currency":"USD","total_balance":"3.00"}`},
		{"deepseek numbers", ds, `{"is_available":true,"balance_infos":[{"currency":"USD","total_balance":4.2}]}`, true, 4.2,
			`{"currency":"USD","total_balance":4.2}`},
		{"deepseek empty infos", ds, `{"is_available":true,"balance_infos":[]}`, false, 0, ""},
		{"deepseek no infos", ds, `{"is_available":false}`, false, 0, ""},
		{"deepseek no total", ds, `{"is_available":true,"balance_infos":[{"currency":"CNY","granted_balance":"10.00"}]}`, false, 0, ""},
		{"deepseek bad total", ds, `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"n/a"}]}`, false, 0, ""},
		{"deepseek error", ds, `{"error":{"message":"Authentication Fails (no such user)","type":"authentication_error","param":null,"code":"invalid_request_error"}}`, false, 0, ""},
		{"deepseek shape read as siliconflow", sf, dsInfo, false, 0, ""},

		// OpenRouter GET /api/v1/credits.
		{"openrouter real answer", or, orInfo, true, 12.5, `{"total_credits":15,"total_usage":2.5}`},
		{"openrouter strings", or, `{"data":{"total_credits":"15","total_usage":"2.5"}}`, true, 12.5, `{"total_credits":"15","total_usage":"2.5"}`},
		{"openrouter used up", or, `{"data":{"total_credits":10,"total_usage":10}}`, true, 0, `{"total_credits":10,"total_usage":10}`},
		{"openrouter overdrawn", or, `{"data":{"total_credits":10,"total_usage":10.25}}`, true, -0.25, `{"total_credits":10,"total_usage":10.25}`},
		{"openrouter missing usage", or, `{"data":{"total_credits":15}}`, false, 0, ""},
		{"openrouter missing credits", or, `{"data":{"total_usage":2.5}}`, false, 0, ""},
		{"openrouter null usage", or, `{"data":{"total_credits":15,"total_usage":null}}`, false, 0, ""},
		{"openrouter no data", or, `{"total_credits":15,"total_usage":2.5}`, false, 0, ""},
		{"openrouter error", or, `{"error":{"message":"No auth credentials found","code":401}}`, false, 0, ""},

		// No balance endpoint.
		{"no balance API", provider.NoBalance, sfInfo, false, 0, ""},
		{"no balance API, openrouter shape", provider.NoBalance, orInfo, false, 0, ""},
		{"unknown API", provider.BalanceAPI(99), orInfo, false, 0, ""},
	}
	for _, tt := range tests {
		b, ok := provider.ParseBalance(tt.api, []byte(tt.body))
		if ok != tt.ok {
			t.Errorf("%s: ok = %v, want %v (%+v)", tt.name, ok, tt.ok, b)
			continue
		}
		if !ok {
			if b != (provider.Balance{}) {
				t.Errorf("%s: !ok with a balance %+v", tt.name, b)
			}
			continue
		}
		if math.Abs(b.Total-tt.total) > 1e-9 {
			t.Errorf("%s: total %v, want %v", tt.name, b.Total, tt.total)
		}
		if b.Detail != tt.detail {
			t.Errorf("%s: detail %s, want %s", tt.name, b.Detail, tt.detail)
		}
		if !json.Valid([]byte(b.Detail)) {
			t.Errorf("%s: detail %q is not JSON", tt.name, b.Detail)
		}
	}
}

// TestParseBalanceLongField: a field too long for a short detail is left
// out of it, never cut into invalid JSON.
func TestParseBalanceLongField(t *testing.T) {
	long := `"1` + strings.Repeat("0", 70) + `"` // 72 bytes: over the 64 a detail field may take
	body := `{"data":{"balance":` + long + `,"chargeBalance":"1.00","totalBalance":"2.00"}}`
	b, ok := provider.ParseBalance(provider.BalanceSiliconFlow, []byte(body))
	if !ok || b.Total != 2 || b.Detail != `{"chargeBalance":"1.00","totalBalance":"2.00"}` {
		t.Errorf("ParseBalance(%s) = %+v, %v; want total 2 and the long field left out", body, b, ok)
	}
}

func FuzzParseBalance(f *testing.F) {
	seeds := []string{
		sfInfo, dsInfo, orInfo,
		`{"code":20012,"message":"…","data":null}`,
		`{"data":{"totalBalance":"0.00"}}`,
		`{"data":{"totalBalance":"NaN"}}`,
		`{"data":{"total_credits":15,"total_usage":"2.5"}}`,
		`{"is_available":false,"balance_infos":[{"total_balance":"1"}]}`,
		`<html>502</html>`,
		``,
		`[]`,
		`{"data":{"totalBalance":"1","balance":"\u0000\"}"}}`,
	}
	for _, s := range seeds {
		for api := provider.NoBalance; api <= provider.BalanceOpenRouter; api++ {
			f.Add(uint8(api), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, api uint8, body []byte) {
		b, ok := provider.ParseBalance(provider.BalanceAPI(api%5), body)
		if !ok {
			if b != (provider.Balance{}) {
				t.Fatalf("!ok with a balance %+v", b)
			}
			return
		}
		if !json.Valid([]byte(b.Detail)) {
			t.Fatalf("ParseBalance(%d, %q): detail %q is not valid JSON", api%5, body, b.Detail)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(b.Detail), &obj); err != nil {
			t.Fatalf("ParseBalance(%d, %q): detail %q is not a JSON object: %v", api%5, body, b.Detail, err)
		}
	})
}
