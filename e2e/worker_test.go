//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestWorker runs every scenario against each build, each build with its
// own wrangler dev, fresh D1 state and fake upstream. Scenarios use
// distinct providers or models so that their pools do not interfere.
func TestWorker(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			t.Run("auth", w.testAuth)
			t.Run("import", w.testImport)
			t.Run("rotation", w.testRotation)
			t.Run("gemini-pool", w.testGeminiPool)
			t.Run("storm", w.testStorm)
			t.Run("multipart-retry", w.testMultipartRetry)
			t.Run("exhausted-and-free", w.testExhaustedAndFree)
			t.Run("upstream-timeout", w.testUpstreamTimeout)
			t.Run("client-error-blames-no-key", w.testClientError)
			t.Run("server-error-retries", w.testServerErrorRetry)
			t.Run("body-limit", w.testBodyLimit)
			t.Run("stream", w.testStream)
			t.Run("credential-forms", w.testCredentialForms)
			t.Run("native-and-gateway", w.testNative)
			t.Run("models-and-compat", w.testModelsAndCompat)
			t.Run("no-usable-key", w.testNoKey)
			t.Run("hop-by-hop", w.testHopByHop)
			t.Run("panic", w.testPanic)
			t.Run("cron", w.testCron)
			t.Run("concurrent-streams", w.testConcurrentStreams)
			t.Run("long-stream-burst", w.testLongStreamBurst)
			t.Run("timers-after-reuse", w.testTimersAfterReuse)
			t.Run("client-disconnect", w.testClientDisconnect)
			t.Run("no-state-leak", w.testNoStateLeak)
			t.Run("cron-interleaved", w.testCronInterleaved)
			t.Run("panic-then-serve", w.testPanic)
			t.Run("secrets-stay-secret", w.testSecretsStaySecret)
		})
	}
}

func checkOpenAIError(t *testing.T, r response, status int) gjson.Result {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want JSON", ct)
	}
	e := r.json().Get("error")
	for _, f := range []string{"message", "type", "code"} {
		if e.Get(f).String() == "" {
			t.Fatalf("error.%s missing in %s", f, r.body)
		}
	}
	return e
}

func (w *worker) testAuth(t *testing.T) {
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	before := len(w.up.Requests())
	checkOpenAIError(t, w.do(t, "POST", "/v1/chat/completions", nil, chat), 401)
	e := checkOpenAIError(t, w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer wrong"}, chat), 401)
	if e.Get("code").String() != "invalid_api_key" {
		t.Errorf("wrong token: code %q", e.Get("code"))
	}
	checkOpenAIError(t, w.do(t, "GET", "/v1/models?key=wrong", nil, ""), 401)
	checkOpenAIError(t, w.do(t, "POST", "/api/openai/chat/completions", map[string]string{"x-api-key": "wrong"}, chat), 401)
	// The admin password is not a client token, and the client token is
	// not the admin password.
	checkOpenAIError(t, w.do(t, "GET", "/v1/models", map[string]string{"Authorization": "Bearer " + w.admin}, ""), 401)
	for i, rt := range []struct{ method, path string }{
		{"GET", "/admin/api/keys"}, {"POST", "/admin/api/keys"}, {"GET", "/admin/api/keys/1"},
		{"DELETE", "/admin/api/keys/1"}, {"GET", "/admin/api/providers"}, {"GET", "/admin/api/debug/panic"},
	} {
		// Wrong admin passwords from an address per route: the login
		// throttle answers 429 after 5 from one.
		ip := "198.18.3." + strconv.Itoa(i)
		for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong", "CF-Connecting-IP": ip}, {"Authorization": "Bearer " + w.token, "CF-Connecting-IP": ip}} {
			r := w.do(t, rt.method, rt.path, hdr, `{}`)
			checkOpenAIError(t, r, 401)
		}
	}
	if n := len(w.up.Requests()); n != before {
		t.Errorf("unauthenticated requests reached the upstream (%d)", n-before)
	}
}

func (w *worker) testImport(t *testing.T) {
	k1, k2 := "sk-imp"+randomHex(12), "sk-imp"+randomHex(12)
	text := k1 + `\n` + k2 + `, ` + k1 + `;junk\tAIzaSyNotADeepseekKey0123\n\n`
	r := w.adminCall(t, "POST", "/admin/api/keys", `{"provider":"deepseek","label":"batch 1","keys":"`+text+`"}`)
	if r.status != 201 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	j := r.json()
	if j.Get("added").Int() != 2 || j.Get("duplicates").Int() != 1 || j.Get("rejected").Int() != 2 {
		t.Fatalf("import counts wrong: %s", r.body)
	}
	rej := j.Get("rejected_lines").Array()
	if rej[0].Get("line").Int() != 2 || !strings.Contains(rej[0].Get("reason").String(), "too short") ||
		!strings.Contains(rej[1].Get("reason").String(), "not a deepseek key") {
		t.Errorf("rejected lines: %s", j.Get("rejected_lines").Raw)
	}
	if bytes.Contains(r.body, []byte(k1)) || bytes.Contains(r.body, []byte(k2)) {
		t.Errorf("import answer shows a full key: %s", r.body)
	}
	// Importing again adds nothing and reports both as duplicates.
	j = w.importKeys(t, "deepseek", k1, k2)
	if j.Get("added").Int() != 0 || j.Get("duplicates").Int() != 2 {
		t.Fatalf("re-import: %s", j.Raw)
	}
	st := w.keyState(t, "deepseek", k1)
	if st.Get("status").String() != "active" || st.Get("label").String() != "batch 1" {
		t.Errorf("imported key: %s", st.Raw)
	}
	// Bad input names the field.
	bad := w.adminCall(t, "POST", "/admin/api/keys", `{"provider":"nope","keys":"sk-x"}`)
	if e := checkOpenAIError(t, bad, 400); e.Get("param").String() != "provider" {
		t.Errorf("unknown provider: %s", bad.body)
	}
	bad = w.adminCall(t, "POST", "/admin/api/keys", `{"provider":"openai"`)
	checkOpenAIError(t, bad, 400)
	// Delete one; it is gone from the list and a second delete is 404.
	id := st.Get("id").String()
	if r := w.adminCall(t, "DELETE", "/admin/api/keys/"+id, ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	checkOpenAIError(t, w.adminCall(t, "DELETE", "/admin/api/keys/"+id, ""), 404)
	if n := w.adminCall(t, "GET", "/admin/api/keys?provider=deepseek", "").json().Get("total").Int(); n != 1 {
		t.Errorf("after delete: %d deepseek keys, want 1", n)
	}
}

// testRotation: a revoked key gets blocked, a rate-limited key cools for
// that model only and keeps serving another, and every request succeeds
// while a good key exists.
func (w *worker) testRotation(t *testing.T) {
	good, revoked, limited := "sk-good"+randomHex(12), "sk-revk"+randomHex(12), "sk-limt"+randomHex(12)
	w.up.SetRule(revoked, fakeupstream.OpenAIInvalidKey(mask(revoked)))
	w.up.SetRule(limited, fakeupstream.OpenAIRateLimited("gpt-limited", 120))
	if j := w.importKeys(t, "openai", good, revoked, limited); j.Get("added").Int() != 3 {
		t.Fatalf("import: %s", j.Raw)
	}
	start := time.Now()
	for i := 0; i < 12; i++ {
		r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-limited","messages":[{"role":"user","content":"hi"}]}`)
		if r.status != 200 || r.json().Get("model").String() != "gpt-limited" {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		if r.header.Get("X-Keypool-Key") != w.keyState(t, "openai", good).Get("id").String() {
			t.Errorf("request %d served by %q, want the good key", i, r.header.Get("X-Keypool-Key"))
		}
	}
	eventually(t, "revoked key blocked", func() bool {
		return w.keyState(t, "openai", revoked).Get("status").String() == "blocked"
	})
	var lim gjson.Result
	eventually(t, "limited key cooling for gpt-limited", func() bool {
		lim = w.keyState(t, "openai", limited)
		return lim.Get("models.#").Int() == 1
	})
	if lim.Get("status").String() != "active" || lim.Get("models.0.model").String() != "gpt-limited" ||
		lim.Get("models.0.state").String() != "cooling" {
		t.Fatalf("limited key: %s", lim.Raw)
	}
	// Retry-After: 120 → cooling ends about 120 s after the 429.
	until := time.UnixMilli(lim.Get("models.0.until").Int())
	if d := until.Sub(start); d < 115*time.Second || d > 130*time.Second {
		t.Errorf("cooling ends %v after the 429, want ~120 s", d)
	}
	if g := w.keyState(t, "openai", good); g.Get("status").String() != "active" || g.Get("models.#").Int() != 0 {
		t.Errorf("good key: %s", g.Raw)
	}
	ev := w.adminCall(t, "GET", "/admin/api/keys/"+w.keyState(t, "openai", revoked).Get("id").String(), "").json()
	if ev.Get("events.0.to").String() != "blocked" || ev.Get("events.0.status").Int() != 401 ||
		strings.Contains(ev.Raw, revoked) {
		t.Errorf("revoked key history: %s", ev.Get("events").Raw)
	}

	// Another model: the limited key serves it.
	servedByLimited := 0
	limitedID := lim.Get("id").String()
	for i := 0; i < 20; i++ {
		r := w.call(t, "POST", "/v1/chat/completions", `{"model":"gpt-other","messages":[]}`)
		if r.status != 200 {
			t.Fatalf("gpt-other request %d: %d %s", i, r.status, r.body)
		}
		if r.header.Get("X-Keypool-Key") == limitedID {
			servedByLimited++
		}
	}
	if servedByLimited == 0 {
		t.Errorf("the key cooling for gpt-limited served none of 20 gpt-other requests")
	}
	for _, q := range w.up.Requests() {
		if q.Key == revoked && q.Model == "gpt-other" {
			t.Errorf("blocked key was used again")
		}
		if q.Key == limited && q.Model == "gpt-limited" && q.Status == 200 {
			t.Errorf("cooling key served the model it cools for")
		}
	}
}

func (w *worker) testClientError(t *testing.T) {
	k := "sk-cerr" + randomHex(12)
	w.importKeys(t, "openrouter", "sk-or-"+k)
	key := "sk-or-" + k
	w.up.SetRule(key, fakeupstream.OpenAIBadRequest("bad/params"))
	before := len(w.up.Requests())
	r := w.call(t, "POST", "/v1/chat/completions", `{"model":"openrouter/bad/params","temperature":7}`)
	if r.status != 400 || string(r.body) != fakeupstream.OpenAIBadRequest("").Body {
		t.Fatalf("client error not passed through unchanged: %d %s", r.status, r.body)
	}
	if n := len(w.up.Requests()) - before; n != 1 {
		t.Errorf("a client error was retried: %d upstream calls", n)
	}
	// The "openrouter/" prefix chose the provider and was removed; the
	// request went through the suite's AI Gateway.
	if last := w.up.Requests()[len(w.up.Requests())-1]; last.Model != "bad/params" || last.Path != "/v1/"+w.gwAcct+"/"+w.gwName+"/openrouter/v1/chat/completions" {
		t.Errorf("upstream saw model %q at %q", last.Model, last.Path)
	}
	time.Sleep(300 * time.Millisecond) // let the deferred write land
	st := w.keyState(t, "openrouter", key)
	if st.Get("status").String() != "active" || st.Get("models.#").Int() != 0 || st.Get("failures").Int() != 0 {
		t.Errorf("a client error was blamed on the key: %s", st.Raw)
	}
}

func (w *worker) testServerErrorRetry(t *testing.T) {
	bad, good := "gsk_bad"+randomHex(12), "gsk_good"+randomHex(12)
	w.up.SetRule(bad, fakeupstream.OpenAIServerError())
	w.importKeys(t, "groq", bad, good)
	body := `{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"` + strings.Repeat("é☃", 2000) + `"}]}`
	for i := 0; i < 6; i++ {
		id := randomHex(8)
		r := w.do(t, "POST", "/api/groq/chat/completions", map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id}, body)
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		var seen int
		for _, q := range w.up.Requests() {
			if q.Header.Get("X-Test-Id") == id {
				seen++
				if string(q.Body) != body {
					t.Fatalf("attempt body differs from the client's (%d vs %d bytes)", len(q.Body), len(body))
				}
				if !strings.HasSuffix(q.Path, "/groq/chat/completions") {
					t.Errorf("groq path %q", q.Path)
				}
			}
		}
		if want := r.header.Get("X-Keypool-Attempts"); want != strconv.Itoa(seen) {
			t.Errorf("X-Keypool-Attempts %q, upstream saw %d attempts", want, seen)
		}
	}
	// Only failing keys: 502 after the attempts, in OpenAI format. (The
	// bad key may already rest after its repeated 5xx, so one or two
	// attempts are made.)
	w.up.SetRule(good, fakeupstream.OpenAIServerError())
	defer w.up.ClearRule(good)
	r := w.call(t, "POST", "/v1/chat/completions", `{"model":"groq/llama-3.1-8b-instant"}`)
	e := checkOpenAIError(t, r, 502)
	if a := r.header.Get("X-Keypool-Attempts"); a != "1" && a != "2" {
		t.Errorf("X-Keypool-Attempts %q, want 1 or 2", a)
	}
	if !strings.Contains(e.Get("message").String(), "HTTP 500") {
		t.Errorf("502 message: %s", e.Raw)
	}
	// Failures are counted; a 5xx never blocks a key, and repeated ones
	// rest the key-model briefly (5 s, doubling, at most 2 min).
	for _, k := range []string{bad, good} {
		var st gjson.Result
		eventually(t, "the 5xx failures counted", func() bool {
			st = w.keyState(t, "groq", k)
			return st.Get("failures").Int() > 0
		})
		if st.Get("status").String() != "active" {
			t.Errorf("a 5xx blocked the key: %s", st.Raw)
		}
		for _, m := range st.Get("models").Array() {
			rest := time.Until(time.UnixMilli(m.Get("until").Int()))
			if m.Get("state").String() != "cooling" || rest > 2*time.Minute || !strings.Contains(m.Get("reason").String(), "500") {
				t.Errorf("a 5xx gave more than a short rest: %s", m.Raw)
			}
		}
	}
	// A status a Worker cannot relay becomes a 502 in OpenAI format.
	w.up.SetRule(good, fakeupstream.Rule{Status: 600, Body: "odd"})
	w.up.SetRule(bad, fakeupstream.Rule{Status: 600, Body: "odd"})
	checkOpenAIError(t, w.call(t, "POST", "/v1/chat/completions", `{"model":"groq/llama-3.1-8b-instant"}`), 502)
}

// testBodyLimit: a body over MAX_BODY_BYTES (1 MiB in this suite) is
// refused with 413 before any upstream call.
func (w *worker) testBodyLimit(t *testing.T) {
	before := len(w.up.Requests())
	big := `{"model":"gpt-big","messages":[{"role":"user","content":"` + strings.Repeat("x", 1<<20) + `"}]}`
	e := checkOpenAIError(t, w.call(t, "POST", "/v1/chat/completions", big), 413)
	if !strings.Contains(e.Get("message").String(), "MAX_BODY_BYTES") {
		t.Errorf("413 message: %s", e.Raw)
	}
	if len(w.up.Requests()) != before {
		t.Errorf("an oversized body reached the upstream")
	}
	// Just under the cap passes, byte for byte.
	id := randomHex(6)
	ok := `{"model":"gpt-big","messages":[{"role":"user","content":"` + strings.Repeat("y", 1<<20-100) + `"}]}`
	r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id}, ok)
	if r.status != 200 {
		t.Fatalf("body under the cap: %d %s", r.status, r.body)
	}
	if q := findRequest(t, w.up, id); string(q.Body) != ok {
		t.Errorf("large body changed on the way: %d bytes upstream, %d sent", len(q.Body), len(ok))
	}
}

// testStream: SSE arrives chunk by chunk (the client has chunk 1 before the
// upstream sends chunk 2) and byte-identical.
func (w *worker) testStream(t *testing.T) {
	key := "sk-strm" + randomHex(12)
	w.importKeys(t, "siliconflow", key)
	gateID := randomHex(8)
	release := w.up.Gate(gateID)
	defer release()
	req, _ := http.NewRequest("POST", w.base+"/v1/chat/completions",
		strings.NewReader(`{"model":"siliconflow/Qwen/Qwen2.5-7B-Instruct","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+w.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Fake-Gate", gateID)
	resp, err := w.client.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	chunks := fakeupstream.StreamChunks("Qwen/Qwen2.5-7B-Instruct")
	br := bufio.NewReader(resp.Body)
	first := make([]byte, len(chunks[0]))
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(br, first); got <- err }()
	select {
	case err := <-got:
		must(t, err)
	case <-time.After(8 * time.Second):
		t.Fatal("chunk 1 did not reach the client while the upstream held chunk 2: the stream is buffered")
	}
	if string(first) != chunks[0] {
		t.Fatalf("chunk 1 = %q", first)
	}
	release()
	rest, err := io.ReadAll(br)
	must(t, err)
	all := append(first, rest...)
	var sent []byte
	for _, q := range w.up.Requests() {
		if q.Header.Get("X-Fake-Gate") == gateID {
			sent = q.Sent
		}
	}
	if !bytes.Equal(all, sent) || string(all) != strings.Join(chunks, "") {
		t.Fatalf("stream not byte-identical:\n got %q\nsent %q", all, sent)
	}
}

// testCredentialForms: the client token is accepted in every provider's
// header and in ?key=, and never reaches the upstream; the upstream gets the
// pool key in the provider's header.
func (w *worker) testCredentialForms(t *testing.T) {
	key := "sk-cred" + randomHex(12)
	w.importKeys(t, "openai", key) // joins the rotation pool; any openai key may serve
	body := `{"model":"gpt-creds","messages":[]}`
	for _, form := range []struct {
		name   string
		header map[string]string
		query  string
	}{
		{"bearer", map[string]string{"Authorization": "Bearer " + w.token}, "?x=1"},
		{"x-api-key", map[string]string{"x-api-key": w.token}, "?x=1"},
		{"x-goog-api-key", map[string]string{"x-goog-api-key": w.token}, "?x=1"},
		{"api-key", map[string]string{"api-key": w.token}, "?x=1"},
		{"query", nil, "?x=1&key=" + w.token},
	} {
		id := randomHex(6)
		hdr := map[string]string{"X-Test-Id": id}
		for k, v := range form.header {
			hdr[k] = v
		}
		r := w.do(t, "POST", "/v1/chat/completions"+form.query, hdr, body)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", form.name, r.status, r.body)
		}
		for _, q := range w.up.Requests() {
			if q.Header.Get("X-Test-Id") != id {
				continue
			}
			if q.Query != "x=1" {
				t.Errorf("%s: upstream query %q, want x=1", form.name, q.Query)
			}
			if !strings.HasPrefix(q.Header.Get("Authorization"), "Bearer sk-") {
				t.Errorf("%s: upstream Authorization %q", form.name, q.Header.Get("Authorization"))
			}
			for _, h := range []string{"X-Api-Key", "X-Goog-Api-Key", "Api-Key"} {
				if q.Header.Get(h) != "" {
					t.Errorf("%s: client credential header %s forwarded", form.name, h)
				}
			}
		}
	}
	for _, q := range w.up.Requests() {
		if strings.Contains(q.Query, w.token) || strings.Contains(string(q.Body), w.token) {
			t.Fatalf("client token reached the upstream: %s?%s", q.Path, q.Query)
		}
		for h, vs := range q.Header {
			for _, v := range vs {
				if strings.Contains(v, w.token) {
					t.Fatalf("client token reached the upstream in %s", h)
				}
			}
		}
	}
}

// testNative: /api/<provider>/… goes through the AI Gateway URL (set to the
// fake) with the provider's own key header; providers the gateway does not
// know go direct.
func (w *worker) testNative(t *testing.T) {
	gkey := "AIza" + randomHex(16)
	w.importKeys(t, "google-ai-studio", gkey)
	id := randomHex(6)
	r := w.do(t, "POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent?key="+w.token+"&alt=json",
		map[string]string{"X-Test-Id": id, "cf-aig-cache-ttl": "60"}, `{"contents":[{"parts":[{"text":"hi"}]}]}`)
	if r.status != 200 || !strings.Contains(string(r.body), "fake Gemini") {
		t.Fatalf("gemini native: %d %s", r.status, r.body)
	}
	q := findRequest(t, w.up, id)
	if want := "/v1/" + w.gwAcct + "/" + w.gwName + "/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent"; q.Path != want {
		t.Errorf("gateway path %q, want %q", q.Path, want)
	}
	if q.Query != "alt=json" || q.Header.Get("X-Goog-Api-Key") != gkey || q.Header.Get("Authorization") != "" {
		t.Errorf("gemini upstream: query %q, key header %q, authorization %q", q.Query, q.Header.Get("X-Goog-Api-Key"), q.Header.Get("Authorization"))
	}
	if q.Header.Get("Cf-Aig-Authorization") != "Bearer "+w.gwTok || q.Header.Get("Cf-Aig-Cache-Ttl") != "60" {
		t.Errorf("AI Gateway headers: %v", q.Header)
	}
	eventually(t, "gemini key used for gemini-2.0-flash", func() bool {
		return w.keyState(t, "google-ai-studio", gkey).Get("requests").Int() == 1
	})

	akey := "sk-ant-" + randomHex(16)
	w.importKeys(t, "anthropic", akey)
	id = randomHex(6)
	r = w.do(t, "POST", "/api/anthropic/v1/messages", map[string]string{"x-api-key": w.token, "X-Test-Id": id},
		`{"model":"claude-3-5-haiku-latest","max_tokens":10,"messages":[]}`)
	if r.status != 200 {
		t.Fatalf("anthropic native: %d %s", r.status, r.body)
	}
	q = findRequest(t, w.up, id)
	if q.Header.Get("X-Api-Key") != akey || q.Header.Get("Anthropic-Version") == "" ||
		!strings.HasSuffix(q.Path, "/anthropic/v1/messages") {
		t.Errorf("anthropic upstream: path %q key %q version %q", q.Path, q.Header.Get("X-Api-Key"), q.Header.Get("Anthropic-Version"))
	}

	skey := "sk-sfnat" + randomHex(12)
	w.importKeys(t, "siliconflow", skey)
	id = randomHex(6)
	r = w.do(t, "POST", "/api/siliconflow/v1/chat/completions", map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id},
		`{"model":"Qwen/Qwen2.5-7B-Instruct","messages":[]}`)
	if r.status != 200 {
		t.Fatalf("siliconflow native: %d %s", r.status, r.body)
	}
	if q = findRequest(t, w.up, id); q.Path != "/v1/chat/completions" || !strings.HasPrefix(q.Header.Get("Authorization"), "Bearer sk-") {
		t.Errorf("siliconflow direct: path %q auth %q", q.Path, q.Header.Get("Authorization"))
	}
	checkOpenAIError(t, w.call(t, "GET", "/api/nosuchprovider/x", ""), 404)
}

func findRequest(t *testing.T, up *fakeupstream.Server, id string) fakeupstream.Request {
	t.Helper()
	for _, q := range up.Requests() {
		if q.Header.Get("X-Test-Id") == id {
			return q
		}
	}
	t.Fatalf("request %s never reached the upstream", id)
	return fakeupstream.Request{}
}

func (w *worker) testNoKey(t *testing.T) {
	e := checkOpenAIError(t, w.call(t, "POST", "/v1/chat/completions", `{"model":"mistral/mistral-small-latest","messages":[]}`), 503)
	msg := e.Get("message").String()
	if !strings.Contains(msg, "mistral") || !strings.Contains(msg, "mistral-small-latest") {
		t.Errorf("503 does not name provider and model: %s", msg)
	}
	// Every key cooling: 429 with Retry-After.
	key := "xai-" + randomHex(16)
	w.importKeys(t, "grok", key)
	w.up.SetRule(key, fakeupstream.OpenAIRateLimited("grok-2", 30))
	r := w.call(t, "POST", "/v1/chat/completions", `{"model":"grok/grok-2","messages":[]}`)
	checkOpenAIError(t, r, 429)
	if ra := r.header.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	eventually(t, "grok key cooling", func() bool { return w.keyState(t, "grok", key).Get("models.#").Int() == 1 })
	// While it cools, no upstream call: 429 again, with the time left.
	before := len(w.up.Requests())
	r = w.call(t, "POST", "/v1/chat/completions", `{"model":"grok/grok-2","messages":[]}`)
	checkOpenAIError(t, r, 429)
	if len(w.up.Requests()) != before {
		t.Errorf("a cooling key was called")
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 30 {
		t.Errorf("Retry-After %q while the only key cools, want 1…30", r.header.Get("Retry-After"))
	}
	checkOpenAIError(t, w.call(t, "POST", "/v1/chat/completions", `{"messages":[]}`), 400)
	checkOpenAIError(t, w.call(t, "POST", "/v1/chat/completions", `{"model":`), 400)
}

func (w *worker) testHopByHop(t *testing.T) {
	id := randomHex(6)
	r := w.do(t, "POST", "/v1/chat/completions", map[string]string{
		"Authorization": "Bearer " + w.token, "X-Test-Id": id,
		"Keep-Alive": "timeout=5", "Te": "trailers", "Proxy-Authorization": "Basic eDp5", "X-Forwarded-For": "10.1.2.3",
		"Cookie": "session=abc", "X-Custom": "not on the allow-list",
	}, `{"model":"gpt-hop","messages":[]}`)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	q := findRequest(t, w.up, id)
	for _, h := range []string{"Keep-Alive", "Te", "Proxy-Authorization", "X-Forwarded-For", "Cookie", "Cf-Connecting-Ip", "Cf-Ray", "X-Custom"} {
		if q.Header.Get(h) != "" {
			t.Errorf("%s forwarded upstream: %q", h, q.Header.Get(h))
		}
	}
}

func (w *worker) testPanic(t *testing.T) {
	e := checkOpenAIError(t, w.adminCall(t, "GET", "/admin/api/debug/panic", ""), 500)
	if e.Get("type").String() != "server_error" {
		t.Errorf("panic answer: %s", e.Raw)
	}
	if r := w.call(t, "GET", "/v1/models", ""); r.status != 200 {
		t.Fatalf("request after a panic: %d %s", r.status, r.body)
	}
}

func (w *worker) testCron(t *testing.T) {
	// mistral's pool is empty until here (testNoKey relies on it), so this
	// key is the only one and surely gets the 429.
	key := "mist" + randomHex(12)
	id := w.importKeys(t, "mistral", key).Get("added_keys.0.id").String()
	w.up.SetRule(key, fakeupstream.OpenAIRateLimited("mistral-tiny", 1))
	checkOpenAIError(t, w.call(t, "POST", "/v1/chat/completions", `{"model":"mistral/mistral-tiny","messages":[]}`), 429)
	count := func() int64 {
		return w.query(t, "SELECT COUNT(*) AS n FROM key_models WHERE key_id = "+id)[0].Get("n").Int()
	}
	eventually(t, "the key cooling", func() bool { return count() == 1 })
	time.Sleep(1200 * time.Millisecond) // the cooldown ends
	// An ended cooldown is kept while its failure streak counts (15 min):
	// the cron leaves it, then prunes it once it is older.
	r := w.do(t, "GET", "/__scheduled?cron=*/5+*+*+*+*", nil, "")
	if r.status != 200 || count() != 1 {
		t.Fatalf("/__scheduled: %d %s; %d rows, want the recent one kept", r.status, r.body, count())
	}
	w.query(t, "UPDATE key_models SET until = until - 16 * 60000 WHERE key_id = "+id)
	r = w.do(t, "GET", "/__scheduled?cron=*/5+*+*+*+*", nil, "")
	if r.status != 200 {
		t.Fatalf("/__scheduled: %d %s", r.status, r.body)
	}
	if n := count(); n != 0 {
		t.Errorf("cron left the ended cooldown: %v", w.query(t, "SELECT * FROM key_models WHERE key_id = "+id))
	}
	// Cooldowns that have not ended stay (the grok key cools for 30 s).
	if n := w.query(t, "SELECT COUNT(*) AS n FROM key_models WHERE model = 'grok-2'")[0].Get("n").Int(); n != 1 {
		t.Errorf("cron pruned a running cooldown")
	}
	if !strings.Contains(w.logs.String(), "keypool cron: checked") {
		t.Errorf("cron summary line missing from the log")
	}
}

// testSecretsStaySecret: neither the client token nor any full upstream key
// appears in the worker's log.
func (w *worker) testSecretsStaySecret(t *testing.T) {
	logs := w.logs.String()
	if strings.Contains(logs, w.token) || strings.Contains(logs, w.admin) {
		t.Fatalf("a keypool secret appears in the worker log")
	}
	for _, q := range w.up.Requests() {
		if q.Key != "" && strings.Contains(logs, q.Key) {
			t.Fatalf("upstream key %s appears in the worker log", mask(q.Key))
		}
	}
}
