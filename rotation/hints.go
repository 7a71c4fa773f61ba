package rotation

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryAfter reads the provider's wait hint from the standard Retry-After
// header (seconds or HTTP date) or the retry-after-ms header some
// OpenAI-compatible services send. ok is false when there is no usable hint.
func RetryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			if d, ok := secondsToCooldown(ms / 1000); ok {
				return d, true
			}
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		return secondsToCooldown(s)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return clampCooldown(d), true
		}
	}
	return 0, false
}

// TryAgainIn reads the wait OpenAI-style messages name: "Please try again
// in 18.642s", "try again in 1m26.4s", "in 120ms", and Gemini's "Please
// retry in 26.451688064s". msg is lower case.
func TryAgainIn(msg string) (time.Duration, bool) {
	for _, marker := range []string{"try again in ", "retry in "} {
		i := strings.Index(msg, marker)
		if i < 0 {
			continue
		}
		rest := msg[i+len(marker):]
		end := 0
		for end < len(rest) && strings.IndexByte("0123456789.hms", rest[end]) >= 0 {
			end++
		}
		if d, ok := parseGoDuration(rest[:end]); ok {
			return d, true
		}
	}
	return 0, false
}

// parseGoDuration reads durations written the way Go and protobuf print
// them ("26s", "1.5s", "1m26.4s", "120ms"), clamped to a cooldown.
func parseGoDuration(s string) (time.Duration, bool) {
	s = strings.TrimRight(strings.TrimSpace(s), ".")
	if s == "" {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		// A well-formed number that ParseDuration refuses overflowed: too
		// large for a Duration is still a hint, the longest one.
		n := strings.TrimRight(s, "hms")
		unit := s[len(n):]
		if unit != "h" && unit != "m" && unit != "s" && unit != "ms" {
			return 0, false
		}
		if f, err := strconv.ParseFloat(n, 64); err == nil && f > 0 {
			return maxCooldown, true
		}
		return 0, false
	}
	if d <= 0 {
		return 0, false
	}
	return clampCooldown(d), true
}

// secondsToCooldown turns a hint in seconds into a cooldown. The float is
// bounded before it becomes a Duration, which would overflow.
func secondsToCooldown(s float64) (time.Duration, bool) {
	if math.IsNaN(s) || s <= 0 {
		return 0, false
	}
	if s > maxCooldown.Seconds() {
		return maxCooldown, true
	}
	return clampCooldown(time.Duration(s * float64(time.Second))), true
}

func clampCooldown(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	if d > maxCooldown {
		return maxCooldown
	}
	return d
}

// DailyReset is when prov's daily quotas next reset after now: midnight
// Pacific time for Google AI Studio (as Google documents), midnight in
// Beijing for SiliconFlow, midnight UTC for everyone else.
func DailyReset(prov string, now time.Time) time.Time {
	switch prov {
	case "google-ai-studio":
		return nextPacificMidnight(now)
	case "siliconflow":
		return nextMidnight(now, 8*time.Hour)
	}
	return nextMidnight(now, 0)
}

// nextMidnight is the next midnight after now in a zone offset from UTC.
func nextMidnight(now time.Time, offset time.Duration) time.Time {
	local := now.UTC().Add(offset)
	y, m, d := local.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Add(-offset)
}

// nextPacificMidnight is the next midnight in America/Los_Angeles. The US
// rule is written out (a Worker has no tz database): daylight time from
// 02:00 on the second Sunday of March to 02:00 on the first Sunday of
// November. No midnight falls in a switch hour, so each is unambiguous.
func nextPacificMidnight(now time.Time) time.Time {
	local := now.UTC().Add(pacificOffset(now))
	y, m, d := local.Date()
	wall := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	if t := wall.Add(8 * time.Hour); pacificOffset(t) == -8*time.Hour {
		return t
	}
	return wall.Add(7 * time.Hour)
}

// pacificOffset is the Pacific zone's offset from UTC at instant t.
func pacificOffset(t time.Time) time.Duration {
	y := t.UTC().Year()
	start := nthSunday(y, time.March, 2).Add(10 * time.Hour) // 02:00 PST
	end := nthSunday(y, time.November, 1).Add(9 * time.Hour) // 02:00 PDT
	if !t.Before(start) && t.Before(end) {
		return -7 * time.Hour
	}
	return -8 * time.Hour
}

// nthSunday is the date of the n-th Sunday of a month, at 00:00 UTC.
func nthSunday(y int, m time.Month, n int) time.Time {
	first := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	shift := (7 - int(first.Weekday())) % 7
	return first.AddDate(0, 0, shift+7*(n-1))
}
