//go:build e2e

package e2e

import (
	"bytes"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/keypool/keypool/e2e/devworker"
	"github.com/keypool/keypool/e2e/fakeupstream"
)

// previousRelease is the release users run before this one: the upgrade
// test builds it from git (KEYPOOL_PREVIOUS names another commit).
const previousRelease = "98bfe88"

// TestUpgrade: a D1 database written by the previous release (keys,
// a client token, usage, a cooldown and a block) is migrated and served by
// this build: every key decrypts to what was imported, every key's status,
// counters and per-model states, the token and its use, and the usage
// totals are as they were.
func TestUpgrade(t *testing.T) {
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			oldApp, oldBuild := buildPrevious(t)
			w := startWorkerFrom(t, build, oldBuild, oldApp, up, nil)
			keys := []string{}
			for i := 0; i < 6; i++ {
				keys = append(keys, "sk-upgrade-"+randomHex(14))
			}
			w.importKeys(t, "openai", keys...)
			w.importKeys(t, "anthropic", "sk-ant-upgrade-"+randomHex(14))
			r := w.adminCall(t, "POST", "/admin/api/tokens", `{"name":"upgrade client"}`)
			if r.status != http.StatusCreated {
				t.Fatalf("create token: %d %s", r.status, r.body)
			}
			token := r.json().Get("token").String()
			send := func(model string) int {
				r := w.do(t, "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + token},
					`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
				return r.status
			}
			for i := 0; i < 5; i++ {
				if s := send("gpt-up"); s != 200 {
					t.Fatalf("request %d on the previous release: %d", i, s)
				}
			}
			// A cooldown on key 0 and a block on key 1, each decided by an
			// answer of the fake: sent until that key was the one tried.
			up.SetRule(keys[0], fakeupstream.OpenAIRateLimited("gpt-up-cool", 3600))
			up.SetRule(keys[1], fakeupstream.OpenAIInvalidKey(mask(keys[1])))
			eventually(t, "key 0 cooling and key 1 blocked", func() bool {
				send("gpt-up-cool")
				k0, k1 := w.keyState(t, "openai", keys[0]), w.keyState(t, "openai", keys[1])
				return strings.Contains(k0.Get("models").Raw, `"cooling"`) && k1.Get("status").String() == "blocked"
			})
			up.ClearRule(keys[0])
			up.ClearRule(keys[1])
			var before map[string]string
			eventually(t, "the previous release's writes to settle", func() bool {
				v := upgradeView(t, w)
				settled := maps.Equal(v, before)
				before = v
				return settled
			})

			// The upgrade: the same D1 state, this build, its migrations.
			w.stop(syscall.SIGTERM)
			must(t, os.RemoveAll(filepath.Join(w.dir, "worker")))
			must(t, os.CopyFS(filepath.Join(w.dir, "worker"), os.DirFS(filepath.Join(w.root, "build", build))))
			must(t, os.WriteFile(filepath.Join(w.dir, "wrangler.toml"),
				[]byte(devworker.Config("keypool-e2e", filepath.Join(w.dir, "worker", "worker.mjs"), w.root, true)), 0o600))
			t.Logf("migrations: %s", strings.TrimSpace(tail(w.wrangler(t, "d1", "migrations", "apply", "DB", "--local"), 400)))
			w.launch(t)
			after := upgradeView(t, w)
			for _, part := range []string{"keys", "stats", "tokens"} {
				if before[part] != after[part] {
					t.Errorf("%s changed across the upgrade:\nbefore %s\nafter  %s", part, tail(before[part], 1500), tail(after[part], 1500))
				}
			}
			export := w.adminCall(t, "POST", "/admin/api/keys/export", `{"provider":"openai","only":"all"}`)
			got := strings.Fields(string(export.body))
			slices.Sort(got)
			want := slices.Clone(keys)
			slices.Sort(want)
			if export.status != 200 || !slices.Equal(got, want) {
				t.Errorf("export after the upgrade: %d, %d keys, want the %d imported, decrypted", export.status, len(got), len(want))
			}
			if s := send("gpt-up"); s != 200 {
				t.Errorf("the previous release's token after the upgrade: %d", s)
			}
			t.Logf("upgrade from %s: %d keys, their states, the token and the usage totals kept", previousRelease, len(keys)+1)
		})
	}
}

// upgradeView is what an upgrade must keep, as JSON: the keys (status,
// counters, per-model states), the usage totals, the tokens and their use.
func upgradeView(t *testing.T, w *worker) map[string]string {
	t.Helper()
	return map[string]string{
		"keys": w.adminCall(t, "GET", "/admin/api/keys", "").json().Get("keys").Raw,
		// The totals both releases report (a newer one may add fields).
		"stats": w.adminCall(t, "GET", "/admin/api/stats?granularity=day", "").json().
			Get("totals.[requests,successes,client_errors,upstream_errors,rejected,prompt_tokens,completion_tokens,estimated]").Raw,
		"tokens": w.adminCall(t, "GET", "/admin/api/tokens", "").json().Get("tokens").Raw,
	}
}

// buildPrevious extracts the previous release from git into build/ (once)
// and builds its standard Go worker there; it returns the release's source
// tree and its build.
func buildPrevious(t *testing.T) (app, build string) {
	t.Helper()
	root := repoRoot(t)
	ref := previousRelease
	if v := os.Getenv("KEYPOOL_PREVIOUS"); v != "" {
		ref = v
	}
	app = filepath.Join(root, "build", "previous-"+ref)
	build = filepath.Join(app, "build", "go")
	if _, err := os.Stat(filepath.Join(build, "app.wasm")); err == nil {
		return app, build
	}
	run := func(dir string, name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out.String(), 2000))
		}
	}
	must(t, os.RemoveAll(app))
	must(t, os.MkdirAll(app, 0o755))
	// A shallow clone may lack the release: fetch it from where the clone
	// came from.
	if exec.Command("git", "-C", root, "cat-file", "-e", ref+"^{commit}").Run() != nil {
		run(root, "git", "fetch", "--quiet", "--unshallow")
	}
	// The release's files, without touching this checkout's work tree.
	run(root, "bash", "-c", "set -o pipefail; git archive --format=tar "+ref+" | tar -x -C "+app)
	run(app, "make", "build-go")
	return app, build
}
