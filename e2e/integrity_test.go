//go:build e2e

package e2e

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestIntegrity is the stress test for memory corruption reaching stored
// data: 500 keys imported in one request are read back decrypted and must
// be exactly what was sent, before and after many concurrent requests with
// large bodies (which must reach the upstream byte for byte).
func TestIntegrity(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, map[string]string{"UPSTREAM_TIMEOUT_SECONDS": "60"})
			// Three imports of 500 keys, one per provider, each read back:
			// the corruption this guards against came and went between runs.
			const n = 500
			provs := []string{"openai", "siliconflow", "deepseek"}
			sent := map[string][]string{}
			for r, prov := range provs {
				for i := range n {
					// Lengths vary, so sealing works on many sizes.
					sent[prov] = append(sent[prov], fmt.Sprintf("sk-int-%d-%03d-%s", r, i, randomHex(8+i%40)))
				}
				j := w.importKeys(t, prov, sent[prov]...)
				if j.Get("added").Int() != n {
					t.Fatalf("importing %d new %s keys: added %d, duplicates %d, rejected %d",
						n, prov, j.Get("added").Int(), j.Get("duplicates").Int(), j.Get("rejected").Int())
				}
				w.checkKeysReadBack(t, prov, sent[prov])
			}
			w.sendLargeBodies(t, 16, 2)
			for _, prov := range provs {
				w.checkKeysReadBack(t, prov, sent[prov])
			}
		})
	}
}

// checkKeysReadBack reveals every stored key of prov and compares the set
// with sent.
func (w *worker) checkKeysReadBack(t *testing.T, prov string, sent []string) {
	t.Helper()
	r := w.adminCall(t, "GET", "/admin/api/keys?provider="+prov, "")
	if r.status != http.StatusOK {
		t.Fatalf("list keys: %d %s", r.status, r.body)
	}
	listed := r.json().Get("keys").Array()
	if len(listed) != len(sent) {
		t.Fatalf("the pool lists %d %s keys, want %d", len(listed), prov, len(sent))
	}
	got := make([]string, len(listed))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				k := listed[i]
				id := strconv.FormatInt(k.Get("id").Int(), 10)
				rr := w.adminCall(t, "POST", "/admin/api/keys/"+id+"/reveal", "")
				secret := rr.json().Get("key").String()
				mu.Lock()
				switch {
				case rr.status != http.StatusOK:
					bad = append(bad, fmt.Sprintf("reveal %s: %d %s", id, rr.status, rr.body))
				case len(secret) < 9 || mask(secret) != k.Get("key").String():
					bad = append(bad, fmt.Sprintf("key %s is listed as %s but opens as %q", id, k.Get("key"), secret))
				}
				got[i] = secret
				mu.Unlock()
			}
		}()
	}
	for i := range listed {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d keys did not read back: %s", len(bad), len(sent), strings.Join(bad[:min(len(bad), 5)], "; "))
	}
	want := append([]string(nil), sent...)
	sort.Strings(want)
	sort.Strings(got)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stored keys differ from those sent: first difference %q vs %q", got[i], want[i])
		}
	}
}

// sendLargeBodies sends clients × each chat requests at once, each with a
// distinct body just under the harness's 1 MiB limit, and checks that
// every one is answered 200 and reached the upstream unchanged.
func (w *worker) sendLargeBodies(t *testing.T, clients, each int) {
	t.Helper()
	w.up.ClearRequests()
	type result struct {
		status int
		sum    [32]byte
		body   string
	}
	results := make(chan result, clients*each)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				fill := strings.Repeat(fmt.Sprintf("%02d-%02d ", c, i), 900<<10/6)
				body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + fill + `"}]}`
				r := w.call(t, "POST", "/v1/chat/completions", body)
				results <- result{r.status, sha256.Sum256([]byte(body)), tail(string(r.body), 200)}
			}
		}()
	}
	wg.Wait()
	close(results)
	seen := map[[32]byte]bool{}
	for _, q := range w.up.Requests() {
		seen[sha256.Sum256(q.Body)] = true
	}
	failed := 0
	for r := range results {
		if r.status != http.StatusOK {
			failed++
			t.Errorf("large body: %d %s", r.status, r.body)
		} else if !seen[r.sum] {
			failed++
			t.Errorf("a large body answered 200 never reached the upstream as sent")
		}
	}
	t.Logf("%d concurrent requests with ~900 KiB bodies: %d failed", clients*each, failed)
}
