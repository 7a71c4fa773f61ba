package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// profiler is bench/profile.mjs attached to a wrangler dev's inspector:
// commands go to its stdin, its report goes to our stdout, and each
// command waits for its "ok"/"error" line.
type profiler struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	answers chan string
}

func startProfiler(ctx context.Context, root string, inspector int, out string) (*profiler, error) {
	cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "bench", "profile.mjs"),
		"--inspector", fmt.Sprint(inspector), "--out", out)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &profiler{cmd: cmd, in: in, answers: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "error ") {
				p.answers <- line
				continue
			}
			fmt.Println(line)
		}
		close(p.answers)
	}()
	if _, err := p.wait(); err != nil {
		p.close()
		return nil, fmt.Errorf("connecting to the inspector on port %d: %w", inspector, err)
	}
	return p, nil
}

func (p *profiler) wait() (string, error) {
	select {
	case a, ok := <-p.answers:
		if !ok {
			return "", fmt.Errorf("bench/profile.mjs exited")
		}
		if strings.HasPrefix(a, "error ") {
			return "", fmt.Errorf("%s", a)
		}
		return a, nil
	case <-time.After(2 * time.Minute):
		return "", fmt.Errorf("bench/profile.mjs did not answer")
	}
}

func (p *profiler) do(command string) error {
	if _, err := fmt.Fprintln(p.in, command); err != nil {
		return err
	}
	a, err := p.wait()
	if err == nil && strings.HasPrefix(a, "ok wrote ") {
		logf("profile: %s", strings.TrimPrefix(a, "ok "))
	}
	return err
}

func (p *profiler) close() {
	fmt.Fprintln(p.in, "quit")
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// profiled runs load between Profiler.start and Profiler.stop; load
// returns how many requests it sent, for the per-request figure.
func (p *profiler) profiled(name string, load func() int) error {
	if err := p.do("start"); err != nil {
		return err
	}
	n := load()
	return p.do(fmt.Sprintf("stop %s %d", name, n))
}

// runProfile profiles target s: the cold first request, then non-stream,
// short-stream and long-stream load, each its own .cpuprofile in build/.
func runProfile(ctx context.Context, env *benchEnv, s targetSpec) int {
	m := &measurement{spec: s, cells: map[string]cell{}}
	d, bearer, _, err := prepare(ctx, env, s, m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer d.stop()
	out := filepath.Join(env.root, "build", "profile-"+s.name)
	p, err := startProfiler(ctx, env.root, d.inspector, out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer p.close()
	err = profilePhases(ctx, env, d, bearer, m, p)
	for _, pr := range append(m.problems, d.log.report()...) {
		fmt.Println("  problem:", pr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func profilePhases(ctx context.Context, env *benchEnv, d *devServer, bearer string, m *measurement, p *profiler) error {
	if err := p.profiled("cold", func() int { coldRequest(ctx, env, d, bearer, m); return 1 }); err != nil {
		return err
	}
	chat := phase{path: chatPath, body: []byte(chatBody), bearer: bearer, maxN: env.sz.maxN, check: checkChat}
	stream := phase{path: chatPath, body: []byte(streamBody), bearer: bearer, maxN: env.sz.maxN, check: checkStream}
	long := longStreamPhase(bearer, tinyChunks, tinyGap, 2, env.sz.bigReps+1)
	w := chat
	w.conc, w.dur = 8, env.sz.warm
	m.phaseProblems("warm-up", runPhase(ctx, env.client, d.base, w))
	run := func(name string, ph phase, conc int, dur time.Duration) error {
		ph.conc, ph.dur = conc, dur
		return p.profiled(name, func() int {
			r := runPhase(ctx, env.longClient, d.base, ph)
			m.phaseProblems(name, r)
			logf("profile %s: %d requests, %.1f req/s", name, r.total(), r.rps())
			env.up.ClearRequests()
			return r.total()
		})
	}
	if err := run("nonstream", chat, 4, env.sz.ns16); err != nil {
		return err
	}
	if err := run("stream", stream, 4, env.sz.st16); err != nil {
		return err
	}
	drainProxy(ctx, d)
	return run("stream-1000-chunks", long, long.conc, 10*time.Minute)
}
