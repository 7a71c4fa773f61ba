//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/rotation"
)

// testGeminiPool is the pool users of Google AI Studio's free tier run: one
// key used up for the day, one over its per-minute limit (with Google's
// RetryInfo), one invalid, one good. Every request must succeed, each bad
// key must be tried once only, and the states afterwards must be exact.
func (w *worker) testGeminiPool(t *testing.T) {
	// A model no other scenario uses; the keys are deleted at the end, so
	// that later scenarios' google-ai-studio requests meet their own keys.
	const model = "gemini-2.5-flash-lite"
	daily, minute, invalid, good := "AIzaDaily"+randomHex(14), "AIzaMinut"+randomHex(14), "AIzaInval"+randomHex(14), "AIzaGood0"+randomHex(14)
	w.up.SetRule(daily, fakeupstream.GeminiDailyQuota(model))
	// A minute longer than the scenario takes on a slow build, so the key
	// is still resting when its state is read.
	w.up.SetRule(minute, fakeupstream.GeminiMinuteQuota(model, "90s"))
	w.up.SetRule(invalid, fakeupstream.GeminiInvalidKey())
	if j := w.importKeys(t, "google-ai-studio", daily, minute, invalid, good); j.Get("added").Int() != 4 {
		t.Fatalf("import: %s", j.Raw)
	}
	start := time.Now()
	for i := 0; i < 200; i++ {
		var r response
		if i%2 == 0 {
			// Google's native API, as AI Gateway clients call it.
			r = w.do(t, "POST", "/api/google-ai-studio/v1beta/models/"+model+":generateContent",
				map[string]string{"x-goog-api-key": w.token}, `{"contents":[{"parts":[{"text":"hi"}]}]}`)
		} else {
			// The same pool through the OpenAI-compatible surface.
			r = w.call(t, "POST", "/v1/chat/completions", `{"model":"google-ai-studio/`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		}
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	elapsed := time.Since(start)
	calls := map[string]int{}
	for _, q := range w.up.Requests() {
		calls[q.Key]++
	}
	for name, k := range map[string]string{"daily": daily, "minute": minute, "invalid": invalid} {
		if calls[k] != 1 {
			t.Errorf("%s key called %d times upstream, want 1", name, calls[k])
		}
	}
	if calls[good] != 200 {
		t.Errorf("good key called %d times, want 200", calls[good])
	}

	eventually(t, "invalid key blocked", func() bool {
		return w.keyState(t, "google-ai-studio", invalid).Get("status").String() == "blocked"
	})
	d := w.keyState(t, "google-ai-studio", daily)
	reset := rotation.DailyReset("google-ai-studio", start)
	if d.Get("status").String() != "active" || d.Get("models.#").Int() != 1 || d.Get("models.0.state").String() != "cooling" ||
		!strings.Contains(d.Get("models.0.reason").String(), "daily") {
		t.Errorf("daily key: %s", d.Raw)
	} else if until := time.UnixMilli(d.Get("models.0.until").Int()); until.Sub(reset).Abs() > elapsed+2*time.Second {
		t.Errorf("daily key cools until %v, want the Pacific midnight %v", until.UTC(), reset.UTC())
	}
	m := w.keyState(t, "google-ai-studio", minute)
	if m.Get("status").String() != "active" || m.Get("models.#").Int() != 1 || m.Get("models.0.state").String() != "cooling" {
		t.Errorf("minute key: %s", m.Raw)
	} else if d := time.UnixMilli(m.Get("models.0.until").Int()).Sub(start); d < 89*time.Second || d > 90*time.Second+elapsed+2*time.Second {
		t.Errorf("minute key cools %v after the start, want RetryInfo's 90 s", d)
	}
	inv := w.keyState(t, "google-ai-studio", invalid)
	if inv.Get("models.#").Int() != 0 || !strings.Contains(inv.Get("status_reason").String(), "API_KEY_INVALID") &&
		!strings.Contains(inv.Get("status_reason").String(), "credential") {
		t.Errorf("invalid key: %s", inv.Raw)
	}
	g := w.keyState(t, "google-ai-studio", good)
	if g.Get("status").String() != "active" || g.Get("models.#").Int() != 0 || g.Get("successes").Int() != 200 {
		t.Errorf("good key: %s", g.Raw)
	}
	// Each transition is in the key's history with the upstream status and
	// a masked excerpt.
	hist := w.adminCall(t, "GET", "/admin/api/keys/"+inv.Get("id").String(), "").json()
	if hist.Get("events.0.to").String() != "blocked" || hist.Get("events.0.status").Int() != 400 ||
		!strings.Contains(hist.Get("events.0.excerpt").String(), "API_KEY_INVALID") || strings.Contains(hist.Raw, invalid) {
		t.Errorf("invalid key history: %s", hist.Get("events").Raw)
	}
	hist = w.adminCall(t, "GET", "/admin/api/keys/"+d.Get("id").String(), "").json()
	if hist.Get("events.0.to").String() != "cooling" || hist.Get("events.0.model").String() != model || hist.Get("events.0.status").Int() != 429 {
		t.Errorf("daily key history: %s", hist.Get("events").Raw)
	}
	for _, k := range []gjson.Result{d, m, inv, g} {
		if r := w.adminCall(t, "DELETE", "/admin/api/keys/"+k.Get("id").String(), ""); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	}
}

// testStorm: every key of a provider answers 429 at once (an IP-wide
// limit). keypool must stop after STORM_KEYS keys, answer with Retry-After
// without calling the upstream, lift the cooldowns it gave, block nothing,
// and serve again once the upstream recovers.
func (w *worker) testStorm(t *testing.T) {
	const prov, model = "perplexity-ai", "sonar"
	var keys []string
	for i := 0; i < 8; i++ {
		k := fmt.Sprintf("pplx-storm%d-%s", i, randomHex(12))
		keys = append(keys, k)
		w.up.SetRule(k, fakeupstream.OpenAIRateLimitedNoHint(""))
	}
	if j := w.importKeys(t, prov, keys...); j.Get("added").Int() != 8 {
		t.Fatalf("import: %s", j.Raw)
	}
	body := `{"model":"` + prov + `/` + model + `","messages":[]}`
	upstreamCalls := func() int {
		n := 0
		for _, q := range w.up.Requests() {
			if strings.HasPrefix(q.Key, "pplx-storm") {
				n++
			}
		}
		return n
	}
	var stormed response
	for i := 0; i < 4; i++ {
		r := w.call(t, "POST", "/v1/chat/completions", body)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		if r.json().Get("error.code").String() == "upstream_storm" {
			stormed = r
			break
		}
	}
	if stormed.status == 0 {
		t.Fatalf("no storm declared after 4 requests")
	}
	if ra := stormed.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("storm answer without Retry-After: %v", stormed.header)
	}
	n := upstreamCalls()
	if n != 5 {
		t.Errorf("%d upstream calls before the storm was declared, want STORM_KEYS=5", n)
	}
	// During the hold: answered at once, no upstream call.
	for i := 0; i < 5; i++ {
		r := w.call(t, "POST", "/v1/chat/completions", body)
		if r.status != http.StatusTooManyRequests || r.json().Get("error.code").String() != "upstream_storm" {
			t.Fatalf("during the storm: %d %s", r.status, r.body)
		}
	}
	if m := upstreamCalls(); m != n {
		t.Errorf("%d upstream calls during the storm hold, want 0", m-n)
	}
	// No key is blamed: no block, and the cooldowns given before the storm
	// was recognised are lifted.
	eventually(t, "storm cooldowns lifted", func() bool {
		for _, k := range keys {
			s := w.keyState(t, prov, k)
			if s.Get("status").String() != "active" || s.Get("models.#").Int() != 0 {
				return false
			}
		}
		return true
	})
	// The upstream recovers; after the hold (STORM_HOLD_SECONDS=2) the next
	// request goes through.
	for _, k := range keys {
		w.up.ClearRule(k)
	}
	time.Sleep(2100 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if r := w.call(t, "POST", "/v1/chat/completions", body); r.status != 200 {
			t.Fatalf("after the storm, request %d: %d %s", i, r.status, r.body)
		}
	}
	for _, k := range keys {
		if s := w.keyState(t, prov, k); s.Get("status").String() != "active" {
			t.Errorf("key %s after the storm: %s", mask(k), s.Raw)
		}
	}
}

// testMultipartRetry: an audio upload that fails on one key is replayed
// byte for byte on the next, with only the provider prefix of its model
// field removed.
func (w *worker) testMultipartRetry(t *testing.T) {
	bad, good := "sk-mpbad"+randomHex(12), "sk-mpgod"+randomHex(12)
	w.up.SetRule(bad, fakeupstream.Rule{Status: 500, Paths: []string{"audio/transcriptions"},
		Body: `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`})
	// The other scenarios' openai keys rest meanwhile, so that these two
	// are the whole pool and the failing one is tried first half the time.
	var others []string
	for _, k := range w.adminCall(t, "GET", "/admin/api/keys?provider=openai", "").json().Get("keys").Array() {
		if k.Get("status").String() == "active" {
			others = append(others, k.Get("id").String())
		}
	}
	if len(others) > 0 {
		ids := "[" + strings.Join(others, ",") + "]"
		if r := w.adminCall(t, "POST", "/admin/api/keys/bulk", `{"action":"disable","ids":`+ids+`}`); r.status != 200 {
			t.Fatalf("disable: %d %s", r.status, r.body)
		}
		defer func() {
			if r := w.adminCall(t, "POST", "/admin/api/keys/bulk", `{"action":"enable","ids":`+ids+`}`); r.status != 200 {
				t.Errorf("enable: %d %s", r.status, r.body)
			}
		}()
	}
	if j := w.importKeys(t, "openai", bad, good); j.Get("added").Int() != 2 {
		t.Fatalf("import: %s", j.Raw)
	}
	audio := make([]byte, 200<<10)
	for i := range audio {
		audio[i] = byte(i*7 + i>>9)
	}
	build := func(model string) ([]byte, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.SetBoundary("keypoolboundary" + randomHex(6))
		fw, _ := mw.CreateFormFile("file", "speech.mp3")
		fw.Write(audio)
		mw.WriteField("model", model)
		mw.WriteField("language", "en")
		mw.Close()
		return buf.Bytes(), mw.FormDataContentType()
	}
	sent, ctype := build("openai/whisper-1")
	// What the provider must get: the same bytes with the bare model.
	want := bytes.Replace(sent, []byte("\r\n\r\nopenai/whisper-1\r\n"), []byte("\r\n\r\nwhisper-1\r\n"), 1)
	fileSum := sha256.Sum256(audio)
	wantSum := sha256.Sum256(want)
	retried := false
	for i := 0; i < 12 && !retried; i++ {
		id := "mp-" + randomHex(6)
		r := w.do(t, "POST", "/v1/audio/transcriptions", map[string]string{
			"Authorization": "Bearer " + w.token, "Content-Type": ctype, "X-Test-Id": id}, string(sent))
		if r.status != 200 {
			t.Fatalf("transcription %d: %d %s", i, r.status, r.body)
		}
		j := r.json()
		if j.Get("model").String() != "whisper-1" || j.Get("file_sha256").String() != hex.EncodeToString(fileSum[:]) ||
			j.Get("body_sha256").String() != hex.EncodeToString(wantSum[:]) {
			t.Fatalf("transcription %d: upstream saw %s", i, r.body)
		}
		var got [][]byte
		for _, q := range w.up.Requests() {
			if q.Header.Get("X-Test-Id") == id {
				got = append(got, q.Body)
			}
		}
		if r.header.Get("X-Keypool-Attempts") == "2" {
			retried = true
			if len(got) != 2 || !bytes.Equal(got[0], want) || !bytes.Equal(got[1], want) {
				t.Errorf("retried upload: %d upstream bodies, identical to the expected one: %v", len(got), len(got) == 2 && bytes.Equal(got[0], got[1]))
			}
		}
	}
	if !retried {
		t.Fatalf("the failing key was never tried first in 12 uploads")
	}
}

// testModelsAndCompat: /v1/models lists what the pool can serve, and
// /api/compat reaches the gateway's compat endpoint with the provider's
// key.
func (w *worker) testModelsAndCompat(t *testing.T) {
	r := w.call(t, "GET", "/v1/models", "")
	if r.status != 200 || r.json().Get("object").String() != "list" {
		t.Fatalf("/v1/models: %d %s", r.status, r.body)
	}
	ids := map[string]bool{}
	for _, m := range r.json().Get("data").Array() {
		ids[m.Get("id").String()] = true
		if m.Get("object").String() != "model" || m.Get("owned_by").String() == "" {
			t.Errorf("model entry %s", m.Raw)
		}
	}
	// openai has keys (earlier scenarios) and is the default provider; the
	// fake's list names gpt-4o-mini. Google's list comes without "models/".
	for _, id := range []string{"openai/gpt-4o-mini", "gpt-4o-mini", "google-ai-studio/gemini-2.0-flash"} {
		if !ids[id] {
			t.Errorf("/v1/models lacks %q: %s", id, r.body)
		}
	}
	for id := range ids {
		if strings.Contains(id, "models/") {
			t.Errorf("/v1/models id %q keeps Google's prefix", id)
		}
	}

	k := "co-compat" + randomHex(12)
	w.importKeys(t, "cohere", k)
	id := "compat-" + randomHex(6)
	r = w.do(t, "POST", "/api/compat/chat/completions", map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id},
		`{"model":"cohere/command-r","messages":[{"role":"user","content":"hi"}]}`)
	if r.status != 200 {
		t.Fatalf("compat: %d %s", r.status, r.body)
	}
	q := findRequest(t, w.up, id)
	if q.Path != "/v1/"+w.gwAcct+"/"+w.gwName+"/compat/chat/completions" || q.Key != k ||
		q.Header.Get("Cf-Aig-Authorization") != "Bearer "+w.gwTok || gjson.GetBytes(q.Body, "model").String() != "cohere/command-r" {
		t.Errorf("compat upstream request: path %s key %q aig %q body %s", q.Path, q.Key, q.Header.Get("Cf-Aig-Authorization"), q.Body)
	}
	r = w.call(t, "POST", "/api/compat/chat/completions", `{"model":"command-r","messages":[]}`)
	if e := checkOpenAIError(t, r, http.StatusBadRequest); e.Get("param").String() != "model" {
		t.Errorf("compat without provider: %s", r.body)
	}
}

// testExhaustedAndFree: a key without credit is exhausted, not blocked;
// it still serves the models the admin whitelisted as free.
func (w *worker) testExhaustedAndFree(t *testing.T) {
	broke, rich := "csk-broke"+randomHex(12), "csk-rich0"+randomHex(12)
	w.up.SetRule(broke, fakeupstream.DeepSeekInsufficientBalance())
	w.importKeys(t, "cerebras", broke)
	r := w.call(t, "POST", "/v1/chat/completions", `{"model":"cerebras/llama3.1-8b","messages":[]}`)
	if r.status != http.StatusServiceUnavailable && r.status != http.StatusTooManyRequests {
		t.Fatalf("only key broke: %d %s", r.status, r.body)
	}
	eventually(t, "broke key exhausted", func() bool {
		return w.keyState(t, "cerebras", broke).Get("status").String() == "exhausted"
	})
	if s := w.adminCall(t, "PUT", "/admin/api/settings", `{"free_models":["cerebras/free-*"]}`); s.status != 200 {
		t.Fatalf("settings: %d %s", s.status, s.body)
	}
	w.up.ClearRule(broke)
	if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"cerebras/free-small","messages":[]}`); r.status != 200 {
		t.Errorf("free model on an exhausted key: %d %s", r.status, r.body)
	}
	if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"cerebras/llama3.1-8b","messages":[]}`); r.status != http.StatusServiceUnavailable {
		t.Errorf("paid model with only an exhausted key: %d %s", r.status, r.body)
	}
	w.importKeys(t, "cerebras", rich)
	if r := w.call(t, "POST", "/v1/chat/completions", `{"model":"cerebras/llama3.1-8b","messages":[]}`); r.status != 200 {
		t.Errorf("paid model with a funded key: %d %s", r.status, r.body)
	}
	if s := w.adminCall(t, "PUT", "/admin/api/settings", `{"free_models":"cerebras/*"}`); s.status != 400 ||
		s.json().Get("error.param").String() != "free_models" {
		t.Errorf("bad setting: %d %s", s.status, s.body)
	}
}

// testUpstreamTimeout: a key whose upstream never answers is given up
// after UPSTREAM_TIMEOUT_SECONDS (5 in this suite) and the request is
// served by the next key.
func (w *worker) testUpstreamTimeout(t *testing.T) {
	hung, good := "sk-hung0"+randomHex(12), "sk-fine0"+randomHex(12)
	w.up.SetRule(hung, fakeupstream.Rule{Status: 200, Body: `{}`, Delay: 30 * time.Second, Models: []string{"gpt-slow"}})
	// A provider of its own: two keys, so the hung one is tried first half
	// the time.
	w.importKeys(t, "azure-openai", hung, good)
	hungTried := false
	for i := 0; i < 12 && !hungTried; i++ {
		start := time.Now()
		r := w.call(t, "POST", "/v1/chat/completions", `{"model":"azure-openai/gpt-slow","messages":[]}`)
		took := time.Since(start)
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		if r.header.Get("X-Keypool-Attempts") == "2" {
			hungTried = true
			if took < 5*time.Second || took > 20*time.Second {
				t.Errorf("gave up on the hung key after %v, want ~5 s", took)
			}
		}
	}
	if !hungTried {
		t.Fatalf("the hung key was never tried first in 12 requests")
	}
	var s gjson.Result
	eventually(t, "the timeout counted against the hung key", func() bool {
		s = w.keyState(t, "azure-openai", hung)
		return s.Get("failures").Int() > 0
	})
	if s.Get("status").String() != "active" {
		t.Errorf("a timeout blocked the key: %s", s.Raw)
	}
}
