package checks

import (
	"context"
	"database/sql"
	"log"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// cronWrites is the budget kept for what a cron run writes after its
// checks: the keys' state, the history rows, the events.
const cronWrites = 3

// Scheduled is the cron task. Within one invocation's subrequest budget
// (CHECK_SUBREQUESTS, default 45 of the free plan's 50) it prunes ended
// cooldowns and old history, checks the keys that are due, most urgent
// first, refreshes a stale model list, and advances a running check job,
// then logs one summary line.
func (c *Checker) Scheduled(ctx context.Context) error {
	start := c.Now()
	db, err := c.DB()
	if err != nil {
		log.Printf("keypool cron: no database: %v", err)
		return nil // an error returned here would crash the instance
	}
	budget := &Budget{limit: c.Config().CheckSubrequests, total: c.Queries}
	deadline := start.Add(c.Config().CheckTimeBudget)
	if err := store.On(db, budget).Ping(ctx); store.Unavailable(err) {
		// Every write would wait on D1 and every check's result be lost:
		// the next run tries again.
		log.Printf("keypool cron: D1 is not answering, so this run does nothing: %v", err)
		return nil
	}
	keys := store.On(db, budget).Keys()
	checks := store.On(db, budget).Checks()
	cooled, old := c.cronPrune(ctx, db, keys, checks, budget, start.UnixMilli())
	box, err := c.Box()
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
		c.Invalidate()
	}
	set := c.Settings(ctx, db, budget)
	recs := c.cronCheckDue(ctx, checks, set, budget, deadline, start.UnixMilli())
	lists := 0
	if budget.limit-budget.Load() >= 8 {
		lists = c.refreshStaleModels(ctx, db, 1, budget)
	}
	job := int64(0)
	// A job's chunk needs room for its reads and writes and a check; one
	// whose retries cost more waits for an admin poll's larger budget.
	if budget.limit-budget.Load() >= 10 && c.Now().Before(deadline) {
		if jobs, err := checks.Jobs(ctx, 1, true); err == nil && len(jobs) > 0 {
			// Named in the summary only when it moved on.
			if after := c.advanceJob(ctx, db, checks, jobs[0], set, budget, deadline); after.Done != jobs[0].Done || after.State != jobs[0].State {
				job = jobs[0].ID
			}
		}
	}
	changed, errs := tally(recs)
	log.Printf("keypool cron: checked %d keys (%d changed, %d errors), pruned %d cooldowns and %d old rows, "+
		"refreshed %d model lists, advanced job %d, subrequests %d/%d, %v",
		len(recs), changed, errs, cooled, old, lists, job, budget.Load(), budget.limit, c.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// tally counts the checked keys whose status changed and the checks that
// failed, for the run's summary line.
func tally(recs []store.CheckRecord) (changed, errs int) {
	for _, r := range recs {
		if r.Key.Status != r.Next.Status {
			changed++
		}
		if r.Result.Outcome == rotation.CheckError {
			errs++
		}
	}
	return changed, errs
}

// cronPrune drops ended cooldowns and history older than
// CHECK_HISTORY_DAYS (minute rollups after two days), and says how many
// cooldowns and other rows went.
func (c *Checker) cronPrune(ctx context.Context, db *sql.DB, keys *store.Keys, checks *store.Checks, budget *Budget, now int64) (cooled, old int64) {
	cooled, err := keys.PruneCooling(ctx, now)
	if err != nil {
		log.Printf("keypool cron: pruning cooldowns: %v", err)
	}
	days := c.Config().CheckHistoryDays
	old, err = checks.Prune(ctx, now-days*86400000, now-86400000)
	if err != nil {
		log.Printf("keypool cron: pruning history: %v", err)
	}
	if n, err := store.On(db, budget).Audit().Prune(ctx, now-days*86400000); err == nil {
		old += n
	}
	logDays := c.Config().RequestLogDays
	if n, err := store.On(db, budget).Requests().Prune(ctx, now-logDays*86400000, int(c.Config().RequestLogRows)); err == nil {
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
func (c *Checker) cronCheckDue(ctx context.Context, checks *store.Checks, set settings.Settings, budget *Budget, deadline time.Time, now int64) []store.CheckRecord {
	left := budget.limit - budget.Load() - cronWrites
	if left <= 1 {
		return nil
	}
	due, err := checks.Due(ctx, now, int(left))
	if err != nil {
		log.Printf("keypool cron: reading due keys: %v", err)
	}
	opts := DefaultOptions
	opts.Concurrency = c.Config().CheckConcurrency
	recs := c.runChecks(ctx, due, set, opts, budget, cronWrites, deadline)
	if err := checks.RecordChecks(ctx, recs, c.Now().UnixMilli()); err != nil {
		log.Printf("keypool cron: recording checks: %v", err)
	}
	if changedAny(recs) {
		c.Invalidate()
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
