package pool

import (
	"errors"
	"testing"
	"time"
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
	boom := errors.New("D1 down")
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
