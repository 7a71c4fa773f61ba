package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Long streams: the upstream (benchUpstream) spreads an answer over many
// flushed chunks, as a model generating tokens does.
const (
	spreadChunks = 200                   // the first-byte phase: 200 chunks ...
	spreadGap    = 10 * time.Millisecond // ... over 2 s
	tinyChunks   = 1000                  // CPU per streamed request: 1 000 tiny chunks ...
	fewChunks    = 10                    // ... against 10
	tinyGap      = time.Millisecond      // apart, so that each crosses alone
)

var streamSeq atomic.Int64

// longStreamPhase streams chunks events gap apart, n requests at conc
// clients; each request carries its own stream id.
func longStreamPhase(bearer string, chunks int, gap time.Duration, conc, n int) phase {
	model := slowStreamModel(chunks, gap)
	return phase{
		path: chatPath, bearer: bearer, conc: conc, maxN: n, dur: 10 * time.Minute,
		newBody: func() []byte {
			id := fmt.Sprintf("bench-%d", streamSeq.Add(1))
			return []byte(`{"model":"` + model + `","stream":true,"user":"` + id + `","messages":[{"role":"user","content":"hi"}]}`)
		},
		check: func(ex exchange) error {
			if want := chunks * 100; ex.size < want {
				return fmt.Errorf("long stream of %d bytes, want at least %d", ex.size, want)
			}
			return checkStream(ex)
		},
	}
}

// streamID is the "user" of a long stream's request body.
func streamID(body []byte) string {
	_, rest, _ := bytes.Cut(body, []byte(`"user":"`))
	id, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(id)
}

// firstByteDelays collects, per long stream, the client's first byte
// minus the moment the upstream flushed its first chunk, and the client's
// spread from first to last byte.
type firstByteDelays struct {
	mu             sync.Mutex
	delay, spreads []time.Duration
	unmatched      int
}

func (f *firstByteDelays) seen(origin *benchUpstream) func(exchange, []byte) {
	return func(ex exchange, body []byte) {
		sent, ok := origin.takeFirstSent(streamID(body))
		f.mu.Lock()
		defer f.mu.Unlock()
		if !ok {
			f.unmatched++
			return
		}
		f.delay = append(f.delay, ex.start.Add(ex.ttfb).Sub(sent))
		f.spreads = append(f.spreads, ex.total-ex.ttfb)
	}
}

// longStreams runs the long-stream phases: the first-byte delay of a
// 2 s stream, then workerd CPU per streamed request for 10 and 1 000
// chunks (the same spacing, so only the chunk count differs).
func longStreams(ctx context.Context, env *benchEnv, d *devServer, bearer string, m *measurement) {
	n := 2 * env.sz.bigReps
	var fb firstByteDelays
	p := longStreamPhase(bearer, spreadChunks, spreadGap, 4, n)
	p.seen = fb.seen(env.origin)
	r := runPhase(ctx, env.longClient, d.base, p)
	m.phaseProblems("long stream (200 chunks over 2 s)", r)
	if fb.unmatched > 0 {
		m.problem("long stream: %d streams whose upstream first chunk was not recorded", fb.unmatched)
	}
	sort.Slice(fb.delay, func(i, j int) bool { return fb.delay[i] < fb.delay[j] })
	sort.Slice(fb.spreads, func(i, j int) bool { return fb.spreads[i] < fb.spreads[j] })
	if v, ok := percentile(fb.delay, 50); ok {
		m.set("ls_fb", v)
		s, _ := percentile(fb.spreads, 50)
		m.set("ls_spread", s)
	} else {
		m.na("ls_fb", "error")
		m.na("ls_spread", "error")
	}
	env.up.ClearRequests()

	// Enough requests for workerd's 10 ms CPU ticks to resolve the
	// figure: short streams cost a few ms each, long ones hundreds. Few
	// clients: wrangler's proxy workerd holds ~4 file descriptors per
	// chunk for some 10 s (it fails at 20 000), and its own cost per chunk
	// makes many concurrent 1 000-chunk streams outlast any timeout.
	cpuOf := func(id string, chunks, conc, n int) (float64, bool) {
		drainProxy(ctx, d)
		p := longStreamPhase(bearer, chunks, tinyGap, conc, n)
		before, _ := cpuTicks(d.worker())
		r := runPhase(ctx, env.longClient, d.base, p)
		m.phaseProblems(fmt.Sprintf("stream of %d chunks", chunks), r)
		after, gone := cpuTicks(d.worker())
		setCPU(m, id, before, after, gone, r.total())
		c := m.cells[id]
		return c.v, c.ok
	}
	few, ok1 := cpuOf("cpu_chunks10", fewChunks, 4, 8*n)
	many, ok2 := cpuOf("cpu_chunks1000", tinyChunks, 2, env.sz.bigReps+1)
	drainProxy(ctx, d)
	if ok1 && ok2 && few > 0 {
		m.set("chunks_ratio", many/few)
		m.set("cpu_per_chunk", (many-few)*1000/(tinyChunks-fewChunks))
	} else {
		m.na("chunks_ratio", "n/a")
		m.na("cpu_per_chunk", "n/a")
	}
	logf("%s: long streams: first byte %+.1f ms after the upstream's; CPU/request %.2f ms (10 chunks), %.2f ms (1000)",
		m.spec.label, m.cells["ls_fb"].v, few, many)
}

// worker lists the workerd processes that run the worker (all of them
// when wrangler's proxy was not told apart).
func (d *devServer) worker() []int {
	if d.proxyPid == 0 {
		return d.workerd
	}
	return d.runtime()
}

// drainProxy waits (up to 30 s) until wrangler's proxy workerd has let go
// of the file descriptors earlier streams' chunks left it holding.
func drainProxy(ctx context.Context, d *devServer) {
	if d.proxyPid == 0 {
		return
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.proxyPid))
		if err != nil || len(ents) < 1000 {
			return
		}
		sleep(ctx, 500*time.Millisecond)
	}
}
