package rotation

import (
	"math/rand/v2"
	"testing"
	"time"
)

func affineCands(ids ...int64) []Candidate {
	var out []Candidate
	for _, id := range ids {
		out = append(out, Candidate{ID: id})
	}
	return out
}

// TestPickAffine: a conversation's pick is its highest-ranked key that is
// usable and untried, whatever the candidates' order; when that key is
// out (cooling, or tried) the next in its ranking serves, and the
// conversation returns to the first once it is usable again.
func TestPickAffine(t *testing.T) {
	const conv = 0x5eed
	all := affineCands(1, 2, 3, 4, 5)
	first, _ := PickAffine(all, nil, conv)
	second, _ := PickAffine(all, map[int64]bool{first.ID: true}, conv)
	var without []Candidate // the first key cooling: not a candidate
	for _, c := range all {
		if c.ID != first.ID {
			without = append(without, c)
		}
	}
	reversed := affineCands(5, 4, 3, 2, 1)
	for _, tc := range []struct {
		name  string
		cands []Candidate
		tried map[int64]bool
		want  int64
		ok    bool
	}{
		{"its first key", all, nil, first.ID, true},
		{"the order of the candidates does not matter", reversed, nil, first.ID, true},
		{"first key cooling: the next in its ranking", without, nil, second.ID, true},
		{"first key tried: the next in its ranking", all, map[int64]bool{first.ID: true}, second.ID, true},
		{"first key back: the conversation returns", all, nil, first.ID, true},
		{"every key tried", all, map[int64]bool{1: true, 2: true, 3: true, 4: true, 5: true}, 0, false},
		{"no candidates", nil, nil, 0, false},
	} {
		got, ok := PickAffine(tc.cands, tc.tried, conv)
		if ok != tc.ok || got.ID != tc.want {
			t.Errorf("%s: got key %d (%v), want %d (%v)", tc.name, got.ID, ok, tc.want, tc.ok)
		}
	}
	if first.ID == second.ID {
		t.Fatalf("the first and second choice are the same key %d", first.ID)
	}
}

// TestAffinitySpread: over many conversations the first choices spread
// evenly over the keys (each within 10 % of its share), and a key
// leaving moves only its own conversations.
func TestAffinitySpread(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := affineCands(11, 12, 13, 14, 15)
	const n = 20000
	count := map[int64]int{}
	moved, stayed := 0, 0
	for i := 0; i < n; i++ {
		conv := r.Uint64()
		c, _ := PickAffine(keys, nil, conv)
		count[c.ID]++
		after, _ := PickAffine(keys[1:], nil, conv) // key 11 removed
		switch {
		case c.ID != 11 && after.ID != c.ID:
			moved++
		case c.ID != 11:
			stayed++
		}
	}
	for _, k := range keys {
		if share := float64(count[k.ID]) / n; share < 0.18 || share > 0.22 {
			t.Errorf("key %d has %.3f of the conversations, want 0.20 ± 0.02", k.ID, share)
		}
	}
	if moved != 0 || stayed == 0 {
		t.Errorf("removing one key moved %d conversations of other keys (kept %d): want none moved", moved, stayed)
	}
}

// TestAttemptsFollowConversation: a request naming a conversation is sent
// to the key PickAffine ranks first for it, not to a random one.
func TestAttemptsFollowConversation(t *testing.T) {
	cands := affineCands(1, 2, 3, 4, 5, 6, 7, 8)
	for conv := uint64(1); conv <= 50; conv++ {
		req := amRequest("m")
		req.Conversation = conv
		req.IntN = func(int) int { return 0 } // a random pick would take key 1
		m := Start(req)
		now := time.Unix(1_700_000_000, 0)
		if s := m.Next(now); s.Kind != StepRead {
			t.Fatalf("first step %v, want a read", s.Kind)
		}
		m.Candidates(cands, true)
		s := m.Next(now)
		want, _ := PickAffine(cands, nil, conv)
		if s.Kind != StepTry || s.Key.ID != want.ID {
			t.Fatalf("conversation %d: step %v key %d, want a try of key %d", conv, s.Kind, s.Key.ID, want.ID)
		}
	}
}
