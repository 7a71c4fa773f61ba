package handler

import (
	"context"
	"database/sql"
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// Settings the admin changes at run time (stored in D1, unlike vars).
const (
	settingFreeModels = "free_models"
	settingAliases    = "aliases"
	settingWait       = "wait_for_cooldown_seconds"
	// check_models names, per provider, a cheap model the health check
	// calls with max_tokens 1 (proving the key can spend) instead of
	// listing models (proving only that it is valid).
	settingCheckModels = "check_models"
	// The guest page (see guest.go).
	settingAccessMode    = "access_mode"
	settingGuestPassword = "guest_password" // stored as a fingerprint, never shown
	settingGuestReveal   = "guest_reveal_keys"
	settingPageSize      = "page_size"
	// Request headers clients may send upstream beyond the built-in
	// allow-list (see headers.go): any provider, and AI Gateway options.
	settingForwardHeaders = "forward_headers"
	settingGatewayHeaders = "gateway_headers"
)

// settingChecks validate each setting's stored text; "" means valid.
var settingChecks = map[string]func(string) string{
	settingFreeModels:  func(v string) string { _, e := parseFreeModels(v); return e },
	settingAliases:     func(v string) string { _, e := parseAliases(v); return e },
	settingWait:        func(v string) string { _, e := parseWait(v); return e },
	settingCheckModels: func(v string) string { _, e := parseCheckModels(v); return e },
	settingAccessMode: func(v string) string {
		if m := gjson.Parse(v).String(); m != modeOpen && m != modeRestricted && m != modePrivate {
			return `want "open", "restricted" or "private"`
		}
		return ""
	},
	settingGuestPassword: func(v string) string {
		if r := gjson.Parse(v); r.Type != gjson.String || len(r.String()) < 8 {
			return "want a string of at least 8 characters"
		}
		return ""
	},
	settingGuestReveal: func(v string) string {
		if r := gjson.Parse(v); r.Type != gjson.True && r.Type != gjson.False {
			return "want true or false"
		}
		return ""
	},
	settingForwardHeaders: func(v string) string { _, e := parseHeaderNames(v, false); return e },
	settingGatewayHeaders: func(v string) string { _, e := parseHeaderNames(v, true); return e },
	settingPageSize: func(v string) string {
		if n, err := strconv.Atoi(v); err != nil || n < 10 || n > 500 {
			return "want a whole number from 10 to 500"
		}
		return ""
	},
}

func settingNames() []string {
	names := make([]string, 0, len(settingChecks))
	for n := range settingChecks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// maxWait bounds how long a request may wait for a cooling key.
const maxWait = 30

// settings are the proxy's run-time settings, parsed.
type settings struct {
	// freeModels are "provider/model" patterns ("*" matches any run of
	// characters) of models that cost nothing, which exhausted keys may
	// still serve. A pattern without a known provider applies to all.
	freeModels []string
	// aliases map a public model name to "provider/model".
	aliases map[string]string
	// wait: when every key is cooling and the first comes back within
	// this many seconds, the request waits instead of answering 429.
	wait int64
	// checkModels: provider → model for health checks.
	checkModels map[string]string
	// The guest page: who sees it, the guest password's fingerprint,
	// whether guests see full keys, and the default page size.
	accessMode      string
	guestPassword   string
	guestRevealKeys bool
	pageSize        int64
	// forwardHeaders and gatewayHeaders are extra request headers
	// (canonical names) that go upstream, the latter only through AI
	// Gateway.
	forwardHeaders []string
	gatewayHeaders []string
}

// parseSettings reads stored values; one that does not parse (it cannot
// be stored that way through the API) is logged and left at its default.
func parseSettings(m map[string]string) settings {
	s := settings{accessMode: modePrivate, pageSize: 50}
	for name, v := range m {
		var err string
		switch name {
		case settingFreeModels:
			s.freeModels, err = parseFreeModels(v)
		case settingAliases:
			s.aliases, err = parseAliases(v)
		case settingWait:
			s.wait, err = parseWait(v)
		case settingCheckModels:
			s.checkModels, err = parseCheckModels(v)
		case settingAccessMode:
			if err = settingChecks[name](v); err == "" {
				s.accessMode = gjson.Parse(v).String()
			}
		case settingGuestPassword:
			s.guestPassword = gjson.Parse(v).String()
		case settingGuestReveal:
			s.guestRevealKeys = gjson.Parse(v).Bool()
		case settingPageSize:
			if err = settingChecks[name](v); err == "" {
				s.pageSize, _ = strconv.ParseInt(v, 10, 64)
			}
		case settingForwardHeaders:
			s.forwardHeaders, err = parseHeaderNames(v, false)
		case settingGatewayHeaders:
			s.gatewayHeaders, err = parseHeaderNames(v, true)
		}
		if err != "" {
			log.Printf("keypool: ignoring stored setting %s: %s", name, err)
		}
	}
	return s
}

func parseFreeModels(v string) ([]string, string) {
	r := gjson.Parse(v)
	if !r.IsArray() {
		return nil, "want a JSON array of \"provider/model\" patterns"
	}
	var out []string
	for i, x := range r.Array() {
		p := strings.TrimSpace(x.String())
		if x.Type != gjson.String || p == "" {
			return nil, "item " + strconv.Itoa(i+1) + " is not a non-empty string"
		}
		out = append(out, p)
	}
	return out, ""
}

func parseAliases(v string) (map[string]string, string) {
	r := gjson.Parse(v)
	if !r.IsObject() {
		return nil, "want a JSON object mapping a public name to \"provider/model\""
	}
	out := map[string]string{}
	var bad string
	r.ForEach(func(k, x gjson.Result) bool {
		target := strings.TrimSpace(x.String())
		pre, model, ok := strings.Cut(target, "/")
		_, known := provider.Lookup(pre)
		switch {
		case strings.TrimSpace(k.String()) == "":
			bad = "an alias name is empty"
		case x.Type != gjson.String || !ok || !known || model == "":
			bad = "alias " + strconv.Quote(k.String()) + ": target must be \"provider/model\" with a known provider (" +
				strings.Join(provider.Names(), ", ") + ")"
		default:
			out[k.String()] = target
			return true
		}
		return false
	})
	if bad != "" {
		return nil, bad
	}
	return out, ""
}

func parseCheckModels(v string) (map[string]string, string) {
	r := gjson.Parse(v)
	if !r.IsObject() {
		return nil, "want a JSON object mapping a provider to a model, e.g. {\"openai\":\"gpt-4o-mini\"}"
	}
	out := map[string]string{}
	var bad string
	r.ForEach(func(k, x gjson.Result) bool {
		if _, known := provider.Lookup(k.String()); !known {
			bad = "unknown provider " + strconv.Quote(k.String())
			return false
		}
		if x.Type != gjson.String || strings.TrimSpace(x.String()) == "" {
			bad = "the model for " + k.String() + " must be a non-empty string"
			return false
		}
		out[k.String()] = strings.TrimSpace(x.String())
		return true
	})
	if bad != "" {
		return nil, bad
	}
	return out, ""
}

// parseHeaderNames reads a list of header names to forward: for the
// gateway, cf-aig-* options other than the gateway's credential and its
// stored provider keys; otherwise names that cannot carry a credential,
// a session, an account or project selector or connection metadata.
func parseHeaderNames(v string, gateway bool) ([]string, string) {
	r := gjson.Parse(v)
	if !r.IsArray() {
		return nil, `want a JSON array of header names, e.g. ["cf-aig-metadata"]`
	}
	var out []string
	for i, x := range r.Array() {
		name := strings.TrimSpace(x.String())
		lower := strings.ToLower(name)
		item := "item " + strconv.Itoa(i+1)
		switch {
		case x.Type != gjson.String || !validHeaderName(name):
			return nil, item + " is not a header name"
		case gateway && (!strings.HasPrefix(lower, "cf-aig-") || lower == "cf-aig-authorization" || strings.Contains(lower, "byok")):
			return nil, item + ": want a cf-aig-* AI Gateway option other than cf-aig-authorization and cf-aig-byok-*"
		case !gateway && neverForward(name):
			return nil, item + ": " + strconv.Quote(name) + " is never forwarded (a credential, session, account or project selector, " +
				"or connection metadata)"
		}
		out = append(out, http.CanonicalHeaderKey(name))
	}
	return out, ""
}

// validHeaderName: letters, digits, '-' and '_', as header names are.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// forwardRule is the header rule of a call to a provider of fam.
func (s settings) forwardRule(fam provider.Family, gateway bool) forwardRule {
	r := forwardRule{family: fam, gateway: gateway, extra: map[string]bool{}}
	for _, n := range s.forwardHeaders {
		r.extra[n] = true
	}
	if gateway {
		for _, n := range s.gatewayHeaders {
			r.extra[n] = true
		}
	}
	return r
}

func parseWait(v string) (int64, string) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 || n > maxWait {
		return 0, "want a whole number of seconds from 0 to " + strconv.Itoa(maxWait)
	}
	return n, ""
}

// isFree reports whether prov/model is on the free-model whitelist.
func (s settings) isFree(prov, model string) bool {
	for _, p := range s.freeModels {
		if pre, rest, ok := strings.Cut(p, "/"); ok {
			if _, known := provider.Lookup(pre); known {
				if pre == prov && globMatch(rest, model) {
					return true
				}
				continue
			}
		}
		if globMatch(p, model) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where "*" stands for any run of
// characters (no other metacharacters: model names contain dots, slashes
// and brackets that must match literally).
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

const settingsKey = "settings"

// settings returns the run-time settings, read from D1 at most every
// CACHE_SECONDS per isolate.
func (h *Handler) settings(ctx context.Context, db *sql.DB) settings {
	return h.settingsCounted(ctx, db, h.d.Queries)
}

// settingsCounted is settings with its D1 query counted in queries.
func (h *Handler) settingsCounted(ctx context.Context, db *sql.DB, queries store.Counter) settings {
	var m map[string]string
	v, hit, err := h.readThrough(settingsKey, false, func() (string, bool, error) {
		var err error
		if m, err = store.On(db, queries).Settings().All(ctx); err != nil {
			return "", false, err
		}
		var b jsonout.Builder
		b.Object()
		for k, v := range m {
			b.Key(k).String(v)
		}
		return string(b.EndObject().Bytes()), true, nil
	})
	switch {
	case err != nil:
		log.Printf("keypool: reading settings: %v", err)
		return settings{}
	case hit:
		m = stringMap(gjson.Parse(v))
	}
	return parseSettings(m)
}
