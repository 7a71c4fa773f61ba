package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	readyTimeout     = 120 * time.Second
	migrateTimeout   = 120 * time.Second
	stopGrace        = 10 * time.Second
	maxProblemsShown = 20
)

// groups holds every process group this program started, so that they are
// killed however it ends (return, error, panic, signal).
var groups = &registry{live: map[int]chan struct{}{}}

type registry struct {
	mu   sync.Mutex
	live map[int]chan struct{} // pgid → closed when its leader was reaped
}

func (r *registry) add(pgid int, exited chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[pgid] = exited
}

// stop ends one process group: SIGTERM, then SIGKILL after stopGrace if the
// leader or any member is still there.
func (r *registry) stop(pgid int) {
	r.mu.Lock()
	exited, ok := r.live[pgid]
	delete(r.live, pgid)
	r.mu.Unlock()
	if !ok {
		return
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(stopGrace)
	select {
	case <-exited:
	case <-time.After(stopGrace):
	}
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if groupAlive(pgid) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(stopGrace):
		}
	}
}

// stopAll ends every group still registered, concurrently.
func (r *registry) stopAll() {
	r.mu.Lock()
	var ids []int
	for id := range r.live {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func(id int) { defer wg.Done(); r.stop(id) }(id)
	}
	wg.Wait()
}

// wranglerEnv is the environment for every wrangler command.
func wranglerEnv() []string {
	return append(os.Environ(), "CI=true", "WRANGLER_SEND_METRICS=false", "NO_COLOR=1", "FORCE_COLOR=0")
}

func wranglerBin(root string) string {
	return filepath.Join(root, "node_modules", ".bin", "wrangler")
}

// runWrangler runs a short wrangler command (in its own process group,
// killed on timeout) and returns its output.
func runWrangler(ctx context.Context, root, dir string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, wranglerBin(root), args...)
	cmd.Dir = dir
	cmd.Env = wranglerEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if cmd.Process != nil && groupAlive(cmd.Process.Pid) {
		// Whatever it left behind in its group goes too.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("wrangler %s: %w\n%s", strings.Join(args, " "), err, tail(string(out), 3000))
	}
	return string(out), nil
}

// devServer is one running `wrangler dev`.
type devServer struct {
	base      string
	inspector int // wrangler's inspector proxy: the DevTools protocol of the worker
	pid       int // the wrangler process, leader of its own group
	log       *logSink
	exited    chan struct{}
	started   time.Time
	ready     time.Time // when "Ready on" appeared in its log
	workerd   []int     // workerd processes in its tree
	// proxyPid is the workerd that listens on the port the client uses:
	// wrangler's proxy in front of the one that runs the worker (0 if
	// not told apart).
	proxyPid int
	node     []int // node processes in its tree (wrangler itself)
}

// startDev starts `wrangler dev` for the config in dir and waits for its
// "Ready on" log line (never for an answer from the worker: the first
// request is the cold-start measurement).
func startDev(ctx context.Context, root, dir, name string) (*devServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	inspector, err := freePort()
	if err != nil {
		return nil, err
	}
	d := &devServer{
		base:      fmt.Sprintf("http://127.0.0.1:%d", port),
		inspector: inspector,
		log:       newLogSink(name, fmt.Sprintf("Ready on http://127.0.0.1:%d", port)),
		exited:    make(chan struct{}),
	}
	cmd := exec.Command(wranglerBin(root), "dev",
		"-c", filepath.Join(dir, "wrangler.toml"), "--persist-to", filepath.Join(dir, "state"),
		"--ip", "127.0.0.1", "--port", fmt.Sprint(port), "--inspector-port", fmt.Sprint(inspector),
		"--show-interactive-dev-session=false")
	cmd.Dir = dir
	cmd.Env = wranglerEnv()
	cmd.Stdout, cmd.Stderr = d.log, d.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.pid = cmd.Process.Pid
	groups.add(d.pid, d.exited)
	go func() { cmd.Wait(); close(d.exited) }()

	select {
	case <-d.log.ready:
		d.ready = d.log.readyAt
	case <-d.exited:
		groups.stop(d.pid)
		return nil, fmt.Errorf("wrangler dev (%s) exited before it was ready:\n%s", name, d.log.tail())
	case <-time.After(readyTimeout):
		groups.stop(d.pid)
		return nil, fmt.Errorf("wrangler dev (%s) not ready after %s:\n%s", name, readyTimeout, d.log.tail())
	case <-ctx.Done():
		groups.stop(d.pid)
		return nil, ctx.Err()
	}
	d.findProcesses(port)
	if len(d.workerd) == 0 {
		groups.stop(d.pid)
		return nil, fmt.Errorf("wrangler dev (%s) is ready but no workerd process was found in its tree", name)
	}
	return d, nil
}

// findProcesses sorts the processes of d's tree: the workerd ones (the
// one listening on port is the proxy) and the node ones.
func (d *devServer) findProcesses(port int) {
	for _, p := range descendants(d.pid) {
		switch p.comm {
		case "workerd":
			d.workerd = append(d.workerd, p.pid)
			if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid)); err == nil &&
				strings.Contains(string(cl), fmt.Sprintf("=127.0.0.1:%d\x00", port)) {
				d.proxyPid = p.pid
			}
		case "node":
			d.node = append(d.node, p.pid)
		}
	}
	// The launcher itself is node too.
	d.node = append(d.node, d.pid)
}

func (d *devServer) stop() { groups.stop(d.pid) }

// runtime lists the workerd processes other than the proxy: the ones that
// run the worker.
func (d *devServer) runtime() []int {
	var out []int
	for _, p := range d.workerd {
		if p != d.proxyPid {
			out = append(out, p)
		}
	}
	return out
}

// proxyRSS is the RSS of wrangler's proxy workerd, -1 when unknown.
func (d *devServer) proxyRSS() int64 {
	if d.proxyPid == 0 {
		return -1
	}
	return rssBytes([]int{d.proxyPid})
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// logSink takes wrangler's output line by line: it spots the ready line,
// keeps a tail, and collects the lines worth reporting (errors, non-2xx
// answers) after readiness, counted by kind.
type logSink struct {
	name      string
	readyLine string
	ready     chan struct{}
	readyAt   time.Time

	mu       sync.Mutex
	partial  []byte
	last     []string
	isReady  bool
	problems map[string]int
	order    []string
	statuses map[string]int // "POST 200" → count, from wrangler's request log
}

func newLogSink(name, readyLine string) *logSink {
	return &logSink{name: name, readyLine: readyLine, ready: make(chan struct{}),
		problems: map[string]int{}, statuses: map[string]int{}}
}

var (
	ansiRE = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	// [wrangler:info] POST /v1/chat/completions 200 OK (12ms)
	reqLineRE = regexp.MustCompile(`^\[wrangler:info\] ([A-Z]+) (\S+) (\d{3}) [^(]*\(\d+ms\)$`)
	msRE      = regexp.MustCompile(`\(\d+ms\)`)
)

// benign are known lines that say nothing about keypool: wrangler cannot
// reach Cloudflare for the Request.cf object offline.
var benign = []string{
	"Unable to fetch the `Request.cf` object",
	"getaddrinfo ENOTFOUND workers.cloudflare.com",
	"at GetAddrInfoReqWrap.",
	"update available",
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := strings.IndexByte(string(l.partial), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(ansiRE.ReplaceAllString(string(l.partial[:i]), ""), "\r ")
		l.partial = l.partial[i+1:]
		l.line(line)
	}
	return len(p), nil
}

func (l *logSink) line(line string) {
	l.last = append(l.last, line)
	if len(l.last) > 200 {
		l.last = l.last[len(l.last)-200:]
	}
	if !l.isReady {
		if strings.Contains(line, l.readyLine) {
			l.isReady, l.readyAt = true, time.Now()
			close(l.ready)
		}
		return
	}
	t := strings.TrimSpace(line)
	if t == "" {
		return
	}
	for _, b := range benign {
		if strings.Contains(t, b) {
			return
		}
	}
	if m := reqLineRE.FindStringSubmatch(t); m != nil {
		l.statuses[m[1]+" "+m[3]]++
		if m[3][0] == '2' {
			return
		}
	}
	if strings.HasPrefix(t, "[wrangler:info]") && !strings.Contains(t, "(") {
		return // e.g. reload notices
	}
	key := msRE.ReplaceAllString(t, "(…ms)")
	if strings.HasPrefix(t, "at ") {
		key = "  " + key
	}
	if _, seen := l.problems[key]; !seen {
		l.order = append(l.order, key)
	}
	l.problems[key]++
}

func (l *logSink) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "\n")
}

// report lists the problem lines seen after readiness, with counts.
func (l *logSink) report() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for i, k := range l.order {
		if i == maxProblemsShown {
			out = append(out, fmt.Sprintf("… and %d more distinct lines", len(l.order)-i))
			break
		}
		out = append(out, fmt.Sprintf("%6d× %s", l.problems[k], k))
	}
	return out
}

// statusSummary is wrangler's own request log, summed: "POST 200: 1234, …".
func (l *logSink) statusSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keys []string
	for k := range l.statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, l.statuses[k]))
	}
	return strings.Join(parts, ", ")
}

// brief is s on one line, at most n bytes (its start).
func brief(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
