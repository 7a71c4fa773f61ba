package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

const requestTimeout = 60 * time.Second

// newClient is the one load generator for every target: keep-alive
// connections, enough idle ones for 16+ clients, no compression, and a
// dialer that refuses anything but 127.0.0.1.
func newClient() *http.Client { return newClientTimeout(requestTimeout) }

// longStreamTimeout bounds a long stream's request: 1 000 chunks take
// many seconds through wrangler dev on a busy machine.
const longStreamTimeout = 5 * time.Minute

func newClientTimeout(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host != "127.0.0.1" {
				return nil, fmt.Errorf("bench only talks to 127.0.0.1, not %s", addr)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: 0,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// exchange is one request's outcome.
type exchange struct {
	status  int
	header  http.Header
	start   time.Time     // when the request was sent
	ttfb    time.Duration // until the first body byte (or the end of an empty body)
	total   time.Duration // until the whole body was read
	size    int
	head    []byte // the first 64 KiB of the body
	tailEnd []byte // the last 64 bytes of the body
}

func (e exchange) body() string { return string(e.head) }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// do sends one request and reads the whole answer, timing it.
func do(ctx context.Context, c *http.Client, method, url, bearer string, body []byte) (exchange, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return exchange{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return exchange{}, err
	}
	defer resp.Body.Close()
	ex := exchange{status: resp.StatusCode, header: resp.Header, start: t0}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	first := true
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if first {
				ex.ttfb, first = time.Since(t0), false
			}
			if len(ex.head) < 64<<10 {
				ex.head = append(ex.head, buf[:min(n, 64<<10-len(ex.head))]...)
			}
			ex.size += n
			if n >= 64 {
				ex.tailEnd = append(ex.tailEnd[:0], buf[n-64:n]...)
			} else {
				ex.tailEnd = append(ex.tailEnd, buf[:n]...)
				if len(ex.tailEnd) > 64 {
					ex.tailEnd = ex.tailEnd[len(ex.tailEnd)-64:]
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return ex, fmt.Errorf("reading the body after %d bytes: %w", ex.size, rerr)
		}
	}
	ex.total = time.Since(t0)
	if first {
		ex.ttfb = ex.total
	}
	return ex, nil
}

// phase is one measured load: conc clients sending the same request for
// dur or until maxN requests were sent, whichever comes first.
type phase struct {
	conc   int
	dur    time.Duration
	maxN   int
	path   string
	body   []byte
	check  func(exchange) error // nil: status 200 is enough
	bearer string
	// newBody, when set, makes each request's body instead of body.
	newBody func() []byte
	// seen, when set, gets each successful exchange and the body sent.
	seen func(ex exchange, body []byte)
}

type phaseResult struct {
	ok, failed    int
	firstErr      string
	elapsed       time.Duration
	lat, ttfb     []time.Duration // successful requests only, sorted
	extraAttempts int             // keypool answers with X-Keypool-Attempts > 1
	aborted       bool            // stopped early: mostly failing
}

// failAbortMin failures, outnumbering successes 4 to 1, stop a phase.
const failAbortMin = 16

func (r phaseResult) total() int { return r.ok + r.failed }

func (r phaseResult) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func runPhase(ctx context.Context, c *http.Client, base string, p phase) phaseResult {
	l := &phaseLoad{ctx: ctx, c: c, base: base, p: p, deadline: time.Now().Add(p.dur)}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < p.conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.add(l.client())
		}()
	}
	wg.Wait()
	res := l.res
	res.elapsed = time.Since(start)
	res.aborted = l.abort.Load()
	sort.Slice(res.lat, func(i, j int) bool { return res.lat[i] < res.lat[j] })
	sort.Slice(res.ttfb, func(i, j int) bool { return res.ttfb[i] < res.ttfb[j] })
	return res
}

// phaseLoad is one phase under way: its clients share the count of
// requests sent, the abort switch and the result.
type phaseLoad struct {
	ctx      context.Context
	c        *http.Client
	base     string
	p        phase
	deadline time.Time

	sent, oks, fails atomic.Int64
	abort            atomic.Bool
	mu               sync.Mutex
	res              phaseResult
}

// client is one client's loop: requests until the deadline, the phase's
// count, an interruption or an abort.
func (l *phaseLoad) client() phaseResult {
	var mine phaseResult
	p := l.p
	for l.ctx.Err() == nil && !l.abort.Load() && time.Now().Before(l.deadline) && l.sent.Add(1) <= int64(p.maxN) {
		body := p.body
		if p.newBody != nil {
			body = p.newBody()
		}
		ex, err := do(l.ctx, l.c, http.MethodPost, l.base+p.path, p.bearer, body)
		if err == nil && ex.status != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", ex.status, brief(ex.body(), 300))
		}
		if err == nil && p.check != nil {
			err = p.check(ex)
		}
		if err != nil {
			if l.ctx.Err() != nil {
				break // interrupted: not the target's failure
			}
			mine.failed++
			if mine.firstErr == "" {
				mine.firstErr = err.Error()
			}
			// A target that mostly fails is not measured further:
			// with a 60 s timeout per request it could take long.
			if f := l.fails.Add(1); f >= failAbortMin && f > 4*l.oks.Load() {
				l.abort.Store(true)
			}
			continue
		}
		if a := ex.header.Get("X-Keypool-Attempts"); a != "" && a != "1" {
			mine.extraAttempts++
		}
		if p.seen != nil {
			p.seen(ex, body)
		}
		mine.ok++
		l.oks.Add(1)
		mine.lat = append(mine.lat, ex.total)
		mine.ttfb = append(mine.ttfb, ex.ttfb)
	}
	return mine
}

// add merges one client's result into the phase's.
func (l *phaseLoad) add(mine phaseResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.ok += mine.ok
	l.res.failed += mine.failed
	l.res.extraAttempts += mine.extraAttempts
	l.res.lat = append(l.res.lat, mine.lat...)
	l.res.ttfb = append(l.res.ttfb, mine.ttfb...)
	if l.res.firstErr == "" {
		l.res.firstErr = mine.firstErr
	}
}

// percentile is the nearest-rank percentile of sorted durations, in ms.
func percentile(sorted []time.Duration, p float64) (float64, bool) {
	if len(sorted) == 0 {
		return 0, false
	}
	i := int(p/100*float64(len(sorted))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return ms(sorted[i]), true
}

func median(ds []time.Duration) (float64, bool) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return percentile(s, 50)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
