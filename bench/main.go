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

func (s targetSpec) buildDir(root string) string {
	if filepath.IsAbs(s.build) {
		return s.build
	}
	return filepath.Join(root, s.build)
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

// parseFlags reads the flags and the targets they name; a non-zero code
// is the exit status of a bad command line.
func parseFlags() (config, []targetSpec, int) {
	var cfg config
	targets := flag.String("targets", "baseline,go,tinygo", "comma-separated subset of baseline,go,tinygo,before,go-profile, and dir:<build directory> for any other keypool build")
	flag.StringVar(&cfg.beforeDir, "before-dir", "build/before", "build directory of the \"before\" target (e.g. main's code built with `make build-go` and copied there)")
	flag.BoolVar(&cfg.profile, "profile", false, "instead of the table: V8 CPU profiles of the first keypool target (default go-profile, see `make profile`) under load, written to build/profile-*.cpuprofile")
	flag.IntVar(&cfg.soak, "soak", 0, "after the phases, send N non-stream requests at 16 clients to each target (keypool's, and the baseline for reference), sampling workerd RSS every 1000")
	flag.BoolVar(&cfg.quick, "quick", false, "smaller counts and durations, for a smoke run")
	flag.BoolVar(&cfg.loadOnly, "load-only", false, "skip the long streams and large bodies: for quick A/B runs of several builds")
	flag.DurationVar(&cfg.timeout, "timeout", 40*time.Minute, "give up (and stop every wrangler) after this long")
	flag.IntVar(&cfg.keys, "keys", 20, "openai keys imported into each keypool target")
	flag.Parse()
	if cfg.profile && !flagSet("targets") {
		*targets = "go-profile"
	}
	for _, t := range strings.Split(*targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.targets = append(cfg.targets, t)
		}
	}
	var specs []targetSpec
	for _, name := range cfg.targets {
		spec, ok := targetNamed(name, cfg.beforeDir)
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown target %q (known: baseline, go, tinygo, before, go-profile, dir:<path>)\n", name)
			return cfg, nil, 2
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		fmt.Fprintln(os.Stderr, "bench: no targets")
		return cfg, nil, 2
	}
	return cfg, specs, 0
}

// targetNamed is the target a -targets name stands for.
func targetNamed(name, beforeDir string) (targetSpec, bool) {
	if dir, ok := strings.CutPrefix(name, "dir:"); ok {
		// Any other keypool build, e.g. a prototype: dir:build/gc400.
		base := filepath.Base(dir)
		return targetSpec{name: "dir-" + base, label: "keypool-" + base, keypool: true, build: dir}, true
	}
	for _, k := range knownTargets {
		if k.name == name {
			if k.name == "before" {
				k.build = beforeDir
			}
			return k, true
		}
	}
	return targetSpec{}, false
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

// checkBuilds says what to run when wrangler or a target's build is
// missing.
func checkBuilds(root string, specs []targetSpec) error {
	if _, err := os.Stat(wranglerBin(root)); err != nil {
		return errors.New("wrangler is not installed: run `make node_modules` (or `make bench`)")
	}
	for _, s := range specs {
		if s.keypool {
			if _, err := os.Stat(filepath.Join(s.buildDir(root), "app.wasm")); err != nil {
				return fmt.Errorf("%s missing: run `make %s` (or `make bench`)", s.build, strings.ReplaceAll(s.build, "/", "-"))
			}
		}
	}
	return nil
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

// measurePhases runs the load phases on a started target.
func measurePhases(ctx context.Context, env *benchEnv, d *devServer, bearer, admin string, m *measurement) error {
	pr := &phaseRun{ctx: ctx, env: env, d: d, m: m, admin: admin,
		chat:   phase{path: chatPath, body: []byte(chatBody), bearer: bearer, maxN: env.sz.maxN, check: checkChat},
		stream: phase{path: chatPath, body: []byte(streamBody), bearer: bearer, maxN: env.sz.maxN, check: checkStream}}
	for _, step := range []func(){pr.warmUp, pr.nonStream1, pr.nonStream16, pr.streams} {
		step()
		env.up.ClearRequests()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if env.cfg.loadOnly {
		return ctx.Err()
	}
	longStreams(ctx, env, d, bearer, m)
	if err := ctx.Err(); err != nil {
		return err
	}

	// Large bodies.
	n, f := bigRequest(ctx, env, d.base, bearer, m)
	pr.requests, pr.failures = pr.requests+n, pr.failures+f
	n, f = bigResponse(ctx, env, d.base, bearer, m)
	pr.requests, pr.failures = pr.requests+n, pr.failures+f
	logf("%s: large bodies: done", m.spec.label)
	if err := ctx.Err(); err != nil {
		return err
	}

	m.set("rss_end", float64(rssBytes(d.workerd))/1e6)
	m.set("requests", float64(pr.requests))
	m.set("failed", float64(pr.failures))

	// The baseline soaks too when it is measured: workerd under wrangler
	// dev grows by itself, and keypool's growth only means something next
	// to it.
	if env.cfg.soak > 0 {
		soak(ctx, env, d, bearer, m)
	}
	return ctx.Err()
}

// phaseRun is one target's load phases and what they counted.
type phaseRun struct {
	ctx                context.Context
	env                *benchEnv
	d                  *devServer
	m                  *measurement
	admin              string
	chat, stream       phase
	requests, failures int
}

// run runs p at conc clients for dur; its requests count unless warm.
func (pr *phaseRun) run(p phase, conc int, dur time.Duration, name string, warm bool) phaseResult {
	p.conc, p.dur = conc, dur
	r := runPhase(pr.ctx, pr.env.client, pr.d.base, p)
	if !warm {
		pr.requests += r.total()
		pr.failures += r.failed
	}
	pr.m.phaseProblems(name, r)
	return r
}

func (pr *phaseRun) warmUp() {
	pr.run(pr.chat, 16, pr.env.sz.warm, "warm-up", true)
	pr.run(pr.stream, 4, pr.env.sz.warm/2, "warm-up (stream)", true)
}

func (pr *phaseRun) nonStream1() {
	r := pr.run(pr.chat, 1, pr.env.sz.ns1, "non-stream, 1 client", false)
	setLoad(pr.m, "ns1", r)
	logf("%s: non-stream 1 client: %d requests, %.1f req/s", pr.m.spec.label, r.total(), r.rps())
}

// nonStream16 also measures CPU and D1 queries per request.
func (pr *phaseRun) nonStream16() {
	ctx, env, d, m, s := pr.ctx, pr.env, pr.d, pr.m, pr.m.spec
	d1Before, d1Note := d1Count(ctx, env, d.base, pr.admin, s.keypool)
	cpuW, _ := cpuTicks(d.workerd)
	cpuR, _ := cpuTicks(d.runtime())
	cpuN, _ := cpuTicks(d.node)
	cpuS := selfTicks()
	busy, all := machineTicks()
	r := pr.run(pr.chat, 16, env.sz.ns16, "non-stream, 16 clients", false)
	setLoad(m, "ns16", r)
	d1After, _ := settleD1(ctx, env, d.base, pr.admin, s.keypool)
	cpuW2, goneW := cpuTicks(d.workerd)
	cpuR2, _ := cpuTicks(d.runtime())
	cpuN2, _ := cpuTicks(d.node)
	busy2, all2 := machineTicks()
	if all2 > all {
		// What the rest of the machine used meanwhile: a busy machine
		// skews every figure of this target.
		ours := (cpuW2 - cpuW) + (cpuN2 - cpuN) + (selfTicks() - cpuS)
		other := float64(busy2-busy) - float64(ours)
		m.set("other_cpu", max(0, other)*100/float64(all2-all))
	}
	setCPU(m, "cpu_ns16", cpuW, cpuW2, goneW, r.total())
	if d.proxyPid != 0 {
		setCPU(m, "cpu_rt_ns16", cpuR, cpuR2, goneW, r.total())
	} else {
		m.na("cpu_rt_ns16", "n/a")
	}
	setCPU(m, "node_ns16", cpuN, cpuN2, 0, r.total())
	switch {
	case !s.keypool:
		m.na("d1", "—")
	case d1Note != "":
		m.na("d1", d1Note)
	case r.total() > 0:
		m.set("d1", float64(d1After-d1Before)/float64(r.total()))
	}
	logf("%s: non-stream 16 clients: %d requests, %.1f req/s", s.label, r.total(), r.rps())
}

// streams runs the streamed phases, 1 then 16 clients.
func (pr *phaseRun) streams() {
	r := pr.run(pr.stream, 1, pr.env.sz.st1, "stream, 1 client", false)
	setStream(pr.m, "st1", r)
	pr.env.up.ClearRequests()
	if pr.ctx.Err() != nil {
		return
	}
	cpuW, _ := cpuTicks(pr.d.workerd)
	r = pr.run(pr.stream, 16, pr.env.sz.st16, "stream, 16 clients", false)
	setStream(pr.m, "st16", r)
	settleD1(pr.ctx, pr.env, pr.d.base, pr.admin, pr.m.spec.keypool)
	cpuW2, goneW := cpuTicks(pr.d.workerd)
	setCPU(pr.m, "cpu_st16", cpuW, cpuW2, goneW, r.total())
	logf("%s: stream: done", pr.m.spec.label)
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

// d1Count reads keypool's isolate-wide D1 query counter; note is "n/a"
// when the route is not there (or answers no number).
func d1Count(ctx context.Context, env *benchEnv, base, admin string, keypool bool) (n int64, note string) {
	if !keypool {
		return 0, "—"
	}
	ex, err := do(ctx, env.client, http.MethodGet, base+"/admin/api/debug/stats", admin, nil)
	if err != nil {
		return 0, "error"
	}
	if ex.status == http.StatusNotFound {
		return 0, "n/a"
	}
	v := gjson.Get(ex.body(), "d1_queries")
	if ex.status != http.StatusOK || v.Type != gjson.Number {
		return 0, "n/a"
	}
	return v.Int(), ""
}

// settleD1 waits (up to 3 s) for the work keypool defers past the response
// (ctx.waitUntil: key outcomes) to finish: until the D1 counter stops
// moving. Without the counter it waits 300 ms, as for the baseline.
func settleD1(ctx context.Context, env *benchEnv, base, admin string, keypool bool) (int64, string) {
	prev, note := d1Count(ctx, env, base, admin, keypool)
	if note != "" {
		sleep(ctx, 300*time.Millisecond)
		return 0, note
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		sleep(ctx, 300*time.Millisecond)
		n, note := d1Count(ctx, env, base, admin, keypool)
		if note != "" {
			return prev, ""
		}
		if n == prev {
			return n, ""
		}
		prev = n
	}
	return prev, ""
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func setLoad(m *measurement, id string, r phaseResult) {
	if r.ok == 0 {
		for _, k := range []string{"_rps", "_p50", "_p99"} {
			m.na(id+k, "error")
		}
		return
	}
	m.set(id+"_rps", r.rps())
	p50, _ := percentile(r.lat, 50)
	p99, _ := percentile(r.lat, 99)
	m.set(id+"_p50", p50)
	m.set(id+"_p99", p99)
}

func setStream(m *measurement, id string, r phaseResult) {
	if r.ok == 0 {
		for _, k := range []string{"_ttfb", "_total", "_rps"} {
			m.na(id+k, "error")
		}
		return
	}
	t, _ := percentile(r.ttfb, 50)
	tot, _ := percentile(r.lat, 50)
	m.set(id+"_ttfb", t)
	m.set(id+"_total", tot)
	m.set(id+"_rps", r.rps())
}

func setCPU(m *measurement, id string, before, after uint64, gone, requests int) {
	if gone > 0 || requests == 0 || after < before {
		m.na(id, "n/a")
		if gone > 0 {
			m.problem("%s: %d workerd process(es) vanished during the phase", id, gone)
		}
		return
	}
	m.set(id, float64(after-before)*1000/ticksPerSecond/float64(requests))
}

func checkChat(ex exchange) error {
	if !bytes.Contains(ex.head, []byte(`"chat.completion"`)) {
		return fmt.Errorf("not a chat completion: %s", brief(ex.body(), 200))
	}
	return nil
}

func checkStream(ex exchange) error {
	if !bytes.HasSuffix(ex.tailEnd, []byte("data: [DONE]\n\n")) {
		return fmt.Errorf("stream did not end with data: [DONE] (%d bytes, ends %q)", ex.size, ex.tailEnd)
	}
	return nil
}

// bigRequest sends a 1 MiB chat request body, checks that the fake got it
// byte for byte, and records the median time (after one untimed run).
func bigRequest(ctx context.Context, env *benchEnv, base, bearer string, m *measurement) (requests, failures int) {
	var times []time.Duration
	for i := 0; i <= env.sz.bigReps && ctx.Err() == nil; i++ {
		body := bigChatBody(i)
		env.up.ClearRequests()
		ex, err := do(ctx, env.client, http.MethodPost, base+chatPath, bearer, body)
		if err == nil && ex.status != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", ex.status, brief(ex.body(), 300))
		}
		if err == nil {
			err = checkChat(ex)
		}
		if err == nil {
			err = receivedIntact(ctx, env.up, body)
		}
		requests++
		if err != nil {
			failures++
			m.problem("1 MB request body (run %d): %v", i, err)
			continue
		}
		if i > 0 {
			times = append(times, ex.total)
		}
	}
	if v, ok := median(times); ok {
		m.set("big_req", v)
	} else {
		m.na("big_req", "error")
	}
	env.up.ClearRequests()
	return requests, failures
}

// bigChatBody is a valid chat request of exactly bigReqSize bytes, unique
// per run.
func bigChatBody(run int) []byte {
	head := fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"bench-1mb-%d-%s-`, run, randomHex(4))
	const end = `"}]}`
	b := make([]byte, 0, bigReqSize)
	b = append(b, head...)
	for len(b) < bigReqSize-len(end) {
		b = append(b, "abcdefghijklmnopqrstuvwxyz0123456789"[len(b)%36])
	}
	return append(b, end...)
}

// receivedIntact checks that the fake upstream got body exactly.
func receivedIntact(ctx context.Context, up *fakeupstream.Server, body []byte) error {
	// The fake records a request once its answer is written: give it a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := 0
		for _, q := range up.Requests() {
			if !strings.HasSuffix(q.Path, "/chat/completions") {
				continue
			}
			got++
			if bytes.Equal(q.Body, body) {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if got > 0 {
				return fmt.Errorf("the fake upstream received the request but not the same body (%d requests seen)", got)
			}
			return errors.New("the fake upstream never received the request")
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// bigResponse streams the fake's 4 MiB SSE answer through the target.
func bigResponse(ctx context.Context, env *benchEnv, base, bearer string, m *measurement) (requests, failures int) {
	body := []byte(`{"model":"` + fakeupstream.BigStreamModel + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	want := fakeupstream.BigStreamSize()
	var times []time.Duration
	for i := 0; i <= env.sz.bigReps && ctx.Err() == nil; i++ {
		ex, err := do(ctx, env.client, http.MethodPost, base+chatPath, bearer, body)
		if err == nil && ex.status != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", ex.status, brief(ex.body(), 300))
		}
		if err == nil && ex.size != want {
			err = fmt.Errorf("got %d bytes, want %d", ex.size, want)
		}
		if err == nil {
			err = checkStream(ex)
		}
		requests++
		if err != nil {
			failures++
			m.problem("4 MB streamed response (run %d): %v", i, err)
			continue
		}
		if i > 0 {
			times = append(times, ex.total)
		}
	}
	if v, ok := median(times); ok {
		m.set("big_resp", v)
	} else {
		m.na("big_resp", "error")
	}
	env.up.ClearRequests()
	return requests, failures
}

// soak sends env.cfg.soak non-stream requests at 16 clients, sampling
// workerd RSS every soakChunk requests.
func soak(ctx context.Context, env *benchEnv, d *devServer, bearer string, m *measurement) {
	logf("%s: soak of %d requests", m.spec.label, env.cfg.soak)
	m.soak = append(m.soak, soakSample{rss: rssBytes(d.workerd), proxy: d.proxyRSS()})
	p := phase{conc: 16, dur: soakTimeout, path: chatPath, body: []byte(chatBody), bearer: bearer, check: checkChat}
	done := 0
	for done < env.cfg.soak && ctx.Err() == nil {
		p.maxN = min(soakChunk, env.cfg.soak-done)
		r := runPhase(ctx, env.client, d.base, p)
		env.up.ClearRequests()
		if r.total() == 0 {
			break
		}
		done += r.total()
		m.phaseProblems(fmt.Sprintf("soak (%d–%d)", done-r.total(), done), r)
		m.soak = append(m.soak, soakSample{done: done, rss: rssBytes(d.workerd), proxy: d.proxyRSS(), rps: r.rps(), failed: r.failed})
		if r.aborted || r.ok == 0 {
			m.problem("soak stopped after %d requests: the target is failing", done)
			break
		}
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
