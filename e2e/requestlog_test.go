//go:build e2e

package e2e

import (
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/proxy"
)

// TestRequestLog: under wrangler dev, every answer carries a request id;
// failed and refused requests are all in the request log, found by that
// id with their attempts; plain successes only as sampled; and the D1
// rows the log writes per 1 000 requests are measured.
func TestRequestLog(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			keys := []string{"sk-reqlog-a" + randomHex(10), "sk-reqlog-b" + randomHex(10)}
			w.importKeys(t, "openai", keys...)
			r := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"request log client","models":["gpt-rl-*"]}`)
			if r.status != http.StatusCreated {
				t.Fatalf("create token: %d %s", r.status, r.body)
			}
			token := r.json().Get("token").String()
			if r := w.adminCall(t, "PUT", "/admin/api/settings", `{"request_log_sample":0.1}`); r.status != http.StatusOK {
				t.Fatalf("sample: %d %s", r.status, r.body)
			}
			for _, k := range keys {
				up.SetRule(k, fakeupstream.Rule{Status: 500, Body: `{"error":{"message":"The server had an error","type":"server_error"}}`,
					Models: []string{"gpt-rl-fail"}})
			}
			var mu sync.Mutex
			ids := map[string]int{} // request id → status
			send := func(model string) {
				r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + token},
					`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
				mu.Lock()
				defer mu.Unlock()
				ids[r.header.Get(proxy.RequestIDHeader)] = r.status
			}
			const ok, refused, failed = 300, 20, 2 // a third failure would find both keys resting
			parallel(8, func(g int) error {
				for i := g; i < ok; i += 8 {
					send("gpt-rl-ok")
				}
				return nil
			})
			var failedID string
			for i := 0; i < refused; i++ {
				send("not-in-scope")
			}
			for i := 0; i < failed; i++ {
				send("gpt-rl-fail")
			}
			statuses := map[int]int{}
			for id, s := range ids {
				statuses[s]++
				if s == http.StatusBadGateway {
					failedID = id
				}
			}
			if len(ids) != ok+refused+failed || statuses[200] != ok || statuses[403] != refused || statuses[502] != failed {
				t.Fatalf("%d distinct request ids for %d requests; statuses %v", len(ids), ok+refused+failed, statuses)
			}
			rows := map[string]int64{}
			for _, row := range w.query(t, "SELECT class, COUNT(*) AS n FROM request_log GROUP BY class") {
				rows[row.Get("class").String()] = row.Get("n").Int()
			}
			total := rows["success"] + rows["rejected"] + rows["upstream"]
			t.Logf("request log rows: %v for %d successes (sample 0.1), %d refused, %d failed: %.0f rows per 1 000 requests here; "+
				"successes alone %.0f per 1 000 at 0.1, so about %.0f at the default 0.01",
				rows, ok, refused, failed, float64(total)*1000/float64(len(ids)),
				float64(rows["success"])*1000/ok, float64(rows["success"])*1000/ok/10)
			if rows["rejected"] != refused || rows["upstream"] != failed || rows["success"] < 10 || rows["success"] > 60 {
				t.Errorf("rows %v: want every refused (%d) and failed (%d) request, and about 30 of the %d successes", rows, refused, failed, ok)
			}
			e := w.adminCall(t, "GET", "/admin/api/requests/"+failedID, "")
			got := e.json()
			if e.status != http.StatusOK || got.Get("status").Int() != 502 || got.Get("class").String() != "upstream" ||
				got.Get("attempts.#").Int() < 2 || got.Get("attempts.0.status").Int() != 500 || got.Get("attempts.0.key_masked").String() == "" {
				var logged []string
				for _, row := range w.query(t, "SELECT id, status FROM request_log WHERE class = 'upstream'") {
					logged = append(logged, strconv.FormatInt(row.Get("id").Int(), 36)+" "+row.Get("status").String())
				}
				t.Errorf("the failed request's entry: %d %s (its id %s; the log's upstream entries: %v)", e.status, e.body, failedID, logged)
			}
			list := w.adminCall(t, "GET", "/admin/api/requests?status=4xx&model=(refused)", "")
			if n := list.json().Get("requests.#").Int(); list.status != http.StatusOK || n != refused {
				t.Errorf("the refused requests by filter: %d, %d of %d", list.status, n, refused)
			}
		})
	}
}
