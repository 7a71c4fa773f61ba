//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testConcurrentAdmins: two admins edit, disable and delete the same 120
// keys at once while a check job runs over them. Every answer is a
// success or a 404 that says the key is gone (never a 500), no row is
// left pointing at a deleted key, and the job finishes.
func (f *faultRun) testConcurrentAdmins(t *testing.T) {
	w := f.w
	keys := make([]string, 120)
	for i := range keys {
		keys[i] = "sk-admins-" + strconv.Itoa(i) + "-" + randomHex(10)
	}
	w.importKeys(t, "openai", keys...)
	var ids []int64
	for _, k := range w.adminCall(t, "GET", "/admin/api/keys?provider=openai", "").json().Get("keys").Array() {
		if strings.HasPrefix(k.Get("key").String(), "sk-ad") {
			ids = append(ids, k.Get("id").Int())
		}
	}
	if len(ids) != len(keys) {
		t.Fatalf("found %d of the %d keys imported", len(ids), len(keys))
	}
	idList := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(ids)), ","), "[]")
	job := w.adminCall(t, "POST", "/admin/api/checks", `{"ids":[`+idList+`],"concurrency":3}`)
	if job.status != http.StatusAccepted {
		t.Fatalf("start a check job: %d %s", job.status, job.body)
	}
	jobID := job.json().Get("id").Int()

	// Admin one relabels and disables every key, one by one, then deletes
	// the second half in one bulk call; admin two, at the same time,
	// deletes every third key one by one, then clears the models of all.
	type op struct {
		what         string
		method, path string
		body         string
	}
	var one, two []op
	for _, id := range ids {
		path := "/admin/api/keys/" + strconv.FormatInt(id, 10)
		one = append(one, op{"PATCH " + path, "PATCH", path, `{"label":"edited by one","status":"disabled"}`})
		if id%3 == 0 {
			two = append(two, op{"DELETE " + path, "DELETE", path, ""})
		}
	}
	half := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(ids[len(ids)/2:])), ","), "[]")
	one = append(one, op{"bulk delete", "POST", "/admin/api/keys/bulk", `{"ids":[` + half + `],"action":"delete"}`})
	two = append(two, op{"bulk clear_models", "POST", "/admin/api/keys/bulk", `{"ids":[` + idList + `],"action":"clear_models"}`})
	type answer struct {
		what   string
		status int
		body   string
	}
	done := make(chan []answer, 2)
	for _, ops := range [][]op{one, two} {
		go func(ops []op) {
			var got []answer
			for _, o := range ops {
				r := w.adminCall(t, o.method, o.path, o.body)
				got = append(got, answer{o.what, r.status, string(r.body)})
			}
			done <- got
		}(ops)
	}
	all := append(<-done, <-done...)
	bad := 0
	for _, a := range all {
		ok := a.status == http.StatusOK ||
			(a.status == http.StatusNotFound && strings.Contains(a.body, `"message"`) && strings.Contains(strings.ToLower(a.body), "key"))
		if !ok {
			bad++
			if bad <= 5 {
				t.Errorf("%s: %d %s: want 200, or 404 saying the key is gone", a.what, a.status, tail(a.body, 300))
			}
		}
	}
	statuses := map[int]int{}
	for _, a := range all {
		statuses[a.status]++
	}
	t.Logf("concurrent admins: %d answers by status %v", len(all), statuses)

	// Each poll advances the job by a chunk; 120 keys take a few.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := w.adminCall(t, "GET", "/admin/api/checks/"+strconv.FormatInt(jobID, 10), "")
		state := r.json().Get("state").String()
		if r.status != http.StatusOK {
			t.Fatalf("poll the job: %d %s", r.status, r.body)
		}
		if state == "done" {
			t.Logf("job done: %d/%d checked", r.json().Get("done").Int(), r.json().Get("total").Int())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job is still %s after 90 s: %s", state, r.body)
		}
	}
	for _, table := range []string{"key_models", "key_events", "key_checks"} {
		rows := w.query(t, "SELECT COUNT(*) AS n FROM "+table+" WHERE key_id NOT IN (SELECT id FROM keys)")
		if len(rows) != 1 || rows[0].Get("n").Int() != 0 {
			t.Errorf("%s: %v rows point at deleted keys", table, rows)
		}
	}
	left := 0
	for _, k := range w.adminCall(t, "GET", "/admin/api/keys?provider=openai", "").json().Get("keys").Array() {
		if strings.HasPrefix(k.Get("key").String(), "sk-ad") {
			left++
		}
	}
	t.Logf("keys left: %d (of %d; %d deleted in bulk, every third one by one)", left, len(ids), len(ids)-len(ids)/2)
}
