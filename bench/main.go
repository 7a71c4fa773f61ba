// Command bench measures keypool against a plain JS pass-through worker, in
// one run, side by side: each target runs under `wrangler dev` (workerd,
// local D1) on 127.0.0.1 against the in-process fake upstream, and one Go
// load generator drives them all. `make bench` builds both compilers'
// workers first and runs it.
//
//	go run ./bench                          # baseline, go, tinygo
//	go run ./bench -targets go,tinygo -quick
//	go run ./bench -targets go -soak 20000  # plus a memory soak
//	go run ./bench -targets baseline,go,before -before-dir build/before
//	                                        # before/after in one table
//	go run ./bench -targets baseline,go,dir:build/gc400  # any other build
//	go run ./bench -profile                 # V8 CPU profiles (make profile)
//
// Absolute figures include wrangler dev's own overhead (a proxy workerd in
// front of the worker, devtools messages for every fetch, a log line per
// request in node); the ratios against the baseline are what count.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/devworker"
	"github.com/keypool/keypool/e2e/fakeupstream"
)

type config struct {
	targets   []string
	soak      int
	quick     bool
	timeout   time.Duration
	keys      int
	beforeDir string // the build the "before" target runs
	profile   bool
	loadOnly  bool
}

// targetSpec is one worker to measure.
type targetSpec struct {
	name    string // as in -targets
	label   string // column title
	keypool bool
	build   string // build directory, relative to the repository (keypool only)
}

var knownTargets = []targetSpec{
	{name: "baseline", label: "baseline"},
	{name: "go", label: "keypool-go", keypool: true, build: "build/go"},
	{name: "tinygo", label: "keypool-tinygo", keypool: true, build: "build/tinygo"},
	// Any build given by -before-dir, e.g. main's code built into
	// build/before, to show before and after in one table.
	{name: "before", label: "keypool-before", keypool: true, build: "build/before"},
	// The standard Go build with wasm function names, for -profile.
	{name: "go-profile", label: "keypool-go-profile", keypool: true, build: "build/go-profile"},
}

// Phase sizes: durations bound each phase, maxN bounds its request count.
type sizes struct {
	warm, ns1, ns16, st1, st16 time.Duration
	maxN                       int
	bigReps                    int
}

var (
	fullSizes  = sizes{warm: 2 * time.Second, ns1: 4 * time.Second, ns16: 6 * time.Second, st1: 3 * time.Second, st16: 5 * time.Second, maxN: 20000, bigReps: 5}
	quickSizes = sizes{warm: 500 * time.Millisecond, ns1: time.Second, ns16: 1500 * time.Millisecond, st1: time.Second, st16: time.Second, maxN: 2000, bigReps: 2}
)

const (
	chatPath    = "/v1/chat/completions"
	chatBody    = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	streamBody  = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	bigReqSize  = 1 << 20
	maxBodyVar  = 8 << 20
	soakChunk   = 1000
	soakTimeout = 3 * time.Minute // per chunk of soakChunk requests
)

func main() { os.Exit(run()) }

func run() int {
	cfg, specs, code := parseFlags()
	if code != 0 {
		return code
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	// Every wrangler process group goes, however this function ends.
	defer groups.stopAll()
	defer stopOnSignal(cancel)()

	root, err := repoRoot()
	if err == nil {
		err = checkBuilds(root, specs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	runDir, err := os.MkdirTemp("", "keypool-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(runDir)

	up, err := fakeupstream.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: fake upstream:", err)
		return 1
	}
	defer up.Close()
	origin, err := startBenchUpstream(up)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: upstream:", err)
		return 1
	}
	defer origin.Close()
	sz := fullSizes
	if cfg.quick {
		sz = quickSizes
	}
	env := &benchEnv{cfg: cfg, sz: sz, root: root, runDir: runDir, up: up, origin: origin, client: newClient(), longClient: newClientTimeout(longStreamTimeout)}
	if cfg.profile {
		return runProfile(ctx, env, specs[0])
	}
	logf("fake upstream on %s; targets: %s; %s mode", up.URL, strings.Join(cfg.targets, ", "), map[bool]string{true: "quick", false: "full"}[cfg.quick])
	return runAll(ctx, env, specs, began)
}

// runAll measures every target in turn and prints the table.
func runAll(ctx context.Context, env *benchEnv, specs []targetSpec, began time.Time) int {
	var results []*measurement
	failed := false
	for _, s := range specs {
		if ctx.Err() != nil {
			break
		}
		m := runTarget(ctx, env, s)
		if m.err != nil {
			failed = true
			logf("%s: %v", s.label, m.err)
		}
		results = append(results, m)
		env.client.CloseIdleConnections()
		env.longClient.CloseIdleConnections()
	}
	printTable(os.Stdout, env, results)
	printDetails(os.Stdout, results)
	fmt.Printf("\nbench wall time: %s (%d cores, %s)\n", time.Since(began).Round(time.Second), runtime.NumCPU(), runtime.Version())
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: stopped early:", ctx.Err())
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// stopOnSignal makes an interrupt stop every wrangler the run started
// before the process exits; the function it returns stops listening.
func stopOnSignal(cancel context.CancelFunc) func() {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s, ok := <-sigc
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping every wrangler it started\n", s)
		cancel()
		select {
		case <-sigc:
		case <-time.After(20 * time.Second):
		}
		groups.stopAll()
		os.Exit(130)
	}()
	return func() { signal.Stop(sigc) }
}

type benchEnv struct {
	cfg    config
	sz     sizes
	root   string
	runDir string
	up     *fakeupstream.Server
	origin *benchUpstream // the fake upstream behind the long streams' server
	client *http.Client
	// longClient is client with a timeout long streams can live with.
	longClient *http.Client
}

// cell is one table value; text replaces it when !ok ("n/a", "error").
type cell struct {
	v    float64
	ok   bool
	text string
}

type soakSample struct {
	done   int
	rss    int64 // all workerd processes
	proxy  int64 // wrangler's proxy workerd alone (-1: unknown)
	rps    float64
	failed int
}

type measurement struct {
	spec     targetSpec
	cells    map[string]cell
	err      error
	problems []string // what went wrong or looked wrong, for the report
	statuses string
	soak     []soakSample
}

func (m *measurement) set(id string, v float64) { m.cells[id] = cell{v: v, ok: true} }
func (m *measurement) na(id, why string)        { m.cells[id] = cell{text: why} }
func (m *measurement) problem(format string, a ...any) {
	m.problems = append(m.problems, fmt.Sprintf(format, a...))
}

// phaseProblems records a phase's failures as problems.
func (m *measurement) phaseProblems(name string, r phaseResult) {
	if r.failed > 0 {
		m.problem("%s: %d of %d requests failed; first: %s", name, r.failed, r.total(), r.firstErr)
	}
	if r.aborted {
		m.problem("%s: stopped early, most requests failing", name)
	}
	if r.extraAttempts > 0 {
		m.problem("%s: %d answers needed more than one key attempt (X-Keypool-Attempts > 1)", name, r.extraAttempts)
	}
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench %s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/keypool/keypool")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it inside the keypool repository (no go.mod of github.com/keypool/keypool above the current directory)")
		}
		dir = parent
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// runTarget measures one target from a fresh wrangler dev and fresh D1.
func runTarget(ctx context.Context, env *benchEnv, s targetSpec) *measurement {
	m := &measurement{spec: s, cells: map[string]cell{}}
	logf("%s: setting up", s.label)
	m.err = measure(ctx, env, s, m)
	return m
}

func measure(ctx context.Context, env *benchEnv, s targetSpec, m *measurement) error {
	d, bearer, admin, err := prepare(ctx, env, s, m)
	if err != nil {
		return err
	}
	defer d.stop()
	defer func() {
		m.statuses = d.log.statusSummary()
		m.problems = append(m.problems, d.log.report()...)
	}()
	m.set("start", ms(d.ready.Sub(d.started)))
	coldRequest(ctx, env, d, bearer, m)
	return measurePhases(ctx, env, d, bearer, admin, m)
}

// prepare writes the target's config, imports keypool's keys through a
// first wrangler dev, and starts the measured one on the same state, cold.
func prepare(ctx context.Context, env *benchEnv, s targetSpec, m *measurement) (d *devServer, bearer, admin string, err error) {
	dir := filepath.Join(env.runDir, s.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", "", err
	}
	admin, token := "adm-"+randomHex(16), "kp-"+randomHex(16)
	// keypool gets its client token; the baseline passes the client's
	// Authorization through, so it gets an upstream key, as its users would.
	bearer = "sk-bench-" + randomHex(16)
	if s.keypool {
		bearer = token
		err = prepareKeypool(ctx, env, s, m, dir, admin, token)
	} else {
		m.na("wasm_raw", "n/a")
		m.na("wasm_gz", "n/a")
		err = writeConfig(env, s, dir, admin, token)
	}
	if err != nil {
		return nil, "", "", err
	}
	d, err = startDev(ctx, env.root, dir, s.label)
	return d, bearer, admin, err
}

func prepareKeypool(ctx context.Context, env *benchEnv, s targetSpec, m *measurement, dir, admin, token string) error {
	// A snapshot of the build: wrangler dev reloads when the files it
	// runs change, and `make build-*` may rewrite build/ meanwhile.
	if err := copyDir(s.buildDir(env.root), filepath.Join(dir, "worker")); err != nil {
		return fmt.Errorf("copying %s: %w", s.buildDir(env.root), err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "worker", "app.wasm"))
	if err != nil {
		return err
	}
	m.set("wasm_raw", float64(len(raw))/1e6)
	m.set("wasm_gz", float64(gzipSize(raw))/1e6)

	if err := writeConfig(env, s, dir, admin, token); err != nil {
		return err
	}
	if _, err := runWrangler(ctx, env.root, dir, migrateTimeout,
		"d1", "migrations", "apply", "DB", "--local",
		"-c", filepath.Join(dir, "wrangler.toml"), "--persist-to", filepath.Join(dir, "state")); err != nil {
		return err
	}
	// Keys go in through the admin API of a first wrangler dev on the
	// same state, so that the measured one starts cold.
	setup, err := startDev(ctx, env.root, dir, s.label+" setup")
	if err != nil {
		return err
	}
	err = importKeys(ctx, env, setup.base, admin, env.cfg.keys)
	if err != nil {
		m.statuses = setup.log.statusSummary()
		m.problems = append(m.problems, setup.log.report()...)
	}
	setup.stop()
	return err
}

// coldRequest times the very first request the worker sees.
func coldRequest(ctx context.Context, env *benchEnv, d *devServer, bearer string, m *measurement) {
	s := m.spec
	cold, err := do(ctx, env.client, http.MethodPost, d.base+chatPath, bearer, []byte(chatBody))
	switch {
	case err != nil:
		m.na("cold", "error")
		m.problem("cold first request: %v", err)
	case cold.status != http.StatusOK:
		m.set("cold", ms(cold.total))
		m.problem("cold first request: HTTP %d: %s", cold.status, brief(cold.body(), 300))
	default:
		m.set("cold", ms(cold.total))
	}
	logf("%s: ready in %.0f ms; cold first request %.0f ms; workerd pids %v", s.label, ms(d.ready.Sub(d.started)), ms(cold.total), d.workerd)
	m.set("rss_start", float64(rssBytes(d.workerd))/1e6)
}

func writeConfig(env *benchEnv, s targetSpec, dir, admin, token string) error {
	// Both kinds get the same [assets] layer, as keypool is deployed, so
	// that only the worker differs.
	var conf, vars string
	if s.keypool {
		conf = devworker.Config("bench-keypool-"+s.name, filepath.Join(dir, "worker", "worker.mjs"), env.root, true)
		vars = fmt.Sprintf("ADMIN_PASSWORD=%s\nAUTH_KEY=%s\nKEYPOOL_SECRET=bench-%s\nDEFAULT_PROVIDER=openai\nOPENAI_BASE_URL=%s\nKEYPOOL_DEBUG=1\nMAX_BODY_BYTES=%d\n",
			admin, token, admin, env.origin.URL, maxBodyVar)
	} else {
		conf = devworker.Config("bench-baseline", filepath.Join(env.root, "bench", "baseline", "worker.mjs"), env.root, false)
		vars = fmt.Sprintf("UPSTREAM_URL=%s\n", env.origin.URL)
	}
	if err := os.WriteFile(filepath.Join(dir, "wrangler.toml"), []byte(conf), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ".dev.vars"), []byte(vars), 0o600)
}

func importKeys(ctx context.Context, env *benchEnv, base, admin string, n int) error {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "sk-bench-" + randomHex(16)
	}
	body := `{"provider":"openai","label":"bench","keys":"` + strings.Join(keys, `\n`) + `"}`
	ex, err := do(ctx, env.client, http.MethodPost, base+"/admin/api/keys", admin, []byte(body))
	if err != nil {
		return fmt.Errorf("importing keys: %w", err)
	}
	if ex.status != http.StatusOK && ex.status != http.StatusCreated {
		return fmt.Errorf("importing keys: HTTP %d: %s", ex.status, brief(ex.body(), 500))
	}
	if added := gjson.Get(ex.body(), "added").Int(); added != int64(n) {
		return fmt.Errorf("importing keys: added %d of %d: %s", added, n, brief(ex.body(), 500))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func gzipSize(b []byte) int {
	var cw countWriter
	zw := gzip.NewWriter(&cw)
	zw.Write(b)
	zw.Close()
	return int(cw)
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

// copyDir copies the regular files of src (a build directory) into dst.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
}
