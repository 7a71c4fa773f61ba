package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/tidwall/gjson"
)

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
