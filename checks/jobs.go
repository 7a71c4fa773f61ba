package checks

import (
	"context"
	"database/sql"
	"log"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// jobChunk bounds the keys one advance of a job reads.
const jobChunk = 200

// advanceJob checks the next chunk of a job within budget and deadline.
// A job another advancer holds is left alone.
func (c *Checker) advanceJob(ctx context.Context, db *sql.DB, checks *store.Checks, j store.Job, set settings.Settings, budget *Budget, deadline time.Time) store.Job {
	now := c.Now()
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
		checks.Advance(ctx, j, j.Cursor, 0, 0, 0, nil, 0, c.Now().UnixMilli(), false)
		return j
	}
	// Keep what follows the checks: their three writes, the progress
	// saved and the job read back.
	recs := c.runChecks(ctx, keys, set, opts, budget, cronWrites+2, deadline)
	if err := checks.RecordChecks(ctx, recs, c.Now().UnixMilli()); err != nil {
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
		c.Invalidate()
	}
	finished := len(recs) == len(keys) && len(keys) < n
	spent := c.Now().Sub(now).Milliseconds()
	if err := checks.Advance(ctx, j, cursor, int64(len(recs)), int64(len(changes)), errs, changes, spent, c.Now().UnixMilli(), finished); err != nil {
		log.Printf("keypool: check job %d: saving progress: %v", j.ID, err)
	}
	if got, err := checks.Job(ctx, j.ID); err == nil {
		return got
	}
	return j
}

// parseJobOptions reads a stored job's options; they were validated when
// the job was created.
func parseJobOptions(s string) Options {
	o := DefaultOptions
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

// AdvanceJob advances a job within one admin request's budget
// (JOB_SUBREQUESTS, default 40 of the free plan's 50; 10 s).
func (c *Checker) AdvanceJob(ctx context.Context, db *sql.DB, j store.Job) store.Job {
	budget := &Budget{limit: c.Config().JobSubrequests, total: c.Queries}
	deadline := c.Now().Add(c.Config().JobTimeBudget)
	checks := store.On(db, budget).Checks()
	if b, err := c.Box(); err == nil {
		checks.Sealing(b)
	}
	return c.advanceJob(ctx, db, checks, j, c.Settings(ctx, db, c.Queries), budget, deadline)
}
