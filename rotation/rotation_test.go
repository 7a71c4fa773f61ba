package rotation

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
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

func TestClassify(t *testing.T) {
	tests := []struct {
		name     string
		policy   Policy
		status   int
		h        http.Header
		action   Action
		cooldown time.Duration
	}{
		{"200", Policy{}, 200, nil, Serve, 0},
		{"201", Policy{}, 201, nil, Serve, 0},
		{"204", Policy{}, 204, nil, Serve, 0},
		{"299", Policy{}, 299, nil, Serve, 0},
		{"network error", Policy{}, 0, nil, Retry, 0},
		{"401", Policy{}, 401, nil, BlockKey, 0},
		{"401 with retry-after still blocks", Policy{}, 401, hdr("Retry-After", "5"), BlockKey, 0},
		{"429 retry-after seconds", Policy{}, 429, hdr("Retry-After", "30"), Cool, 30 * time.Second},
		{"429 retry-after fractional", Policy{}, 429, hdr("Retry-After", "1.5"), Cool, 1500 * time.Millisecond},
		{"429 retry-after padded", Policy{}, 429, hdr("Retry-After", "  12 "), Cool, 12 * time.Second},
		{"429 retry-after http-date", Policy{}, 429, hdr("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)), Cool, 90 * time.Second},
		{"429 retry-after http-date in the past", Policy{}, 429, hdr("Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)), Cool, DefaultCooldown},
		{"429 retry-after-ms", Policy{}, 429, hdr("retry-after-ms", "2500"), Cool, 2500 * time.Millisecond},
		{"429 retry-after-ms wins over retry-after", Policy{}, 429, hdr("retry-after-ms", "4000", "Retry-After", "60"), Cool, 4 * time.Second},
		{"429 bad retry-after-ms falls back to retry-after", Policy{}, 429, hdr("retry-after-ms", "soon", "Retry-After", "7"), Cool, 7 * time.Second},
		{"429 zero retry-after-ms falls back to retry-after", Policy{}, 429, hdr("retry-after-ms", "0", "Retry-After", "8"), Cool, 8 * time.Second},
		{"429 no hint", Policy{}, 429, nil, Cool, DefaultCooldown},
		{"429 garbage hint", Policy{}, 429, hdr("Retry-After", "later"), Cool, DefaultCooldown},
		{"429 no hint policy default", Policy{DefaultCooldown: 5 * time.Minute}, 429, hdr(), Cool, 5 * time.Minute},
		{"429 hint beats policy default", Policy{DefaultCooldown: 5 * time.Minute}, 429, hdr("Retry-After", "3"), Cool, 3 * time.Second},
		{"429 negative policy default", Policy{DefaultCooldown: -time.Second}, 429, nil, Cool, DefaultCooldown},
		{"500", Policy{}, 500, nil, Retry, 0},
		{"502", Policy{}, 502, nil, Retry, 0},
		{"503", Policy{}, 503, hdr("Retry-After", "30"), Retry, 0},
		{"504", Policy{}, 504, nil, Retry, 0},
		{"599", Policy{}, 599, nil, Retry, 0},
		{"400", Policy{}, 400, nil, Return, 0},
		{"402", Policy{}, 402, nil, Return, 0},
		{"403", Policy{}, 403, nil, Return, 0},
		{"404", Policy{}, 404, nil, Return, 0},
		{"413", Policy{}, 413, nil, Return, 0},
		{"422", Policy{}, 422, nil, Return, 0},
		{"300", Policy{}, 300, nil, Return, 0},
		{"100", Policy{}, 100, nil, Retry, 0},
		{"101", Policy{}, 101, nil, Retry, 0},
		{"199", Policy{}, 199, nil, Retry, 0},
		{"600", Policy{}, 600, nil, Retry, 0},
		{"999", Policy{}, 999, nil, Retry, 0},
		{"negative", Policy{}, -1, nil, Retry, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.policy.Classify(tt.status, tt.h, now)
			if v.Action != tt.action {
				t.Fatalf("Action = %v, want %v (verdict %+v)", v.Action, tt.action, v)
			}
			if v.Cooldown != tt.cooldown {
				t.Errorf("Cooldown = %v, want %v", v.Cooldown, tt.cooldown)
			}
			switch v.Action {
			case Serve, Return:
				if v.Reason != "" {
					t.Errorf("Reason = %q, want none", v.Reason)
				}
			default:
				if v.Reason == "" {
					t.Errorf("verdict %v has no reason", v.Action)
				}
			}
			if tt.status >= 500 && tt.status <= 599 && !strings.Contains(v.Reason, strconv.Itoa(tt.status)) {
				t.Errorf("Reason %q does not name status %d", v.Reason, tt.status)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	want := map[Action]string{Serve: "serve", Return: "return", Retry: "retry", Cool: "cool", BlockKey: "block_key"}
	for a, s := range want {
		if a.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(a), a.String(), s)
		}
	}
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
		p.Classify(statuses[i%len(statuses)], h, now)
		i++
	}
}
