package rotation_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
)

// healthNow is the clock of the health tables.
var healthNow = time.Date(2026, 1, 15, 18, 0, 0, 0, time.UTC)

// The outcomes a check can bring, as the checker builds them.
var (
	resOKFunded   = rotation.CheckResult{Outcome: rotation.CheckOK, Funded: true, Status: 200}
	resOKUnfunded = rotation.CheckResult{Outcome: rotation.CheckOK, Status: 200}
	resOKZero     = rotation.CheckResult{Outcome: rotation.CheckOK, Status: 200}.WithBalance(0)
	resInvalid    = rotation.CheckResult{Outcome: rotation.CheckInvalid, Status: 401}
	resExhausted  = rotation.CheckResult{Outcome: rotation.CheckExhausted, Status: 402}
	resLimited    = rotation.CheckResult{Outcome: rotation.CheckLimited, Status: 429}
	resError      = rotation.CheckResult{Outcome: rotation.CheckError, Status: 500}
	resInconcl    = rotation.CheckResult{Outcome: rotation.CheckInconclusive, Status: 404}
)

var healthOutcomes = []struct {
	name string
	r    rotation.CheckResult
}{
	{"ok funded", resOKFunded},
	{"ok not funded", resOKUnfunded},
	{"ok balance 0", resOKZero},
	{"invalid", resInvalid},
	{"exhausted", resExhausted},
	{"limited", resLimited},
	{"error", resError},
	{"inconclusive", resInconcl},
}

// after is what HealthPolicy.After should return, Next relative to now.
type after struct {
	status string
	fails  int64
	next   time.Duration
}

const (
	active    = rotation.KeyActive
	blocked   = rotation.KeyBlocked
	exhausted = rotation.KeyExhausted
	disabled  = rotation.KeyDisabled
)

// TestHealthAfter walks every key status through every check outcome,
// from a key with no failed probes and from one with three. Probes wait
// 10 min, then 20, 40, 80…; healthy keys are checked every 6 h; a check
// that learnt nothing is retried in 15 min.
func TestHealthAfter(t *testing.T) {
	const (
		interval = 6 * time.Hour
		retry    = 15 * time.Minute
		probe1   = 10 * time.Minute
		probe4   = 80 * time.Minute
	)
	tests := []struct {
		status  string
		outcome string
		fails0  after // from fails 0
		fails3  after // from fails 3
	}{
		{active, "ok funded", after{active, 0, interval}, after{active, 0, interval}},
		{active, "ok not funded", after{active, 0, interval}, after{active, 0, interval}},
		{active, "ok balance 0", after{exhausted, 1, probe1}, after{exhausted, 1, probe1}},
		{active, "invalid", after{blocked, 1, probe1}, after{blocked, 1, probe1}},
		{active, "exhausted", after{exhausted, 1, probe1}, after{exhausted, 1, probe1}},
		{active, "limited", after{active, 0, interval}, after{active, 0, interval}},
		{active, "error", after{active, 0, retry}, after{active, 3, retry}},
		{active, "inconclusive", after{active, 0, retry}, after{active, 3, retry}},

		{blocked, "ok funded", after{active, 0, interval}, after{active, 0, interval}},
		{blocked, "ok not funded", after{active, 0, interval}, after{active, 0, interval}},
		{blocked, "ok balance 0", after{exhausted, 1, probe1}, after{exhausted, 1, probe1}},
		{blocked, "invalid", after{blocked, 1, probe1}, after{blocked, 4, probe4}},
		{blocked, "exhausted", after{exhausted, 1, probe1}, after{exhausted, 1, probe1}},
		{blocked, "limited", after{active, 0, interval}, after{active, 0, interval}},
		{blocked, "error", after{blocked, 0, retry}, after{blocked, 3, retry}},
		{blocked, "inconclusive", after{blocked, 0, retry}, after{blocked, 3, retry}},

		{exhausted, "ok funded", after{active, 0, interval}, after{active, 0, interval}},
		{exhausted, "ok not funded", after{exhausted, 1, probe1}, after{exhausted, 4, probe4}},
		{exhausted, "ok balance 0", after{exhausted, 1, probe1}, after{exhausted, 4, probe4}},
		{exhausted, "invalid", after{blocked, 1, probe1}, after{blocked, 1, probe1}},
		{exhausted, "exhausted", after{exhausted, 1, probe1}, after{exhausted, 4, probe4}},
		{exhausted, "limited", after{exhausted, 1, probe1}, after{exhausted, 4, probe4}},
		{exhausted, "error", after{exhausted, 0, retry}, after{exhausted, 3, retry}},
		{exhausted, "inconclusive", after{exhausted, 0, retry}, after{exhausted, 3, retry}},

		// The admin's "disabled" is never changed by a check.
		{disabled, "ok funded", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "ok not funded", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "ok balance 0", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "invalid", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "exhausted", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "limited", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "error", after{disabled, 0, interval}, after{disabled, 3, interval}},
		{disabled, "inconclusive", after{disabled, 0, interval}, after{disabled, 3, interval}},
	}
	results := map[string]rotation.CheckResult{}
	for _, o := range healthOutcomes {
		results[o.name] = o.r
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		r, ok := results[tt.outcome]
		if !ok {
			t.Fatalf("unknown outcome %q", tt.outcome)
		}
		seen[tt.status+"/"+tt.outcome] = true
		for _, c := range []struct {
			fails int64
			want  after
		}{{0, tt.fails0}, {3, tt.fails3}} {
			name := fmt.Sprintf("%s/%s/fails=%d", tt.status, tt.outcome, c.fails)
			got := rotation.HealthPolicy{}.After(tt.status, c.fails, r, healthNow)
			if got.Status != c.want.status || got.Fails != c.want.fails || !got.Next.Equal(healthNow.Add(c.want.next)) {
				t.Errorf("%s: got status %s, fails %d, next +%v; want %s, %d, +%v", name,
					got.Status, got.Fails, got.Next.Sub(healthNow), c.want.status, c.want.fails, c.want.next)
			}
			if changed := got.Status != tt.status; changed != (got.Reason != "") {
				t.Errorf("%s: status %s -> %s with reason %q: a reason must be given exactly when the status changes",
					name, tt.status, got.Status, got.Reason)
			}
		}
	}
	// Every status meets every outcome.
	for _, s := range []string{active, blocked, exhausted, disabled} {
		for _, o := range healthOutcomes {
			if !seen[s+"/"+o.name] {
				t.Errorf("no case for %s/%s", s, o.name)
			}
		}
	}
}

// TestHealthAfterProbeBackoff follows a dead key through failed probes:
// the wait doubles from 10 min and stops at 24 h.
func TestHealthAfterProbeBackoff(t *testing.T) {
	waits := []time.Duration{ // after the 1st, 2nd… failed probe
		10 * time.Minute, 20 * time.Minute, 40 * time.Minute, 80 * time.Minute, 160 * time.Minute,
		320 * time.Minute, 640 * time.Minute, 1280 * time.Minute, 24 * time.Hour, 24 * time.Hour, 24 * time.Hour,
	}
	for _, c := range []struct {
		status string
		r      rotation.CheckResult
	}{
		{blocked, resInvalid},
		{exhausted, resExhausted},
		{exhausted, resOKUnfunded},
		{exhausted, resLimited},
		{exhausted, resOKZero},
	} {
		var fails int64
		for i, want := range waits {
			got := rotation.HealthPolicy{}.After(c.status, fails, c.r, healthNow)
			if got.Status != c.status || got.Fails != fails+1 || got.Next.Sub(healthNow) != want || got.Reason != "" {
				t.Errorf("%s/%s probe %d (fails %d): got %s, fails %d, +%v, reason %q; want %s, fails %d, +%v, no reason",
					c.status, c.r.Outcome, i+1, fails, got.Status, got.Fails, got.Next.Sub(healthNow), got.Reason,
					c.status, fails+1, want)
			}
			fails = got.Fails
		}
	}
	// Long dead keys stay at the cap, however many probes failed.
	for _, fails := range []int64{8, 9, 50, 62, 63, 64, 1000, 1 << 40} {
		got := rotation.HealthPolicy{}.After(blocked, fails, resInvalid, healthNow)
		if got.Next.Sub(healthNow) != 24*time.Hour || got.Fails != fails+1 {
			t.Errorf("blocked with %d fails: next +%v, fails %d; want +24h, %d", fails, got.Next.Sub(healthNow), got.Fails, fails+1)
		}
	}
	// A key that recovers starts again from the first wait.
	back := rotation.HealthPolicy{}.After(exhausted, 7, resOKFunded, healthNow)
	again := rotation.HealthPolicy{}.After(back.Status, back.Fails, resExhausted, healthNow)
	if back.Status != active || back.Fails != 0 || again.Status != exhausted || again.Fails != 1 ||
		again.Next.Sub(healthNow) != 10*time.Minute {
		t.Errorf("recovered then exhausted again: %+v then %+v; want active/0 then exhausted/1 in 10 min", back, again)
	}
}

// TestHealthPolicyValues: custom values are used; zero or negative ones
// fall back to the defaults; a cap below the base is raised to the base.
func TestHealthPolicyValues(t *testing.T) {
	custom := rotation.HealthPolicy{Interval: time.Hour, ProbeBase: time.Minute, ProbeMax: 5 * time.Minute, ErrorRetry: 2 * time.Minute}
	defaults := []rotation.HealthPolicy{
		{},
		{Interval: -1, ProbeBase: -time.Minute, ProbeMax: -time.Hour, ErrorRetry: -5},
	}
	tests := []struct {
		name   string
		p      rotation.HealthPolicy
		status string
		fails  int64
		r      rotation.CheckResult
		want   time.Duration
	}{
		{"custom interval", custom, active, 0, resOKFunded, time.Hour},
		{"custom interval, recovered", custom, blocked, 2, resOKUnfunded, time.Hour},
		{"custom interval, disabled", custom, disabled, 2, resInvalid, time.Hour},
		{"custom first probe", custom, active, 0, resInvalid, time.Minute},
		{"custom second probe", custom, blocked, 1, resInvalid, 2 * time.Minute},
		{"custom third probe", custom, exhausted, 2, resExhausted, 4 * time.Minute},
		{"custom cap", custom, exhausted, 3, resExhausted, 5 * time.Minute},
		{"custom cap, many fails", custom, blocked, 40, resInvalid, 5 * time.Minute},
		{"custom error retry", custom, blocked, 3, resError, 2 * time.Minute},
		{"custom inconclusive retry", custom, active, 0, resInconcl, 2 * time.Minute},
		{"cap below base", rotation.HealthPolicy{ProbeBase: time.Hour, ProbeMax: time.Minute}, blocked, 5, resInvalid, time.Hour},
		{"only the base set", rotation.HealthPolicy{ProbeBase: time.Hour}, blocked, 3, resInvalid, 8 * time.Hour},
		{"only the base set, capped", rotation.HealthPolicy{ProbeBase: time.Hour}, blocked, 5, resInvalid, 24 * time.Hour},
		{"only the cap set", rotation.HealthPolicy{ProbeMax: 30 * time.Minute}, blocked, 5, resInvalid, 30 * time.Minute},
	}
	for i, p := range defaults {
		tests = append(tests, []struct {
			name   string
			p      rotation.HealthPolicy
			status string
			fails  int64
			r      rotation.CheckResult
			want   time.Duration
		}{
			{fmt.Sprintf("defaults %d: interval", i), p, active, 0, resOKUnfunded, 6 * time.Hour},
			{fmt.Sprintf("defaults %d: first probe", i), p, active, 0, resExhausted, 10 * time.Minute},
			{fmt.Sprintf("defaults %d: fourth probe", i), p, blocked, 3, resInvalid, 80 * time.Minute},
			{fmt.Sprintf("defaults %d: cap", i), p, blocked, 30, resInvalid, 24 * time.Hour},
			{fmt.Sprintf("defaults %d: error retry", i), p, exhausted, 1, resError, 15 * time.Minute},
		}...)
	}
	for _, tt := range tests {
		got := tt.p.After(tt.status, tt.fails, tt.r, healthNow)
		if d := got.Next.Sub(healthNow); d != tt.want {
			t.Errorf("%s: next +%v, want +%v (%+v)", tt.name, d, tt.want, got)
		}
	}
}

// TestCheckOf classifies real check answers with the proxy's rules.
func TestCheckOf(t *testing.T) {
	const (
		openai401   = `{"error":{"message":"Incorrect API key provided: sk-ab***7f3c. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
		groq401     = `{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`
		deepseek401 = `{"error":{"message":"Authentication Fails (no such user)","type":"authentication_error","param":null,"code":"invalid_request_error"}}`
		sf401       = `"Invalid token"`
		gemini400   = `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`
		openai429Q  = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`
		or402       = `{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}`
		ds402       = `{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}`
		sf403Money  = `{"code":30001,"message":"Sorry, your account balance is insufficient","data":null}`
		openai429   = `{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
		sf429RPD    = `{"code":50602,"message":"Request was rejected due to rate limiting. Details:RPD limit reached, limit: 1000, current: 1001","data":null}`
		sf429Busy   = `{"code":50603,"message":"System is too busy now. Please try again later.","data":null}`
		openai500   = `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`
		html502     = `<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>`
		html403     = `<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body>blocked</body></html>`
		openai404   = `{"error":{"message":"Invalid URL (GET /v1/nope)","type":"invalid_request_error","param":null,"code":null}}`
		model404    = `{"error":{"message":"The model ` + "`gpt-9`" + ` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}`
		sf403Free   = `{"code":30011,"message":"The model is not available for free users. Please recharge to use it.","data":null}`
		region403   = `{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}`
		bad400      = `{"error":{"message":"Invalid value: 'tool'.","type":"invalid_request_error","param":"messages.[1].role","code":"invalid_value"}}`
	)
	gemini429Daily := `{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"26s"}]}}`
	openai := provider.FamilyOpenAI
	tests := []struct {
		name   string
		prov   string
		family provider.Family
		status int
		header http.Header
		body   string
		want   rotation.CheckOutcome
	}{
		{"200", "openai", openai, 200, nil, "", rotation.CheckOK},
		{"204", "openai", openai, 204, nil, "", rotation.CheckOK},
		{"openai 401 invalid_api_key", "openai", openai, 401, nil, openai401, rotation.CheckInvalid},
		{"groq 401 invalid_api_key", "groq", openai, 401, nil, groq401, rotation.CheckInvalid},
		{"deepseek 401 authentication_error", "deepseek", openai, 401, nil, deepseek401, rotation.CheckInvalid},
		{"siliconflow 401 Invalid token", "siliconflow", openai, 401, nil, sf401, rotation.CheckInvalid},
		{"401 without a body", "openai", openai, 401, nil, "", rotation.CheckInvalid},
		{"gemini 400 API_KEY_INVALID", "google-ai-studio", provider.FamilyGemini, 400, nil, gemini400, rotation.CheckInvalid},
		{"openrouter 402", "openrouter", openai, 402, nil, or402, rotation.CheckExhausted},
		{"deepseek 402", "deepseek", openai, 402, nil, ds402, rotation.CheckExhausted},
		{"402 without a body", "openai", openai, 402, nil, "", rotation.CheckExhausted},
		{"openai 429 insufficient_quota", "openai", openai, 429, nil, openai429Q, rotation.CheckExhausted},
		{"openai 429 insufficient_quota with Retry-After", "openai", openai, 429, http.Header{"Retry-After": {"20"}}, openai429Q, rotation.CheckExhausted},
		{"siliconflow 403 code 30001", "siliconflow", openai, 403, nil, sf403Money, rotation.CheckExhausted},
		{"openai 429 rate limit", "openai", openai, 429, nil, openai429, rotation.CheckLimited},
		{"429 with Retry-After only", "openai", openai, 429, http.Header{"Retry-After": {"7"}}, "", rotation.CheckLimited},
		{"siliconflow 429 RPD", "siliconflow", openai, 429, nil, sf429RPD, rotation.CheckLimited},
		{"gemini 429 daily quota", "google-ai-studio", provider.FamilyGemini, 429, nil, gemini429Daily, rotation.CheckLimited},
		{"openai 500", "openai", openai, 500, nil, openai500, rotation.CheckError},
		{"502 HTML", "openai", openai, 502, nil, html502, rotation.CheckError},
		{"503 without a body", "openai", openai, 503, nil, "", rotation.CheckError},
		{"408", "openai", openai, 408, nil, "", rotation.CheckError},
		{"network error", "openai", openai, 0, nil, "", rotation.CheckError},
		{"403 HTML from a firewall", "openai", openai, 403, nil, html403, rotation.CheckError},
		{"siliconflow 429 busy", "siliconflow", openai, 429, nil, sf429Busy, rotation.CheckError},
		{"404 unknown path", "openai", openai, 404, nil, openai404, rotation.CheckInconclusive},
		{"404 without a body", "openai", openai, 404, nil, "", rotation.CheckInconclusive},
		{"404 model not found", "openai", openai, 404, nil, model404, rotation.CheckInconclusive},
		{"siliconflow 403 model for paying users", "siliconflow", openai, 403, nil, sf403Free, rotation.CheckInconclusive},
		{"403 region", "openai", openai, 403, nil, region403, rotation.CheckInconclusive},
		{"400 bad request", "openai", openai, 400, nil, bad400, rotation.CheckInconclusive},
	}
	for _, tt := range tests {
		for _, funded := range []bool{false, true} {
			a := rotation.Answer{Provider: tt.prov, Family: tt.family, Status: tt.status, Header: tt.header}
			if tt.body != "" {
				a.Body = []byte(tt.body)
			}
			got := rotation.Policy{}.CheckOf(a, funded, healthNow)
			wantFunded := funded && tt.want == rotation.CheckOK
			if got.Outcome != tt.want || got.Funded != wantFunded || got.Status != tt.status ||
				got.HasBalance || got.Balance != 0 {
				t.Errorf("%s (funded=%v): got %+v; want outcome %s, funded %v, status %d, no balance",
					tt.name, funded, got, tt.want, wantFunded, tt.status)
			}
		}
	}
}

// TestWithBalance: a positive balance proves a working key funded, none
// left makes it exhausted; on any other outcome the balance is only
// recorded.
func TestWithBalance(t *testing.T) {
	tests := []struct {
		name    string
		r       rotation.CheckResult
		balance float64
		want    rotation.CheckOutcome
		funded  bool
	}{
		{"ok, positive", resOKUnfunded, 12.5, rotation.CheckOK, true},
		{"ok, a cent", resOKUnfunded, 0.01, rotation.CheckOK, true},
		{"ok funded, positive", resOKFunded, 3, rotation.CheckOK, true},
		{"ok, zero", resOKUnfunded, 0, rotation.CheckExhausted, false},
		{"ok funded, zero", resOKFunded, 0, rotation.CheckExhausted, false},
		{"ok, negative", resOKUnfunded, -0.42, rotation.CheckExhausted, false},
		{"ok funded, negative", resOKFunded, -3, rotation.CheckExhausted, false},
		{"invalid, positive", resInvalid, 5, rotation.CheckInvalid, false},
		{"invalid, zero", resInvalid, 0, rotation.CheckInvalid, false},
		{"exhausted, positive", resExhausted, 5, rotation.CheckExhausted, false},
		{"exhausted, zero", resExhausted, 0, rotation.CheckExhausted, false},
		{"limited, zero", resLimited, 0, rotation.CheckLimited, false},
		{"limited, positive", resLimited, 7, rotation.CheckLimited, false},
		{"error, positive", resError, 1, rotation.CheckError, false},
		{"inconclusive, zero", resInconcl, 0, rotation.CheckInconclusive, false},
	}
	for _, tt := range tests {
		in := tt.r
		in.Detail = `{"totalBalance":"x"}`
		got := in.WithBalance(tt.balance)
		if got.Outcome != tt.want || got.Funded != tt.funded || !got.HasBalance || got.Balance != tt.balance ||
			got.Status != in.Status || got.Detail != in.Detail {
			t.Errorf("%s: %+v.WithBalance(%v) = %+v; want outcome %s, funded %v, balance %v kept with status and detail",
				tt.name, in, tt.balance, got, tt.want, tt.funded, tt.balance)
		}
	}
	// WithBalance works on a copy.
	r := resOKFunded
	_ = r.WithBalance(0)
	if r != resOKFunded {
		t.Errorf("WithBalance changed its receiver: %+v", r)
	}
}
