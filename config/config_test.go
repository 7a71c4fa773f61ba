package config

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/provider"
)

func TestParseDefaults(t *testing.T) {
	c := Parse(func(string) string { return "" })
	checks := []struct {
		name      string
		got, want any
	}{
		{"SESSION_HOURS", c.SessionTTL, 12 * time.Hour},
		{"DEFAULT_PROVIDER", c.DefaultProvider, "openai"},
		{"MAX_ATTEMPTS", c.MaxAttempts, 3},
		{"UPSTREAM_TIMEOUT_SECONDS", c.UpstreamTimeout, 300 * time.Second},
		{"COOLDOWN_SECONDS", c.Cooldown.DefaultCooldown, time.Minute},
		{"MAX_COOLDOWN_SECONDS", c.Cooldown.MaxCooldown, 30 * time.Minute},
		{"STORM_KEYS", c.Storm.Keys, 5},
		{"STORM_HOLD_SECONDS", c.Storm.Hold, 10 * time.Second},
		{"MAX_BODY_BYTES", c.MaxBodyBytes, int64(6 << 20)},
		{"AI_GATEWAY_URL", c.GatewayURL, "https://gateway.ai.cloudflare.com/v1"},
		{"CACHE_SECONDS", c.CacheTTL, 5 * time.Second},
		{"CHECK_INTERVAL_SECONDS", c.Health.Interval, 6 * time.Hour},
		{"CHECK_CONCURRENCY", c.CheckConcurrency, 6},
		{"JOB_SUBREQUESTS", c.JobSubrequests, int64(40)},
		{"AUTH_KEY_PASSTHROUGH", c.AuthKeyPassthrough, false},
		{"KEYPOOL_DEBUG", c.Debug, false},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s unset: %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name, value string
		read        func(Config) any
		want        any
	}{
		{"SESSION_HOURS", "48", func(c Config) any { return c.SessionTTL }, 48 * time.Hour},
		{"SESSION_HOURS", " 2 ", func(c Config) any { return c.SessionTTL }, 2 * time.Hour},
		{"SESSION_HOURS", "0", func(c Config) any { return c.SessionTTL }, 12 * time.Hour},      // below the range
		{"SESSION_HOURS", "721", func(c Config) any { return c.SessionTTL }, 12 * time.Hour},    // above it
		{"SESSION_HOURS", "twelve", func(c Config) any { return c.SessionTTL }, 12 * time.Hour}, // not a number
		{"UPSTREAM_TIMEOUT_SECONDS", "0", func(c Config) any { return c.UpstreamTimeout }, time.Duration(0)},
		{"CACHE_SECONDS", "0", func(c Config) any { return c.CacheTTL }, time.Duration(0)},
		{"MAX_BODY_BYTES", "1023", func(c Config) any { return c.MaxBodyBytes }, int64(6 << 20)},
		{"MAX_BODY_BYTES", "1024", func(c Config) any { return c.MaxBodyBytes }, int64(1024)},
		{"STORM_KEYS", "1", func(c Config) any { return c.Storm.Keys }, 5},
		{"CHECK_CONCURRENCY", "7", func(c Config) any { return c.CheckConcurrency }, 6},
		{"DEFAULT_PROVIDER", " groq ", func(c Config) any { return c.DefaultProvider }, "groq"},
		{"AI_GATEWAY_URL", "http://127.0.0.1:9/gw/", func(c Config) any { return c.GatewayURL }, "http://127.0.0.1:9/gw"},
		{"AUTH_KEY_PASSTHROUGH", "TRUE", func(c Config) any { return c.AuthKeyPassthrough }, true},
		{"AUTH_KEY_PASSTHROUGH", "1", func(c Config) any { return c.AuthKeyPassthrough }, true},
		{"AUTH_KEY_PASSTHROUGH", "yes", func(c Config) any { return c.AuthKeyPassthrough }, false},
		{"KEYPOOL_DEBUG", "1", func(c Config) any { return c.Debug }, true},
		{"KEYPOOL_DEBUG", "true", func(c Config) any { return c.Debug }, true},
		{"KEYPOOL_DEBUG", "0", func(c Config) any { return c.Debug }, false},
		// Secrets are taken as they are: a space may be part of one.
		{"ADMIN_PASSWORD", " pw with spaces ", func(c Config) any { return c.AdminPassword }, " pw with spaces "},
	}
	for _, tt := range tests {
		c := Parse(func(name string) string {
			if name == tt.name {
				return tt.value
			}
			return ""
		})
		if got := tt.read(c); got != tt.want {
			t.Errorf("%s=%q: %v, want %v", tt.name, tt.value, got, tt.want)
		}
	}
}

func TestBaseURL(t *testing.T) {
	groq, _ := provider.Lookup("groq")
	openai, _ := provider.Lookup("openai")
	c := Parse(func(name string) string {
		if name == groq.BaseURLVar() {
			return "http://127.0.0.1:1"
		}
		return ""
	})
	if got := c.BaseURL(groq); got != "http://127.0.0.1:1" {
		t.Errorf("%s: %q", groq.BaseURLVar(), got)
	}
	if got := c.BaseURL(openai); got != "" {
		t.Errorf("%s unset: %q", openai.BaseURLVar(), got)
	}
}

// TestTableDefaultsParse: every integer's default is in its own range, so
// the default a bad value falls back to is one the code accepts.
func TestTableDefaultsParse(t *testing.T) {
	for _, v := range Vars {
		if v.Kind != Int {
			continue
		}
		n, err := strconv.ParseInt(v.Default, 10, 64)
		if err != nil || n < v.Min || n > v.Max {
			t.Errorf("%s: default %q outside %d–%d", v.Name, v.Default, v.Min, v.Max)
		}
	}
}

// TestREADMETable: README's configuration table lists exactly Vars, in
// order, with the same kind, default and range.
func TestREADMETable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	var rows [][]string
	for _, line := range strings.Split(text[start:], "\n") {
		if !strings.HasPrefix(line, "| `") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	if len(rows) != len(Vars) {
		t.Errorf("README lists %d vars, the table in config %d", len(rows), len(Vars))
	}
	for i := 0; i < len(rows) && i < len(Vars); i++ {
		v, r := Vars[i], rows[i]
		if len(r) < 5 {
			t.Errorf("README row %d has %d cells, want Name | Kind | Default | Range | Meaning", i+1, len(r))
			continue
		}
		if r[0] != "`"+v.Name+"`" {
			t.Errorf("README row %d is %s, config's is %s", i+1, r[0], v.Name)
			continue
		}
		if want := kindText(v); r[1] != want {
			t.Errorf("%s: README kind %q, want %q", v.Name, r[1], want)
		}
		if got := firstCode(r[2]); got != v.Default {
			t.Errorf("%s: README default %q, config's %q", v.Name, r[2], v.Default)
		}
		if want := rangeText(v); r[3] != want {
			t.Errorf("%s: README range %q, want %q", v.Name, r[3], want)
		}
	}
}

func kindText(v Var) string {
	s := "var"
	if v.Kind == Secret {
		s = "secret"
	}
	if v.Required {
		s += ", required"
	}
	return s
}

func rangeText(v Var) string {
	switch v.Kind {
	case Int:
		return strconv.FormatInt(v.Min, 10) + "–" + strconv.FormatInt(v.Max, 10)
	case Flag:
		return "`1`, `true`"
	}
	return "—"
}

// firstCode is the first `code` span of a cell, "" when it has none.
func firstCode(cell string) string {
	i := strings.Index(cell, "`")
	if i < 0 {
		return ""
	}
	j := strings.Index(cell[i+1:], "`")
	if j < 0 {
		return ""
	}
	return cell[i+1 : i+1+j]
}
