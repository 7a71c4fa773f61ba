package pool

import (
	"strconv"
	"strings"
	"testing"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// TestSharedCacheBounded: the cache part of Shared keeps at most
// CacheEntries entries and CacheBytes bytes, dropping the oldest written;
// state entries are never dropped.
func TestSharedCacheBounded(t *testing.T) {
	l := NewLocal()
	l.Set(keyUsageKey, "[1]")
	l.Set(rollupKey, "{}")
	for i := 0; i < 3*CacheEntries; i++ {
		l.Set(candKey("openai", "m"+strconv.Itoa(i), false), "v")
	}
	if n, _ := l.CacheSize(); n != CacheEntries {
		t.Errorf("%d cache entries, want %d", n, CacheEntries)
	}
	if _, ok := l.Get(candKey("openai", "m0", false)); ok {
		t.Errorf("the oldest entry was kept")
	}
	if _, ok := l.Get(candKey("openai", "m"+strconv.Itoa(3*CacheEntries-1), false)); !ok {
		t.Errorf("the newest entry was dropped")
	}
	if v, ok := l.Get(keyUsageKey); !ok || v != "[1]" {
		t.Errorf("state entry dropped")
	}
	// Rewriting an entry makes it the newest.
	first := candKey("openai", "m"+strconv.Itoa(2*CacheEntries), false)
	l.Set(first, "w")
	l.Set(candKey("openai", "new", false), "v")
	if _, ok := l.Get(first); !ok {
		t.Errorf("a rewritten entry was dropped as the oldest")
	}
	// Bytes: large values push out older ones.
	big := strings.Repeat("b", CacheBytes/4)
	for i := 0; i < 10; i++ {
		l.Set(candKey("openai", "big"+strconv.Itoa(i), false), big)
	}
	if _, size := l.CacheSize(); size > CacheBytes {
		t.Errorf("cache holds %d bytes, want at most %d", size, CacheBytes)
	}
	l.Delete(candKey("openai", "big9", false))
	l.ClearCache()
	if n, size := l.CacheSize(); n != 0 || size != 0 {
		t.Errorf("after ClearCache: %d entries, %d bytes", n, size)
	}
	if _, ok := l.Get(rollupKey); !ok {
		t.Errorf("ClearCache dropped a state entry")
	}
}

// TestForgetCacheKeepsState: an admin change drops every cached record
// and keeps every state record, without a list of what to keep.
func TestForgetCacheKeepsState(t *testing.T) {
	st := New(nil)
	cands := Candidates{Read: 5, List: []rotation.Candidate{{ID: 1, Secret: "sk-1"}}}
	st.SetCandidates("openai", "gpt", false, cands)
	if _, _, err := st.ReadThrough("settings", 60e9, at(0), false, loaded("{}")); err != nil {
		t.Fatal(err)
	}
	st.IndexToken(7, "hash")

	st.CountKeyUses([]rotation.KeyUse{{Key: 1, Served: true}}, 10)
	st.AddRollup(store.Rollup{Minute: 60000, KeyID: 1, Provider: "openai", Model: "gpt", Counts: store.Counts{Requests: 1}})
	st.CountToken(7, 0, 1, 0, 10)
	st.RecordRequest(7, 10)
	st.HoldOut(Hold{Provider: "openai", Key: 1, Until: 1000}, 10)
	st.SetStorm("openai", rotation.Storm{Since: 1, Last: 2, Keys: []int64{1}})
	st.SetFlushed(9)

	st.ForgetCache()

	if _, ok := st.Candidates("openai", "gpt", false); ok {
		t.Errorf("candidates kept")
	}
	if _, hit, _ := st.ReadThrough("settings", 60e9, at(0), false, loaded("{}")); hit {
		t.Errorf("settings kept")
	}
	if _, ok := st.s.Get(tokenIDKey(7)); ok {
		t.Errorf("token index kept")
	}
	if u := st.TakeKeyUsage(); len(u) != 1 || u[0].Successes != 1 {
		t.Errorf("key counters: %+v", u)
	}
	if r := st.TakeRollups(); len(r) != 1 || r[0].Requests != 1 {
		t.Errorf("rollups: %+v", r)
	}
	if p := st.PendingToken(7); p.Requests != 1 {
		t.Errorf("token use: %+v", p)
	}
	if r := st.RecentRequests(7, 20); len(r) != 1 {
		t.Errorf("token rate: %v", r)
	}
	if l := st.WithoutHeldOut(cands.List, "openai", "gpt", 20); len(l) != 0 {
		t.Errorf("hold lost: %v", l)
	}
	if s := st.Storm("openai"); s.Since != 1 || len(s.Keys) != 1 {
		t.Errorf("storm: %+v", s)
	}
	if st.Flushed() != 9 {
		t.Errorf("flush time: %d", st.Flushed())
	}
}
