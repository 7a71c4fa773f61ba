package checks

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// Options pace a run of checks.
type Options struct {
	Concurrency     int   // checks at once (Workers allows 6 open connections)
	IntervalMS      int64 // between the starts of two checks
	JitterMS        int64 // random extra wait added to each interval
	Retries         int   // for checks that learnt nothing (5xx, network)
	RetryIntervalMS int64
}

var DefaultOptions = Options{Concurrency: 6, Retries: 0, RetryIntervalMS: 1000}

// healthPolicy is the check intervals configured.
func (c *Checker) healthPolicy() rotation.HealthPolicy { return c.Config().Health }

// checkCost is the most subrequests one check of a key of prov may make:
// a balance call and its fallback, each retried.
func checkCost(prov string, opts Options) int64 {
	n := int64(1)
	if p, ok := provider.Lookup(prov); ok && p.Balance != provider.NoBalance {
		n = 2
	}
	return n * int64(1+opts.Retries)
}

// runChecks checks keys, in order, opts.Concurrency at a time, as long as
// the budget (keeping keep subrequests for the writes after) and the
// deadline allow. The keys checked are always a prefix of keys.
func (c *Checker) runChecks(ctx context.Context, keys []store.CheckKey, set settings.Settings, opts Options, budget *Budget, keep int64, deadline time.Time) []store.CheckRecord {
	policy := c.healthPolicy()
	conc := max(1, min(opts.Concurrency, 6))
	recs := make([]store.CheckRecord, len(keys))
	run := &checkRun{ck: c, keys: keys, opts: opts, budget: budget, keep: keep, deadline: deadline, nextStart: c.Now()}
	run.done = sync.NewCond(&run.mu)
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := run.admit(); i >= 0; i = run.admit() {
				k := keys[i]
				reserved := checkCost(k.Provider, opts)
				r, used := c.checkKey(ctx, k, set, opts)
				budget.refund(reserved - int64(used))
				now := c.Now()
				recs[i] = store.CheckRecord{Key: k, Result: r, Next: policy.After(k.Status, k.Fails, r, now)}
				run.finished()
			}
		}()
	}
	wg.Wait()
	return recs[:run.next]
}

// checkRun hands out the keys of a run to its workers, within the budget
// and the deadline, paced by opts.
type checkRun struct {
	ck       *Checker
	keys     []store.CheckKey
	opts     Options
	budget   *Budget
	keep     int64
	deadline time.Time

	mu        sync.Mutex
	done      *sync.Cond // a check finished and gave back what it did not use
	next      int
	inflight  int // checks admitted and not yet finished
	stopped   bool
	nextStart time.Time
}

// admit hands out the next key's index, paced, or -1 when the run must
// stop.
func (c *checkRun) admit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.stopped || c.next >= len(c.keys) || !c.ck.Now().Before(c.deadline) {
			c.stopped = true
			return -1
		}
		if c.budget.take(checkCost(c.keys[c.next].Provider, c.opts), c.keep) {
			break
		}
		if c.inflight == 0 {
			c.stopped = true
			return -1
		}
		// Checks under way reserved their worst case; wait for what
		// they give back before giving up.
		c.done.Wait()
	}
	c.inflight++
	if c.opts.IntervalMS > 0 || c.opts.JitterMS > 0 {
		if wait := c.nextStart.Sub(c.ck.Now()); wait > 0 {
			time.Sleep(wait)
		}
		gap := time.Duration(c.opts.IntervalMS) * time.Millisecond
		if c.opts.JitterMS > 0 {
			gap += time.Duration(c.ck.IntN(int(c.opts.JitterMS)+1)) * time.Millisecond
		}
		c.nextStart = c.ck.Now().Add(gap)
	}
	i := c.next
	c.next++
	return i
}

// finished marks an admitted check done.
func (c *checkRun) finished() {
	c.mu.Lock()
	c.inflight--
	c.done.Broadcast()
	c.mu.Unlock()
}

// checkKey checks one key: its balance where the provider has a balance
// endpoint, else (or when that endpoint is gone) a 1-token call to the
// provider's check model (setting check_models), else its model list.
// The balance is read from the provider itself, the calls after it go
// through AI Gateway when the proxied requests do (provider.BalanceURL).
// It reports the fetches it made.
func (c *Checker) checkKey(ctx context.Context, k store.CheckKey, set settings.Settings, opts Options) (rotation.CheckResult, int) {
	prov, ok := provider.Lookup(k.Provider)
	if !ok {
		return rotation.CheckResult{Outcome: rotation.CheckInconclusive, Detail: "unknown provider"}, 0
	}
	if k.Unopened {
		return rotation.CheckResult{Outcome: rotation.CheckInconclusive, Detail: "does not open with this KEYPOOL_SECRET"}, 0
	}
	call := &checkCall{ck: c, ctx: ctx, k: k, prov: prov, opts: opts}
	t := c.Target(prov)
	if prov.Balance != provider.NoBalance {
		r, status, data := call.do(http.MethodGet, prov.BalanceURL(t), false, nil, true)
		switch {
		case r.Outcome == rotation.CheckOK:
			if b, ok := provider.ParseBalance(prov.Balance, data); ok {
				r = r.WithBalance(b.Total)
				r.Detail = b.Detail
				return r, call.fetches
			}
			// An answer that is not a balance: fall back.
		case status == http.StatusNotFound || status == http.StatusGone || status == http.StatusMethodNotAllowed ||
			r.Outcome == rotation.CheckInconclusive:
			// The endpoint is gone (SiliconFlow users report 410): fall back.
		default:
			return r, call.fetches
		}
	}
	base, viaGateway := prov.OpenAIBase(t)
	if model := set.CheckModels[prov.Name]; model != "" && !prov.NoOpenAI {
		body := []byte(`{"model":` + string(jsonout.AppendString(nil, model)) + `,"messages":[{"role":"user","content":"hi"}],"max_tokens":1}`)
		r, _, _ := call.do(http.MethodPost, base+"/chat/completions", viaGateway, body, true)
		return r, call.fetches
	}
	r, _, _ := call.do(http.MethodGet, base+"/models", viaGateway, nil, false)
	return r, call.fetches
}

// checkCall makes the calls of one key's check, counting its fetches.
type checkCall struct {
	ck      *Checker
	ctx     context.Context
	k       store.CheckKey
	prov    provider.Provider
	opts    Options
	fetches int
}

// do makes one check call, again (opts.Retries) while it learns nothing,
// and returns what it says of the key (funded: a success shows the key
// can spend), the status and the body read (the error's text when there
// was no answer).
func (c *checkCall) do(method, url string, viaGateway bool, body []byte, funded bool) (rotation.CheckResult, int, []byte) {
	var r rotation.CheckResult
	var a rotation.Answer
	var data []byte
	for try := 0; try <= c.opts.Retries; try++ {
		if try > 0 {
			time.Sleep(time.Duration(c.opts.RetryIntervalMS) * time.Millisecond)
		}
		req, err := http.NewRequestWithContext(c.ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return rotation.CheckResult{Outcome: rotation.CheckInconclusive, Detail: "bad check URL"}, 0, nil
		}
		if len(body) > 0 {
			req.Header.Set("Content-Type", "application/json")
		}
		setCheckKey(c.prov, req.Header, c.k.Secret)
		if viaGateway {
			c.ck.GatewayHeaders(req.Header, ownMetadata(c.k.ID, "check"), true)
		}
		a, data = c.once(req)
		var policy rotation.Policy
		if r = policy.CheckOf(a, funded, c.ck.Now()); r.Outcome != rotation.CheckError {
			break
		}
	}
	if r.Outcome != rotation.CheckOK {
		r.Detail = provider.MaskExcerpt(data, c.k.Secret)
	}
	return r, a.Status, data
}

// once sends req: the answer, and the body read (at most 64 KiB).
func (c *checkCall) once(req *http.Request) (rotation.Answer, []byte) {
	c.fetches++
	a := rotation.Answer{Provider: c.prov.Name, Family: c.prov.Family}
	resp, err := c.ck.Fetch(req)
	if err != nil {
		return a, []byte(err.Error())
	}
	a.Status, a.Header = resp.StatusCode, resp.Header
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if a.Status < 200 || a.Status > 299 {
		a.Body = data
	}
	return a, data
}

// setCheckKey puts the key where the check call expects it: the native
// header for Anthropic and providers without an OpenAI API, else Bearer.
func setCheckKey(prov provider.Provider, h http.Header, secret string) {
	prov.Authorize(h, secret, prov.Family != provider.FamilyAnthropic && !prov.NoOpenAI)
}
