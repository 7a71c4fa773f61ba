package rotation

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func cands(n int) []Candidate {
	cs := make([]Candidate, n)
	for i := range cs {
		cs[i] = Candidate{ID: int64(i + 1), Secret: "sk-" + strconv.Itoa(i+1), LastUsed: int64(i) * 1000}
	}
	return cs
}

func last(n int) int  { return n - 1 }
func first(n int) int { return 0 }

func TestPick(t *testing.T) {
	tests := []struct {
		name   string
		cands  []Candidate
		tried  map[int64]bool
		intn   func(int) int
		wantN  int // the n passed to intn; 0 when intn must not be called
		wantID int64
		wantOK bool
	}{
		{"none", nil, nil, last, 0, 0, false},
		{"empty", []Candidate{}, map[int64]bool{}, last, 0, 0, false},
		{"one", cands(1), nil, last, 1, 1, true},
		{"fourth of ten", cands(10), nil, last, 4, 4, true},
		{"oldest of ten", cands(10), nil, first, 4, 1, true},
		{"third of three", cands(3), nil, last, 3, 3, true},
		{"skips tried", cands(10), map[int64]bool{1: true, 3: true}, last, 4, 6, true},
		{"skips tried, oldest", cands(10), map[int64]bool{1: true, 2: true}, first, 4, 3, true},
		{"false entries are not tried", cands(10), map[int64]bool{1: false, 2: false}, last, 4, 4, true},
		{"one left", cands(5), map[int64]bool{1: true, 2: true, 4: true, 5: true}, last, 1, 3, true},
		{"two left at the end", cands(8), map[int64]bool{1: true, 2: true, 3: true, 4: true, 5: true, 6: true}, last, 2, 8, true},
		{"all tried", cands(4), map[int64]bool{1: true, 2: true, 3: true, 4: true}, last, 0, 0, false},
		{"tried ids not in cands", cands(2), map[int64]bool{99: true}, last, 2, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotN := 0
			intn := func(n int) int { gotN = n; return tt.intn(n) }
			c, ok := Pick(tt.cands, tt.tried, intn)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if c.ID != tt.wantID {
				t.Errorf("picked %d, want %d", c.ID, tt.wantID)
			}
			if ok && c.Secret != "sk-"+strconv.FormatInt(tt.wantID, 10) {
				t.Errorf("picked candidate %+v with wrong secret", c)
			}
			if !ok && c != (Candidate{}) {
				t.Errorf("ok=false with non-zero candidate %+v", c)
			}
			if gotN != tt.wantN {
				t.Errorf("intn called with %d, want %d", gotN, tt.wantN)
			}
		})
	}
}

// Every pick, whatever intn draws, is one of the first four untried keys in
// order, and all four are reachable.
func TestPickOnlyAmongFirstFourUntried(t *testing.T) {
	cs := cands(20)
	tried := map[int64]bool{2: true, 3: true, 6: true}
	want := []int64{1, 4, 5, 7}
	for draw := 0; draw < 4; draw++ {
		c, ok := Pick(cs, tried, func(n int) int {
			if n != 4 {
				t.Fatalf("intn(%d), want intn(4)", n)
			}
			return draw
		})
		if !ok || c.ID != want[draw] {
			t.Errorf("draw %d: picked %d (ok=%v), want %d", draw, c.ID, ok, want[draw])
		}
	}
	// Draining the pool one pick at a time visits every key exactly once.
	tried = map[int64]bool{}
	for i := 0; i < len(cs); i++ {
		c, ok := Pick(cs, tried, rand.IntN)
		if !ok {
			t.Fatalf("pick %d: ok=false with %d keys untried", i, len(cs)-i)
		}
		if tried[c.ID] {
			t.Fatalf("pick %d: key %d picked twice", i, c.ID)
		}
		tried[c.ID] = true
	}
	if _, ok := Pick(cs, tried, rand.IntN); ok {
		t.Errorf("pick after all tried: ok=true")
	}
}

var now = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{"none", http.Header{}, 0, false},
		{"nil header", nil, 0, false},
		{"seconds", hdr("Retry-After", "20"), 20 * time.Second, true},
		{"below 1s", hdr("Retry-After", "0.2"), time.Second, true},
		{"exactly 1s", hdr("Retry-After", "1"), time.Second, true},
		{"exactly 24h", hdr("Retry-After", "86400"), 24 * time.Hour, true},
		{"above 24h", hdr("Retry-After", "86401"), 24 * time.Hour, true},
		{"far above 24h", hdr("Retry-After", "1000000"), 24 * time.Hour, true},
		// 1e10 s does not fit in a time.Duration (max ~292 years); it is
		// still "above 24h" and must clamp to 24h. (The out-of-range
		// float-to-int conversion is platform-dependent: amd64 yields
		// math.MinInt64, which clamps to 1s; wasm and arm64 saturate.)
		{"beyond Duration range", hdr("Retry-After", "1e10"), 24 * time.Hour, true},
		{"zero", hdr("Retry-After", "0"), 0, false},
		{"negative", hdr("Retry-After", "-5"), 0, false},
		{"garbage", hdr("Retry-After", "soon"), 0, false},
		{"unit suffix", hdr("Retry-After", "30s"), 0, false},
		{"minus infinity", hdr("Retry-After", "-Inf"), 0, false},
		// strconv.ParseFloat accepts "NaN"; it is no usable hint.
		{"NaN", hdr("Retry-After", "NaN"), 0, false},
		{"blank", hdr("Retry-After", "   "), 0, false},
		{"http-date", hdr("Retry-After", now.Add(2*time.Minute).Format(http.TimeFormat)), 2 * time.Minute, true},
		{"http-date soon", hdr("Retry-After", now.Add(time.Second).Format(http.TimeFormat)), time.Second, true},
		{"http-date far", hdr("Retry-After", now.AddDate(1, 0, 0).Format(http.TimeFormat)), 24 * time.Hour, true},
		{"http-date now", hdr("Retry-After", now.Format(http.TimeFormat)), 0, false},
		{"http-date past", hdr("Retry-After", now.Add(-time.Minute).Format(http.TimeFormat)), 0, false},
		{"ms", hdr("Retry-After-Ms", "1500"), 1500 * time.Millisecond, true},
		{"ms lower case", hdr("retry-after-ms", "3000"), 3 * time.Second, true},
		{"ms below 1s", hdr("retry-after-ms", "20"), time.Second, true},
		{"ms above 24h", hdr("retry-after-ms", "172800000"), 24 * time.Hour, true},
		{"ms zero", hdr("retry-after-ms", "0"), 0, false},
		{"ms negative", hdr("retry-after-ms", "-100"), 0, false},
		{"ms garbage", hdr("retry-after-ms", "abc"), 0, false},
		{"ms garbage, seconds usable", hdr("retry-after-ms", "abc", "Retry-After", "2"), 2 * time.Second, true},
		{"ms wins over seconds", hdr("retry-after-ms", "4000", "Retry-After", "60"), 4 * time.Second, true},
		{"ms zero, seconds usable", hdr("retry-after-ms", "0", "Retry-After", "8"), 8 * time.Second, true},
		{"ms fractional", hdr("retry-after-ms", "1234.5"), 1234500 * time.Microsecond, true},
		{"ms NaN", hdr("retry-after-ms", "NaN"), 0, false},
		{"ms beyond Duration range", hdr("retry-after-ms", "1e13"), 24 * time.Hour, true},
		{"seconds padded", hdr("Retry-After", "  12 "), 12 * time.Second, true},
		{"seconds fractional", hdr("Retry-After", "1.5"), 1500 * time.Millisecond, true},
		{"plus infinity", hdr("Retry-After", "+Inf"), 24 * time.Hour, true},
		{"http-date in another format", hdr("Retry-After", now.Add(time.Minute).Format(time.RFC850)), time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := RetryAfter(tt.h, now)
			if d != tt.want || ok != tt.ok {
				t.Errorf("RetryAfter = %v, %v; want %v, %v", d, ok, tt.want, tt.ok)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			cs := cands(n)
			tried := map[int64]bool{1: true, 2: true}
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := Pick(cs, tried, rand.IntN); !ok {
					b.Fatal("no pick")
				}
			}
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	var p Policy
	h := hdr("Retry-After", "17", "Content-Type", "application/json")
	statuses := []int{200, 429, 401, 500, 400}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Classify(Answer{Status: statuses[i%len(statuses)], Header: h}, now)
		i++
	}
}
