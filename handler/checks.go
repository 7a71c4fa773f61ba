package handler

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
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
func (h *Handler) runChecks(ctx context.Context, keys []store.CheckKey, set settings, opts checkOptions, budget *checkBudget, keep int64, deadline time.Time) []store.CheckRecord {
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
func (h *Handler) checkKey(ctx context.Context, k store.CheckKey, set settings, opts checkOptions) (rotation.CheckResult, int) {
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
	if model := set.checkModels[prov.Name]; model != "" && !prov.NoOpenAI {
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
	keys := store.NewKeys(db).Counting(budget)
	checks := store.NewChecks(db).Counting(budget)
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
	if n, err := store.NewAudit(db).Counting(budget).Prune(ctx, now-days*86400000); err == nil {
		old += n
	}
	// Minute rollups are kept two days; day rollups as long as history.
	if n, err := store.NewRollups(db).Counting(budget).Prune(ctx, now-2*86400000, now-days*86400000); err == nil {
		old += n
	}
	return cooled, old
}

// cronCheckDue checks the keys that are due, most urgent first, as many
// as the budget leaves room for, and records what it found.
func (h *Handler) cronCheckDue(ctx context.Context, checks *store.Checks, set settings, budget *checkBudget, deadline time.Time, now int64) []store.CheckRecord {
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

// jobChunk bounds the keys one advance of a job reads.
const jobChunk = 200

// advanceJob checks the next chunk of a job within budget and deadline.
// A job another advancer holds is left alone.
func (h *Handler) advanceJob(ctx context.Context, db *sql.DB, checks *store.Checks, j store.Job, set settings, budget *checkBudget, deadline time.Time) store.Job {
	now := h.d.Now()
	if ok, err := checks.Claim(ctx, j.ID, now.UnixMilli(), now.Add(2*time.Minute).UnixMilli()); err != nil || !ok {
		return j
	}
	// Another advancer may have moved the job on since j was read.
	if fresh, err := checks.Job(ctx, j.ID); err == nil {
		j = fresh
	}
	opts := parseJobOptions(j.Options)
	n := int(min(int64(jobChunk), max(budget.limit-budget.Load(), 1)))
	keys, err := checks.JobKeys(ctx, j, n)
	if err != nil {
		log.Printf("keypool: check job %d: reading keys: %v", j.ID, err)
		checks.Advance(ctx, j, j.Cursor, 0, 0, 0, nil, 0, h.d.Now().UnixMilli(), false)
		return j
	}
	// Keep what follows the checks: their three writes, the progress
	// saved and the job read back.
	recs := h.runChecks(ctx, keys, set, opts, budget, cronWrites+2, deadline)
	if err := checks.RecordChecks(ctx, recs, h.d.Now().UnixMilli()); err != nil {
		log.Printf("keypool: check job %d: recording: %v", j.ID, err)
		recs = nil
	}
	cursor := j.Cursor
	var changes []store.JobChange
	errs := int64(0)
	for _, r := range recs {
		cursor = r.Key.ID
		if r.Key.Status != r.Next.Status {
			changes = append(changes, store.JobChange{ID: r.Key.ID, From: r.Key.Status, To: r.Next.Status})
		}
		if r.Result.Outcome == rotation.CheckError {
			errs++
		}
	}
	if len(changes) > 0 {
		h.invalidate()
	}
	finished := len(recs) == len(keys) && len(keys) < n
	spent := h.d.Now().Sub(now).Milliseconds()
	if err := checks.Advance(ctx, j, cursor, int64(len(recs)), int64(len(changes)), errs, changes, spent, h.d.Now().UnixMilli(), finished); err != nil {
		log.Printf("keypool: check job %d: saving progress: %v", j.ID, err)
	}
	if got, err := checks.Job(ctx, j.ID); err == nil {
		return got
	}
	return j
}

// parseJobOptions reads a stored job's options; they were validated when
// the job was created.
func parseJobOptions(s string) checkOptions {
	o := defaultCheckOptions
	r := gjson.Parse(s)
	if v := r.Get("concurrency"); v.Exists() {
		o.Concurrency = int(v.Int())
	}
	o.IntervalMS = r.Get("interval_ms").Int()
	o.JitterMS = r.Get("jitter_ms").Int()
	if v := r.Get("retries"); v.Exists() {
		o.Retries = int(v.Int())
	}
	if v := r.Get("retry_interval_ms"); v.Exists() {
		o.RetryIntervalMS = v.Int()
	}
	return o
}

// adminChecks serves /admin/api/checks[/{id}[/resume]]:
//
//	POST   /admin/api/checks             start a job (body: which keys, pacing)
//	GET    /admin/api/checks             recent jobs
//	GET    /admin/api/checks/{id}        advance a running job one chunk, then its progress
//	DELETE /admin/api/checks/{id}        stop it
//	POST   /admin/api/checks/{id}/resume go on from where it stopped
func (h *Handler) adminChecks(w http.ResponseWriter, r *http.Request, db *sql.DB, rest string) {
	checks := store.NewChecks(db).Counting(h.d.Queries)
	if rest == "" {
		switch r.Method {
		case http.MethodPost:
			h.startCheckJob(w, r, db, checks)
		case http.MethodGet:
			h.listCheckJobs(w, r, checks)
		default:
			methodNotAllowed(w, "GET, POST")
		}
		return
	}
	h.checkJob(w, r, db, checks, rest)
}

// listCheckJobs answers the 20 most recent jobs.
func (h *Handler) listCheckJobs(w http.ResponseWriter, r *http.Request, checks *store.Checks) {
	jobs, err := checks.Jobs(r.Context(), 20, false)
	if err != nil {
		failed(w, err, "could not read the check jobs", "listing check jobs")
		return
	}
	var b jsonout.Builder
	b.Object().Key("jobs").Array()
	for _, j := range jobs {
		writeJob(&b, j, h.d.Now())
	}
	writeJSON(w, http.StatusOK, b.EndArray().EndObject().Bytes())
}

// checkJob serves /admin/api/checks/{id}[/resume] (rest: what follows
// /checks/).
func (h *Handler) checkJob(w http.ResponseWriter, r *http.Request, db *sql.DB, checks *store.Checks, rest string) {
	ctx := r.Context()
	idText, action, _ := strings.Cut(rest, "/")
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 || (action != "" && action != "resume") {
		notFound("no admin route " + r.Method + " " + r.URL.Path).write(w)
		return
	}
	j, err := checks.Job(ctx, id)
	if errors.Is(err, store.ErrJobNotFound) {
		notFound("no check job " + idText).write(w)
		return
	}
	if err != nil {
		failed(w, err, "could not read the check job", "reading check job %d", id)
		return
	}
	switch {
	case action == "resume" && r.Method == http.MethodPost:
		if j, err = checks.SetJobState(ctx, id, store.JobRunning, h.d.Now().UnixMilli()); err == nil && j.State == store.JobRunning {
			j = h.advanceOnce(ctx, db, j)
		}
	case action == "resume":
		methodNotAllowed(w, "POST")
		return
	case r.Method == http.MethodGet:
		if j.State == store.JobRunning {
			j = h.advanceOnce(ctx, db, j)
		}
	case r.Method == http.MethodDelete:
		j, err = checks.SetJobState(ctx, id, store.JobStopped, h.d.Now().UnixMilli())
	default:
		methodNotAllowed(w, "GET, DELETE")
		return
	}
	if err != nil {
		failed(w, err, "could not update the check job", "check job %d", id)
		return
	}
	var b jsonout.Builder
	writeJob(&b, j, h.d.Now())
	writeJSON(w, http.StatusOK, b.Bytes())
}

// advanceOnce advances a job within one admin request's budget
// (JOB_SUBREQUESTS, default 40 of the free plan's 50; 10 s).
func (h *Handler) advanceOnce(ctx context.Context, db *sql.DB, j store.Job) store.Job {
	budget := &checkBudget{limit: h.cfg().JobSubrequests, total: h.d.Queries}
	deadline := h.d.Now().Add(h.cfg().JobTimeBudget)
	checks := store.NewChecks(db).Counting(budget)
	if b, err := h.box(); err == nil {
		checks.Sealing(b)
	}
	return h.advanceJob(ctx, db, checks, j, h.settings(ctx, db), budget, deadline)
}

// startCheckJob reads which keys to check — {"ids":[…]}, {"provider":…,
// "status":[…]}, or {} for all — and how: {"concurrency":1-6,
// "interval_ms":…, "jitter_ms":…, "retries":0-5, "retry_interval_ms":…}.
func (h *Handler) startCheckJob(w http.ResponseWriter, r *http.Request, db *sql.DB, checks *store.Checks) {
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		badRequest(`want a JSON object, e.g. {"provider":"siliconflow","status":["blocked"],"concurrency":3}`, "").write(w)
		return
	}
	in := gjson.ParseBytes(body)
	filter, bad := jobFilter(in)
	if bad.Status == 0 {
		var opts []byte
		opts, bad = jobOptions(in)
		if bad.Status == 0 {
			h.createCheckJob(w, r, db, checks, filter, opts)
			return
		}
	}
	bad.write(w)
}

// createCheckJob stores a job and makes its first step at once.
func (h *Handler) createCheckJob(w http.ResponseWriter, r *http.Request, db *sql.DB, checks *store.Checks, filter, opts []byte) {
	ctx := r.Context()
	j, err := checks.CreateJob(ctx, string(filter), string(opts), h.d.Now().UnixMilli())
	if err != nil {
		failed(w, err, "could not create the check job", "creating a check job")
		return
	}
	if j.State == store.JobRunning {
		j = h.advanceOnce(ctx, db, j)
	}
	var b jsonout.Builder
	writeJob(&b, j, h.d.Now())
	writeJSON(w, http.StatusAccepted, b.Bytes())
}

// jobFilter is which keys a job checks: "ids", "provider", "status"
// (all when none is given), or the error naming the wrong field.
func jobFilter(in gjson.Result) ([]byte, apiError) {
	var filter jsonout.Builder
	filter.Object()
	if v := in.Get("ids"); v.Exists() {
		ids, bad := keyIDs(v, "ids", 0)
		if bad.Status != 0 {
			return nil, bad
		}
		filter.Key("ids").Raw(jsonout.IntArray(ids))
	}
	if v := in.Get("provider"); v.Exists() {
		if _, known := provider.Lookup(v.String()); v.Type != gjson.String || !known {
			return nil, badRequest("provider: unknown provider "+v.Raw+"; known: "+strings.Join(provider.Names(), ", "), "provider")
		}
		filter.Key("provider").String(v.String())
	}
	if v := in.Get("status"); v.Exists() {
		const want = "(active, blocked, exhausted, disabled)"
		if !v.IsArray() {
			return nil, badRequest("status: want an array of statuses "+want, "status")
		}
		filter.Key("status").Array()
		for _, x := range v.Array() {
			switch x.String() {
			case rotation.KeyActive, rotation.KeyBlocked, rotation.KeyExhausted, rotation.KeyDisabled:
				filter.String(x.String())
			default:
				return nil, badRequest("status: "+x.Raw+" is not a key status "+want, "status")
			}
		}
		filter.EndArray()
	}
	return filter.EndObject().Bytes(), apiError{}
}

// jobOptions is how a job checks, each option within its range, or the
// error naming the wrong one.
func jobOptions(in gjson.Result) ([]byte, apiError) {
	var opts jsonout.Builder
	opts.Object()
	for _, f := range []struct {
		name   string
		lo, hi int64
		deflt  int64
	}{
		{"concurrency", 1, 6, int64(defaultCheckOptions.Concurrency)},
		{"interval_ms", 0, 60000, 0},
		{"jitter_ms", 0, 60000, 0},
		{"retries", 0, 5, int64(defaultCheckOptions.Retries)},
		{"retry_interval_ms", 0, 60000, defaultCheckOptions.RetryIntervalMS},
	} {
		n := f.deflt
		if v := in.Get(f.name); v.Exists() {
			if v.Type != gjson.Number || v.Float() != float64(v.Int()) || v.Int() < f.lo || v.Int() > f.hi {
				return nil, badRequest(f.name+": want a whole number from "+strconv.FormatInt(f.lo, 10)+" to "+strconv.FormatInt(f.hi, 10), f.name)
			}
			n = v.Int()
		}
		opts.Key(f.name).Int(n)
	}
	return opts.EndObject().Bytes(), apiError{}
}

// writeJob writes a job's progress: counts, percent, rate (keys per
// second of checking) and the estimated time left.
func writeJob(b *jsonout.Builder, j store.Job, now time.Time) {
	b.Object().Key("id").Int(j.ID).Key("state").String(j.State).
		Key("filter").Raw([]byte(j.Filter)).Key("options").Raw([]byte(j.Options)).
		Key("total").Int(j.Total).Key("done").Int(j.Done).Key("changed").Int(j.Changed).Key("errors").Int(j.Errors)
	percent := 100.0
	if j.Total > 0 {
		percent = float64(j.Done) * 100 / float64(j.Total)
	}
	b.Key("percent").Float(float64(int(percent*10)) / 10)
	b.Key("rate_per_s")
	if j.RunMS > 0 && j.Done > 0 {
		rate := float64(j.Done) * 1000 / float64(j.RunMS)
		b.Float(float64(int(rate*100)) / 100)
		b.Key("eta_s").Int(int64(float64(j.Total-j.Done) / rate))
	} else {
		b.Null().Key("eta_s").Null()
	}
	b.Key("changed_keys").Array()
	for _, c := range gjson.Parse(j.ChangedKeys).Array() {
		a := c.Array()
		if len(a) == 3 {
			b.Object().Key("id").Int(a[0].Int()).Key("from").String(a[1].String()).Key("to").String(a[2].String()).EndObject()
		}
	}
	b.EndArray().Key("created_at").Int(j.CreatedAt).Key("updated_at").Int(j.UpdatedAt).EndObject()
}
