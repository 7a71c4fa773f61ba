//go:build e2e

// The end-to-end suite: the real built worker under `wrangler dev`
// (workerd, local D1) against the fake upstream on 127.0.0.1. `make e2e`
// builds both compilers' workers and names them in KEYPOOL_BUILDS.
package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/devworker"
	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/provider"
)

func repoRoot(t testing.TB) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(here))
}

// builds lists the builds under test, e.g. "go tinygo".
func builds(t *testing.T) []string {
	b := strings.Fields(os.Getenv("KEYPOOL_BUILDS"))
	if len(b) == 0 {
		t.Fatal("KEYPOOL_BUILDS is empty: run the suite with `make e2e`, which builds the workers first")
	}
	return b
}

// worker is one running `wrangler dev` with fresh local D1 state.
type worker struct {
	base   string
	admin  string
	token  string
	gwAcct string
	gwName string
	gwTok  string
	up     *fakeupstream.Server
	logs   *lockedBuffer
	dir    string
	root   string
	client *http.Client
	port   int
	cmd    *exec.Cmd     // the running wrangler dev
	exited chan struct{} // closed when cmd has exited
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startWorker runs build (a directory under build/) under wrangler dev,
// with every provider's base URL and the AI Gateway pointed at up.
func startWorker(t *testing.T, build string, up *fakeupstream.Server, extraVars map[string]string) *worker {
	t.Helper()
	root := repoRoot(t)
	src := filepath.Join(root, "build", build)
	if _, err := os.Stat(filepath.Join(src, "worker.mjs")); err != nil {
		t.Fatalf("build %q missing (%v): run `make build-%s`", build, err, build)
	}
	return startWorkerFrom(t, build, src, root, up, extraVars)
}

// startWorkerFrom starts the worker built in src, with the migrations and
// UI of the source tree app (another release's, for the upgrade test).
func startWorkerFrom(t *testing.T, build, src, app string, up *fakeupstream.Server, extraVars map[string]string) *worker {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	// Run a copy, so that a rebuild during the suite cannot reload the
	// worker under it.
	must(t, os.CopyFS(filepath.Join(dir, "worker"), os.DirFS(src)))
	main := filepath.Join(dir, "worker", "worker.mjs")
	w := &worker{
		admin: "adm-" + randomHex(16), token: "kp-" + randomHex(16),
		gwAcct: "acct" + randomHex(4), gwName: "gw" + randomHex(3), gwTok: "aig-" + randomHex(8),
		up: up, logs: &lockedBuffer{}, dir: dir, root: root,
		client: &http.Client{Timeout: 60 * time.Second},
	}
	config := devworker.Config("keypool-e2e", main, app, true)
	must(t, os.WriteFile(filepath.Join(dir, "wrangler.toml"), []byte(config), 0o600))
	vars := map[string]string{
		"ADMIN_PASSWORD": w.admin, "AUTH_KEY": w.token, "KEYPOOL_SECRET": "e2e-secret-" + randomHex(16), "DEFAULT_PROVIDER": "openai",
		"CF_ACCOUNT_ID": w.gwAcct, "AI_GATEWAY": w.gwName, "CF_AIG_TOKEN": w.gwTok,
		"AI_GATEWAY_URL": up.URL + "/v1",
		"KEYPOOL_DEBUG":  "1", "MAX_BODY_BYTES": "1048576",
		// Counters written per request, so the suite can check them at once;
		// coalescing is covered by the handler tests.
		"USAGE_FLUSH_SECONDS": "0",
		// Storms end quickly, so the storm scenario can see the recovery.
		"STORM_HOLD_SECONDS": "2",
		// A hung upstream is given up quickly.
		"UPSTREAM_TIMEOUT_SECONDS": "5",
	}
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		vars[p.BaseURLVar()] = up.URL
	}
	for k, v := range extraVars {
		vars[k] = v
	}
	w.admin = vars["ADMIN_PASSWORD"]
	var dv strings.Builder
	for k, v := range vars {
		fmt.Fprintf(&dv, "%s=%s\n", k, v)
	}
	must(t, os.WriteFile(filepath.Join(dir, ".dev.vars"), []byte(dv.String()), 0o600))

	w.wrangler(t, "d1", "migrations", "apply", "DB", "--local")

	w.port = freePort(t)
	w.base = fmt.Sprintf("http://127.0.0.1:%d", w.port)
	t.Cleanup(func() {
		w.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("worker log (%s):\n%s", build, tail(w.logs.String(), 6000))
		}
		// Keep the whole log as an artifact.
		if err := os.MkdirAll(filepath.Join(root, "build"), 0o755); err == nil {
			os.WriteFile(filepath.Join(root, "build", "e2e-"+build+".log"), []byte(w.logs.String()), 0o644)
		}
	})
	w.launch(t)
	// The suite finds its requests at the fake upstream by these headers,
	// which keypool forwards only when a setting allows them.
	if len(w.admin) < 16 {
		return w // the admin API is off (a test of that): nothing to set
	}
	// Prompt-cache affinity would send every request with the same body
	// to the same key; the rotation scenarios spread theirs at random, as
	// keypool does with it off. TestAffinity turns it back on.
	off := []string{}
	for _, name := range provider.Names() {
		off = append(off, `"`+name+`":false`)
	}
	r := w.adminCall(t, "PUT", "/admin/api/settings", `{"prompt_affinity":{`+strings.Join(off, ",")+`}}`)
	// (An earlier release, for the upgrade test, has no such setting.)
	if old := app != root && r.json().Get("error.param").String() == "prompt_affinity"; r.status != http.StatusOK && !old {
		t.Fatalf("turning prompt-cache affinity off: %d %s", r.status, r.body)
	}
	if r := w.adminCall(t, "PUT", "/admin/api/settings", `{"forward_headers":["X-Test-Id","X-Fake-Gate","X-Fake-Slow","X-Fake-Cut","X-Fake-Stall","X-Fake-Large","X-Test-Json","X-Test-Utf8","X-Test-Repeat","X-Test-Latin1","X-Echo-X-Request-Id","X-Echo-X-Ratelimit-Test-Json","X-Echo-X-Ratelimit-Test-Utf8","X-Echo-X-Ratelimit-Test-Latin1"]}`); r.status != http.StatusOK {
		t.Fatalf("allowing the suite's headers: %d %s", r.status, r.body)
	}
	return w
}

// launch starts wrangler dev on w's config, state and port, and returns
// once the worker answers.
func (w *worker) launch(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(w.root, "node_modules", ".bin", "wrangler"), "dev",
		"-c", filepath.Join(w.dir, "wrangler.toml"), "--persist-to", filepath.Join(w.dir, "state"),
		"--ip", "127.0.0.1", "--port", fmt.Sprint(w.port), "--inspector-port", fmt.Sprint(freePort(t)),
		"--test-scheduled", "--show-interactive-dev-session=false")
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "CI=true", "WRANGLER_SEND_METRICS=false", "NO_COLOR=1")
	cmd.Stdout, cmd.Stderr = w.logs, w.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, cmd.Start())
	w.cmd, w.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(w.exited)
	deadline := time.Now().Add(120 * time.Second)
	for {
		select {
		case <-w.exited:
			t.Fatalf("wrangler dev exited early:\n%s", tail(w.logs.String(), 4000))
		default:
		}
		resp, err := http.Get(w.base + "/v1/models")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready after 120 s:\n%s", tail(w.logs.String(), 4000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stop ends wrangler dev and its workerd processes with sig (SIGKILL:
// at once, as a dying machine would), and waits until they are gone.
func (w *worker) stop(sig syscall.Signal) {
	if w.cmd == nil {
		return
	}
	syscall.Kill(-w.cmd.Process.Pid, sig)
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-w.exited
	}
}

// wrangler runs a wrangler command against this worker's config and state.
func (w *worker) wrangler(t testing.TB, args ...string) string {
	t.Helper()
	args = append(args, "-c", filepath.Join(w.dir, "wrangler.toml"), "--persist-to", filepath.Join(w.dir, "state"))
	cmd := exec.Command(filepath.Join(w.root, "node_modules", ".bin", "wrangler"), args...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "CI=true", "WRANGLER_SEND_METRICS=false", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrangler %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// query runs SQL against the worker's local D1 and returns the rows.
func (w *worker) query(t testing.TB, sql string) []gjson.Result {
	t.Helper()
	out := w.wrangler(t, "d1", "execute", "DB", "--local", "--json", "--command", sql)
	i := strings.Index(out, "[")
	if i < 0 {
		t.Fatalf("no JSON in wrangler output: %s", out)
	}
	return gjson.Get(out[i:], "0.results").Array()
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json() gjson.Result { return gjson.ParseBytes(r.body) }

func (w *worker) do(t testing.TB, method, path string, header map[string]string, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.base+path, rd)
	must(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// call calls a proxy route with the client token.
func (w *worker) call(t testing.TB, method, path, body string) response {
	t.Helper()
	return w.do(t, method, path, map[string]string{"Authorization": "Bearer " + w.token}, body)
}

// adminCall calls an admin route with the admin password.
func (w *worker) adminCall(t testing.TB, method, path, body string) response {
	t.Helper()
	return w.do(t, method, path, map[string]string{"Authorization": "Bearer " + w.admin}, body)
}

// importKeys adds keys through the admin API and returns its answer.
func (w *worker) importKeys(t testing.TB, prov string, keys ...string) gjson.Result {
	t.Helper()
	r := w.adminCall(t, "POST", "/admin/api/keys", `{"provider":"`+prov+`","keys":"`+strings.Join(keys, `\n`)+`"}`)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	return r.json()
}

// keyState returns the admin view of the key whose masked form is masked.
func (w *worker) keyState(t testing.TB, prov, secret string) gjson.Result {
	t.Helper()
	r := w.adminCall(t, "GET", "/admin/api/keys?provider="+prov, "")
	if r.status != http.StatusOK {
		t.Fatalf("list keys: %d %s", r.status, r.body)
	}
	for _, k := range r.json().Get("keys").Array() {
		if k.Get("key").String() == mask(secret) {
			return k
		}
	}
	t.Fatalf("key %s not in the pool: %s", mask(secret), r.body)
	return gjson.Result{}
}

// eventually polls cond for up to 10 s: state changes are written after
// the response, with waitUntil.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mask mirrors provider.Mask for the keys the tests use (ASCII, ≥ 12 chars).
func mask(s string) string { return s[:5] + "…" + s[len(s)-4:] }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
