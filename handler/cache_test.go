package handler

import (
	"errors"
	"testing"
	"time"
)

// TestReadThrough drives the cache through its states: a miss loads and
// keeps, a young record is reused, an old one or a fresh read loads
// again, a failed load keeps nothing, a load that says not to keep drops
// the old record, and CACHE_SECONDS=0 never reuses.
func TestReadThrough(t *testing.T) {
	e := newEnv(t, "CACHE_SECONDS", "5")
	loads := 0
	load := func(payload string, keep bool, err error) cacheLoad {
		return func() (string, bool, error) {
			loads++
			return payload, keep, err
		}
	}
	boom := errors.New("D1 down")
	steps := []struct {
		name      string
		advance   time.Duration
		fresh     bool
		load      cacheLoad
		want      string
		wantHit   bool
		wantErr   error
		wantLoads int
	}{
		{"miss loads", 0, false, load("v1", true, nil), "v1", false, nil, 1},
		{"young record reused", 4 * time.Second, false, load("v2", true, nil), "v1", true, nil, 1},
		{"fresh loads again", 0, true, load("v2", true, nil), "v2", false, nil, 2},
		{"the fresh value is kept", time.Second, false, load("v3", true, nil), "v2", true, nil, 2},
		{"old record loads again", 5 * time.Second, false, load("v3", true, nil), "v3", false, nil, 3},
		{"failed load", 6 * time.Second, false, load("", false, boom), "", false, boom, 4},
		{"after a failure: loads", 0, false, load("v4", true, nil), "v4", false, nil, 5},
		{"not kept", 0, true, load("big", false, nil), "big", false, nil, 6},
		{"the old record went with it", 0, false, load("v5", true, nil), "v5", false, nil, 7},
	}
	for _, s := range steps {
		e.advance(s.advance)
		got, hit, err := e.h.readThrough("test-record", s.fresh, s.load)
		if got != s.want || hit != s.wantHit || !errors.Is(err, s.wantErr) || loads != s.wantLoads {
			t.Errorf("%s: (%q, hit %v, %v) after %d loads, want (%q, hit %v, %v) after %d",
				s.name, got, hit, err, loads, s.want, s.wantHit, s.wantErr, s.wantLoads)
		}
	}

	e.set("CACHE_SECONDS", "0")
	for i := 0; i < 2; i++ {
		if _, hit, _ := e.h.readThrough("test-record", false, load("v6", true, nil)); hit {
			t.Errorf("CACHE_SECONDS=0: read %d came from the cache", i+1)
		}
	}
}
