//go:build e2e

package e2e

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestUsage: the usage rollups under wrangler dev match, exactly, what the
// clients saw; streams lose only the usage chunk keypool asked for; token
// quotas cut off at the right request; and the D1 cost of the accounting
// is measured.
func TestUsage(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			t.Run("rollups-match-500-requests", w.testRollups)
			t.Run("stream-loses-only-the-usage-chunk", w.testStreamUsage)
			t.Run("token-quota-cuts-off", w.testTokenQuota)
		})
	}
}

// usageRow is what one group's counts must be.
type usageRow struct {
	requests, successes, clientErrors, prompt, completion int64
}

// testRollups: 500 requests across 3 tokens, 5 keys and 3 models, some
// streamed, some answered 400 by the upstream; the day rollups grouped by
// token, by key and by model equal the sums of what the clients saw.
func (w *worker) testRollups(t *testing.T) {
	var keys []string
	for i := 0; i < 5; i++ {
		keys = append(keys, fmt.Sprintf("sk-usage%d-%s", i, randomHex(10)))
	}
	j := w.importKeys(t, "openai", keys...)
	if j.Get("added").Int() != 5 {
		t.Fatalf("import: %s", j.Raw)
	}
	// One key refuses gpt-u3's parameters: a client error, relayed.
	w.up.SetRule(keys[4], fakeupstream.OpenAIBadRequest("gpt-u3"))
	type tok struct {
		id     string
		secret string
	}
	var toks []tok
	for i := 0; i < 3; i++ {
		r := w.adminCall(t, "POST", "/admin/api/tokens", fmt.Sprintf(`{"name":"usage %d"}`, i))
		if r.status != http.StatusCreated {
			t.Fatalf("token: %d %s", r.status, r.body)
		}
		toks = append(toks, tok{id: r.json().Get("id").String(), secret: r.json().Get("token").String()})
	}
	models := []string{"gpt-u1", "gpt-u2", "gpt-u3"}
	byToken, byKey, byModel := map[string]*usageRow{}, map[string]*usageRow{}, map[string]*usageRow{}
	add := func(m map[string]*usageRow, k string, ok bool, clientErr bool) {
		r := m[k]
		if r == nil {
			r = &usageRow{}
			m[k] = r
		}
		r.requests++
		if ok {
			// The fake's usage: 5 prompt, 7 completion tokens, JSON or stream.
			r.successes++
			r.prompt += 5
			r.completion += 7
		}
		if clientErr {
			r.clientErrors++
		}
	}
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan string, 500)
	sem := make(chan struct{}, 6)
	for i := 0; i < 500; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			tk, model := toks[i%3], models[(i/3)%3]
			stream := i%5 == 0
			body := `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
			if stream {
				body = `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			}
			r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + tk.secret}, body)
			ok, clientErr := r.status == 200, r.status == 400
			if !ok && !clientErr {
				errs <- fmt.Sprintf("request %d: %d %s", i, r.status, r.body)
				return
			}
			key := r.header.Get("X-Keypool-Key")
			mu.Lock()
			add(byToken, tk.id, ok, clientErr)
			add(byKey, key, ok, clientErr)
			add(byModel, "openai/"+model, ok, clientErr)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	t.Logf("500 requests in %v", time.Since(start).Round(time.Millisecond))
	if byKey[w.keyIDOf(t, keys[4])] == nil || byKey[w.keyIDOf(t, keys[4])].clientErrors == 0 {
		t.Logf("the key refusing gpt-u3 served no gpt-u3 request: no client errors in this run")
	}
	// Stream usage is read after the response: give it a moment.
	time.Sleep(500 * time.Millisecond)
	today := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli()
	for _, g := range []struct {
		group string
		want  map[string]*usageRow
	}{{"token", byToken}, {"key", byKey}, {"model", byModel}} {
		var got gjson.Result
		eventually(t, "the "+g.group+" rollups", func() bool {
			r := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&group="+g.group+
				"&from="+strconv.FormatInt(today, 10), "")
			if r.status != 200 {
				t.Fatalf("stats: %d %s", r.status, r.body)
			}
			got = r.json()
			return sumRequests(got, g.group, g.want) == 500
		})
		for k, want := range g.want {
			var p gjson.Result
			for _, x := range got.Get("points").Array() {
				if x.Get(g.group).String() == k {
					p = x
				}
			}
			if p.Get("requests").Int() != want.requests || p.Get("successes").Int() != want.successes ||
				p.Get("client_errors").Int() != want.clientErrors || p.Get("prompt_tokens").Int() != want.prompt ||
				p.Get("completion_tokens").Int() != want.completion || p.Get("estimated").Int() != 0 {
				t.Errorf("%s %s: got %s, want %+v", g.group, k, p.Raw, *want)
			}
		}
		if n := len(got.Get("points").Array()); n != len(g.want) {
			t.Errorf("%s: %d groups, want %d: %s", g.group, n, len(g.want), got.Get("points").Raw)
		}
	}
	// The same figures as CSV.
	r := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&group=model&format=csv&from="+
		strconv.FormatInt(today, 10), "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil || len(rows) != 1+len(byModel) {
		t.Fatalf("csv: %v, %d rows:\n%s", err, len(rows), r.body)
	}
	head := strings.Join(rows[0], ",")
	if head != "bucket,time,model,requests,successes,client_errors,upstream_errors,rejected,prompt_tokens,completion_tokens,total_tokens,estimated,latency_avg_ms,cached_tokens" {
		t.Errorf("csv header %q", head)
	}
	for _, row := range rows[1:] {
		want := byModel[row[2]]
		if want == nil || row[3] != strconv.FormatInt(want.requests, 10) || row[8] != strconv.FormatInt(want.prompt, 10) ||
			row[9] != strconv.FormatInt(want.completion, 10) || row[0] != strconv.FormatInt(today, 10) {
			t.Errorf("csv row %v, want %+v", row, want)
		}
	}
	// Current rates.
	now := w.adminCall(t, "GET", "/admin/api/stats/now?provider=openai", "").json()
	if now.Get("rpd").Int() < 500 || now.Get("tpd").Int() < 500 {
		t.Errorf("stats/now: %s", now.Raw)
	}
}

func sumRequests(got gjson.Result, group string, want map[string]*usageRow) int64 {
	var n int64
	for _, p := range got.Get("points").Array() {
		if want[p.Get(group).String()] != nil {
			n += p.Get("requests").Int()
		}
	}
	return n
}

// keyIDOf returns a key's id from the admin API.
func (w *worker) keyIDOf(t *testing.T, secret string) string {
	t.Helper()
	return w.keyState(t, "openai", secret).Get("id").String()
}

// testStreamUsage: a client that did not ask for usage gets the upstream's
// stream byte for byte minus the usage chunk keypool asked for, and the
// tokens are counted; a client that asked gets it untouched.
func (w *worker) testStreamUsage(t *testing.T) {
	w.importKeys(t, "groq", "gsk_stream"+randomHex(12))
	const model = "llama-stream-usage"
	id := "su-" + randomHex(6)
	r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id},
		`{"model":"groq/`+model+`","stream":true,"messages":[]}`)
	if r.status != 200 {
		t.Fatalf("stream: %d %s", r.status, r.body)
	}
	q := findRequest(t, w.up, id)
	if !gjson.GetBytes(q.Body, "stream_options.include_usage").Bool() {
		t.Errorf("upstream request did not ask for usage: %s", q.Body)
	}
	if want := strings.Join(fakeupstream.StreamChunksWithUsage(model), ""); string(q.Sent) != want {
		t.Fatalf("the fake sent %q", q.Sent)
	}
	if want := strings.Join(fakeupstream.StreamChunks(model), ""); string(r.body) != want {
		t.Errorf("client got\n%q\nwant the upstream's stream without the usage chunk\n%q", r.body, want)
	}
	id2 := "su2-" + randomHex(6)
	r = w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id2},
		`{"model":"groq/`+model+`","stream":true,"stream_options":{"include_usage":true},"messages":[]}`)
	q = findRequest(t, w.up, id2)
	if string(r.body) != string(q.Sent) || !strings.Contains(string(r.body), `"usage"`) {
		t.Errorf("a client that asked for usage got %q, the upstream sent %q", r.body, q.Sent)
	}
	eventually(t, "stream tokens counted", func() bool {
		got := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=groq&model="+model, "").json()
		return got.Get("totals.requests").Int() == 2 && got.Get("totals.prompt_tokens").Int() == 10 &&
			got.Get("totals.completion_tokens").Int() == 14 && got.Get("totals.estimated").Int() == 0
	})
}

// testTokenQuota: a token allowed 30 tokens a day makes requests of 12
// tokens each: the third is still let in (24 used), the fourth is refused.
func (w *worker) testTokenQuota(t *testing.T) {
	w.importKeys(t, "mistral", "mistral-quota-"+randomHex(10))
	r := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"quota","tokens_day":30}`)
	if r.status != http.StatusCreated {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	secret := r.json().Get("token").String()
	for i := 1; i <= 4; i++ {
		r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + secret},
			`{"model":"mistral/mistral-quota","messages":[]}`)
		switch {
		case i <= 3 && r.status != 200:
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		case i == 4 && (r.status != http.StatusTooManyRequests || r.json().Get("error.code").String() != "quota_exceeded" ||
			r.header.Get("Retry-After") == ""):
			t.Fatalf("request 4: %d %s, want 429 quota_exceeded with Retry-After", r.status, r.body)
		}
	}
}
