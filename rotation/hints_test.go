package rotation

import (
	"testing"
	"time"
)

func TestTryAgainIn(t *testing.T) {
	tests := []struct {
		msg  string
		want time.Duration
		ok   bool
	}{
		{"please try again in 18.642s", 18642 * time.Millisecond, true},
		{"please try again in 18.642s. visit https://platform.openai.com/account/rate-limits to learn more.", 18642 * time.Millisecond, true},
		{"rate limit reached ... please try again in 1m26.4s. visit ...", time.Minute + 26400*time.Millisecond, true},
		{"please try again in 7m12s. need more tokens?", 7*time.Minute + 12*time.Second, true},
		{"please try again in 120ms", time.Second, true}, // clamped up
		{"please try again in 999ms.", time.Second, true},
		{"please try again in 1s", time.Second, true},
		{"please try again in 6h0m0s", 6 * time.Hour, true},
		{"please try again in 23h59m59s", 23*time.Hour + 59*time.Minute + 59*time.Second, true},
		{"please retry in 26.451688064s.", 26451688064 * time.Nanosecond, true},
		{"* quota exceeded ...\nplease retry in 2.5s.", 2500 * time.Millisecond, true},
		{"try again in 18.642s", 18642 * time.Millisecond, true},
		{"try again in 2s, or try again in 9s", 2 * time.Second, true},
		{"try again in 24h", 24 * time.Hour, true},
		{"try again in 25h", 24 * time.Hour, true},      // clamped down
		{"try again in 1000h", 24 * time.Hour, true},    // clamped down
		{"try again in 2000000h", 24 * time.Hour, true}, // clamped down, still a valid Duration
		{"try again in 5.", 0, false},                   // trailing dot, no unit
		{"try again in 5", 0, false},                    // no unit
		{"try again in 20 seconds", 0, false},           // not Go duration syntax
		{"try again in soon", 0, false},
		{"try again in ", 0, false},
		{"try again in", 0, false},
		{"try again in 0s", 0, false},
		{"try again in 0.0s", 0, false},
		{"try again in -5s", 0, false},
		{"try again in .s", 0, false},
		{"try again in 1..5s", 0, false},
		{"try again in 1h1h", 2 * time.Hour, true},
		{"try again in 5sms", 0, false},
		{"try again later", 0, false},
		{"please retry after 20 seconds", 0, false},
		{"", 0, false},
		{"no marker here 18.642s", 0, false},
		{"Please Try Again In 18.642s", 0, false}, // the caller lower-cases
		{"retry in 3m", 3 * time.Minute, true},
		{"try again in 1.5s and retry in 9s", 1500 * time.Millisecond, true},
		{"try again in soon; retry in 9s", 9 * time.Second, true}, // the second marker is tried too
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			d, ok := TryAgainIn(tt.msg)
			if d != tt.want || ok != tt.ok {
				t.Errorf("TryAgainIn(%q) = %v, %v; want %v, %v", tt.msg, d, ok, tt.want, tt.ok)
			}
		})
	}
}

// A hint too large for a time.Duration is still a huge hint: it should clamp
// to 24h like any other, as RetryAfter does for "1e10" seconds.
func TestTryAgainInBeyondDurationRangeClamps(t *testing.T) {
	for _, msg := range []string{
		"try again in 9999999999s",
		"try again in 3000000h",
		"retry in 99999999999999999999s",
	} {
		if d, ok := TryAgainIn(msg); d != maxCooldown || !ok {
			t.Errorf("TryAgainIn(%q) = %v, %v; want %v, true", msg, d, ok, maxCooldown)
		}
	}
}

func utc(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

func TestDailyReset(t *testing.T) {
	pst := time.FixedZone("PST", -8*3600)
	pdt := time.FixedZone("PDT", -7*3600)
	jst := time.FixedZone("JST", 9*3600)
	const g = "google-ai-studio"
	tests := []struct {
		name string
		prov string
		now  time.Time
		want time.Time
	}{
		// 2026: DST starts Sunday March 8 at 02:00 PST, ends Sunday
		// November 1 at 02:00 PDT.
		{"pacific evening before DST starts", g, time.Date(2026, 3, 7, 20, 0, 0, 0, pst), utc(2026, 3, 8, 8, 0)},
		{"pacific midnight DST-start day is PST", g, time.Date(2026, 3, 7, 23, 59, 59, 0, pst), utc(2026, 3, 8, 8, 0)},
		{"pacific at midnight DST-start day: next is 23h later", g, utc(2026, 3, 8, 8, 0), utc(2026, 3, 9, 7, 0)},
		{"pacific 01:59 PST before the switch", g, time.Date(2026, 3, 8, 9, 59, 59, 0, time.UTC), utc(2026, 3, 9, 7, 0)},
		{"pacific 03:00 PDT just after the switch", g, utc(2026, 3, 8, 10, 0), utc(2026, 3, 9, 7, 0)},
		{"pacific noon UTC on DST-start day", g, utc(2026, 3, 8, 12, 0), utc(2026, 3, 9, 7, 0)},
		{"pacific evening before DST ends", g, time.Date(2026, 10, 31, 20, 0, 0, 0, pdt), utc(2026, 11, 1, 7, 0)},
		{"pacific at midnight DST-end day: next is 25h later", g, utc(2026, 11, 1, 7, 0), utc(2026, 11, 2, 8, 0)},
		{"pacific first 01:30 (PDT) on DST-end day", g, utc(2026, 11, 1, 8, 30), utc(2026, 11, 2, 8, 0)},
		{"pacific second 01:30 (PST) on DST-end day", g, utc(2026, 11, 1, 9, 30), utc(2026, 11, 2, 8, 0)},
		{"pacific noon UTC on DST-end day", g, utc(2026, 11, 1, 12, 0), utc(2026, 11, 2, 8, 0)},
		{"pacific summer", g, utc(2026, 7, 15, 18, 0), utc(2026, 7, 16, 7, 0)},
		{"pacific summer at midnight: next is 24h later", g, utc(2026, 7, 15, 7, 0), utc(2026, 7, 16, 7, 0)},
		{"pacific summer 1ms before midnight", g, utc(2026, 7, 15, 7, 0).Add(-time.Millisecond), utc(2026, 7, 15, 7, 0)},
		{"pacific winter", g, utc(2026, 1, 15, 18, 0), utc(2026, 1, 16, 8, 0)},
		{"pacific winter at midnight: next is 24h later", g, utc(2026, 1, 15, 8, 0), utc(2026, 1, 16, 8, 0)},
		{"pacific winter 1ns before midnight", g, utc(2026, 1, 15, 8, 0).Add(-time.Nanosecond), utc(2026, 1, 15, 8, 0)},
		{"pacific new year's eve, UTC already next year", g, time.Date(2026, 12, 31, 23, 30, 0, 0, pst), utc(2027, 1, 1, 8, 0)},
		{"pacific now given in JST", g, time.Date(2026, 1, 15, 10, 0, 0, 0, jst), utc(2026, 1, 15, 8, 0)},
		{"pacific leap day", g, utc(2028, 2, 29, 12, 0), utc(2028, 3, 1, 8, 0)},
		{"pacific 2025 DST start (March 9)", g, utc(2025, 3, 9, 12, 0), utc(2025, 3, 10, 7, 0)},
		{"pacific 2025 DST end (November 2)", g, utc(2025, 11, 2, 12, 0), utc(2025, 11, 3, 8, 0)},
		{"pacific 2027 DST start (March 14)", g, utc(2027, 3, 14, 12, 0), utc(2027, 3, 15, 7, 0)},

		{"beijing morning", "siliconflow", utc(2026, 1, 15, 3, 0), utc(2026, 1, 15, 16, 0)},
		{"beijing 1s before midnight", "siliconflow", time.Date(2026, 1, 15, 15, 59, 59, 0, time.UTC), utc(2026, 1, 15, 16, 0)},
		{"beijing at midnight: next is 24h later", "siliconflow", utc(2026, 1, 15, 16, 0), utc(2026, 1, 16, 16, 0)},
		{"beijing, UTC still the day before", "siliconflow", utc(2026, 12, 31, 20, 0), utc(2027, 1, 1, 16, 0)},
		{"beijing now given in PST", "siliconflow", time.Date(2026, 1, 15, 9, 0, 0, 0, pst), utc(2026, 1, 16, 16, 0)},

		{"openai midday", "openai", utc(2026, 1, 15, 12, 0), utc(2026, 1, 16, 0, 0)},
		{"openai 1 minute before midnight", "openai", utc(2026, 1, 15, 23, 59), utc(2026, 1, 16, 0, 0)},
		{"openai at midnight: next is 24h later", "openai", utc(2026, 1, 15, 0, 0), utc(2026, 1, 16, 0, 0)},
		{"openai year end", "openai", utc(2026, 12, 31, 23, 0), utc(2027, 1, 1, 0, 0)},
		{"openai now given in PDT", "openai", time.Date(2026, 7, 15, 20, 0, 0, 0, pdt), utc(2026, 7, 17, 0, 0)},
		{"openrouter is UTC", "openrouter", utc(2026, 1, 15, 12, 0), utc(2026, 1, 16, 0, 0)},
		{"unknown provider is UTC", "nope", utc(2026, 1, 15, 12, 0), utc(2026, 1, 16, 0, 0)},
		{"empty provider is UTC", "", utc(2026, 1, 15, 12, 0), utc(2026, 1, 16, 0, 0)},
		{"provider names are exact", "Google-AI-Studio", utc(2026, 1, 15, 12, 0), utc(2026, 1, 16, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DailyReset(tt.prov, tt.now)
			if !got.Equal(tt.want) {
				t.Errorf("DailyReset(%q, %v) = %v, want %v", tt.prov, tt.now, got.UTC(), tt.want)
			}
		})
	}
}

// DailyReset writes the US daylight-time rule out; check it against the tz
// database for every half hour (and the instants around each midnight) of
// 2025–2030.
func TestDailyResetMatchesTZDatabase(t *testing.T) {
	zones := []struct {
		prov, zone string
	}{
		{"google-ai-studio", "America/Los_Angeles"},
		{"siliconflow", "Asia/Shanghai"},
		{"openai", "UTC"},
	}
	for _, z := range zones {
		t.Run(z.prov, func(t *testing.T) {
			loc, err := time.LoadLocation(z.zone)
			if err != nil {
				t.Skipf("no tz database entry for %s on this machine (%v); the hand-written table in TestDailyReset still runs", z.zone, err)
			}
			next := func(now time.Time) time.Time {
				y, m, d := now.In(loc).Date()
				return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
			}
			check := func(now time.Time) {
				t.Helper()
				if got, want := DailyReset(z.prov, now), next(now); !got.Equal(want) {
					t.Fatalf("DailyReset(%q, %v) = %v, want %v (%v)", z.prov, now.UTC(), got.UTC(), want.UTC(), want)
				}
			}
			end := time.Date(2031, 1, 1, 0, 0, 0, 0, loc)
			n := 0
			for now := time.Date(2025, 1, 1, 0, 0, 0, 0, loc); now.Before(end); now = now.Add(30 * time.Minute) {
				check(now)
				n++
			}
			// Around every local midnight: just before, at, just after.
			for day := time.Date(2025, 1, 1, 0, 0, 0, 0, loc); day.Before(end); day = time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, loc) {
				check(day.Add(-time.Nanosecond))
				check(day.Add(-time.Millisecond))
				check(day)
				check(day.Add(time.Millisecond))
				if got := DailyReset(z.prov, day); got.Sub(day) < 23*time.Hour || got.Sub(day) > 25*time.Hour {
					t.Fatalf("from midnight %v the next reset is %v later", day, got.Sub(day))
				}
				n += 4
			}
			if n < 6*365*52 {
				t.Fatalf("only %d instants checked", n)
			}
		})
	}
}

func TestClampCooldown(t *testing.T) {
	tests := []struct{ in, want time.Duration }{
		{-time.Hour, time.Second},
		{0, time.Second},
		{time.Nanosecond, time.Second},
		{999 * time.Millisecond, time.Second},
		{time.Second, time.Second},
		{90 * time.Second, 90 * time.Second},
		{24 * time.Hour, 24 * time.Hour},
		{24*time.Hour + 1, 24 * time.Hour},
		{1<<63 - 1, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := clampCooldown(tt.in); got != tt.want {
			t.Errorf("clampCooldown(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
