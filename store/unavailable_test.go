package store

import (
	"errors"
	"fmt"
	"testing"
)

// TestUnavailable: only D1's own failures are worth retrying as they were.
func TestUnavailable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("D1_UNAVAILABLE: no answer within 1500 ms"), true},
		{fmt.Errorf("key 3: %w", errors.New("D1_UNAVAILABLE: D1 is down")), true},
		{errors.New("D1_ERROR: Network connection lost."), true},
		{errors.New("D1_ERROR: internal error; reference = x: storage caused object to be reset"), true},
		{errors.New("D1_ERROR: UNIQUE constraint failed: keys.fingerprint"), false},
		{errors.New("D1_ERROR: no such table: keys"), false},
		{ErrTokenNotFound, false},
	} {
		if got := Unavailable(tt.err); got != tt.want {
			t.Errorf("Unavailable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
