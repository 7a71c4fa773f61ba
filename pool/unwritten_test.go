package pool

import (
	"reflect"
	"testing"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// TestUnwrittenKept: changes D1 did not take come back whole, in order,
// and at most MaxUnwritten are kept (the oldest go first).
func TestUnwrittenKept(t *testing.T) {
	st := New(nil)
	if len(st.TakeUnwritten()) != 0 {
		t.Fatal("a new pool has unwritten changes")
	}
	want := []Unwritten{
		{At: 1000, Change: rotation.Change{Kind: rotation.ChangeCool, Key: 7, Model: "gpt-x", Until: 61000, Reason: "429", Status: 429, Excerpt: "slow down"}},
		{At: 2000, Change: rotation.Change{Kind: rotation.ChangeBlockKey, Key: 8, Reason: "invalid key", Status: 401, From: []string{"active", "exhausted"}}},
		{At: 3000, Change: rotation.Change{Kind: rotation.ChangeLiftCooldowns, Keys: []int64{7, 8}, Since: 500, Reason: "storm over"}},
	}
	if n := st.KeepUnwritten(want); n != 0 {
		t.Fatalf("kept 3: dropped %d", n)
	}
	if got := st.TakeUnwritten(); !reflect.DeepEqual(got, want) {
		t.Fatalf("took\n%+v\nwant\n%+v", got, want)
	}
	if left := st.TakeUnwritten(); len(left) != 0 {
		t.Fatalf("taken changes are still there: %+v", left)
	}
	many := make([]Unwritten, MaxUnwritten+5)
	for i := range many {
		many[i] = Unwritten{At: int64(i), Change: rotation.Change{Kind: rotation.ChangeResetStreak, Key: int64(i + 1), Model: "m"}}
	}
	if n := st.KeepUnwritten(many); n != 5 {
		t.Fatalf("kept %d: dropped %d, want 5", len(many), n)
	}
	got := st.TakeUnwritten()
	if len(got) != MaxUnwritten || got[0].At != 5 || got[len(got)-1].At != int64(MaxUnwritten+4) {
		t.Fatalf("kept %d from At %d to %d, want %d from 5", len(got), got[0].At, got[len(got)-1].At, MaxUnwritten)
	}
}

// TestCountsGivenBack: counts a write did not take add to those counted
// since, so that the next flush writes both.
func TestCountsGivenBack(t *testing.T) {
	st := New(nil)
	st.CountKeyUses([]rotation.KeyUse{{Key: 1, Served: true}}, 100)
	taken := st.TakeKeyUsage()
	st.CountKeyUses([]rotation.KeyUse{{Key: 1}, {Key: 2, Served: true}}, 200)
	st.ReturnKeyUsage(taken)
	got := st.TakeKeyUsage()
	want := []store.KeyUsage{{KeyID: 1, Requests: 2, Successes: 1, Failures: 1, LastUsed: 200}, {KeyID: 2, Requests: 1, Successes: 1, LastUsed: 200}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("key usage %+v, want %+v", got, want)
	}

	r := store.Rollup{Minute: 60000, TokenID: 3, KeyID: 1, Provider: "openai", Model: "m", Counts: store.Counts{Requests: 1, Successes: 1, PromptTokens: 10}}
	st.AddRollup(r)
	rolled := st.TakeRollups()
	st.AddRollup(r)
	other := r
	other.Model = "n"
	st.AddRollup(other)
	st.ReturnRollups(rolled)
	rs := st.TakeRollups()
	if len(rs) != 2 || rs[0].Requests != 2 || rs[0].PromptTokens != 20 || rs[1].Model != "n" || rs[1].Requests != 1 {
		t.Errorf("rollups %+v: want m with 2 requests and 20 prompt tokens, n with 1", rs)
	}
}
