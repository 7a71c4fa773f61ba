package pool

import (
	"errors"
	"testing"
	"time"

	"github.com/keypool/keypool/rotation"
)

func at(sec int) time.Time { return time.Unix(1_700_000_000+int64(sec), 0) }

func loaded(payload string) Load {
	return func() (string, bool, error) { return payload, true, nil }
}

// TestReadThrough drives the cache through its states: a miss loads and
// keeps, a young record is reused, an old one or a fresh read loads
// again, a failed load keeps nothing, a load that says not to keep drops
// the old record, and a zero TTL never reuses.
func TestReadThrough(t *testing.T) {
	st := New(nil)
	loads := 0
	load := func(payload string, keep bool, err error) Load {
		return func() (string, bool, error) {
			loads++
			return payload, keep, err
		}
	}
	boom := errors.New("D1_ERROR: no such table: x") // a statement's failure
	down := errors.New("D1_UNAVAILABLE: no answer within 1500 ms")
	steps := []struct {
		name      string
		at        int
		fresh     bool
		load      Load
		want      string
		wantHit   bool
		wantErr   error
		wantLoads int
	}{
		{"miss loads", 0, false, load("v1", true, nil), "v1", false, nil, 1},
		{"young record reused", 4, false, load("v2", true, nil), "v1", true, nil, 1},
		{"fresh loads again", 4, true, load("v2", true, nil), "v2", false, nil, 2},
		{"the fresh value is kept", 5, false, load("v3", true, nil), "v2", true, nil, 2},
		{"old record loads again", 10, false, load("v3", true, nil), "v3", false, nil, 3},
		{"failed load", 16, false, load("", false, boom), "", false, boom, 4},
		{"after a failure: loads", 16, false, load("v4", true, nil), "v4", false, nil, 5},
		{"not kept", 16, true, load("big", false, nil), "big", false, nil, 6},
		{"the old record went with it", 16, false, load("v5", true, nil), "v5", false, nil, 7},
		{"D1 unavailable: the stale record", 30, false, load("", false, down), "v5", true, nil, 8},
		{"fresh, D1 unavailable: the stale record", 31, true, load("", false, down), "v5", true, nil, 9},
		{"stale past StaleFor: the error", 16 + int(StaleFor/time.Second), false, load("", false, down), "", false, down, 10},
	}
	for _, s := range steps {
		got, hit, err := st.ReadThrough("test-record", 5*time.Second, at(s.at), s.fresh, s.load)
		if got != s.want || hit != s.wantHit || !errors.Is(err, s.wantErr) || loads != s.wantLoads {
			t.Errorf("%s: (%q, hit %v, %v) after %d loads, want (%q, hit %v, %v) after %d",
				s.name, got, hit, err, loads, s.want, s.wantHit, s.wantErr, s.wantLoads)
		}
	}
	st.Forget("test-record")
	for i := 0; i < 2; i++ {
		if _, hit, _ := st.ReadThrough("test-record", 0, at(17), false, load("v6", true, nil)); hit {
			t.Errorf("TTL 0: read %d came from the cache", i+1)
		}
	}
}

// TestExpireCandidates: a list read before ExpireCandidates is stale, one
// read after it fresh, and expiring keeps the lists (they serve through a
// D1 outage).
func TestExpireCandidates(t *testing.T) {
	st := New(nil)
	st.SetCandidates("openai", "m", false, Candidates{Read: 100, List: []rotation.Candidate{{ID: 1}}})
	if c, _ := st.Candidates("openai", "m", false); !st.Fresh(c) {
		t.Fatalf("a list never expired reads as stale")
	}
	st.ExpireCandidates(100)
	c, ok := st.Candidates("openai", "m", false)
	if !ok || len(c.List) != 1 {
		t.Fatalf("expiring dropped the list: %+v %v", c, ok)
	}
	if st.Fresh(c) {
		t.Errorf("a list read at the ms of the expiry reads as fresh")
	}
	if !st.Fresh(Candidates{Read: 101}) {
		t.Errorf("a list read after the expiry reads as stale")
	}
}
