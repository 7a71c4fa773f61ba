package rotation

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/provider"
)

// Table tests of the attempt machine: a request's keys are driven through
// Next, Candidates, Observe and CoolingEnd as the handler does, with a
// clock that moves only by the upstream calls and waits, and the Effects
// are rendered as short strings (times relative to amT0).

var amT0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// Upstream bodies in the shapes the providers send.
const (
	amInvalidKey       = `{"error":{"message":"Incorrect API key provided: sk-ab***7f3c.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
	amGeminiInvalidKey = `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`
	amNoBalance        = `{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}`
	amNoQuota          = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`
	amRegion           = `{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}`
	amModelForbidden   = `{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","param":null,"code":null}}`
	amModelNotFound    = `{"error":{"message":"The model 'gpt-9' does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}`
	amGeminiDaily      = `{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"32s"}]}}`
	amRateLimited      = `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
	amBusy             = `{"code":50505,"message":"System is too busy now. Please try again later.","data":null}`
	amServerError      = `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`
	amOverloaded       = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	amBadRequest       = `{"error":{"message":"Invalid value for 'temperature'.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`
	amUnknownPath      = `{"error":{"message":"Invalid URL (POST /v1/nothing)","type":"invalid_request_error","param":null,"code":null}}`
)

// amAnswer is one upstream answer in a test.
type amAnswer struct {
	status  int // 0: network error
	body    string
	header  http.Header
	verdict *Verdict      // judged as this instead of classified
	took    time.Duration // how long the call takes (the clock moves)
}

var (
	amOK      = amAnswer{status: 200}
	am500     = amAnswer{status: 500, body: amServerError}
	am429     = amAnswer{status: 429, body: amRateLimited}
	am404     = amAnswer{status: 404, body: amModelNotFound}
	am401     = amAnswer{status: 401, body: amInvalidKey}
	amNetwork = amAnswer{}
)

func amRetryAfter(status int, body, seconds string) amAnswer {
	return amAnswer{status: status, body: body, header: http.Header{"Retry-After": {seconds}}}
}

func amVerdict(status int, v Verdict) amAnswer { return amAnswer{status: status, body: "{}", verdict: &v} }

// amKeys are candidates 1..n, least recently used first; streaks[i] is
// key i+1's stored failure streak, its cooldown ended a minute ago.
func amKeys(n int, streaks ...int64) []Candidate {
	var cs []Candidate
	for i := 1; i <= n; i++ {
		c := Candidate{ID: int64(i), Secret: fmt.Sprintf("sk-%d", i), LastUsed: amT0.UnixMilli() - int64(100*(n-i+1))}
		if i <= len(streaks) && streaks[i-1] > 0 {
			c.Streak, c.CoolEnd = streaks[i-1], amT0.Add(-time.Minute).UnixMilli()
		}
		cs = append(cs, c)
	}
	return cs
}

func amRequest(model string) Request {
	return Request{Provider: "openai", Family: provider.FamilyOpenAI, Model: model, Started: amT0,
		StormPolicy: StormPolicy{Keys: 5, Window: 30 * time.Second, Hold: 10 * time.Second},
		Limits:      Limits{MaxAttempts: 3, MaxKeys: 8, Budget: 30 * time.Second},
		IntN:        func(int) int { return 0 }}
}

// amRun drives one request to its end.
type amRun struct {
	req     Request
	reads   [][]Candidate        // what each StepRead finds, in turn (the last repeats)
	readErr bool                 // the first read fails
	ends    []int64              // what each StepCoolingEnd finds, relative ms (0: none)
	answers map[int64][]amAnswer // per key, in turn (the last repeats)

	now   time.Time
	trace []string // steps, as "read", "read fresh", "try 2", "cooling-end", "wait 1s"
	keeps []int    // Keep after each Observe
}

func (r *amRun) run(t *testing.T) Effects {
	t.Helper()
	m := Start(r.req)
	r.now = r.req.Started
	calls := map[int64]int{}
	reads, ends := 0, 0
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatalf("no end after 100 steps: %v", r.trace)
		}
		s := m.Next(r.now)
		switch s.Kind {
		case StepDone:
			return m.Effects()
		case StepRead:
			r.trace = append(r.trace, map[bool]string{false: "read", true: "read fresh"}[s.Fresh])
			m.Candidates(r.reads[min(reads, len(r.reads)-1)], !(r.readErr && reads == 0))
			reads++
		case StepCoolingEnd:
			r.trace = append(r.trace, "cooling-end")
			var end int64
			if ends < len(r.ends) && r.ends[ends] != 0 {
				end = amT0.UnixMilli() + r.ends[ends]
			}
			ends++
			m.CoolingEnd(end)
		case StepWait:
			r.trace = append(r.trace, "wait "+s.Until.Sub(r.now).String())
			r.now = s.Until
		case StepTry:
			r.trace = append(r.trace, fmt.Sprint("try ", s.Key.ID))
			list := r.answers[s.Key.ID]
			if len(list) == 0 {
				t.Fatalf("key %d tried, no answer for it", s.Key.ID)
			}
			x := list[min(calls[s.Key.ID], len(list)-1)]
			calls[s.Key.ID]++
			r.now = r.now.Add(x.took)
			a := Answer{Status: x.status, Header: x.header}
			if x.status < 200 || x.status > 299 {
				a.Body = []byte(x.body)
			}
			if x.verdict != nil {
				a.Provider, a.Family, a.Streak = m.req.Provider, m.req.Family, m.cur.StreakAt(r.now)
				m.judge(*x.verdict, a, "excerpt", r.now)
			} else {
				m.Observe(a, "excerpt", r.now)
			}
			r.keeps = append(r.keeps, m.Keep())
		}
	}
}

// Renderings of the effects.

func amRel(ms int64) string { return "+" + (time.Duration(ms-amT0.UnixMilli()) * time.Millisecond).String() }

func amReply(r Reply) string {
	switch r.Kind {
	case ReplyServe:
		return fmt.Sprintf("serve #%d key %d, attempts %d", r.Attempt, r.Key, r.Attempts)
	case ReplyRelay:
		return fmt.Sprintf("relay #%d key %d, attempts %d", r.Attempt, r.Key, r.Attempts)
	case ReplyRateLimited:
		return fmt.Sprintf("429 retry %ds, attempts %d", r.RetryAfter, r.Attempts)
	case ReplyUpstreamError:
		return fmt.Sprintf("502 last %d, attempts %d", r.LastStatus, r.Attempts)
	case ReplyNoKey:
		return fmt.Sprintf("503, attempts %d", r.Attempts)
	case ReplyStorm:
		return fmt.Sprintf("storm rate=%v retry %ds keys %d, attempts %d", r.Rate, r.RetryAfter, r.StormKeys, r.Attempts)
	case ReplyStoreError:
		return "500 store"
	}
	return fmt.Sprintf("reply %d", r.Kind)
}

func amChanges(cs []Change) string {
	var out []string
	for _, c := range cs {
		var s string
		switch c.Kind {
		case ChangeCool:
			s = fmt.Sprintf("cool %d %s until %s %d", c.Key, c.Model, amRel(c.Until), c.Status)
		case ChangeBlockModel:
			s = fmt.Sprintf("block-model %d %s %d", c.Key, c.Model, c.Status)
		case ChangeBlockKey:
			s = fmt.Sprintf("block-key %d %d from %s", c.Key, c.Status, strings.Join(c.From, ","))
		case ChangeExhaustKey:
			s = fmt.Sprintf("exhaust %d %d from %s", c.Key, c.Status, strings.Join(c.From, ","))
		case ChangeResetStreak:
			s = fmt.Sprintf("reset %d %s", c.Key, c.Model)
		case ChangeLiftCooldowns:
			s = fmt.Sprintf("lift %v since %s", c.Keys, amRel(c.Since))
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

func amCache(us []CacheUpdate) string {
	names := map[CacheOp]string{CacheForgetAll: "forget-all", CacheRemove: "remove", CacheFailed: "failed",
		CacheUsed: "used", CacheServed: "served"}
	var out []string
	for _, u := range us {
		if u.Op == CacheForgetAll {
			out = append(out, names[u.Op])
			continue
		}
		out = append(out, fmt.Sprintf("%s %d", names[u.Op], u.Key))
	}
	return strings.Join(out, "; ")
}

func amUses(us []KeyUse) string {
	var out []string
	for _, u := range us {
		out = append(out, fmt.Sprintf("%d:%s", u.Key, map[bool]string{false: "fail", true: "ok"}[u.Served]))
	}
	return strings.Join(out, " ")
}

// amWant is a table row's expected effects ("-": not checked).
type amWant struct {
	reply, class, changes, cache, uses string
}

func amCheck(t *testing.T, e Effects, w amWant) {
	t.Helper()
	check := func(what, got, want string) {
		t.Helper()
		if want != "-" && got != want {
			t.Errorf("%s:\n got %q\nwant %q", what, got, want)
		}
	}
	check("reply", amReply(e.Reply), w.reply)
	check("class", string(e.Class), w.class)
	check("changes", amChanges(e.Changes), w.changes)
	check("cache", amCache(e.Cache), w.cache)
	check("uses", amUses(e.Uses), w.uses)
}

// TestAttemptsClassification: every row of README's classification table,
// as the machine acts on it. Key 1 gets the answer; key 2 serves whatever
// is tried next.
func TestAttemptsClassification(t *testing.T) {
	geminiReset := amRel(DailyReset("google-ai-studio", amT0).UnixMilli())
	moveOn := func(status int) amWant {
		return amWant{fmt.Sprintf("serve #2 key 2, attempts 2"), "success",
			fmt.Sprintf("cool 1 m until +0s %d", status), "failed 1; served 2", "1:fail 2:ok"}
	}
	returned := amWant{"relay #1 key 1, attempts 1", "client", "", "used 1", "1:ok"}
	blocked := func(status int) amWant {
		return amWant{"serve #2 key 2, attempts 2", "success", fmt.Sprintf("block-key 1 %d from active,exhausted", status),
			"forget-all", "1:fail 2:ok"}
	}
	exhausted := func(status int) amWant {
		return amWant{"serve #2 key 2, attempts 2", "success", fmt.Sprintf("exhaust 1 %d from active", status),
			"forget-all", "1:fail 2:ok"}
	}
	cooled := func(until string, status int) amWant {
		return amWant{"serve #2 key 2, attempts 2", "success", fmt.Sprintf("cool 1 m until %s %d", until, status),
			"remove 1; served 2", "1:fail 2:ok"}
	}
	tests := []struct {
		name   string
		prov   string // "" openai
		streak int64  // key 1's
		answer amAnswer
		want   amWant
	}{
		{name: "2xx served", answer: amOK, want: amWant{"serve #1 key 1, attempts 1", "success", "", "served 1", "1:ok"}},
		{name: "2xx ends the failure streak", streak: 2, answer: amOK,
			want: amWant{"serve #1 key 1, attempts 1", "success", "reset 1 m", "served 1", "1:ok"}},
		{name: "401 invalid_api_key blocks the key", answer: am401, want: blocked(401)},
		{name: "400 Gemini API_KEY_INVALID blocks the key", prov: "google-ai-studio",
			answer: amAnswer{status: 400, body: amGeminiInvalidKey}, want: blocked(400)},
		{name: "other 403 (verdict) blocks the key", answer: amVerdict(403, Verdict{Action: BlockKey, Reason: "permission denied"}),
			want: blocked(403)},
		{name: "402 exhausts the key", answer: amAnswer{status: 402, body: amNoBalance}, want: exhausted(402)},
		{name: "429 insufficient_quota exhausts the key", answer: amAnswer{status: 429, body: amNoQuota}, want: exhausted(429)},
		{name: "400 region is returned", prov: "google-ai-studio", answer: amAnswer{status: 400, body: amRegion}, want: returned},
		{name: "403 about the model blocks the model", answer: amAnswer{status: 403, body: amModelForbidden},
			want: amWant{"serve #2 key 2, attempts 2", "success", "block-model 1 m 403", "remove 1; served 2", "1:fail 2:ok"}},
		{name: "404 about the model, another key serves it", answer: am404,
			want: amWant{"serve #2 key 2, attempts 2", "success", "block-model 1 m 404", "remove 1; served 2", "1:fail 2:ok"}},
		{name: "429 Gemini daily quota cools until midnight Pacific", prov: "google-ai-studio",
			answer: amAnswer{status: 429, body: amGeminiDaily}, want: cooled(geminiReset, 429)},
		{name: "429 Retry-After cools for the hint", answer: amRetryAfter(429, amRateLimited, "7"), want: cooled("+7s", 429)},
		{name: "429 without a hint cools for the default", answer: am429, want: cooled("+1m0s", 429)},
		{name: "429 without a hint doubles with the streak", streak: 2, answer: am429, want: cooled("+4m0s", 429)},
		{name: "429 busy moves on", answer: amAnswer{status: 429, body: amBusy}, want: moveOn(429)},
		{name: "408 moves on", answer: amAnswer{status: 408, body: "{}"}, want: moveOn(408)},
		{name: "500 moves on", answer: am500, want: moveOn(500)},
		{name: "529 overloaded moves on", prov: "anthropic", answer: amAnswer{status: 529, body: amOverloaded}, want: moveOn(529)},
		{name: "network error moves on", answer: amNetwork, want: moveOn(0)},
		{name: "500 in a row rests the key-model", streak: 1, answer: am500, want: cooled("+5s", 500)},
		{name: "500, third in a row, rests longer", streak: 2, answer: am500, want: cooled("+10s", 500)},
		{name: "400 bad parameters is returned", answer: amAnswer{status: 400, body: amBadRequest}, want: returned},
		{name: "404 unknown path is returned", answer: amAnswer{status: 404, body: amUnknownPath}, want: returned},
		{name: "413 is returned", answer: amAnswer{status: 413, body: "<html>Request Entity Too Large</html>"}, want: returned},
		{name: "422 is returned", answer: amAnswer{status: 422, body: `{"detail":[{"msg":"field required"}]}`}, want: returned},
		{name: "1xx moves on", answer: amAnswer{status: 103}, want: moveOn(103)},
		{name: "status above 599 moves on", answer: amAnswer{status: 600}, want: moveOn(600)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := amRequest("m")
			if tt.prov != "" {
				p, _ := provider.Lookup(tt.prov)
				req.Provider, req.Family = p.Name, p.Family
			}
			r := &amRun{req: req, reads: [][]Candidate{amKeys(2, tt.streak)},
				answers: map[int64][]amAnswer{1: {tt.answer}, 2: {amOK}}}
			amCheck(t, r.run(t), tt.want)
		})
	}
}
