package store_test

import (
	"sort"
	"sync"
	"testing"

	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// TestLoginAttemptParallel: failures counted at once each get their own
// number, 1 to n, so a throttle that compares that number with its limit
// lets exactly limit of them through.
func TestLoginAttemptParallel(t *testing.T) {
	db := sqlitetest.Open(t)
	a := store.On(db, nil).Audit()
	const n, window = 60, 15 * 60_000
	got := make([]int64, n)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := a.LoginAttempt(ctx, "203.0.113.9", true, t0, window)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		}()
	}
	wg.Wait()
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	for i, c := range got {
		if c != int64(i+1) {
			t.Fatalf("parallel failures counted %v, want each of 1..%d once", got, n)
		}
	}
	if c, since, err := a.LoginAttempt(ctx, "203.0.113.9", false, t0+1, window); err != nil || c != n || since != t0 {
		t.Errorf("a right password after them: %d since %d, %v; want %d since %d", c, since, err, n, t0)
	}
}

func TestSessionGenerations(t *testing.T) {
	db := sqlitetest.Open(t)
	var q countQueries
	s := store.On(db, &q).Sessions()
	g, err := s.Generations(ctx)
	if err != nil || g["a"] != 1 || g["g"] != 1 || len(g) != 2 {
		t.Fatalf("Generations at first = %v, %v; want a 1, g 1", g, err)
	}
	if b, err := s.Bump(ctx, "a"); err != nil || len(b) != 1 || b["a"] != 2 {
		t.Errorf("Bump(a) = %v, %v; want a 2", b, err)
	}
	if b, err := s.Bump(ctx, "a", "g"); err != nil || b["a"] != 3 || b["g"] != 2 {
		t.Errorf("Bump(a, g) = %v, %v; want a 3, g 2", b, err)
	}
	if g, err := s.Generations(ctx); err != nil || g["a"] != 3 || g["g"] != 2 {
		t.Errorf("Generations after the bumps = %v, %v", g, err)
	}
	if q.n != 4 {
		t.Errorf("%d round trips for 2 reads and 2 bumps, want 4", q.n)
	}
}

type countQueries struct{ n int64 }

func (c *countQueries) Add(d int64) int64 { c.n += d; return c.n }
