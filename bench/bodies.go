package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

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
