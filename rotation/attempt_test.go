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

func amVerdict(status int, v Verdict) amAnswer {
	return amAnswer{status: status, body: "{}", verdict: &v}
}

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
	keeps []int    // Keep after each Observe, then once decided
	eff   Effects
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
			r.keeps, r.eff = append(r.keeps, m.Keep()), m.Effects()
			return r.eff
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

func amRel(ms int64) string {
	d := time.Duration(ms-amT0.UnixMilli()) * time.Millisecond
	if d < 0 {
		return d.String()
	}
	return "+" + d.String()
}

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
	names := map[CacheOp]string{CacheExpireAll: "expire-all", CacheRemove: "remove", CacheFailed: "failed",
		CacheUsed: "used", CacheServed: "served"}
	var out []string
	for _, u := range us {
		if u.Op == CacheExpireAll {
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
			"expire-all", "1:fail 2:ok"}
	}
	exhausted := func(status int) amWant {
		return amWant{"serve #2 key 2, attempts 2", "success", fmt.Sprintf("exhaust 1 %d from active", status),
			"expire-all", "1:fail 2:ok"}
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

// amCase is a request scenario: its keys' answers and what it comes to.
type amCase struct {
	name    string
	req     func(*Request) // changes to amRequest("m")
	keys    int
	reads   [][]Candidate // default: amKeys(keys) for every read
	ends    []int64
	answers map[int64][]amAnswer
	want    amWant
	trace   string // "" or "-": not checked; "none": no step at all
	keeps   string // "" or "-": not checked
}

func (c amCase) run(t *testing.T) *amRun {
	t.Helper()
	req := amRequest("m")
	if c.req != nil {
		c.req(&req)
	}
	reads := c.reads
	if reads == nil {
		reads = [][]Candidate{amKeys(c.keys)}
	}
	r := &amRun{req: req, reads: reads, ends: c.ends, answers: c.answers}
	amCheck(t, r.run(t), c.want)
	if c.trace == "none" && len(r.trace) != 0 || c.trace != "-" && c.trace != "" && c.trace != "none" &&
		strings.Join(r.trace, ", ") != c.trace {
		t.Errorf("steps:\n got %q\nwant %q", strings.Join(r.trace, ", "), c.trace)
	}
	if c.keeps != "-" && c.keeps != "" && fmt.Sprint(r.keeps) != c.keeps {
		t.Errorf("keeps %v, want %s", r.keeps, c.keeps)
	}
	return r
}

func amEach(n int, a ...amAnswer) map[int64][]amAnswer {
	m := map[int64][]amAnswer{}
	for i := 1; i <= n; i++ {
		m[int64(i)] = a
	}
	return m
}

// TestAttemptsModelMissing: a 404 about the model on one key is held
// until another key answers: one that serves shows the 404 keys may not
// use the model; when none does, the 404 goes to the client and no key is
// blamed.
func TestAttemptsModelMissing(t *testing.T) {
	tests := []amCase{
		{name: "another key serves: the 404 keys are blocked for the model", keys: 3,
			answers: map[int64][]amAnswer{1: {am404}, 2: {am404}, 3: {amOK}},
			want: amWant{"serve #3 key 3, attempts 3", "success", "block-model 1 m 404; block-model 2 m 404",
				"remove 1; remove 2; served 3", "1:fail 2:fail 3:ok"},
			trace: "read, try 1, try 2, try 3", keeps: "[1 2 3 3]"},
		{name: "no key serves: the last 404 goes to the client, nobody blamed", keys: 2, answers: amEach(2, am404),
			want:  amWant{"relay #2 key 2, attempts 2", "client", "", "", "1:fail 2:fail"},
			trace: "read, try 1, try 2", keeps: "[1 2 2]"},
		{name: "one key", keys: 1, answers: amEach(1, am404),
			want: amWant{"relay #1 key 1, attempts 1", "client", "", "", "1:fail"}},
		{name: "more keys than MAX_ATTEMPTS", keys: 5, answers: amEach(5, am404),
			want:  amWant{"relay #3 key 3, attempts 3", "client", "", "", "1:fail 2:fail 3:fail"},
			trace: "read, try 1, try 2, try 3"},
		{name: "404 then rate limited: 429, the 404 not held against the key", keys: 2,
			answers: map[int64][]amAnswer{1: {am404}, 2: {am429}},
			want: amWant{"429 retry 60s, attempts 2", "rejected", "cool 2 m until +1m0s 429", "remove 2",
				"1:fail 2:fail"},
			trace: "read, try 1, try 2, cooling-end", keeps: "[1 1 0]"},
		{name: "404 then the client's 400: the 400 is relayed", keys: 2,
			answers: map[int64][]amAnswer{1: {am404}, 2: {{status: 400, body: amBadRequest}}},
			want:    amWant{"relay #2 key 2, attempts 2", "client", "", "used 2", "1:fail 2:ok"}, keeps: "[1 2 2]"},
		{name: "404 then 5xx: 502", keys: 3, answers: map[int64][]amAnswer{1: {am404}, 2: {am500}, 3: {am500}},
			want: amWant{"502 last 500, attempts 3", "upstream", "cool 2 m until +0s 500; cool 3 m until +0s 500",
				"failed 2; failed 3", "1:fail 2:fail 3:fail"}, keeps: "[1 1 1 0]"},
		{name: "404, invalid key, served", keys: 3, answers: map[int64][]amAnswer{1: {am404}, 2: {am401}, 3: {amOK}},
			want: amWant{"serve #3 key 3, attempts 3", "success",
				"block-model 1 m 404; block-key 2 401 from active,exhausted", "expire-all", "1:fail 2:fail 3:ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t) })
	}
	t.Run("the block's reason says another key serves the model", func(t *testing.T) {
		r := &amRun{req: amRequest("m"), reads: [][]Candidate{amKeys(2)}, answers: map[int64][]amAnswer{1: {am404}, 2: {amOK}}}
		e := r.run(t)
		if len(e.Changes) != 1 || e.Changes[0].Reason != "model not available to this key (404; another key serves it)" ||
			e.Changes[0].Excerpt != "excerpt" {
			t.Errorf("changes %+v", e.Changes)
		}
	})
}

// TestAttemptsWithoutModel: a request that names no model keeps no state
// under model "": a "model" error is the client's answer.
func TestAttemptsWithoutModel(t *testing.T) {
	noModel := func(r *Request) { r.Model = "" }
	tests := []amCase{
		{name: "404 model_not_found is returned", req: noModel, keys: 2, answers: amEach(2, am404),
			want: amWant{"relay #1 key 1, attempts 1", "client", "", "used 1", "1:ok"}},
		{name: "403 about a model is returned", req: noModel, keys: 2, answers: amEach(2, amAnswer{status: 403, body: amModelForbidden}),
			want: amWant{"relay #1 key 1, attempts 1", "client", "", "used 1", "1:ok"}},
		{name: "a BlockModel verdict is returned", req: noModel, keys: 2,
			answers: amEach(2, amVerdict(403, Verdict{Action: BlockModel, Reason: "x"})),
			want:    amWant{"relay #1 key 1, attempts 1", "client", "", "used 1", "1:ok"}},
		{name: "a rate limit still cools the key", req: noModel, keys: 2, answers: map[int64][]amAnswer{1: {am429}, 2: {amOK}},
			want: amWant{"serve #2 key 2, attempts 2", "success", "cool 1  until +1m0s 429", "remove 1; served 2", "1:fail 2:ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t) })
	}
}

// TestAttemptsLimits: MAX_ATTEMPTS counts the failures that may be the
// request's or the upstream's, not keys that are simply rejected; at most
// MaxKeys keys are tried; no attempt after the first starts once the
// retry budget is spent.
func TestAttemptsLimits(t *testing.T) {
	attempts := func(n int) func(*Request) { return func(r *Request) { r.Limits.MaxAttempts = n } }
	budget := func(d time.Duration) func(*Request) {
		return func(r *Request) {
			r.Limits.Budget, r.Limits.MaxAttempts, r.StormPolicy.Keys = d, 5, 100
		}
	}
	slow500 := amAnswer{status: 500, body: amServerError, took: 2 * time.Second}
	tests := []amCase{
		{name: "rejected keys do not use up MAX_ATTEMPTS", req: attempts(1), keys: 4,
			answers: map[int64][]amAnswer{1: {am401}, 2: {{status: 402, body: amNoBalance}}, 3: {am429}, 4: {amOK}},
			want:    amWant{"serve #4 key 4, attempts 4", "success", "-", "expire-all", "1:fail 2:fail 3:fail 4:ok"}},
		{name: "upstream failures do", req: attempts(2), keys: 3, answers: map[int64][]amAnswer{1: {am500}, 2: {amNetwork}, 3: {amOK}},
			want: amWant{"502 last 0, attempts 2", "upstream", "cool 1 m until +0s 500; cool 2 m until +0s 0",
				"failed 1; failed 2", "1:fail 2:fail"},
			trace: "read, try 1, try 2"},
		{name: "at most MaxKeys keys", keys: 10, answers: amEach(10, am401),
			want:  amWant{"503, attempts 8", "rejected", "-", "expire-all", "1:fail 2:fail 3:fail 4:fail 5:fail 6:fail 7:fail 8:fail"},
			trace: "read, try 1, try 2, try 3, try 4, try 5, try 6, try 7, try 8, cooling-end"},
		{name: "budget 3s, calls of 2s: two attempts", req: budget(3 * time.Second), keys: 6, answers: amEach(6, slow500),
			want: amWant{"502 last 500, attempts 2", "upstream", "-", "-", "1:fail 2:fail"}},
		{name: "budget 5s: three", req: budget(5 * time.Second), keys: 6, answers: amEach(6, slow500),
			want: amWant{"502 last 500, attempts 3", "upstream", "-", "-", "1:fail 2:fail 3:fail"}},
		{name: "budget 1s: the first attempt always starts", req: budget(time.Second), keys: 6, answers: amEach(6, slow500),
			want: amWant{"502 last 500, attempts 1", "upstream", "-", "-", "1:fail"}},
		{name: "every key rate limited: 429 until the first is back", keys: 2,
			answers: map[int64][]amAnswer{1: {amRetryAfter(429, amRateLimited, "7")}, 2: {amRetryAfter(429, amRateLimited, "3")}},
			want: amWant{"429 retry 3s, attempts 2", "rejected", "cool 1 m until +7s 429; cool 2 m until +3s 429",
				"remove 1; remove 2", "1:fail 2:fail"}},
		{name: "a stored cooldown that ends first sets Retry-After", keys: 1, ends: []int64{1500},
			answers: amEach(1, amRetryAfter(429, amRateLimited, "7")),
			want:    amWant{"429 retry 2s, attempts 1", "rejected", "-", "-", "-"}},
		{name: "blocked and exhausted keys only: 503", keys: 2,
			answers: map[int64][]amAnswer{1: {am401}, 2: {{status: 402, body: amNoBalance}}},
			want:    amWant{"503, attempts 2", "rejected", "-", "expire-all", "1:fail 2:fail"}},
		{name: "no candidates: 503 without a call", reads: [][]Candidate{nil},
			want: amWant{"503, attempts 0", "rejected", "", "", ""}, trace: "read, cooling-end"},
		{name: "no candidates, one cooling: 429", reads: [][]Candidate{nil}, ends: []int64{4200},
			want: amWant{"429 retry 5s, attempts 0", "rejected", "", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t) })
	}
	t.Run("the key pool cannot be read: 500", func(t *testing.T) {
		r := &amRun{req: amRequest("m"), reads: [][]Candidate{amKeys(1)}, readErr: true}
		amCheck(t, r.run(t), amWant{"500 store", "rejected", "", "", ""})
	})
}

// TestAttemptsWaitForCooldown: with wait_for_cooldown_seconds, a request
// that finds every key cooling waits once for the first one back, within
// the setting and the retry budget.
func TestAttemptsWaitForCooldown(t *testing.T) {
	wait := func(w, budget time.Duration) func(*Request) {
		return func(r *Request) { r.Limits.Wait, r.Limits.Budget = w, budget }
	}
	ra := func(s string) amAnswer { return amRetryAfter(429, amRateLimited, s) }
	tests := []amCase{
		{name: "waits for the key it cooled, which then serves", req: wait(5*time.Second, 30*time.Second), keys: 1,
			answers: amEach(1, ra("1"), amOK),
			// The cooldown was served while waiting: not recorded.
			want:  amWant{"serve #2 key 1, attempts 2", "success", "", "served 1", "1:fail 1:ok"},
			trace: "read, try 1, cooling-end, wait 1s, read fresh, try 1"},
		{name: "a cooldown longer than the setting: 429 at once", req: wait(time.Second, 30*time.Second), keys: 1,
			answers: amEach(1, ra("2")),
			want:    amWant{"429 retry 2s, attempts 1", "rejected", "cool 1 m until +2s 429", "remove 1", "1:fail"},
			trace:   "read, try 1, cooling-end, cooling-end"},
		{name: "no wait the budget would not allow a retry after", req: wait(5*time.Second, time.Second), keys: 1,
			answers: amEach(1, ra("2")),
			want:    amWant{"429 retry 2s, attempts 1", "rejected", "-", "-", "-"}, trace: "read, try 1, cooling-end, cooling-end"},
		{name: "no key tried yet: waits for an earlier request's cooldown, whatever the budget",
			req: wait(5*time.Second, time.Second), reads: [][]Candidate{nil, amKeys(1)}, ends: []int64{2000},
			answers: amEach(1, amOK),
			want:    amWant{"serve #1 key 1, attempts 1", "success", "", "served 1", "1:ok"},
			trace:   "read, cooling-end, wait 2s, read fresh, try 1"},
		{name: "waits once only", req: wait(5*time.Second, 30*time.Second), keys: 1, answers: amEach(1, ra("1")),
			want:  amWant{"429 retry 1s, attempts 2", "rejected", "cool 1 m until +2s 429", "remove 1", "1:fail 1:fail"},
			trace: "read, try 1, cooling-end, wait 1s, read fresh, try 1, cooling-end"},
		{name: "no wait after upstream errors", req: wait(5*time.Second, 30*time.Second), keys: 1, answers: amEach(1, am500),
			want: amWant{"502 last 500, attempts 1", "upstream", "-", "-", "-"}, trace: "read, try 1"},
		{name: "no wait once a key said the model does not exist", req: wait(5*time.Second, 30*time.Second), keys: 2,
			answers: map[int64][]amAnswer{1: {am404}, 2: {ra("1")}},
			want:    amWant{"429 retry 1s, attempts 2", "rejected", "-", "-", "-"}, trace: "read, try 1, try 2, cooling-end"},
		{name: "setting 0: no wait", req: wait(0, 30*time.Second), keys: 1, answers: amEach(1, ra("1")),
			want: amWant{"429 retry 1s, attempts 1", "rejected", "-", "-", "-"}, trace: "read, try 1, cooling-end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t) })
	}
}

// TestAttemptsStorms: STORM_KEYS distinct keys failing at once is the
// upstream's fault: the request is answered at once, the cooldowns given
// on the way are lifted, and while the hold lasts no upstream is called.
// After it one request probes: a success ends the storm, a failure holds
// it again.
func TestAttemptsStorms(t *testing.T) {
	ms := func(d time.Duration) int64 { return amT0.Add(d).UnixMilli() }
	stormKeys := func(n int) func(*Request) {
		return func(r *Request) { r.StormPolicy.Keys, r.Limits.MaxAttempts = n, 5 }
	}
	declared := Storm{Since: ms(-20 * time.Second), Last: ms(-11 * time.Second), Keys: []int64{1, 2, 3},
		Until: ms(-time.Second), Rate: true, Declared: true}
	withStorm := func(s Storm) func(*Request) {
		return func(r *Request) { r.StormPolicy.Keys, r.Storm = 3, s }
	}
	holding := declared
	holding.Until = ms(6 * time.Second)
	run := Storm{Since: ms(-5 * time.Second), Last: ms(-4 * time.Second), Keys: []int64{7, 8}}
	tests := []struct {
		amCase
		storm        Storm // the storm state after
		stormChanged bool
	}{
		{amCase: amCase{name: "rate limits on STORM_KEYS keys begin a storm", req: stormKeys(3), keys: 4, answers: amEach(4, am429),
			want: amWant{"storm rate=true retry 10s keys 3, attempts 3", "rejected",
				"cool 1 m until +1m0s 429; cool 2 m until +1m0s 429; lift [1 2 3] since +0s", "expire-all",
				"1:fail 2:fail 3:fail"},
			trace: "read, try 1, try 2, try 3", keeps: "[0 0 0 0]"},
			storm:        Storm{Since: ms(0), Last: ms(0), Keys: []int64{1, 2, 3}, Until: ms(10 * time.Second), Rate: true, Declared: true},
			stormChanged: true},
		{amCase: amCase{name: "server errors: 503", req: stormKeys(3), keys: 4, answers: amEach(4, am500),
			want: amWant{"storm rate=false retry 10s keys 3, attempts 3", "rejected",
				"cool 1 m until +0s 500; cool 2 m until +0s 500; lift [1 2 3] since +0s", "expire-all", "-"}},
			storm:        Storm{Since: ms(0), Last: ms(0), Keys: []int64{1, 2, 3}, Until: ms(10 * time.Second), Declared: true},
			stormChanged: true},
		{amCase: amCase{name: "the provider's Retry-After holds it longer", req: stormKeys(2), keys: 2,
			answers: amEach(2, amRetryAfter(429, amRateLimited, "25")),
			want:    amWant{"storm rate=true retry 25s keys 2, attempts 2", "rejected", "-", "-", "-"}},
			storm:        Storm{Since: ms(0), Last: ms(0), Keys: []int64{1, 2}, Until: ms(25 * time.Second), Rate: true, Declared: true},
			stormChanged: true},
		{amCase: amCase{name: "during the hold: answered at once, nothing read or called", req: withStorm(holding),
			want:  amWant{"storm rate=true retry 6s keys 3, attempts 0", "rejected", "", "", ""},
			trace: "none"},
			storm: holding},
		{amCase: amCase{name: "after the hold a probe that succeeds ends the storm", req: withStorm(declared), keys: 2,
			answers: amEach(2, amOK),
			want:    amWant{"serve #1 key 1, attempts 1", "success", "", "served 1", "1:ok"}},
			stormChanged: true},
		{amCase: amCase{name: "a probe that fails holds it again, blaming nobody", req: withStorm(declared), keys: 2,
			answers: amEach(2, am429),
			want:    amWant{"storm rate=true retry 10s keys 3, attempts 1", "rejected", "", "", "1:fail"},
			trace:   "read, try 1"},
			storm: Storm{Since: declared.Since, Last: ms(0), Keys: []int64{1, 2, 3}, Until: ms(10 * time.Second), Rate: true,
				Declared: true},
			stormChanged: true},
		{amCase: amCase{name: "a run begun by earlier requests: their keys' cooldowns are lifted too", req: withStorm(run),
			keys: 2, answers: amEach(2, am429),
			want: amWant{"storm rate=true retry 10s keys 3, attempts 1", "rejected", "lift [7 8 1] since -5s", "expire-all",
				"1:fail"}},
			storm: Storm{Since: run.Since, Last: ms(0), Keys: []int64{7, 8, 1}, Until: ms(10 * time.Second), Rate: true,
				Declared: true},
			stormChanged: true},
		{amCase: amCase{name: "a success ends a run", req: withStorm(run), keys: 1, answers: amEach(1, amOK),
			want: amWant{"serve #1 key 1, attempts 1", "success", "", "served 1", "1:ok"}},
			stormChanged: true},
		{amCase: amCase{name: "a success when calm changes no storm state", keys: 1, answers: amEach(1, amOK),
			want: amWant{"serve #1 key 1, attempts 1", "success", "", "served 1", "1:ok"}}},
		{amCase: amCase{name: "daily quotas are no storm", req: func(r *Request) {
			p, _ := provider.Lookup("google-ai-studio")
			r.Provider, r.Family, r.StormPolicy.Keys = p.Name, p.Family, 2
		}, keys: 3, answers: amEach(3, amAnswer{status: 429, body: amGeminiDaily}),
			want: amWant{"-", "rejected", "-", "remove 1; remove 2; remove 3", "1:fail 2:fail 3:fail"}}},
		{amCase: amCase{name: "client errors are no storm", req: stormKeys(2), keys: 3,
			answers: map[int64][]amAnswer{1: {am401}, 2: {am401}, 3: {am401}},
			want:    amWant{"503, attempts 3", "rejected", "-", "-", "-"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.run(t)
			if got := fmt.Sprintf("%+v", r.eff.Storm); got != fmt.Sprintf("%+v", tt.storm) {
				t.Errorf("storm after:\n got %s\nwant %+v", got, tt.storm)
			}
			if r.eff.StormChanged != tt.stormChanged {
				t.Errorf("StormChanged %v, want %v", r.eff.StormChanged, tt.stormChanged)
			}
		})
	}
}

// TestAttemptsProtocol: the machine waits for the report each step asks
// for; reports it did not ask for change nothing.
func TestAttemptsProtocol(t *testing.T) {
	m := Start(amRequest("m"))
	if s := m.Next(amT0); s.Kind != StepRead || s.Fresh {
		t.Fatalf("first step %+v, want a cached read", s)
	}
	m.Observe(Answer{Status: 200}, "", amT0) // not asked for
	m.CoolingEnd(123)
	if s := m.Next(amT0); s.Kind != StepRead {
		t.Fatalf("step %+v after reports it did not ask for, want the read again", s)
	}
	m.Candidates(amKeys(2), true)
	s := m.Next(amT0)
	if s.Kind != StepTry || s.Key.ID != 1 || s.Attempt != 1 {
		t.Fatalf("step %+v, want to try key 1", s)
	}
	if again := m.Next(amT0); again.Kind != StepTry || again.Key.ID != 1 || again.Attempt != 1 {
		t.Fatalf("step %+v before the answer, want the same try", again)
	}
	m.Candidates(nil, false) // not asked for
	m.Observe(Answer{Status: 500, Body: []byte(amServerError)}, "masked", amT0)
	if s := m.Next(amT0); s.Kind != StepTry || s.Key.ID != 2 || s.Attempt != 2 {
		t.Fatalf("step %+v, want to try key 2", s)
	}
	m.Observe(Answer{Status: 200}, "", amT0)
	if s := m.Next(amT0); s.Kind != StepDone {
		t.Fatalf("step %+v, want done", s)
	}
	e := m.Effects()
	if len(e.Notes) != 1 || !strings.HasPrefix(e.Notes[0], `openai key 1 for "m": upstream error (500`) ||
		!strings.HasSuffix(e.Notes[0], "; trying another key") {
		t.Errorf("notes %q", e.Notes)
	}
	if len(e.Changes) != 1 || e.Changes[0].Excerpt != "masked" || e.Changes[0].Reason == "" {
		t.Errorf("changes %+v, want the 500's cooldown with its excerpt and reason", e.Changes)
	}
}
