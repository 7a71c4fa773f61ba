package pool

import (
	"testing"

	"github.com/keypool/keypool/store"
)

// TestRequestLogBounded: entries wait in order with every field, at most
// MaxPendingRequests of them; the ones past it are counted as dropped,
// and a take empties the list and the count.
func TestRequestLogBounded(t *testing.T) {
	st := New(nil)
	e := store.LoggedRequest{ID: 1 << store.RequestIDShift, TokenID: 7, Provider: "openai", Model: "m", Route: "/v1/chat/completions", Status: 502,
		Class: "upstream", KeyID: 0, Keys: []int64{3, 4}, Attempts: `[{"key":3}]`, Prompt: 5, Completion: 7, Cached: 2,
		Estimated: true, LatencyMS: 40}
	for i := 0; i < MaxPendingRequests+5; i++ {
		e.ID = int64(i+1) << store.RequestIDShift
		ok := st.LogRequest(e)
		if ok != (i < MaxPendingRequests) {
			t.Fatalf("entry %d: kept %v", i, ok)
		}
	}
	got, dropped := st.TakeRequests()
	if len(got) != MaxPendingRequests || dropped != 5 {
		t.Fatalf("took %d, dropped %d; want %d and 5", len(got), dropped, MaxPendingRequests)
	}
	first := got[0]
	e.ID = 1 << store.RequestIDShift
	if first.ID != e.ID || first.Route != e.Route || first.Status != 502 || len(first.Keys) != 2 || first.Attempts != e.Attempts ||
		!first.Estimated || first.Cached != 2 || first.LatencyMS != 40 {
		t.Errorf("first entry %+v, want %+v", first, e)
	}
	if got, dropped := st.TakeRequests(); len(got) != 0 || dropped != 0 {
		t.Errorf("after a take: %d entries, %d dropped", len(got), dropped)
	}
}
