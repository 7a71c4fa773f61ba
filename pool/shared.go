// Package pool is the isolate's shared state: what every Go instance of
// one isolate sees, so that a warm request reads D1 rarely and writes to it
// at most every few seconds, whichever instance serves it. It owns two
// namespaces of one shared map and the records kept in them:
//   - the cache (read-through records with a TTL: settings, client
//     tokens, the model list, session generations, the guest summary, and
//     the candidate keys per provider and model), bounded, dropped whole by
//     ForgetCache after an admin change;
//   - the state (usage counters not yet written, token rates and quotas in
//     flight, keys held out of rotation, storms), bounded by its writers
//     and never dropped by a cache change.
//
// Every record has a named Go type and one encoding (see Fields); no
// caller reads a record by index. Package pool does no I/O: loads come
// in as functions, the clock as arguments.
package pool

import (
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Shared is memory every Go instance of the isolate sees (a JS Map on
// Workers). The entry module starts an instance per concurrent request, so
// a cache in one instance's Go memory would start cold in each new one.
//
// Entries whose key begins with CachePrefix are the cache, keyed in part
// by what clients send (models, token hashes): an implementation keeps at
// most CacheEntries of them and CacheBytes of their keys and values,
// dropping the oldest written first, and ClearCache drops them all. The
// other entries are state, which State bounds itself and which is never
// dropped.
type Shared interface {
	Get(key string) (string, bool)
	Set(key, value string)
	Delete(key string)
	// ClearCache drops every cache entry and keeps the state.
	ClearCache()
}

// The cache's namespace and bounds (see Shared).
const (
	CachePrefix  = "cache\x00"
	CacheEntries = 1024
	CacheBytes   = 4 << 20
)

// Local is Shared for one process (tests, and when no JS is there).
type Local struct {
	mu         sync.Mutex
	m          map[string]string
	order      []string // cache keys, oldest written first
	cacheBytes int
}

// NewLocal returns an empty Local.
func NewLocal() *Local { return &Local{m: map[string]string{}} }

func (l *Local) Get(k string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.m[k]
	return v, ok
}

func (l *Local) Set(k, v string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !strings.HasPrefix(k, CachePrefix) {
		l.m[k] = v
		return
	}
	l.forget(k)
	l.m[k] = v
	l.order = append(l.order, k)
	l.cacheBytes += len(k) + len(v)
	for len(l.order) > CacheEntries || l.cacheBytes > CacheBytes {
		l.forget(l.order[0])
	}
}

// forget drops a cache entry and its accounting.
func (l *Local) forget(k string) {
	v, ok := l.m[k]
	if !ok {
		return
	}
	delete(l.m, k)
	l.cacheBytes -= len(k) + len(v)
	if i := slices.Index(l.order, k); i >= 0 {
		l.order = slices.Delete(l.order, i, i+1)
	}
}

func (l *Local) Delete(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.HasPrefix(k, CachePrefix) {
		l.forget(k)
		return
	}
	delete(l.m, k)
}

func (l *Local) ClearCache() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.order {
		delete(l.m, k)
	}
	l.order, l.cacheBytes = nil, 0
}

// CacheSize reports the cache's entries and bytes (debug stats).
func (l *Local) CacheSize() (entries, bytes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order), l.cacheBytes
}

// State reads and writes the isolate's records in a Shared.
type State struct {
	s Shared
}

// New returns the state kept in s (a new Local when s is nil).
func New(s Shared) *State {
	if s == nil {
		s = NewLocal()
	}
	return &State{s: s}
}

// Shared is the memory the state is kept in.
func (st *State) Shared() Shared { return st.s }

// ForgetCache drops every cached record (after an admin change), keeping
// the state.
func (st *State) ForgetCache() { st.s.ClearCache() }

// readInt is the number stored under key (0: none).
func (st *State) readInt(key string) int64 {
	v, _ := st.s.Get(key)
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// setInt stores n under key.
func (st *State) setInt(key string, n int64) { st.s.Set(key, strconv.FormatInt(n, 10)) }

// addInt adds n to the number stored under key.
func (st *State) addInt(key string, n int64) { st.setInt(key, st.readInt(key)+n) }
