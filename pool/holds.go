package pool

import (
	"github.com/keypool/keypool/rotation"
)

// A key this isolate took out of rotation (blocked, exhausted, cooling,
// blocked for a model) is written to D1 after the response, in waitUntil.
// A candidate read from D1 before that write lands would bring the key
// back, and the next request would try it again; so the isolate holds
// such keys out of what it reads until the hold ends.
const (
	heldOutKey  = "held-out" // []Hold
	heldOutKeep = 256        // holds; the oldest go first
)

// Hold is a key of Provider held out of rotation for Model ("" every
// model) until Until (unix ms).
type Hold struct {
	Provider string
	Key      int64
	Model    string
	Until    int64
}

func holdFields(h *Hold, f *Fields) {
	f.String(&h.Provider)
	f.Int(&h.Key)
	f.String(&h.Model)
	f.Int(&h.Until)
}

// HoldOut adds a hold; holds ended at ms are dropped, and at most
// heldOutKeep are kept.
func (st *State) HoldOut(h Hold, ms int64) {
	list := readList(st.s, heldOutKey, holdFields)
	list = list[max(0, len(list)-heldOutKeep+1):]
	kept := list[:0]
	for _, x := range list {
		if x.Until > ms {
			kept = append(kept, x)
		}
	}
	writeList(st.s, heldOutKey, append(kept, h), holdFields)
}

// WithoutHeldOut drops from a list read from D1 the keys held out for
// prov/model at ms.
func (st *State) WithoutHeldOut(list []rotation.Candidate, prov, model string, ms int64) []rotation.Candidate {
	if len(list) == 0 {
		return list
	}
	out := map[int64]bool{}
	for _, h := range readList(st.s, heldOutKey, holdFields) {
		if h.Provider == prov && (h.Model == "" || h.Model == model) && h.Until > ms {
			out[h.Key] = true
		}
	}
	if len(out) == 0 {
		return list
	}
	kept := list[:0:0]
	for _, c := range list {
		if !out[c.ID] {
			kept = append(kept, c)
		}
	}
	return kept
}

// EndHolds ends every hold (an admin change in this isolate).
func (st *State) EndHolds() { st.s.Delete(heldOutKey) }

// Each isolate judges storms by what it sees itself: a storm is about the
// upstream, which every isolate meets alike, so none needs another's view.
func stormKey(prov string) string { return "storm\x00" + prov }

func stormFields(s *rotation.Storm, f *Fields) {
	f.Int(&s.Since)
	f.Int(&s.Last)
	f.Int(&s.Until)
	f.Bool(&s.Rate)
	f.Bool(&s.Declared)
	f.Ints(&s.Keys)
}

// Storm returns the isolate's storm state of prov.
func (st *State) Storm(prov string) rotation.Storm {
	v, ok := st.s.Get(stormKey(prov))
	if !ok {
		return rotation.Storm{}
	}
	s, ok := decode(v, stormFields)
	if !ok {
		return rotation.Storm{}
	}
	return s
}

// SetStorm keeps prov's storm state (a zero one: forgets it).
func (st *State) SetStorm(prov string, s rotation.Storm) {
	if s.Since == 0 && s.Until == 0 {
		st.s.Delete(stormKey(prov))
		return
	}
	st.s.Set(stormKey(prov), encode(&s, stormFields))
}
