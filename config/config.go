// Package config owns every var and secret keypool reads: Vars is the one
// table of them (name, kind, default, range, meaning), and Parse reads
// them into a typed Config. Nothing else reads the environment; README's
// configuration table is checked against Vars by a test.
//
// A value that does not parse or is out of range is ignored (the default
// applies) and logged once per isolate, so a typo in wrangler.toml never
// stops the worker but is visible in its log.
package config

import (
	"log"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/rotation"
)

// Kind says how a variable is set and read.
type Kind int

const (
	Secret Kind = iota // wrangler secret put; never logged
	Text               // a [vars] string
	Flag               // a [vars] switch: on when 1 or true
	Int                // a [vars] integer in [Min, Max]
)

// Var is one row of the table.
type Var struct {
	Name     string
	Kind     Kind
	Required bool   // keypool refuses to serve without it
	Default  string // as README shows it; "" for none
	Min, Max int64  // for Int
	Meaning  string // one line; README says more
}

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }

// Vars is every var and secret keypool reads, in README's order.
// <PROVIDER>_BASE_URL stands for one variable per provider.
var Vars = []Var{
	{Name: "ADMIN_PASSWORD", Kind: Secret, Required: true, Meaning: "the admin password, at least 16 characters"},
	{Name: "KEYPOOL_SECRET", Kind: Secret, Required: true, Meaning: "encrypts the stored keys and signs sessions, at least 16 characters"},
	{Name: "AUTH_KEY", Kind: Secret, Meaning: "the bootstrap client token"},
	{Name: "AUTH_KEY_PASSTHROUGH", Kind: Flag, Meaning: "AUTH_KEY may call every provider endpoint"},
	{Name: "SESSION_HOURS", Kind: Int, Default: "12", Min: 1, Max: 24 * 30, Meaning: "life of an admin or guest session"},
	{Name: "DEFAULT_PROVIDER", Kind: Text, Default: "openai", Meaning: "provider of model names without a provider/ prefix"},
	{Name: "MAX_ATTEMPTS", Kind: Int, Default: "3", Min: 1, Max: 10, Meaning: "failed attempts per request that may be the request's or the upstream's"},
	{Name: "RETRY_BUDGET_SECONDS", Kind: Int, Default: "30", Min: 1, Max: 600, Meaning: "no new attempt starts later than this after the request arrived"},
	{Name: "UPSTREAM_TIMEOUT_SECONDS", Kind: Int, Default: "300", Min: 0, Max: 3600, Meaning: "wait for an attempt's response headers (0: no limit)"},
	{Name: "STREAM_IDLE_SECONDS", Kind: Int, Default: "600", Min: 0, Max: 3600, Meaning: "an answer body that sends nothing this long is ended, and a WebSocket session where nothing moves is closed (0: no limit)"},
	{Name: "COOLDOWN_SECONDS", Kind: Int, Default: secs(rotation.DefaultCooldown), Min: 1, Max: 86400, Meaning: "rest of a rate-limited key-model without a hint"},
	{Name: "MAX_COOLDOWN_SECONDS", Kind: Int, Default: secs(rotation.DefaultMaxCooldown), Min: 1, Max: 86400, Meaning: "longest rest a run of hint-less 429s grows to"},
	{Name: "STORM_KEYS", Kind: Int, Default: strconv.Itoa(rotation.DefaultStorm.Keys), Min: 2, Max: 1000, Meaning: "distinct keys failing at once that make a storm"},
	{Name: "STORM_WINDOW_SECONDS", Kind: Int, Default: secs(rotation.DefaultStorm.Window), Min: 1, Max: 3600, Meaning: "the window those failures fall in"},
	{Name: "STORM_HOLD_SECONDS", Kind: Int, Default: secs(rotation.DefaultStorm.Hold), Min: 1, Max: 60, Meaning: "how long a provider in a storm is not called"},
	// MAX_BODY_BYTES: a body at the limit costs one Go copy in the
	// instance serving it (two for a chat stream keypool asks for usage,
	// three when the model is also rewritten) plus the JS bytes replayed to
	// the upstream; four such requests at once, each in its own ~6 MiB
	// instance, stay near 100 MB of the isolate's 128 MB.
	{Name: "MAX_BODY_BYTES", Kind: Int, Default: "6291456", Min: 1024, Max: 100 << 20, Meaning: "largest request body accepted"},
	{Name: "CF_ACCOUNT_ID", Kind: Text, Meaning: "the Cloudflare account (AI Gateway, Workers AI)"},
	{Name: "AI_GATEWAY", Kind: Text, Meaning: "the AI Gateway's name"},
	{Name: "CF_AIG_TOKEN", Kind: Secret, Meaning: "token of an authenticated gateway"},
	{Name: "AI_GATEWAY_URL", Kind: Text, Default: "https://gateway.ai.cloudflare.com/v1", Meaning: "the gateway's base URL"},
	{Name: "<PROVIDER>_BASE_URL", Kind: Text, Meaning: "replaces a provider's origin"},
	{Name: "CACHE_SECONDS", Kind: Int, Default: "5", Min: 0, Max: 300, Meaning: "how long the isolate reuses what it read from D1"},
	{Name: "USAGE_FLUSH_SECONDS", Kind: Int, Default: "5", Min: 0, Max: 3600, Meaning: "usage counters are written at most this often"},
	{Name: "CHECK_SUBREQUESTS", Kind: Int, Default: "45", Min: 10, Max: 10000, Meaning: "subrequests one cron run may use"},
	{Name: "CHECK_TIME_BUDGET_SECONDS", Kind: Int, Default: "20", Min: 1, Max: 900, Meaning: "no new check starts later than this in a cron run"},
	{Name: "CHECK_CONCURRENCY", Kind: Int, Default: "6", Min: 1, Max: 6, Meaning: "checks at once in a cron run"},
	{Name: "CHECK_INTERVAL_SECONDS", Kind: Int, Default: "21600", Min: 1, Max: 30 * 86400, Meaning: "how often a healthy key is checked"},
	{Name: "CHECK_PROBE_SECONDS", Kind: Int, Default: "600", Min: 1, Max: 30 * 86400, Meaning: "first wait before probing a blocked or exhausted key"},
	{Name: "CHECK_PROBE_MAX_SECONDS", Kind: Int, Default: "86400", Min: 1, Max: 30 * 86400, Meaning: "longest wait between probes"},
	{Name: "CHECK_RETRY_SECONDS", Kind: Int, Default: "900", Min: 1, Max: 30 * 86400, Meaning: "wait after a check that learnt nothing"},
	{Name: "CHECK_HISTORY_DAYS", Kind: Int, Default: "30", Min: 1, Max: 3650, Meaning: "check results, key events and audit entries kept"},
	{Name: "REQUEST_LOG_DAYS", Kind: Int, Default: "7", Min: 1, Max: 365, Meaning: "request log entries kept this many days"},
	{Name: "REQUEST_LOG_ROWS", Kind: Int, Default: "20000", Min: 100, Max: 1000000, Meaning: "request log entries kept at most"},
	{Name: "JOB_SUBREQUESTS", Kind: Int, Default: "40", Min: 10, Max: 10000, Meaning: "subrequests one advance of a check job may use"},
	{Name: "JOB_TIME_BUDGET_SECONDS", Kind: Int, Default: "10", Min: 1, Max: 600, Meaning: "time one advance of a check job may take"},
	{Name: "KEYPOOL_DEBUG", Kind: Flag, Meaning: "admin-only test routes"},
}

// Config is the environment, parsed.
type Config struct {
	AdminPassword, KeypoolSecret, AuthKey string
	AuthKeyPassthrough                    bool
	SessionTTL                            time.Duration
	DefaultProvider                       string

	MaxAttempts                    int
	RetryBudget, UpstreamTimeout   time.Duration
	StreamIdle                     time.Duration
	Cooldown                       rotation.Policy
	Storm                          rotation.StormPolicy
	MaxBodyBytes                   int64
	AccountID, Gateway, GatewayURL string
	GatewayToken                   string
	// baseURLs holds each provider's <PROVIDER>_BASE_URL that is set.
	baseURLs map[string]string

	CacheTTL, UsageFlush time.Duration

	CheckSubrequests, JobSubrequests int64
	CheckTimeBudget, JobTimeBudget   time.Duration
	CheckConcurrency                 int
	Health                           rotation.HealthPolicy
	CheckHistoryDays                 int64
	RequestLogDays, RequestLogRows   int64

	Debug bool
}

// BaseURL is the <PROVIDER>_BASE_URL set for p, or "".
func (c Config) BaseURL(p provider.Provider) string { return c.baseURLs[p.BaseURLVar()] }

// Parse reads the environment through getenv ("" when unset).
func Parse(getenv func(string) string) Config {
	r := reader{getenv: getenv}
	c := Config{
		AdminPassword:      getenv("ADMIN_PASSWORD"),
		KeypoolSecret:      getenv("KEYPOOL_SECRET"),
		AuthKey:            getenv("AUTH_KEY"),
		AuthKeyPassthrough: r.flag("AUTH_KEY_PASSTHROUGH"),
		SessionTTL:         time.Duration(r.int("SESSION_HOURS")) * time.Hour,
		DefaultProvider:    r.text("DEFAULT_PROVIDER"),
		MaxAttempts:        int(r.int("MAX_ATTEMPTS")),
		RetryBudget:        r.seconds("RETRY_BUDGET_SECONDS"),
		UpstreamTimeout:    r.seconds("UPSTREAM_TIMEOUT_SECONDS"),
		StreamIdle:         r.seconds("STREAM_IDLE_SECONDS"),
		Cooldown: rotation.Policy{
			DefaultCooldown: r.seconds("COOLDOWN_SECONDS"),
			MaxCooldown:     r.seconds("MAX_COOLDOWN_SECONDS"),
		},
		Storm: rotation.StormPolicy{
			Keys:   int(r.int("STORM_KEYS")),
			Window: r.seconds("STORM_WINDOW_SECONDS"),
			Hold:   r.seconds("STORM_HOLD_SECONDS"),
		},
		MaxBodyBytes:     r.int("MAX_BODY_BYTES"),
		AccountID:        r.text("CF_ACCOUNT_ID"),
		Gateway:          r.text("AI_GATEWAY"),
		GatewayURL:       strings.TrimRight(r.text("AI_GATEWAY_URL"), "/"),
		GatewayToken:     getenv("CF_AIG_TOKEN"),
		CacheTTL:         r.seconds("CACHE_SECONDS"),
		UsageFlush:       r.seconds("USAGE_FLUSH_SECONDS"),
		CheckSubrequests: r.int("CHECK_SUBREQUESTS"),
		JobSubrequests:   r.int("JOB_SUBREQUESTS"),
		CheckTimeBudget:  r.seconds("CHECK_TIME_BUDGET_SECONDS"),
		JobTimeBudget:    r.seconds("JOB_TIME_BUDGET_SECONDS"),
		CheckConcurrency: int(r.int("CHECK_CONCURRENCY")),
		Health: rotation.HealthPolicy{
			Interval:   r.seconds("CHECK_INTERVAL_SECONDS"),
			ProbeBase:  r.seconds("CHECK_PROBE_SECONDS"),
			ProbeMax:   r.seconds("CHECK_PROBE_MAX_SECONDS"),
			ErrorRetry: r.seconds("CHECK_RETRY_SECONDS"),
		},
		CheckHistoryDays: r.int("CHECK_HISTORY_DAYS"),
		RequestLogDays:   r.int("REQUEST_LOG_DAYS"),
		RequestLogRows:   r.int("REQUEST_LOG_ROWS"),
		Debug:            r.flag("KEYPOOL_DEBUG"),
	}
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		if v := getenv(p.BaseURLVar()); v != "" {
			if c.baseURLs == nil {
				c.baseURLs = map[string]string{}
			}
			c.baseURLs[p.BaseURLVar()] = v
		}
	}
	return c
}

// Lookup returns the row of the table named name.
func Lookup(name string) (Var, bool) {
	for _, v := range Vars {
		if v.Name == name {
			return v, true
		}
	}
	return Var{}, false
}

type reader struct{ getenv func(string) string }

func (r reader) row(name string) Var {
	v, ok := Lookup(name)
	if !ok {
		panic("config: " + name + " is not in the table") // a programming error, caught by the tests
	}
	return v
}

func (r reader) text(name string) string {
	if s := strings.TrimSpace(r.getenv(name)); s != "" {
		return s
	}
	return r.row(name).Default
}

func (r reader) flag(name string) bool {
	s := strings.TrimSpace(r.getenv(name))
	return s == "1" || strings.EqualFold(s, "true")
}

func (r reader) int(name string) int64 {
	row := r.row(name)
	def, _ := strconv.ParseInt(row.Default, 10, 64)
	s := strings.TrimSpace(r.getenv(name))
	if s == "" {
		return def
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < row.Min || n > row.Max {
		warnOnce(name, s, "want an integer from "+strconv.FormatInt(row.Min, 10)+" to "+strconv.FormatInt(row.Max, 10))
		return def
	}
	return n
}

func (r reader) seconds(name string) time.Duration {
	return time.Duration(r.int(name)) * time.Second
}

// warned remembers the bad values already logged: Parse may run on every
// event.
var warned sync.Map

func warnOnce(name, value, want string) {
	if _, seen := warned.LoadOrStore(name+"="+value, true); !seen {
		log.Printf("keypool: ignoring %s=%q: %s", name, value, want)
	}
}
