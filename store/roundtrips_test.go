package store_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// TestRoundTrips checks the number of D1 round trips where the store
// promises it: the hot path (Candidates, AddUsage, Apply) must not grow
// with the size of the pool.
func TestRoundTrips(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	k := store.On(db, &n).Keys()
	ids := mustAdd(t, k, "openai", secrets("sk-rt-", 1203)...) // 3 chunks
	if got := n.Swap(0); got != 3 {
		t.Errorf("Add of 1203 keys: %d round trips, want 3 (one per chunk of 500)", got)
	}
	mustExec(t, db, `UPDATE keys SET status = 'exhausted' WHERE id % 3 = 0`)
	for _, id := range ids[:50] {
		insertModel(t, db, id, "m", "cooling", t0-10, 2, t0-100)
	}
	usage := make([]store.KeyUsage, 0, 100)
	for _, id := range ids[:100] {
		usage = append(usage, store.KeyUsage{KeyID: id, Requests: 1, Successes: 1, LastUsed: t0})
	}

	apply := func(c rotation.Change) error { return k.Apply(ctx, []rotation.Change{c}, t0) }
	tests := []struct {
		name string
		call func() error
		want int64
	}{
		{"Candidates", func() error { _, err := k.Candidates(ctx, "openai", "m", t0, 10, false); return err }, 1},
		{"Candidates withExhausted", func() error { _, err := k.Candidates(ctx, "openai", "m", t0, 10, true); return err }, 1},
		{"Candidates, whole pool", func() error { _, err := k.Candidates(ctx, "openai", "m", t0, 5000, true); return err }, 1},
		{"NextCoolingEnd", func() error { _, err := k.NextCoolingEnd(ctx, "openai", "m", t0, false); return err }, 1},
		{"NextCoolingEnd withExhausted", func() error { _, err := k.NextCoolingEnd(ctx, "openai", "m", t0, true); return err }, 1},
		{"AddUsage of 100 keys", func() error { return k.AddUsage(ctx, usage) }, 1},
		{"AddUsage of none", func() error { return k.AddUsage(ctx, nil) }, 0},
		{"List", func() error { _, err := k.List(ctx, "openai"); return err }, 2},
		{"List of every provider", func() error { _, err := k.List(ctx, ""); return err }, 2},
		{"Apply ResetStreak", func() error { return apply(rotation.Change{Kind: rotation.ChangeResetStreak, Key: ids[1], Model: "m"}) }, 1},
		{"Apply LiftCooldowns of none", func() error { return apply(rotation.Change{Kind: rotation.ChangeLiftCooldowns}) }, 0},
		{"Apply LiftCooldowns, nothing to lift", func() error {
			return apply(rotation.Change{Kind: rotation.ChangeLiftCooldowns, Keys: ids, Since: t0})
		}, 1},
		{"PruneCooling", func() error { _, err := k.PruneCooling(ctx, t0); return err }, 1},
		{"Apply of none", func() error { return k.Apply(ctx, nil, t0) }, 0},
		{"Apply a count-only cooldown", func() error { return apply(change(ids[2], rotation.ChangeCool, 500, 0, "x", t0)) }, 1},
		{"Apply Cool", func() error { return apply(change(ids[2], rotation.ChangeCool, 429, time.Minute, "x", t0)) }, 2},
		{"Apply BlockKey", func() error { return apply(change(ids[4], rotation.ChangeBlockKey, 401, 0, "x", t0)) }, 3},
		{"Apply BlockKey, already blocked", func() error {
			return apply(change(ids[4], rotation.ChangeBlockKey, 401, 0, "x", t0))
		}, 1},
	}
	for _, tt := range tests {
		n.Store(0)
		if err := tt.call(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := n.Load(); got != tt.want {
			t.Errorf("%s: %d round trips, want %d", tt.name, got, tt.want)
		}
	}
}
