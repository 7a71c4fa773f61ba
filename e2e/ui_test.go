//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// chromiumPath is the browser the UI tests drive: Debian's chromium
// (.ci/run installs it), never one downloaded by Playwright.
const chromiumPath = "/usr/bin/chromium"

// uiChatModel is the model the UI tests call the proxy with.
const uiChatModel = "gpt-4o-mini"

// TestUI runs the admin UI's browser tests (ui/tests/ui.test.mjs, node
// --test with Playwright driving headless chromium) against a worker under
// wrangler dev. The UI is static files, the same for every build, so only
// the first build runs it.
func TestUI(t *testing.T) {
	build := builds(t)[0]
	root := repoRoot(t)
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the UI tests need Debian's chromium at %s (%v): install it with "+
			"`sudo apt-get update && sudo apt-get install -y chromium` (.ci/run does this on CI)", chromiumPath, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("the UI tests run under node, which is not on PATH: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed (%v): run `npm ci` (make e2e does)", err)
	}
	if _, err := os.Stat(filepath.Join(root, "ui", "public", "assets")); err != nil {
		t.Fatalf("the admin UI is not built (%v): run `make ui`, which bundles ui/ into ui/public/assets", err)
	}

	up, err := fakeupstream.Start()
	must(t, err)
	defer up.Close()
	w := startWorker(t, build, up, map[string]string{
		// Each poll of a check job advances it a few keys only, so that
		// the browser can stop a job while it runs.
		"JOB_SUBREQUESTS": "10",
	})
	info := seedUI(t, w, up)
	infoJSON, err := json.Marshal(info)
	must(t, err)

	artifacts := filepath.Join(root, "build", "ui-artifacts")
	must(t, os.RemoveAll(artifacts))
	must(t, os.MkdirAll(artifacts, 0o755))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "--test-timeout=180000",
		filepath.Join("ui", "tests", "ui.test.mjs"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"BASE_URL="+w.base,
		"ADMIN_PASSWORD="+w.admin,
		"CLIENT_TOKEN="+w.token,
		"ARTIFACTS="+artifacts,
		"FAKE_INFO="+string(infoJSON),
		"NO_COLOR=1", "FORCE_COLOR=0",
	)
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = cmd.Stdout // one stream, in order
	start := time.Now()
	must(t, cmd.Start())
	streamLines(t, out)
	err = cmd.Wait()
	t.Logf("node --test ui/tests/ui.test.mjs: %v, screenshots in %s", time.Since(start).Round(time.Millisecond), artifacts)
	if ctx.Err() != nil {
		t.Fatalf("the UI tests did not finish in 10 minutes")
	}
	if err != nil {
		t.Fatalf("the UI tests failed (%v); their output is above, screenshots of failures in %s", err, artifacts)
	}
}

// streamLines copies the node test runner's output into the test log, line
// by line, as it comes.
func streamLines(t *testing.T, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Logf("reading the UI tests' output: %v", err)
	}
}

// uiFakeInfo tells the browser tests about the fake upstream and the pool
// the Go side seeded (FAKE_INFO).
type uiFakeInfo struct {
	URL            string         `json:"url"`
	Model          string         `json:"model"`
	ChatCompletion string         `json:"chat_completion"` // the fake's answer to Model
	Seeded         map[string]int `json:"seeded"`          // keys per provider
	Blocked        int            `json:"blocked"`         // of them, blocked by the check
	Balances       []float64      `json:"balances"`        // the siliconflow keys' balances
	Requests       int            `json:"requests"`        // proxy requests made
}

// seedUI fills the pool so that the dashboard has something to show: a few
// OpenAI keys (one revoked upstream), SiliconFlow keys with balances, a
// check job over them run to the end, and some proxied requests.
func seedUI(t *testing.T, w *worker, up *fakeupstream.Server) uiFakeInfo {
	t.Helper()
	info := uiFakeInfo{
		URL: up.URL, Model: uiChatModel, ChatCompletion: fakeupstream.ChatCompletion(uiChatModel),
		Seeded: map[string]int{},
		// Not in id order, and not in string order either: sorting by
		// balance must compare numbers.
		Balances: []float64{12.5, 0.5, 100, 3, 40},
	}
	var openai []string
	for i := 0; i < 6; i++ {
		openai = append(openai, fmt.Sprintf("sk-uiseed%d-%s", i, randomHex(12)))
	}
	if j := w.importKeys(t, "openai", openai...); j.Get("added").Int() != int64(len(openai)) {
		t.Fatalf("seed openai keys: %s", j.Raw)
	}
	info.Seeded["openai"] = len(openai)
	up.SetRule(openai[len(openai)-1], fakeupstream.OpenAIInvalidKey(mask(openai[len(openai)-1])))
	info.Blocked = 1
	var sf []string
	for i, bal := range info.Balances {
		k := fmt.Sprintf("sk-uisf%d-%s", i, randomHex(12))
		sf = append(sf, k)
		cents := int(bal * 100)
		up.SetRule(k, siliconFlowUserInfo(cents/2, cents-cents/2))
	}
	if j := w.importKeys(t, "siliconflow", sf...); j.Get("added").Int() != int64(len(sf)) {
		t.Fatalf("seed siliconflow keys: %s", j.Raw)
	}
	info.Seeded["siliconflow"] = len(sf)

	// A check job over the seeded keys reads the balances and blocks the
	// revoked key.
	r := w.adminCall(t, "POST", "/admin/api/checks", `{}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("seed check job: %d %s", r.status, r.body)
	}
	id := r.json().Get("id").String()
	for i := 0; r.json().Get("state").String() == "running"; i++ {
		if i == 100 {
			t.Fatalf("seed check job %s still running after 100 polls: %s", id, r.body)
		}
		r = w.adminCall(t, "GET", "/admin/api/checks/"+id, "")
		if r.status != http.StatusOK {
			t.Fatalf("poll seed check job %s: %d %s", id, r.status, r.body)
		}
	}
	if r.json().Get("state").String() != "done" {
		t.Fatalf("seed check job: %s", r.body)
	}
	eventually(t, "the revoked seed key blocked", func() bool {
		return w.keyState(t, "openai", openai[len(openai)-1]).Get("status").String() == "blocked"
	})

	// Traffic for the request and token charts.
	for i := 0; i < 8; i++ {
		model := uiChatModel
		if i%3 == 2 {
			model = "gpt-4o"
		}
		r := w.call(t, "POST", "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		if r.status != http.StatusOK {
			t.Fatalf("seed request %d: %d %s", i, r.status, r.body)
		}
		info.Requests++
	}
	t.Logf("seeded %d openai keys (%d blocked), %d siliconflow keys with balances %v, %d requests",
		info.Seeded["openai"], info.Blocked, info.Seeded["siliconflow"], info.Balances, info.Requests)
	return info
}
