package handler

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// Health checks: the cron re-validates keys, reads balances and brings
// dead keys back when they work again, in chunks that fit one invocation's
// subrequest budget; admins run the same checks on demand as jobs.

// checkBudget counts one invocation's subrequests (fetches and D1 queries,
// which Workers counts alike) against a limit. Checks reserve what they
// may spend before they start, so concurrent checks never overrun it.
type checkBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	total Counter // the isolate-wide D1 counter, also fed; may be nil
}

// Add counts database round trips (store.Counter).
func (b *checkBudget) Add(d int64) int64 {
	b.mu.Lock()
	b.used += d
	n := b.used
	b.mu.Unlock()
	if b.total != nil {
		b.total.Add(d)
	}
	return n
}

func (b *checkBudget) Load() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// fetched counts one fetch made outside a reservation.
func (b *checkBudget) fetched() {
	b.mu.Lock()
	b.used++
	b.mu.Unlock()
}

// take reserves n subrequests if n more still leave keep for later work.
func (b *checkBudget) take(n, keep int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n+keep > b.limit {
		return false
	}
	b.used += n
	return true
}

// refund gives back the unused part of a reservation.
func (b *checkBudget) refund(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// checkOptions pace a run of checks.
type checkOptions struct {
	Concurrency     int   // checks at once (Workers allows 6 open connections)
	IntervalMS      int64 // between the starts of two checks
	JitterMS        int64 // random extra wait added to each interval
	Retries         int   // for checks that learnt nothing (5xx, network)
	RetryIntervalMS int64
}

var defaultCheckOptions = checkOptions{Concurrency: 6, Retries: 0, RetryIntervalMS: 1000}

// healthPolicy is the check intervals configured.
func (h *Handler) healthPolicy() rotation.HealthPolicy { return h.cfg().Health }

// checkCost is the most subrequests one check of a key of prov may make:
// a balance call and its fallback, each retried.
func checkCost(prov string, opts checkOptions) int64 {
	n := int64(1)
	if p, ok := provider.Lookup(prov); ok && p.Balance != provider.NoBalance {
		n = 2
	}
	return n * int64(1+opts.Retries)
}

// runChecks checks keys, in order, opts.Concurrency at a time, as long as
// the budget (keeping keep subrequests for the writes after) and the
// deadline allow. The keys checked are always a prefix of keys.
func (h *Handler) runChecks(ctx context.Context, keys []store.CheckKey, set settings.Settings, opts checkOptions, budget *checkBudget, keep int64, deadline time.Time) []store.CheckRecord {
	policy := h.healthPolicy()
	conc := max(1, min(opts.Concurrency, 6))
	recs := make([]store.CheckRecord, len(keys))
	run := &checkRun{h: h, keys: keys, opts: opts, budget: budget, keep: keep, deadline: deadline, nextStart: h.d.Now()}
	run.done = sync.NewCond(&run.mu)
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := run.admit(); i >= 0; i = run.admit() {
				k := keys[i]
				reserved := checkCost(k.Provider, opts)
				r, used := h.checkKey(ctx, k, set, opts)
				budget.refund(reserved - int64(used))
				now := h.d.Now()
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
	h        *Handler
	keys     []store.CheckKey
	opts     checkOptions
	budget   *checkBudget
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
		if c.stopped || c.next >= len(c.keys) || !c.h.d.Now().Before(c.deadline) {
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
		if wait := c.nextStart.Sub(c.h.d.Now()); wait > 0 {
			time.Sleep(wait)
		}
		gap := time.Duration(c.opts.IntervalMS) * time.Millisecond
		if c.opts.JitterMS > 0 {
			gap += time.Duration(c.h.d.IntN(int(c.opts.JitterMS)+1)) * time.Millisecond
		}
		c.nextStart = c.h.d.Now().Add(gap)
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
func (h *Handler) checkKey(ctx context.Context, k store.CheckKey, set settings.Settings, opts checkOptions) (rotation.CheckResult, int) {
	prov, ok := provider.Lookup(k.Provider)
	if !ok {
		return rotation.CheckResult{Outcome: rotation.CheckInconclusive, Detail: "unknown provider"}, 0
	}
	if k.Unopened {
		return rotation.CheckResult{Outcome: rotation.CheckInconclusive, Detail: "does not open with this KEYPOOL_SECRET"}, 0
	}
	c := &checkCall{h: h, ctx: ctx, k: k, prov: prov, opts: opts}
	t := h.target(prov)
	if prov.Balance != provider.NoBalance {
		r, status, data := c.do(http.MethodGet, prov.BalanceURL(t), false, nil, true)
		switch {
		case r.Outcome == rotation.CheckOK:
			if b, ok := provider.ParseBalance(prov.Balance, data); ok {
				r = r.WithBalance(b.Total)
				r.Detail = b.Detail
				return r, c.fetches
			}
			// An answer that is not a balance: fall back.
		case status == http.StatusNotFound || status == http.StatusGone || status == http.StatusMethodNotAllowed ||
			r.Outcome == rotation.CheckInconclusive:
			// The endpoint is gone (SiliconFlow users report 410): fall back.
		default:
			return r, c.fetches
		}
	}
	base, viaGateway := prov.OpenAIBase(t)
	if model := set.CheckModels[prov.Name]; model != "" && !prov.NoOpenAI {
		body := []byte(`{"model":` + string(jsonout.AppendString(nil, model)) + `,"messages":[{"role":"user","content":"hi"}],"max_tokens":1}`)
		r, _, _ := c.do(http.MethodPost, base+"/chat/completions", viaGateway, body, true)
		return r, c.fetches
	}
	r, _, _ := c.do(http.MethodGet, base+"/models", viaGateway, nil, false)
	return r, c.fetches
}

// checkCall makes the calls of one key's check, counting its fetches.
type checkCall struct {
	h       *Handler
	ctx     context.Context
	k       store.CheckKey
	prov    provider.Provider
	opts    checkOptions
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
			c.h.setGatewayHeaders(req.Header, ownMetadata(c.k.ID, "check"), true)
		}
		a, data = c.once(req)
		var policy rotation.Policy
		if r = policy.CheckOf(a, funded, c.h.d.Now()); r.Outcome != rotation.CheckError {
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
	resp, err := c.h.d.Fetch(req)
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

// cronWrites is the budget kept for what a cron run writes after its
// checks: the keys' state, the history rows, the events.
const cronWrites = 3

// Scheduled is the cron task. Within one invocation's subrequest budget
// (CHECK_SUBREQUESTS, default 45 of the free plan's 50) it prunes ended
// cooldowns and old history, checks the keys that are due, most urgent
// first, refreshes a stale model list, and advances a running check job,
// then logs one summary line.
func (h *Handler) Scheduled(ctx context.Context) error {
	start := h.d.Now()
	db, err := h.d.DB()
	if err != nil {
		log.Printf("keypool cron: no database: %v", err)
		return nil // an error returned here would crash the instance
	}
	budget := &checkBudget{limit: h.cfg().CheckSubrequests, total: h.d.Queries}
	deadline := start.Add(h.cfg().CheckTimeBudget)
	keys := store.On(db, budget).Keys()
	checks := store.On(db, budget).Checks()
	cooled, old := h.cronPrune(ctx, db, keys, checks, budget, start.UnixMilli())
	box, err := h.box()
	if err != nil {
		// Keys cannot be opened: prune only, and say why.
		log.Printf("keypool cron: no health checks: %v", err)
		return nil
	}
	keys.Sealing(box)
	checks.Sealing(box)
	// Keys stored before they were sealed are sealed now, a chunk a run.
	if n, err := keys.SealLegacy(ctx, 100); err != nil {
		log.Printf("keypool cron: sealing stored keys: %v", err)
	} else if n > 0 {
		log.Printf("keypool cron: sealed %d keys stored in plain text", n)
		h.invalidate()
	}
	set := h.settingsCounted(ctx, db, budget)
	recs := h.cronCheckDue(ctx, checks, set, budget, deadline, start.UnixMilli())
	lists := 0
	if budget.limit-budget.Load() >= 8 {
		lists = h.refreshStaleModels(ctx, db, 1, budget)
	}
	job := int64(0)
	// A job's chunk needs room for its reads and writes and a check; one
	// whose retries cost more waits for an admin poll's larger budget.
	if budget.limit-budget.Load() >= 10 && h.d.Now().Before(deadline) {
		if jobs, err := checks.Jobs(ctx, 1, true); err == nil && len(jobs) > 0 {
			// Named in the summary only when it moved on.
			if after := h.advanceJob(ctx, db, checks, jobs[0], set, budget, deadline); after.Done != jobs[0].Done || after.State != jobs[0].State {
				job = jobs[0].ID
			}
		}
	}
	changed, errs := 0, 0
	for _, r := range recs {
		if r.Key.Status != r.Next.Status {
			changed++
		}
		if r.Result.Outcome == rotation.CheckError {
			errs++
		}
	}
	log.Printf("keypool cron: checked %d keys (%d changed, %d errors), pruned %d cooldowns and %d old rows, "+
		"refreshed %d model lists, advanced job %d, subrequests %d/%d, %v",
		len(recs), changed, errs, cooled, old, lists, job, budget.Load(), budget.limit, h.d.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// cronPrune drops ended cooldowns and history older than
// CHECK_HISTORY_DAYS (minute rollups after two days), and says how many
// cooldowns and other rows went.
func (h *Handler) cronPrune(ctx context.Context, db *sql.DB, keys *store.Keys, checks *store.Checks, budget *checkBudget, now int64) (cooled, old int64) {
	cooled, err := keys.PruneCooling(ctx, now)
	if err != nil {
		log.Printf("keypool cron: pruning cooldowns: %v", err)
	}
	days := h.cfg().CheckHistoryDays
	old, err = checks.Prune(ctx, now-days*86400000, now-86400000)
	if err != nil {
		log.Printf("keypool cron: pruning history: %v", err)
	}
	if n, err := store.On(db, budget).Audit().Prune(ctx, now-days*86400000); err == nil {
		old += n
	}
	// Minute rollups are kept two days; day rollups as long as history.
	if n, err := store.On(db, budget).Rollups().Prune(ctx, now-2*86400000, now-days*86400000); err == nil {
		old += n
	}
	return cooled, old
}

// cronCheckDue checks the keys that are due, most urgent first, as many
// as the budget leaves room for, and records what it found.
func (h *Handler) cronCheckDue(ctx context.Context, checks *store.Checks, set settings.Settings, budget *checkBudget, deadline time.Time, now int64) []store.CheckRecord {
	left := budget.limit - budget.Load() - cronWrites
	if left <= 1 {
		return nil
	}
	due, err := checks.Due(ctx, now, int(left))
	if err != nil {
		log.Printf("keypool cron: reading due keys: %v", err)
	}
	opts := defaultCheckOptions
	opts.Concurrency = h.cfg().CheckConcurrency
	recs := h.runChecks(ctx, due, set, opts, budget, cronWrites, deadline)
	if err := checks.RecordChecks(ctx, recs, h.d.Now().UnixMilli()); err != nil {
		log.Printf("keypool cron: recording checks: %v", err)
	}
	if changedAny(recs) {
		h.invalidate()
	}
	return recs
}

func changedAny(recs []store.CheckRecord) bool {
	for _, r := range recs {
		if r.Key.Status != r.Next.Status {
			return true
		}
	}
	return false
}
