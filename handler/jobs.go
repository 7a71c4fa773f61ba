package handler

import (
	"bytes"
	"database/sql"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/checks"
	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// The check-job routes:
//
//	POST   /admin/api/checks             start a job (body: which keys, pacing)
//	GET    /admin/api/checks             recent jobs
//	GET    /admin/api/checks/{id}        advance a running job one chunk, then its progress
//	DELETE /admin/api/checks/{id}        stop it
//	POST   /admin/api/checks/{id}/resume go on from where it stopped

// listCheckJobs answers the 20 most recent jobs.
func (h *Handler) listCheckJobs(w http.ResponseWriter, r *http.Request, _ adminCall) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	jobs, err := store.On(db, h.d.Queries).Checks().Jobs(r.Context(), 20, false)
	if err != nil {
		reply.Failed(w, err, "could not read the check jobs", "listing check jobs")
		return
	}
	var b jsonout.Builder
	b.Object().Key("jobs").Array()
	for _, j := range jobs {
		writeJob(&b, j, h.d.Now())
	}
	reply.JSON(w, http.StatusOK, b.EndArray().EndObject().Bytes())
}

// showCheckJob advances a running job one chunk and answers its progress.
func (h *Handler) showCheckJob(w http.ResponseWriter, r *http.Request, a adminCall) {
	h.withCheckJob(w, r, a.id, func(db *sql.DB, checks *store.Checks, j store.Job) (store.Job, error) {
		if j.State == store.JobRunning {
			j = h.checks().AdvanceJob(r.Context(), db, j)
		}
		return j, nil
	})
}

// stopCheckJob stops a job where it is.
func (h *Handler) stopCheckJob(w http.ResponseWriter, r *http.Request, a adminCall) {
	h.withCheckJob(w, r, a.id, func(_ *sql.DB, checks *store.Checks, j store.Job) (store.Job, error) {
		return checks.SetJobState(r.Context(), j.ID, store.JobStopped, h.d.Now().UnixMilli())
	})
}

// resumeCheckJob sets a stopped job running again and advances it a
// chunk.
func (h *Handler) resumeCheckJob(w http.ResponseWriter, r *http.Request, a adminCall) {
	h.withCheckJob(w, r, a.id, func(db *sql.DB, checks *store.Checks, j store.Job) (store.Job, error) {
		j, err := checks.SetJobState(r.Context(), j.ID, store.JobRunning, h.d.Now().UnixMilli())
		if err == nil && j.State == store.JobRunning {
			j = h.checks().AdvanceJob(r.Context(), db, j)
		}
		return j, err
	})
}

// withCheckJob reads job id, applies change to it and answers the job as
// change left it (404 for no such job).
func (h *Handler) withCheckJob(w http.ResponseWriter, r *http.Request, id int64,
	change func(*sql.DB, *store.Checks, store.Job) (store.Job, error)) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	checks := store.On(db, h.d.Queries).Checks()
	j, err := checks.Job(r.Context(), id)
	if errors.Is(err, store.ErrJobNotFound) {
		reply.NotFound("no check job " + strconv.FormatInt(id, 10)).Write(w)
		return
	}
	if err != nil {
		reply.Failed(w, err, "could not read the check job", "reading check job %d", id)
		return
	}
	if j, err = change(db, checks, j); err != nil {
		reply.Failed(w, err, "could not update the check job", "check job %d", id)
		return
	}
	var b jsonout.Builder
	writeJob(&b, j, h.d.Now())
	reply.JSON(w, http.StatusOK, b.Bytes())
}

// startCheckJob reads which keys to check — {"ids":[…]}, {"provider":…,
// "status":[…]}, or {} for all — and how: {"concurrency":1-6,
// "interval_ms":…, "jitter_ms":…, "retries":0-5, "retry_interval_ms":…}.
func (h *Handler) startCheckJob(w http.ResponseWriter, r *http.Request, _ adminCall) {
	db, ok := h.db(w)
	if !ok {
		return
	}
	checks := store.On(db, h.d.Queries).Checks()
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		reply.BadRequest(`want a JSON object, e.g. {"provider":"siliconflow","status":["blocked"],"concurrency":3}`, "").Write(w)
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
	bad.Write(w)
}

// createCheckJob stores a job and makes its first step at once.
func (h *Handler) createCheckJob(w http.ResponseWriter, r *http.Request, db *sql.DB, checks *store.Checks, filter, opts []byte) {
	ctx := r.Context()
	j, err := checks.CreateJob(ctx, string(filter), string(opts), h.d.Now().UnixMilli())
	if err != nil {
		reply.Failed(w, err, "could not create the check job", "creating a check job")
		return
	}
	if j.State == store.JobRunning {
		j = h.checks().AdvanceJob(ctx, db, j)
	}
	var b jsonout.Builder
	writeJob(&b, j, h.d.Now())
	reply.JSON(w, http.StatusAccepted, b.Bytes())
}

// jobFilter is which keys a job checks: "ids", "provider", "status"
// (all when none is given), or the error naming the wrong field.
func jobFilter(in gjson.Result) ([]byte, reply.Error) {
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
			return nil, reply.BadRequest("provider: unknown provider "+v.Raw+"; known: "+strings.Join(provider.Names(), ", "), "provider")
		}
		filter.Key("provider").String(v.String())
	}
	if v := in.Get("status"); v.Exists() {
		const want = "(active, blocked, exhausted, disabled)"
		if !v.IsArray() {
			return nil, reply.BadRequest("status: want an array of statuses "+want, "status")
		}
		filter.Key("status").Array()
		for _, x := range v.Array() {
			switch x.String() {
			case rotation.KeyActive, rotation.KeyBlocked, rotation.KeyExhausted, rotation.KeyDisabled:
				filter.String(x.String())
			default:
				return nil, reply.BadRequest("status: "+x.Raw+" is not a key status "+want, "status")
			}
		}
		filter.EndArray()
	}
	return filter.EndObject().Bytes(), reply.Error{}
}

// jobOptions is how a job checks, each option within its range, or the
// error naming the wrong one.
func jobOptions(in gjson.Result) ([]byte, reply.Error) {
	var opts jsonout.Builder
	opts.Object()
	for _, f := range []struct {
		name   string
		lo, hi int64
		deflt  int64
	}{
		{"concurrency", 1, 6, int64(checks.DefaultOptions.Concurrency)},
		{"interval_ms", 0, 60000, 0},
		{"jitter_ms", 0, 60000, 0},
		{"retries", 0, 5, int64(checks.DefaultOptions.Retries)},
		{"retry_interval_ms", 0, 60000, checks.DefaultOptions.RetryIntervalMS},
	} {
		n := f.deflt
		if v := in.Get(f.name); v.Exists() {
			if v.Type != gjson.Number || v.Float() != float64(v.Int()) || v.Int() < f.lo || v.Int() > f.hi {
				return nil, reply.BadRequest(f.name+": want a whole number from "+strconv.FormatInt(f.lo, 10)+" to "+strconv.FormatInt(f.hi, 10), f.name)
			}
			n = v.Int()
		}
		opts.Key(f.name).Int(n)
	}
	return opts.EndObject().Bytes(), reply.Error{}
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
