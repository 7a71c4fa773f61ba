package pool

import "github.com/keypool/keypool/rotation"

// Key state changes D1 could not take (store.Unavailable) wait here and
// are written before the next ones, so that a cooldown or a block is
// never lost to an outage: the isolate already applies them to its own
// candidates (holds and cache edits), and D1 gets them when it answers.
const (
	unwrittenKey = "unwritten-changes" // []Unwritten
	// MaxUnwritten bounds the changes kept: past it the oldest go (and
	// are logged by the caller), which bounds the memory an outage costs.
	MaxUnwritten = 1000
)

// Unwritten is a state change decided at At (unix ms) and not yet in D1.
type Unwritten struct {
	At     int64
	Change rotation.Change
}

func unwrittenFields(u *Unwritten, f *Fields) {
	c := &u.Change
	f.Int(&u.At)
	kind, status := int64(c.Kind), int64(c.Status)
	f.Int(&kind)
	f.Int(&status)
	c.Kind, c.Status = rotation.ChangeKind(kind), int(status)
	f.Int(&c.Key)
	f.String(&c.Model)
	f.Int(&c.Until)
	f.String(&c.Reason)
	f.String(&c.Excerpt)
	f.Strings(&c.From)
	f.Ints(&c.Keys)
	f.Int(&c.Since)
}

// KeepUnwritten adds changes D1 did not take, oldest first, and returns
// how many of the oldest were dropped to stay within MaxUnwritten.
func (st *State) KeepUnwritten(list []Unwritten) (dropped int) {
	if len(list) == 0 {
		return 0
	}
	all := append(readList(st.s, unwrittenKey, unwrittenFields), list...)
	if n := len(all) - MaxUnwritten; n > 0 {
		all, dropped = all[n:], n
	}
	writeList(st.s, unwrittenKey, all, unwrittenFields)
	return dropped
}

// TakeUnwritten returns the changes waiting for D1 and forgets them (the
// caller keeps again those D1 still does not take).
func (st *State) TakeUnwritten() []Unwritten {
	list := readList(st.s, unwrittenKey, unwrittenFields)
	if len(list) > 0 {
		st.s.Delete(unwrittenKey)
	}
	return list
}
