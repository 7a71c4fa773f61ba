package pool

import (
	"reflect"
	"testing"
	"time"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// TestRecordsRoundTrip: every record reads back as it was written.
func TestRecordsRoundTrip(t *testing.T) {
	tok := store.Token{ID: 4, Name: "ops ü \"q\"", Disabled: true, ExpiresAt: 9, Providers: []string{"openai", "groq"},
		Models: []string{"gpt-*"}, Endpoints: store.EndpointsAll, RPM: 1, RequestsDay: 2, RequestsTotal: 3,
		TokensDay: 4, TokensTotal: 5, UsedRequests: 6, UsedTokens: 7, Day: 8, DayRequests: 9, DayTokens: 10}
	if got, ok := DecodeToken(EncodeToken(tok)); !ok || !reflect.DeepEqual(got, tok) {
		t.Errorf("token: %+v, %v", got, ok)
	}
	c := Candidates{Read: 3, List: []rotation.Candidate{{ID: 1, LastUsed: 2, Streak: 3, CoolEnd: 4, Secret: "sk-a"}, {ID: 2, Secret: "sk-b"}}}
	if got, ok := decode(encode(&c, candidatesFields), candidatesFields); !ok || !reflect.DeepEqual(got, c) {
		t.Errorf("candidates: %+v, %v", got, ok)
	}
	s := rotation.Storm{Since: 1, Last: 2, Until: 3, Rate: true, Declared: true, Keys: []int64{5, 6}}
	if got, ok := decode(encode(&s, stormFields), stormFields); !ok || !reflect.DeepEqual(got, s) {
		t.Errorf("storm: %+v, %v", got, ok)
	}
	r := store.Rollup{Minute: 1, TokenID: 2, KeyID: 3, Provider: "p.x", Model: "a\x00b",
		Counts: store.Counts{Requests: 1, Successes: 2, ClientErrors: 3, UpstreamErrors: 4, Rejected: 5,
			PromptTokens: 6, CompletionTokens: 7, Estimated: 8, LatencyMS: 9}}
	if got, ok := decode(encode(&r, rollupFields), rollupFields); !ok || !reflect.DeepEqual(got, r) {
		t.Errorf("rollup: %+v, %v", got, ok)
	}
}

// TestDecodeRejectsWrongShape: a record of another shape (fewer or more
// fields, not an array) is not read as this one.
func TestDecodeRejectsWrongShape(t *testing.T) {
	for _, in := range []string{`[1,2,3,4]`, `[1,2,3,4,"s",6]`, `{"id":1}`, ``} {
		if _, ok := decode(in, candidateFields); ok {
			t.Errorf("%q read as a candidate", in)
		}
	}
	if _, ok := decode(`[1,2,3,4,"s"]`, candidateFields); !ok {
		t.Errorf("a well-formed candidate refused")
	}
}

// TestTokenUseAcrossDays: use pending when a new UTC day begins is
// carried apart (in the totals, not in the new day's quota), taken in two
// rows, and stays in flight until settled.
func TestTokenUseAcrossDays(t *testing.T) {
	st := New(nil)
	const day1, day2 = 86400000, 2 * 86400000
	st.CountToken(7, day1, 2, 30, 100)
	st.CountToken(7, day2, 1, 5, 200)
	p := st.PendingToken(7)
	want := TokenPending{ID: 7, Day: day2, Requests: 1, Tokens: 5, LastUsed: 200, CarriedDay: day1, CarriedRequests: 2, CarriedTokens: 30}
	if p != want {
		t.Fatalf("pending %+v, want %+v", p, want)
	}
	taken := st.TakeTokenUsage()
	if len(taken) != 2 || taken[0].Day != day1 || taken[0].Requests != 2 || taken[1].Day != day2 || taken[1].Tokens != 5 {
		t.Fatalf("taken %+v", taken)
	}
	if in := st.Inflight(7); len(in) != 2 {
		t.Errorf("in flight %+v", in)
	}
	st.SettleTokenUsage(taken, false) // not written: back to pending
	if in := st.Inflight(7); len(in) != 0 {
		t.Errorf("still in flight after settling: %+v", in)
	}
	if p := st.PendingToken(7); p.Requests+p.CarriedRequests != 3 || p.Tokens+p.CarriedTokens != 35 {
		t.Errorf("after a failed write: %+v", p)
	}
}

// TestRatesPruned: request times older than a minute are dropped for
// every token when one is recorded, so the record stays bounded.
func TestRatesPruned(t *testing.T) {
	st := New(nil)
	st.RecordRequest(1, 0)
	st.RecordRequest(2, 1000)
	st.RecordRequest(2, 61000)
	if got := readList(st.s, rateKey, rateFields); len(got) != 1 || got[0].ID != 2 || len(got[0].Times) != 1 {
		t.Errorf("rates %+v", got)
	}
	if r := st.RecentRequests(2, 61500); len(r) != 1 || r[0] != 61000 {
		t.Errorf("recent %v", r)
	}
}

// TestWrittenUseCountedInCache: use D1 has taken is added to the token's
// cached record, as AddUsage adds it to the row (the day's counters only
// for the same day, a later day starting them again), and the record is
// kept with its read time: a read within the TTL needs no D1.
func TestWrittenUseCountedInCache(t *testing.T) {
	const day1, day2 = 86400000, 2 * 86400000
	now := time.UnixMilli(day2 + 5000)
	st := New(nil)
	tok := store.Token{ID: 7, Name: "app", UsedRequests: 10, UsedTokens: 100, Day: day1, DayRequests: 4, DayTokens: 40, LastUsedAt: 50}
	read := func() (store.Token, bool) {
		v, hit, err := st.ReadThrough(TokenName("h"), time.Minute, now, false, func() (string, bool, error) {
			return EncodeToken(tok), true, nil
		})
		got, _ := DecodeToken(v)
		return got, hit && err == nil
	}
	read()
	st.IndexToken(7, "h")
	st.SettleTokenUsage([]store.TokenUsage{{ID: 7, Day: day1, Requests: 2, Tokens: 20, LastUsed: 60}}, true)
	got, hit := read()
	if !hit || got.UsedRequests != 12 || got.UsedTokens != 120 || got.DayRequests != 6 || got.DayTokens != 60 {
		t.Fatalf("after same-day use: hit %v, %+v", hit, got)
	}
	st.SettleTokenUsage([]store.TokenUsage{{ID: 7, Day: day2, Requests: 1, Tokens: 5, LastUsed: 70}}, true)
	got, hit = read()
	if !hit || got.UsedRequests != 13 || got.Day != day2 || got.DayRequests != 1 || got.DayTokens != 5 {
		t.Fatalf("after next-day use: hit %v, %+v", hit, got)
	}
	st.SettleTokenUsage([]store.TokenUsage{{ID: 7, Day: day1, Requests: 3, Tokens: 9, LastUsed: 80}}, true)
	if got, _ = read(); got.UsedRequests != 16 || got.DayRequests != 1 {
		t.Errorf("carried use of an earlier day: %+v, want it in the totals only", got)
	}
}
