package pool

import (
	"strconv"

	"github.com/keypool/keypool/store"
)

// Request log entries wait here until the next usage flush writes them
// with the counts (one statement). The list is bounded, so that a client
// sending failing requests as fast as it can costs a bounded number of
// D1 rows per flush, not one per request.
const (
	requestLogKey   = "request-log"       // + "\x00<n>": one store.LoggedRequest each
	requestCountKey = "request-log-count" // how many wait
	// MaxPendingRequests bounds the entries waiting for one flush; past
	// it new entries are dropped (and counted, see TakeRequests).
	MaxPendingRequests = 200
	droppedRequestsKey = "request-log-dropped"
)

func loggedRequestFields(e *store.LoggedRequest, f *Fields) {
	f.Int(&e.ID)
	f.Int(&e.TokenID)
	f.String(&e.Provider)
	f.String(&e.Model)
	f.String(&e.Route)
	status := int64(e.Status)
	f.Int(&status)
	e.Status = int(status)
	f.String(&e.Class)
	f.Int(&e.KeyID)
	f.Ints(&e.Keys)
	f.String(&e.Attempts)
	f.Int(&e.Prompt)
	f.Int(&e.Completion)
	f.Int(&e.Cached)
	f.Bool(&e.Estimated)
	f.Int(&e.LatencyMS)
}

// LogRequest adds an entry for the next flush; false when the list is
// full and the entry was dropped. Each entry is a record of its own, so
// adding one costs the same however many wait.
func (st *State) LogRequest(e store.LoggedRequest) bool {
	n := st.readInt(requestCountKey)
	if n >= MaxPendingRequests {
		st.addInt(droppedRequestsKey, 1)
		return false
	}
	st.s.Set(requestLogKey+"\x00"+strconv.FormatInt(n, 10), encode(&e, loggedRequestFields))
	st.addInt(requestCountKey, 1)
	return true
}

// TakeRequests takes the entries waiting, oldest first, and how many were
// dropped since the last take.
func (st *State) TakeRequests() (entries []store.LoggedRequest, dropped int64) {
	n := st.readInt(requestCountKey)
	for i := int64(0); i < n; i++ {
		k := requestLogKey + "\x00" + strconv.FormatInt(i, 10)
		if v, ok := st.s.Get(k); ok {
			if e, ok := decode(v, loggedRequestFields); ok {
				entries = append(entries, e)
			}
		}
		st.s.Delete(k)
	}
	st.s.Delete(requestCountKey)
	dropped = st.readInt(droppedRequestsKey)
	st.s.Delete(droppedRequestsKey)
	return entries, dropped
}

// ReturnRequests puts back entries D1 did not take (it was unavailable),
// within the bound.
func (st *State) ReturnRequests(entries []store.LoggedRequest) {
	for _, e := range entries {
		if !st.LogRequest(e) {
			return
		}
	}
}
