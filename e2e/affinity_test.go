//go:build e2e

package e2e

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestAffinity: prompt-cache affinity through a 5-key pool, against the
// fake's per-key prompt cache. 200 conversations of 10 turns each get a
// cached share of prompt tokens near the ideal (every turn after the first
// finds the one before it cached) with affinity on, and much less with it
// off; the conversations spread evenly over the keys; a conversation whose
// key cools moves to another key and comes back when it recovers.
func TestAffinity(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			// Candidate lists read again each second, so that a key back
			// from its cooldown is seen soon.
			w := startWorker(t, build, up, map[string]string{"CACHE_SECONDS": "1"})
			var keys []string
			for i := 0; i < 5; i++ {
				keys = append(keys, "sk-affinity-"+strconv.Itoa(i)+randomHex(10))
			}
			w.importKeys(t, "openai", keys...)
			// The harness turns affinity off; its default is on for openai.
			if r := w.adminCall(t, "PUT", "/admin/api/settings", `{"prompt_affinity":null}`); r.status != http.StatusOK ||
				!r.json().Get("prompt_affinity.openai").Bool() {
				t.Fatalf("affinity back to its default: %d %s", r.status, r.body)
			}
			on := w.conversations(t, "cache-aff-on", 200, 10)
			eventually(t, "the cached tokens in the stats", func() bool {
				got := w.adminCall(t, "GET", "/admin/api/stats?granularity=day&provider=openai&model=cache-aff-on", "").json().Get("totals")
				return got.Get("cached_tokens").Int() == on.cached && got.Get("prompt_tokens").Int() == on.prompt
			})
			if r := w.adminCall(t, "PUT", "/admin/api/settings", `{"prompt_affinity":{"openai":false}}`); r.status != http.StatusOK {
				t.Fatalf("affinity off: %d %s", r.status, r.body)
			}
			off := w.conversations(t, "cache-aff-off", 200, 10)
			// Turn k sends 2k messages (the system prompt, k questions and
			// k-1 answers); at best the 2k-2 of the turn before are cached.
			var best, all float64
			for k := 1.0; k <= 10; k++ {
				best, all = best+2*k-2, all+2*k
			}
			ideal := best / all
			t.Logf("cached share of prompt tokens: affinity on %.3f, off %.3f, ideal %.3f (on/ideal %.2f, off/on %.2f)",
				on.share(), off.share(), ideal, on.share()/ideal, off.share()/on.share())
			t.Logf("requests per key: on %v (max/min %.2f), off %v", on.perKey(keys), on.spread(keys), off.perKey(keys))
			if on.share() < 0.95*ideal {
				t.Errorf("with affinity the cached share is %.3f: want near the ideal %.3f", on.share(), ideal)
			}
			if off.share() > 0.6*on.share() {
				t.Errorf("without affinity the cached share is %.3f, with it %.3f: want far less without", off.share(), on.share())
			}
			for i, n := range on.perKey(keys) {
				if share := float64(n) / float64(on.requests); share < 0.12 || share > 0.28 {
					t.Errorf("key %d served %d of %d requests with affinity: want about a fifth", i, n, on.requests)
				}
			}
			if r := w.adminCall(t, "PUT", "/admin/api/settings", `{"prompt_affinity":null}`); r.status != http.StatusOK {
				t.Fatalf("affinity back to its default: %d %s", r.status, r.body)
			}
			w.moveAndReturn(t)
		})
	}
}

// conversationRun is what a set of conversations got back.
type conversationRun struct {
	mu             sync.Mutex
	prompt, cached int64
	requests       int
	keys           map[string]int // upstream key → requests it served
	failed         []string
	model          string
}

func (c *conversationRun) share() float64 { return float64(c.cached) / float64(c.prompt) }

func (c *conversationRun) perKey(keys []string) []int {
	var out []int
	for _, k := range keys {
		out = append(out, c.keys[k])
	}
	return out
}

func (c *conversationRun) spread(keys []string) float64 {
	n := c.perKey(keys)
	return float64(slices.Max(n)) / float64(max(slices.Min(n), 1))
}

// turnBody is turn (1-based) of conversation conv: a shared system
// prompt, then the conversation's turns so far.
func turnBody(model string, conv, turn int) string {
	var b strings.Builder
	b.WriteString(`{"model":"` + model + `","messages":[{"role":"system","content":"You are a helpful assistant."}`)
	for k := 1; k <= turn; k++ {
		c := strconv.Itoa(conv) + "." + strconv.Itoa(k)
		b.WriteString(`,{"role":"user","content":"question ` + c + `"}`)
		if k < turn {
			b.WriteString(`,{"role":"assistant","content":"answer ` + c + `"}`)
		}
	}
	b.WriteString(`]}`)
	return b.String()
}

// conversations sends n conversations of turns turns each for model, 8 at
// a time, each conversation's turns in order, and sums what came back.
func (w *worker) conversations(t *testing.T, model string, n, turns int) *conversationRun {
	t.Helper()
	run := &conversationRun{keys: map[string]int{}, model: model}
	began := time.Now()
	next := make(chan int)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for conv := range next {
				for turn := 1; turn <= turns; turn++ {
					id := randomHex(8)
					r := w.do(t, "POST", "/v1/chat/completions",
						map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id}, turnBody(model, conv, turn))
					u := r.json().Get("usage")
					run.mu.Lock()
					run.requests++
					if r.status != http.StatusOK {
						run.failed = append(run.failed, strconv.Itoa(r.status)+" "+tail(string(r.body), 200))
					}
					run.prompt += u.Get("prompt_tokens").Int()
					run.cached += u.Get("prompt_tokens_details.cached_tokens").Int()
					run.mu.Unlock()
				}
			}
		}()
	}
	for conv := 0; conv < n; conv++ {
		next <- conv
	}
	close(next)
	wg.Wait()
	for _, q := range w.up.Requests() {
		if q.Model == model && q.Status == http.StatusOK {
			run.keys[q.Key]++
		}
	}
	t.Logf("%s: %d requests in %v, %d failed", model, run.requests, time.Since(began).Round(time.Millisecond), len(run.failed))
	if len(run.failed) > 0 {
		t.Fatalf("%d requests failed, first: %s", len(run.failed), run.failed[0])
	}
	return run
}

// moveAndReturn: a conversation whose key starts rate limiting moves to
// the next key of its ranking, and comes back once the cooldown is over.
func (w *worker) moveAndReturn(t *testing.T) {
	const model = "cache-aff-move"
	served := func(turn int) string {
		t.Helper()
		id := randomHex(8)
		r := w.do(t, "POST", "/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + w.token, "X-Test-Id": id}, turnBody(model, 7, turn))
		if r.status != http.StatusOK {
			t.Fatalf("turn %d: %d %s", turn, r.status, r.body)
		}
		for _, q := range w.up.Requests() {
			if q.Header.Get("X-Test-Id") == id && q.Status == http.StatusOK {
				return q.Key
			}
		}
		t.Fatalf("turn %d: no request served at the fake", turn)
		return ""
	}
	home := served(1)
	if again := served(2); again != home {
		t.Fatalf("turn 2 went to %s, turn 1 to %s: want the same key", mask(again), mask(home))
	}
	w.up.SetRule(home, fakeupstream.OpenAIRateLimited(model, 2))
	moved := served(3)
	w.up.ClearRule(home)
	also := served(4)
	time.Sleep(3500 * time.Millisecond) // the 2 s cooldown, then a fresh candidate list
	back := served(5)
	t.Logf("move and return: turns 1–2 on %s, turn 3 (its key rate limited) on %s, turn 4 on %s, turn 5 (after the cooldown) on %s",
		mask(home), mask(moved), mask(also), mask(back))
	if moved == home || also != moved || back != home {
		t.Errorf("want turns 3 and 4 on one other key and turn 5 back on the first")
	}
}
