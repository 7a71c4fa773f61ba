package checks

import (
	"sync"

	"github.com/keypool/keypool/store"
)

// Health checks: the cron re-validates keys, reads balances and brings
// dead keys back when they work again, in chunks that fit one invocation's
// subrequest budget; admins run the same checks on demand as jobs.

// Budget counts one invocation's subrequests (fetches and D1 queries,
// which Workers counts alike) against a limit. Checks reserve what they
// may spend before they start, so concurrent checks never overrun it.
type Budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	total store.Counter // the isolate-wide D1 counter, also fed; may be nil
}

// Add counts database round trips (store.Counter).
func (b *Budget) Add(d int64) int64 {
	b.mu.Lock()
	b.used += d
	n := b.used
	b.mu.Unlock()
	if b.total != nil {
		b.total.Add(d)
	}
	return n
}

func (b *Budget) Load() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// fetched counts one fetch made outside a reservation.
func (b *Budget) fetched() {
	b.mu.Lock()
	b.used++
	b.mu.Unlock()
}

// take reserves n subrequests if n more still leave keep for later work.
func (b *Budget) take(n, keep int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n+keep > b.limit {
		return false
	}
	b.used += n
	return true
}

// refund gives back the unused part of a reservation.
func (b *Budget) refund(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}
