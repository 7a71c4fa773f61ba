package proxy

import (
	"testing"
	"time"

	"github.com/keypool/keypool/store"
)

// TestRequestID: an id carries its arrival time, stays below 2^53 (D1
// hands numbers to JavaScript) and reads back; ids of one millisecond
// differ; other text is not an id.
func TestRequestID(t *testing.T) {
	now := time.UnixMilli(2_100_000_000_000) // 2036
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		s := NewRequestID(now)
		id, ok := ParseRequestID(s)
		if !ok || id>>store.RequestIDShift != now.UnixMilli() || id >= 1<<53 {
			t.Fatalf("%q: %d %v", s, id, ok)
		}
		seen[s] = true
	}
	if len(seen) < 150 {
		t.Errorf("200 ids in one ms, %d distinct", len(seen))
	}
	for _, s := range []string{"", "!", "-5", "zzzzzzzzzzzzzz"} {
		if _, ok := ParseRequestID(s); ok {
			t.Errorf("%q read as a request id", s)
		}
	}
}
