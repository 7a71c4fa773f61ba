package store_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

const day0 int64 = 1_699_920_000_000 // a UTC midnight before t0

func sampleToken(name string) store.Token {
	return store.Token{Name: name, Prefix: "kp-Ab" + name[:1], Providers: []string{"openai", "groq"},
		Models: []string{"gpt-*", "groq/llama-*"}, ExpiresAt: t0 + 86_400_000, RPM: 10, RequestsDay: 100,
		RequestsTotal: 1000, TokensDay: 5000, TokensTotal: 50000}
}

func TestTokensCRUD(t *testing.T) {
	db := sqlitetest.Open(t)
	st := store.On(db, nil).Tokens()

	a, err := st.Create(ctx, sampleToken("alpha"), "hash-a", t0)
	if err != nil || a.ID <= 0 || a.CreatedAt != t0 || a.UpdatedAt != t0 {
		t.Fatalf("Create = %+v, %v", a, err)
	}
	b, err := st.Create(ctx, store.Token{Name: "beta", Prefix: "kp-Bbbb"}, "hash-b", t0+1)
	if err != nil || b.ID <= a.ID {
		t.Fatalf("Create beta = %+v, %v", b, err)
	}
	if _, err := st.Create(ctx, store.Token{Name: "dup", Prefix: "kp-x"}, "hash-a", t0); err == nil {
		t.Errorf("Create with a hash already stored succeeded")
	}

	got, err := st.Get(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleToken("alpha")
	want.ID, want.CreatedAt, want.UpdatedAt, want.Endpoints = a.ID, t0, t0, store.EndpointsInference
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get:\n got %+v\nwant %+v", got, want)
	}
	if byHash, err := st.ByHash(ctx, "hash-a"); err != nil || !reflect.DeepEqual(byHash, want) {
		t.Errorf("ByHash = %+v, %v", byHash, err)
	}
	gb, err := st.Get(ctx, b.ID)
	if err != nil || len(gb.Providers) != 0 || len(gb.Models) != 0 || gb.ExpiresAt != 0 || gb.Disabled {
		t.Errorf("Get beta (no scope) = %+v, %v", gb, err)
	}
	// The hash is stored, the token name and prefix too; nothing else.
	var hash string
	if err := db.QueryRow(`SELECT hash FROM tokens WHERE id = ?`, a.ID).Scan(&hash); err != nil || hash != "hash-a" {
		t.Errorf("stored hash %q, %v", hash, err)
	}

	list, err := st.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID {
		t.Fatalf("List = %+v, %v; want alpha then beta", list, err)
	}

	// Update changes the scopes and limits but keeps the counters.
	mustExec(t, db, `UPDATE tokens SET used_requests = 7, used_tokens = 70, day = ?, day_requests = 3, day_tokens = 30, last_used_at = ? WHERE id = ?`,
		day0, t0+5, a.ID)
	upd := got
	upd.Name, upd.Providers, upd.Models, upd.Disabled, upd.RPM = "alpha 2", []string{"mistral"}, nil, true, 0
	upd.UsedRequests, upd.DayRequests = 999, 999 // ignored
	if err := st.Update(ctx, upd, t0+10); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Get(ctx, a.ID)
	if got.Name != "alpha 2" || !reflect.DeepEqual(got.Providers, []string{"mistral"}) || len(got.Models) != 0 ||
		!got.Disabled || got.RPM != 0 || got.RequestsDay != 100 || got.UpdatedAt != t0+10 || got.CreatedAt != t0 {
		t.Errorf("after Update: %+v", got)
	}
	if got.UsedRequests != 7 || got.UsedTokens != 70 || got.Day != day0 || got.DayRequests != 3 || got.DayTokens != 30 || got.LastUsedAt != t0+5 {
		t.Errorf("Update changed the counters: %+v", got)
	}

	if err := st.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	notFound := []struct {
		name string
		err  error
	}{
		{"Get deleted", func() error { _, err := st.Get(ctx, a.ID); return err }()},
		{"ByHash deleted", func() error { _, err := st.ByHash(ctx, "hash-a"); return err }()},
		{"ByHash unknown", func() error { _, err := st.ByHash(ctx, "nope"); return err }()},
		{"Get unknown", func() error { _, err := st.Get(ctx, 9999); return err }()},
		{"Update deleted", st.Update(ctx, upd, t0)},
		{"Delete again", st.Delete(ctx, a.ID)},
		{"Delete unknown", st.Delete(ctx, 9999)},
	}
	for _, tc := range notFound {
		if !errors.Is(tc.err, store.ErrTokenNotFound) {
			t.Errorf("%s: %v, want ErrTokenNotFound", tc.name, tc.err)
		}
	}
	if list, err := st.List(ctx); err != nil || len(list) != 1 || list[0].ID != b.ID {
		t.Errorf("List after Delete = %+v, %v", list, err)
	}
}

func TestTokensListEmpty(t *testing.T) {
	list, err := store.On(sqlitetest.Open(t), nil).Tokens().List(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("List = %v, %v; want none", list, err)
	}
}

func TestTokenAddUsage(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	st := store.On(db, &n).Tokens()
	var ids []int64
	for i := 0; i < 5; i++ {
		x, err := st.Create(ctx, store.Token{Name: fmt.Sprint("t", i), Prefix: "kp-x"}, fmt.Sprint("h", i), t0)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, x.ID)
	}
	const day1 = day0 + 86_400_000
	type counters struct{ req, tok, day, dayReq, dayTok, last int64 }
	read := func(id int64) counters {
		t.Helper()
		x, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return counters{x.UsedRequests, x.UsedTokens, x.Day, x.DayRequests, x.DayTokens, x.LastUsedAt}
	}
	steps := []struct {
		name  string
		usage []store.TokenUsage
		want  map[int]counters // by index into ids
	}{
		{"first use", []store.TokenUsage{
			{ID: ids[0], Day: day0, Requests: 2, Tokens: 20, LastUsed: t0},
			{ID: ids[1], Day: day0, Requests: 1, Tokens: 5, LastUsed: t0 + 1},
		}, map[int]counters{0: {2, 20, day0, 2, 20, t0}, 1: {1, 5, day0, 1, 5, t0 + 1}, 2: {}}},
		{"same day sums", []store.TokenUsage{
			{ID: ids[0], Day: day0, Requests: 3, Tokens: 30, LastUsed: t0 + 10},
		}, map[int]counters{0: {5, 50, day0, 5, 50, t0 + 10}, 1: {1, 5, day0, 1, 5, t0 + 1}}},
		{"next day restarts the day counters", []store.TokenUsage{
			{ID: ids[0], Day: day1, Requests: 1, Tokens: 7, LastUsed: t0 + 20},
			{ID: ids[2], Day: day1, Requests: 4, Tokens: 0, LastUsed: t0 + 20},
		}, map[int]counters{0: {6, 57, day1, 1, 7, t0 + 20}, 1: {1, 5, day0, 1, 5, t0 + 1}, 2: {4, 0, day1, 4, 0, t0 + 20}}},
		{"older last use keeps the latest", []store.TokenUsage{
			{ID: ids[0], Day: day1, Requests: 1, Tokens: 1, LastUsed: t0 - 5},
		}, map[int]counters{0: {7, 58, day1, 2, 8, t0 + 20}}},
		// A late write of the previous day's use (another isolate's) adds
		// to the totals and leaves the current day's counters alone.
		{"late use of the previous day", []store.TokenUsage{
			{ID: ids[0], Day: day0, Requests: 10, Tokens: 100, LastUsed: t0 + 1},
		}, map[int]counters{0: {17, 158, day1, 2, 8, t0 + 20}}},
		{"unknown id ignored", []store.TokenUsage{
			{ID: 9999, Day: day1, Requests: 1, Tokens: 1, LastUsed: t0},
			{ID: ids[3], Day: day1, Requests: 1, Tokens: 2, LastUsed: t0 + 30},
		}, map[int]counters{3: {1, 2, day1, 1, 2, t0 + 30}}},
	}
	for _, s := range steps {
		n.Store(0)
		if err := st.AddUsage(ctx, s.usage); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := n.Load(); got != 1 {
			t.Errorf("%s: %d round trips, want 1", s.name, got)
		}
		for i, want := range s.want {
			if got := read(ids[i]); got != want {
				t.Errorf("%s: token %d counters %+v, want %+v", s.name, i, got, want)
			}
		}
	}

	// Many tokens, one statement.
	var many []store.TokenUsage
	for i := 0; i < 300; i++ {
		x, err := st.Create(ctx, store.Token{Name: "bulk", Prefix: "kp-x"}, fmt.Sprint("bulk", i), t0)
		if err != nil {
			t.Fatal(err)
		}
		many = append(many, store.TokenUsage{ID: x.ID, Day: day1, Requests: int64(i + 1), Tokens: 1, LastUsed: t0})
	}
	n.Store(0)
	if err := st.AddUsage(ctx, many); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("AddUsage of 300 tokens: %d round trips, want 1", got)
	}
	for i, u := range many {
		if got := read(u.ID); got.req != int64(i+1) || got.dayReq != int64(i+1) || got.day != day1 {
			t.Fatalf("bulk token %d: %+v", i, got)
		}
	}
	// One token listed twice (the use of two days): both count in the
	// totals, only the later day in the day counters; one statement more.
	x, err := st.Create(ctx, store.Token{Name: "two days", Prefix: "kp-x"}, "two-days", t0)
	if err != nil {
		t.Fatal(err)
	}
	const day2 = day1 + 86_400_000
	for _, order := range [][]store.TokenUsage{
		{{ID: x.ID, Day: day1, Requests: 2, Tokens: 20, LastUsed: t0}, {ID: x.ID, Day: day2, Requests: 3, Tokens: 30, LastUsed: t0 + 1}, {ID: ids[4], Day: day2, Requests: 1, LastUsed: t0}},
		{{ID: x.ID, Day: day2, Requests: 3, Tokens: 30, LastUsed: t0 + 1}, {ID: x.ID, Day: day1, Requests: 2, Tokens: 20, LastUsed: t0}},
	} {
		mustExec(t, db, `UPDATE tokens SET used_requests = 0, used_tokens = 0, day = 0, day_requests = 0, day_tokens = 0, last_used_at = 0 WHERE id = ?`, x.ID)
		n.Store(0)
		if err := st.AddUsage(ctx, order); err != nil {
			t.Fatal(err)
		}
		if got := n.Load(); got != 2 {
			t.Errorf("AddUsage with a token twice: %d round trips, want 2", got)
		}
		if got, want := read(x.ID), (counters{5, 50, day2, 3, 30, t0 + 1}); got != want {
			t.Errorf("token used on two days: %+v, want %+v", got, want)
		}
	}
	if got := read(ids[4]); got.req != 1 {
		t.Errorf("the other token in the batch: %+v", got)
	}

	n.Store(0)
	if err := st.AddUsage(ctx, nil); err != nil || n.Load() != 0 {
		t.Errorf("AddUsage(nil): %v, %d round trips; want none", err, n.Load())
	}
}

func TestAudit(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	a := store.On(db, &n).Audit()
	for i := 1; i <= 7; i++ {
		e := store.Entry{At: t0 + int64(i)*1000, Actor: "password", IP: fmt.Sprint("10.0.0.", i),
			Action: fmt.Sprint("POST /admin/api/keys#", i), Target: fmt.Sprint("keys/", i), Detail: "status 201"}
		if err := a.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if n.Load() != 7 {
		t.Errorf("7 Adds: %d round trips", n.Load())
	}
	actions := func(es []store.Entry) string {
		var s []string
		for _, e := range es {
			s = append(s, strings.TrimPrefix(e.Action, "POST /admin/api/keys#"))
		}
		return strings.Join(s, ",")
	}
	first, err := a.Page(ctx, 0, 3)
	if err != nil || actions(first) != "7,6,5" {
		t.Fatalf("Page(0, 3) = %q, %v; want 7,6,5", actions(first), err)
	}
	if e := first[0]; e.ID <= 0 || e.At != t0+7000 || e.Actor != "password" || e.IP != "10.0.0.7" || e.Target != "keys/7" || e.Detail != "status 201" {
		t.Errorf("newest entry %+v", e)
	}
	pages := []struct {
		before int64
		limit  int
		want   string
	}{
		{first[2].ID, 3, "4,3,2"},
		{first[2].ID, 10, "4,3,2,1"},
		{first[0].ID, 1, "6"},
		{1, 10, ""},
		{0, 100, "7,6,5,4,3,2,1"},
	}
	for _, p := range pages {
		got, err := a.Page(ctx, p.before, p.limit)
		if err != nil || actions(got) != p.want {
			t.Errorf("Page(%d, %d) = %q, %v; want %q", p.before, p.limit, actions(got), err, p.want)
		}
	}
	// Prune drops entries strictly older than the time given.
	if got, err := a.Prune(ctx, t0+3000); err != nil || got != 2 {
		t.Errorf("Prune = %d, %v; want 2", got, err)
	}
	if got, _ := a.Page(ctx, 0, 100); actions(got) != "7,6,5,4,3" {
		t.Errorf("after Prune: %q, want 7,6,5,4,3", actions(got))
	}
	if got, err := a.Prune(ctx, t0); err != nil || got != 0 {
		t.Errorf("Prune of nothing = %d, %v", got, err)
	}
}

func TestLoginFailures(t *testing.T) {
	db := sqlitetest.Open(t)
	a := store.On(db, nil).Audit()
	const window = 15 * 60_000
	steps := []struct {
		name      string
		ip        string
		now       int64
		fail      bool  // record a failure (else only read)
		success   bool  // record a success
		want      int64 // failures counted (returned by LoginAttempt)
		wantSince int64 // the window's start, when there are failures
	}{
		{"none yet", "1.1.1.1", t0, false, false, 0, 0},
		{"first", "1.1.1.1", t0, true, false, 1, t0},
		{"second", "1.1.1.1", t0 + 1000, true, false, 2, t0},
		{"read", "1.1.1.1", t0 + 2000, false, false, 2, t0},
		{"another ip apart", "2.2.2.2", t0 + 2000, true, false, 1, t0 + 2000},
		{"third, end of window", "1.1.1.1", t0 + window - 1, true, false, 3, t0},
		{"read at end of window", "1.1.1.1", t0 + window - 1, false, false, 3, t0},
		{"read after the window", "1.1.1.1", t0 + window, false, false, 0, 0},
		{"failure after the window restarts", "1.1.1.1", t0 + window + 5, true, false, 1, t0 + window + 5},
		{"counts on in the new window", "1.1.1.1", t0 + window + 6, true, false, 2, t0 + window + 5},
		{"success clears", "1.1.1.1", t0 + window + 7, false, true, 0, 0},
		{"after success", "1.1.1.1", t0 + window + 8, true, false, 1, t0 + window + 8},
		{"other ip untouched", "2.2.2.2", t0 + 3000, false, false, 1, t0 + 2000},
	}
	for _, s := range steps {
		if s.success {
			if err := a.LoginSuccess(ctx, s.ip); err != nil {
				t.Fatal(err)
			}
		}
		got, since, err := a.LoginAttempt(ctx, s.ip, s.fail, s.now, window)
		if err != nil || got != s.want || got > 0 && since != s.wantSince {
			t.Errorf("%s: LoginAttempt(failed %v) = %d since %d, %v; want %d since %d", s.name, s.fail, got, since, err, s.want, s.wantSince)
		}
	}
	if err := a.LoginSuccess(ctx, "never-failed"); err != nil {
		t.Errorf("LoginSuccess of an unknown ip: %v", err)
	}
}

// Sealed keys.

func boxes(t *testing.T) (*seal.Box, *seal.Box) {
	t.Helper()
	a, err := seal.New("store-test-master-secret-A")
	if err != nil {
		t.Fatal(err)
	}
	b, err := seal.New("store-test-master-secret-B")
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestSealedAdd(t *testing.T) {
	box, _ := boxes(t)
	db := sqlitetest.Open(t)
	k := store.On(db, nil).Keys().Sealing(box)
	ss := []string{"sk-sealed-aaaa-0000000", "sk-sealed-bbbb-0000000"}
	added, dups, err := k.Add(ctx, "openai", "lbl", ss, t0)
	if err != nil || len(added) != 2 || len(dups) != 0 {
		t.Fatalf("Add = %d added, %q, %v", len(added), dups, err)
	}
	for i, a := range added {
		if a.Secret != ss[i] || a.Masked != provider.Mask(ss[i]) || a.ID <= 0 {
			t.Errorf("added[%d] = %+v", i, a)
		}
		var secret, fp, masked string
		if err := db.QueryRow(`SELECT secret, fingerprint, masked FROM keys WHERE id = ?`, a.ID).Scan(&secret, &fp, &masked); err != nil {
			t.Fatal(err)
		}
		if !seal.IsSealed(secret) || strings.Contains(secret, ss[i]) || fp != box.Fingerprint(ss[i], "openai") || masked != provider.Mask(ss[i]) {
			t.Errorf("row %d stored as secret %q fingerprint %q masked %q", a.ID, secret, fp, masked)
		}
		if plain, err := box.Open(secret, "openai"); err != nil || plain != ss[i] {
			t.Errorf("row %d opens to %q, %v", a.ID, plain, err)
		}
	}

	// The same keys again (sealed differently each time) are duplicates:
	// the fingerprint finds them.
	steps := []struct {
		name      string
		prov      string
		in        []string
		wantAdded int
		wantDups  []string
	}{
		{"same keys again", "openai", ss, 0, ss},
		{"one new, one old, one repeated", "openai", []string{"sk-sealed-cccc-0000000", ss[0], "sk-sealed-cccc-0000000"}, 1,
			[]string{"sk-sealed-cccc-0000000", ss[0]}},
		{"same key, other provider", "groq", []string{ss[0]}, 1, nil},
		{"again under the other provider", "groq", []string{ss[0]}, 0, []string{ss[0]}},
	}
	for _, s := range steps {
		added, dups, err := k.Add(ctx, s.prov, "", s.in, t0)
		if err != nil || len(added) != s.wantAdded || strings.Join(dups, ",") != strings.Join(s.wantDups, ",") {
			t.Errorf("%s: %d added, duplicates %q, %v; want %d and %q", s.name, len(added), dups, err, s.wantAdded, s.wantDups)
		}
	}
	if n := count(t, db, `SELECT COUNT(*) FROM keys`); n != 4 {
		t.Errorf("%d rows, want 4 (three openai, one groq)", n)
	}

	// Listings show the mask, never the key nor its sealed form.
	list, err := k.List(ctx, "")
	if err != nil || len(list) != 4 {
		t.Fatalf("List = %d keys, %v", len(list), err)
	}
	for _, x := range list {
		if x.Secret != "" || x.Masked == "" || !strings.Contains(x.Masked, "…") {
			t.Errorf("listed key %d: Secret %q Masked %q", x.ID, x.Secret, x.Masked)
		}
	}
	got, _, err := k.Get(ctx, added[0].ID, 1)
	if err != nil || got.Secret != "" || got.Masked != provider.Mask(ss[0]) {
		t.Errorf("Get = %+v, %v; want masked only", got, err)
	}

	// The proxy gets the key itself.
	cands, err := k.Candidates(ctx, "openai", "gpt-4o", t0, 10, false)
	if err != nil || len(cands) != 3 {
		t.Fatalf("Candidates = %+v, %v", cands, err)
	}
	want := map[string]bool{ss[0]: true, ss[1]: true, "sk-sealed-cccc-0000000": true}
	for _, c := range cands {
		if !want[c.Secret] {
			t.Errorf("candidate %d secret %q, want one of the plain keys", c.ID, c.Secret)
		}
		delete(want, c.Secret)
	}
	if g, err := k.Candidates(ctx, "groq", "m", t0, 10, true); err != nil || len(g) != 1 || g[0].Secret != ss[0] {
		t.Errorf("groq Candidates = %+v, %v", g, err)
	}

	// Reveal opens one key.
	if s, err := k.Reveal(ctx, added[1].ID); err != nil || s != ss[1] {
		t.Errorf("Reveal = %q, %v", s, err)
	}
	if _, err := k.Reveal(ctx, 9999); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Reveal(unknown) = %v, want ErrNotFound", err)
	}
	// Without a Sealer a sealed key does not open.
	if _, err := store.On(db, nil).Keys().Reveal(ctx, added[1].ID); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Reveal without a Sealer = %v, want ErrOpen", err)
	}
}

func TestSealedKeyMovedToAnotherProvider(t *testing.T) {
	box, _ := boxes(t)
	db := sqlitetest.Open(t)
	k := store.On(db, nil).Keys().Sealing(box)
	ids := mustAdd(t, k, "openai", "sk-moved-key-000000000")
	// The sealed value is bound to its provider: copied into another
	// provider's row it does not open.
	mustExec(t, db, `UPDATE keys SET provider = 'groq' WHERE id = ?`, ids[0])
	if _, err := k.Reveal(ctx, ids[0]); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Reveal of a moved key = %v, want ErrOpen", err)
	}
	if cs, err := k.Candidates(ctx, "groq", "m", t0, 10, false); err != nil || len(cs) != 0 {
		t.Errorf("Candidates = %+v, %v; want the moved key skipped", cs, err)
	}
}

func TestCandidatesSkipOtherSecret(t *testing.T) {
	box, other := boxes(t)
	db := sqlitetest.Open(t)
	mine := mustAdd(t, store.On(db, nil).Keys().Sealing(box), "openai", "sk-mine-00000000000")
	theirs := mustAdd(t, store.On(db, nil).Keys().Sealing(other), "openai", "sk-theirs-0000000000")
	plain := mustAdd(t, store.On(db, nil).Keys(), "openai", "sk-plain-0000000000")
	k := store.On(db, nil).Keys().Sealing(box)
	cs, err := k.Candidates(ctx, "openai", "m", t0, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, c := range cs {
		got[c.ID] = c.Secret
	}
	want := map[int64]string{mine[0]: "sk-mine-00000000000", plain[0]: "sk-plain-0000000000"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Candidates = %v, want %v (the key sealed under another secret skipped)", got, want)
	}
	if _, err := k.Reveal(ctx, theirs[0]); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Reveal of a key sealed under another secret = %v, want ErrOpen", err)
	}
	if s, err := k.Reveal(ctx, plain[0]); err != nil || s != "sk-plain-0000000000" {
		t.Errorf("Reveal of a plain key = %q, %v", s, err)
	}
}

func TestSealLegacy(t *testing.T) {
	box, _ := boxes(t)
	db := sqlitetest.Open(t)
	plainKeys := store.On(db, nil).Keys()
	legacy := []string{"sk-legacy-000000001", "sk-legacy-000000002", "sk-legacy-000000003", "sk-legacy-000000004"}
	ids := mustAdd(t, plainKeys, "openai", legacy...)
	gid := mustAdd(t, plainKeys, "groq", "gsk_legacy-000000001")
	// Stored before sealing: plain, no fingerprint, no mask.
	if n := count(t, db, `SELECT COUNT(*) FROM keys WHERE fingerprint = '' AND secret LIKE 'sk-legacy-%'`); n != 4 {
		t.Fatalf("%d plain rows, want 4", n)
	}
	// Some state that must survive sealing.
	mustExec(t, db, `UPDATE keys SET status = 'exhausted', requests = 9 WHERE id = ?`, ids[1])
	mustExec(t, db, `INSERT INTO key_models (key_id, model, state, until, reason, streak, updated_at) VALUES (?, 'm', 'blocked', 0, '', 0, ?)`, ids[1], t0)

	k := store.On(db, nil).Keys().Sealing(box)
	// The last legacy key was added again since, sealed: its plain row is
	// a duplicate and goes.
	dupOf := mustAdd(t, k, "openai", legacy[3])
	// A plain listing works before sealing (masked on the fly).
	list, err := k.List(ctx, "openai")
	if err != nil || len(list) != 5 {
		t.Fatalf("List = %d, %v", len(list), err)
	}
	if list[0].Masked != provider.Mask(legacy[0]) {
		t.Errorf("plain row listed with mask %q, want %q", list[0].Masked, provider.Mask(legacy[0]))
	}

	if _, err := plainKeys.SealLegacy(ctx, 10); err == nil {
		t.Errorf("SealLegacy without a Sealer succeeded")
	}
	n, err := k.SealLegacy(ctx, 2)
	if err != nil || n != 2 {
		t.Fatalf("SealLegacy(2) = %d, %v; want 2", n, err)
	}
	if left := count(t, db, `SELECT COUNT(*) FROM keys WHERE fingerprint = ''`); left != 3 {
		t.Errorf("%d rows left plain after sealing 2, want 3", left)
	}
	n, err = k.SealLegacy(ctx, 100)
	if err != nil || n != 2 {
		t.Errorf("SealLegacy(100) = %d, %v; want 2 (the third plain row was a duplicate, deleted)", n, err)
	}
	if n, err := k.SealLegacy(ctx, 100); err != nil || n != 0 {
		t.Errorf("SealLegacy with nothing left = %d, %v", n, err)
	}
	if left := count(t, db, `SELECT COUNT(*) FROM keys WHERE fingerprint = '' OR secret NOT LIKE 'v1:%'`); left != 0 {
		t.Errorf("%d rows still plain", left)
	}
	if c := count(t, db, `SELECT COUNT(*) FROM keys WHERE id = ?`, ids[3]); c != 0 {
		t.Errorf("the plain duplicate of a sealed key was kept")
	}
	if c := count(t, db, `SELECT COUNT(*) FROM keys`); c != 5 {
		t.Errorf("%d rows, want 5", c)
	}
	sealed := []struct {
		id           int64
		prov, secret string
	}{
		{ids[0], "openai", legacy[0]}, {ids[1], "openai", legacy[1]}, {ids[2], "openai", legacy[2]},
		{dupOf[0], "openai", legacy[3]}, {gid[0], "groq", "gsk_legacy-000000001"},
	}
	for _, x := range sealed {
		id, prov, secret := x.id, x.prov, x.secret
		var stored, fp, masked string
		if err := db.QueryRow(`SELECT secret, fingerprint, masked FROM keys WHERE id = ?`, id).Scan(&stored, &fp, &masked); err != nil {
			t.Fatal(err)
		}
		if !seal.IsSealed(stored) || strings.Contains(stored, secret) || fp != box.Fingerprint(secret, prov) || masked != provider.Mask(secret) {
			t.Errorf("key %d: stored %q fingerprint %q masked %q", id, stored, fp, masked)
		}
		if s, err := k.Reveal(ctx, id); err != nil || s != secret {
			t.Errorf("Reveal(%d) = %q, %v; want %q", id, s, err, secret)
		}
	}
	x, _ := mustGet(t, k, ids[1])
	if x.Status != store.StatusExhausted || x.Requests != 9 || len(x.Models) != 1 || x.Secret != "" {
		t.Errorf("sealing changed the key's state: %+v", x)
	}
	// Sealed, the legacy keys are found as duplicates.
	if added, dups, err := k.Add(ctx, "openai", "", legacy, t0); err != nil || len(added) != 0 || len(dups) != 4 {
		t.Errorf("Add of the legacy keys after sealing: %d added, %d duplicates, %v", len(added), len(dups), err)
	}
}

// corruptSealer seals like a Box, but its nth Seal (or, with fp, its nth
// Fingerprint) returns a value for another key: what memory corruption
// between sealing and writing would produce.
type corruptSealer struct {
	*seal.Box
	n, seals, fps int
	fp            bool
}

func (c *corruptSealer) Seal(plain, ad string) string {
	if c.seals++; c.seals == c.n && !c.fp {
		plain += "x"
	}
	return c.Box.Seal(plain, ad)
}

func (c *corruptSealer) Fingerprint(plain, ad string) string {
	if c.fps++; c.fps == c.n && c.fp {
		plain += "x"
	}
	return c.Box.Fingerprint(plain, ad)
}

// TestSealVerifiedBeforeWrite: a sealed value that does not open to the
// key it was made from, or a fingerprint that does not match, fails the
// import and stores nothing (not even the keys sealed correctly before
// it); the same for sealing legacy plain keys.
func TestSealVerifiedBeforeWrite(t *testing.T) {
	box, _ := boxes(t)
	for _, fp := range []bool{false, true} {
		db := sqlitetest.Open(t)
		// The 600th key is in the import's second chunk: the first is not
		// written either.
		k := store.On(db, nil).Keys().Sealing(&corruptSealer{Box: box, n: 600, fp: fp})
		added, _, err := k.Add(ctx, "openai", "", secrets("sk-verify-", 700), t0)
		if !errors.Is(err, store.ErrIntegrity) || len(added) != 0 {
			t.Fatalf("fingerprint corrupted %v: Add = %d added, err %v; want ErrIntegrity and nothing added", fp, len(added), err)
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM keys`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("fingerprint corrupted %v: %d keys stored (%v), want 0", fp, n, err)
		}
	}

	db := sqlitetest.Open(t)
	mustAdd(t, store.On(db, nil).Keys(), "openai", secrets("sk-legacy-", 4)...) // stored plain
	k := store.On(db, nil).Keys().Sealing(&corruptSealer{Box: box, n: 2})
	if n, err := k.SealLegacy(ctx, 10); !errors.Is(err, store.ErrIntegrity) || n != 0 {
		t.Fatalf("SealLegacy with a corrupting sealer = %d, %v; want 0 and ErrIntegrity", n, err)
	}
	var plain int
	if err := db.QueryRow(`SELECT count(*) FROM keys WHERE secret NOT LIKE 'v1:%'`).Scan(&plain); err != nil || plain != 4 {
		t.Fatalf("%d keys still plain (%v), want all 4 untouched", plain, err)
	}
}
