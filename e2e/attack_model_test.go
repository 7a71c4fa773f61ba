//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestAttackModel: a client cannot escape its token's scope, or grow the
// worker's memory and D1, through the model it names (issue 12, findings
// 2 and 4), run as an attacker would through wrangler dev.
func TestAttackModel(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			// Room for a 1 MiB model in the body: the model's own cap must
			// refuse it, not the body limit.
			w := startWorker(t, build, up, map[string]string{"MAX_BODY_BYTES": "4194304", "CACHE_SECONDS": "300"})
			keys := []string{"sk-atkm1" + randomHex(12), "sk-atkm2" + randomHex(12)}
			if j := w.importKeys(t, "openai", keys...); j.Get("added").Int() != 2 {
				t.Fatalf("import: %s", j.Raw)
			}
			if j := w.importKeys(t, "google-ai-studio", "AIza"+randomHex(16)); j.Get("added").Int() != 1 {
				t.Fatalf("import: %s", j.Raw)
			}
			r := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"mini only","models":["gpt-4o-mini","gemini-2.0-flash"]}`)
			if r.status != http.StatusCreated {
				t.Fatalf("token: %d %s", r.status, r.body)
			}
			scoped := r.json().Get("token").String()
			t.Run("duplicate-model", func(t *testing.T) { testDuplicateModel(t, w, scoped) })
			t.Run("huge-model", func(t *testing.T) { testHugeModel(t, w, scoped) })
			t.Run("cache-bounded", func(t *testing.T) { testCacheBounded(t, w) })
		})
	}
}

// refusedUnseen checks an answer is a 400 naming param, and that the
// upstream saw nothing of it.
func refusedUnseen(t *testing.T, w *worker, what string, before int, r response, param string) {
	t.Helper()
	if r.status != http.StatusBadRequest || r.json().Get("error.param").String() != param || r.json().Get("error.type").String() == "" {
		t.Errorf("%s: %d %s, want 400 naming %q", what, r.status, r.body, param)
	}
	if n := len(w.up.Requests()) - before; n > 0 {
		t.Errorf("%s: %d request(s) reached the upstream", what, n)
	}
}

func testDuplicateModel(t *testing.T, w *worker, scoped string) {
	bearer := map[string]string{"Authorization": "Bearer " + scoped}
	send := func(method, path, ct, body string) (int, response) {
		h := map[string]string{"Authorization": "Bearer " + scoped, "Content-Type": ct}
		before := len(w.up.Requests())
		return before, w.do(t, method, path, h, body)
	}
	cases := []struct {
		what, path, ct, body, param string
	}{
		{"repeated model", "/v1/chat/completions", "application/json",
			`{"model":"gpt-4o-mini","model":"o1-pro","messages":[{"role":"user","content":"hi"}]}`, "model"},
		{"repeated model, escaped spelling", "/v1/chat/completions", "application/json",
			`{"model":"gpt-4o-mini","messages":[],"mod\u0065l":"o1-pro"}`, "model"},
		{"repeated model on /api/compat", "/api/compat/chat/completions", "application/json",
			`{"model":"openai/gpt-4o-mini","model":"openai/o1-pro","messages":[]}`, "model"},
		{"repeated model on a native route", "/api/openai/chat/completions", "application/json",
			`{"model":"gpt-4o-mini","model":"o1-pro","messages":[]}`, "model"},
		{"Gemini: body model differs from the path's", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", "application/json",
			`{"model":"gemini-2.5-pro","contents":[{"parts":[{"text":"hi"}]}]}`, "model"},
		{"two multipart model parts", "/v1/audio/transcriptions", "multipart/form-data; boundary=XyZ",
			"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-mini\r\n" +
				"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n" +
				"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n", "model"},
	}
	for _, c := range cases {
		before, r := send("POST", c.path, c.ct, c.body)
		refusedUnseen(t, w, c.what, before, r, c.param)
		t.Logf("%-48s → %d %s", c.what, r.status, r.json().Get("error.code").String())
	}
	// What the scope allows still passes, nested "model" keys included.
	before := len(w.up.Requests())
	r := w.do(t, "POST", "/v1/chat/completions", bearer,
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","model":"o1-pro"}],"metadata":{"model":"x"}}`)
	if r.status != http.StatusOK || len(w.up.Requests()) != before+1 {
		t.Errorf("nested model keys: %d %s, want 200 and one upstream request", r.status, r.body)
	}
	r = w.do(t, "POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", bearer,
		`{"contents":[{"parts":[{"text":"hi"}]}]}`)
	if r.status != http.StatusOK {
		t.Errorf("Gemini path model in scope: %d %s, want 200", r.status, r.body)
	}
	// The path names the model Gemini runs: a body naming one in scope
	// does not let the path name another.
	before, r = send("POST", "/api/google-ai-studio/v1beta/models/gemini-2.5-pro:generateContent", "application/json",
		`{"model":"gemini-2.0-flash","contents":[]}`)
	refusedUnseen(t, w, "Gemini: in-scope body model, other path model", before, r, "model")
	// No key state changed on the way.
	for _, row := range w.query(t, "SELECT COUNT(*) AS n FROM key_models") {
		if row.Get("n").Int() != 0 {
			t.Errorf("key_models rows after the attack: %d, want 0", row.Get("n").Int())
		}
	}
}

func testHugeModel(t *testing.T, w *worker, scoped string) {
	huge := strings.Repeat("m", 1<<20)
	body := `{"model":"` + huge + `","messages":[{"role":"user","content":"hi"}]}`
	for _, cred := range []string{scoped, w.token} {
		before := len(w.up.Requests())
		r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + cred}, body)
		refusedUnseen(t, w, "1 MiB model", before, r, "model")
		if len(r.body) > 4096 {
			t.Errorf("1 MiB model: the answer is %d bytes: it echoes the model", len(r.body))
		}
	}
	before := len(w.up.Requests())
	r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + scoped},
		`{"model":"gpt-4o-mini\u0000x","messages":[]}`)
	refusedUnseen(t, w, "model with a NUL", before, r, "model")
	// A model the scope refuses is counted under a fixed label.
	r = w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + scoped}, chatWith(strings.Repeat("z", 256)))
	if r.status != http.StatusForbidden {
		t.Errorf("256-byte model outside the scope: %d %s, want 403", r.status, r.body)
	}
	rows := w.query(t, "SELECT model, LENGTH(model) AS n, SUM(requests) AS requests FROM usage_rollups GROUP BY model ORDER BY n DESC")
	var stored int64
	for _, row := range rows {
		stored += row.Get("n").Int()
		if row.Get("n").Int() > 256 {
			t.Errorf("usage_rollups holds a model of %d bytes", row.Get("n").Int())
		}
		if strings.HasPrefix(row.Get("model").String(), "zzzz") {
			t.Errorf("usage_rollups holds the refused model verbatim")
		}
	}
	t.Logf("usage_rollups after 2 requests of a 1 MiB model and a refused 256-byte one: %d model groups, %d bytes of model names: %v",
		len(rows), stored, rows)
}

// testCacheBounded: distinct models, each served, fill the isolate's
// cache no further than its bound.
func testCacheBounded(t *testing.T, w *worker) {
	const n = 1050
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	var mu sync.Mutex
	failed := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			model := fmt.Sprintf("gpt-cache-%04d-%s", i, strings.Repeat("x", 200))
			if r := w.call(t, "POST", "/v1/chat/completions", chatWith(model)); r.status != http.StatusOK {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, n)
	}
	s := w.adminCall(t, "GET", "/admin/api/debug/stats", "").json()
	entries, chars := s.Get("cache_entries"), s.Get("cache_bytes")
	if !entries.Exists() || entries.Int() > 1024 || chars.Int() > 4<<20 {
		t.Errorf("cache after %d distinct models: %s", n, s.Raw)
	}
	t.Logf("cache after %d distinct models: %d entries, %d bytes", n, entries.Int(), chars.Int())
}
