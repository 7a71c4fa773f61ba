// Package settings is the settings the admin changes at run time (kept
// in D1, unlike vars and secrets): their names, how each stored value is
// checked, and Parse into a typed Settings. It does no I/O; the handler
// reads the stored values through its cache and writes changes.
package settings

import (
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
)

// The guest page's access modes (the access_mode setting): "open"
// (anyone), "restricted" (with the guest password), "private" (admins
// only, the default).
const (
	AccessOpen       = "open"
	AccessRestricted = "restricted"
	AccessPrivate    = "private"
)

// The settings' names, as stored and as the admin API takes them.
const (
	FreeModels = "free_models"
	Aliases    = "aliases"
	Wait       = "wait_for_cooldown_seconds"
	// check_models names, per provider, a cheap model the health check
	// calls with max_tokens 1 (proving the key can spend) instead of
	// listing models (proving only that it is valid).
	CheckModels = "check_models"
	// The guest page (handler/guest.go).
	AccessMode    = "access_mode"
	GuestPassword = "guest_password" // stored as a fingerprint, never shown
	GuestReveal   = "guest_reveal_keys"
	PageSize      = "page_size"
	// Request headers clients may send upstream beyond the built-in
	// allow-list (proxy/headers.go): any provider, and AI Gateway options.
	ForwardHeaders = "forward_headers"
	GatewayHeaders = "gateway_headers"
	// prompt_affinity turns prompt-cache affinity (rotation.PickAffine)
	// on or off per provider: {"openai": false, "groq": true}. Providers
	// not named keep their default (on where the provider caches prompts
	// per account, provider.Provider.PromptCache).
	PromptAffinity = "prompt_affinity"
	// request_log_sample is the share (0–1) of successful requests tried
	// on one key that the request log keeps; failed, refused and retried
	// requests are always kept.
	RequestLogSample = "request_log_sample"
)

// DefaultRequestLogSample is request_log_sample's default: one in a
// hundred.
const DefaultRequestLogSample = 0.01

// checks validate each setting's stored text; "" means valid.
var checks = map[string]func(string) string{
	FreeModels:  func(v string) string { _, e := parseFreeModels(v); return e },
	Aliases:     func(v string) string { _, e := parseAliases(v); return e },
	Wait:        func(v string) string { _, e := parseWait(v); return e },
	CheckModels: func(v string) string { _, e := parseCheckModels(v); return e },
	AccessMode: func(v string) string {
		if m := gjson.Parse(v).String(); m != AccessOpen && m != AccessRestricted && m != AccessPrivate {
			return `want "open", "restricted" or "private"`
		}
		return ""
	},
	GuestPassword: func(v string) string {
		if r := gjson.Parse(v); r.Type != gjson.String || len(r.String()) < 8 {
			return "want a string of at least 8 characters"
		}
		return ""
	},
	GuestReveal: func(v string) string {
		if r := gjson.Parse(v); r.Type != gjson.True && r.Type != gjson.False {
			return "want true or false"
		}
		return ""
	},
	ForwardHeaders:   func(v string) string { _, e := parseHeaderNames(v, false); return e },
	PromptAffinity:   func(v string) string { _, e := parseAffinity(v); return e },
	RequestLogSample: func(v string) string { _, e := parseShare(v); return e },
	GatewayHeaders:   func(v string) string { _, e := parseHeaderNames(v, true); return e },
	PageSize: func(v string) string {
		if n, err := strconv.Atoi(v); err != nil || n < 10 || n > 500 {
			return "want a whole number from 10 to 500"
		}
		return ""
	},
}

// Check returns the check of the setting name (its stored text in, a
// problem out, "" when valid); known false for no such setting.
func Check(name string) (check func(string) string, known bool) {
	check, known = checks[name]
	return check, known
}

// Names lists the settings, sorted.
func Names() []string {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// MaxWait bounds how long a request may wait for a cooling key.
const MaxWait = 30

// settings are the proxy's run-time settings, parsed.
type Settings struct {
	// freeModels are "provider/model" patterns ("*" matches any run of
	// characters) of models that cost nothing, which exhausted keys may
	// still serve. A pattern without a known provider applies to all.
	FreeModels []string
	// aliases map a public model name to "provider/model".
	Aliases map[string]string
	// Wait: when every key is cooling and the first comes back within
	// this many seconds, the request waits instead of answering 429.
	Wait int64
	// CheckModels: provider → model for health checks.
	CheckModels map[string]string
	// The guest page: who sees it, the guest password's fingerprint,
	// whether guests see full keys, and the default page size.
	AccessMode      string
	GuestPassword   string
	GuestRevealKeys bool
	PageSize        int64
	// forwardHeaders and gatewayHeaders are extra request headers
	// (canonical names) that go upstream, the latter only through AI
	// Gateway.
	ForwardHeaders []string
	GatewayHeaders []string
	// Affinity: provider → prompt-cache affinity on or off, where the
	// admin changed the default (see AffinityOn).
	Affinity map[string]bool
	// RequestLogSample: the share of plain successes the request log keeps.
	RequestLogSample float64
}

// AffinityOn reports whether requests to p follow their conversation's
// key (prompt-cache affinity): the admin's choice, else p's default.
func (s Settings) AffinityOn(p provider.Provider) bool {
	if on, set := s.Affinity[p.Name]; set {
		return on
	}
	return p.PromptCache
}

// Parse reads stored values; one that does not parse (it cannot
// be stored that way through the API) is logged and left at its default.
func Parse(m map[string]string) Settings {
	s := Settings{AccessMode: AccessPrivate, PageSize: 50, RequestLogSample: DefaultRequestLogSample}
	for name, v := range m {
		var err string
		switch name {
		case FreeModels:
			s.FreeModels, err = parseFreeModels(v)
		case Aliases:
			s.Aliases, err = parseAliases(v)
		case Wait:
			s.Wait, err = parseWait(v)
		case CheckModels:
			s.CheckModels, err = parseCheckModels(v)
		case AccessMode:
			if err = checks[name](v); err == "" {
				s.AccessMode = gjson.Parse(v).String()
			}
		case GuestPassword:
			s.GuestPassword = gjson.Parse(v).String()
		case GuestReveal:
			s.GuestRevealKeys = gjson.Parse(v).Bool()
		case PageSize:
			if err = checks[name](v); err == "" {
				s.PageSize, _ = strconv.ParseInt(v, 10, 64)
			}
		case ForwardHeaders:
			s.ForwardHeaders, err = parseHeaderNames(v, false)
		case GatewayHeaders:
			s.GatewayHeaders, err = parseHeaderNames(v, true)
		case PromptAffinity:
			s.Affinity, err = parseAffinity(v)
		case RequestLogSample:
			var share float64
			if share, err = parseShare(v); err == "" {
				s.RequestLogSample = share
			}
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

func parseAffinity(v string) (map[string]bool, string) {
	r := gjson.Parse(v)
	if !r.IsObject() {
		return nil, `want a JSON object mapping a provider to true or false, e.g. {"openai":false}`
	}
	out := map[string]bool{}
	var bad string
	r.ForEach(func(k, x gjson.Result) bool {
		switch {
		case !known(k.String()):
			bad = "unknown provider " + strconv.Quote(k.String())
		case x.Type != gjson.True && x.Type != gjson.False:
			bad = "the value for " + k.String() + " must be true or false"
		default:
			out[k.String()] = x.Bool()
			return true
		}
		return false
	})
	if bad != "" {
		return nil, bad
	}
	return out, ""
}

func parseShare(v string) (float64, string) {
	r := gjson.Parse(v)
	if r.Type != gjson.Number || r.Float() < 0 || r.Float() > 1 {
		return 0, "want a number from 0 to 1 (0.01: one in a hundred)"
	}
	return r.Float(), ""
}

func known(name string) bool { _, ok := provider.Lookup(name); return ok }

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
		case !gateway && NeverForward(name):
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

func parseWait(v string) (int64, string) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 || n > MaxWait {
		return 0, "want a whole number of seconds from 0 to " + strconv.Itoa(MaxWait)
	}
	return n, ""
}

// isFree reports whether prov/model is on the free-model whitelist.
func (s Settings) IsFree(prov, model string) bool {
	for _, p := range s.FreeModels {
		if pre, rest, ok := strings.Cut(p, "/"); ok {
			if _, known := provider.Lookup(pre); known {
				if pre == prov && GlobMatch(rest, model) {
					return true
				}
				continue
			}
		}
		if GlobMatch(p, model) {
			return true
		}
	}
	return false
}

// GlobMatch matches s against a pattern where "*" stands for any run of
// characters (no other metacharacters: model names contain dots, slashes
// and brackets that must match literally).
func GlobMatch(pattern, s string) bool {
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

// JSON is the settings as GET /admin/api/settings shows them:
// the guest password only as whether one is set.
func JSON(s Settings) []byte {
	var b jsonout.Builder
	b.Object().Key(FreeModels).Array()
	for _, p := range s.FreeModels {
		b.String(p)
	}
	b.EndArray()
	writeSortedMap(&b, Aliases, s.Aliases)
	b.Key(Wait).Int(s.Wait)
	writeSortedMap(&b, CheckModels, s.CheckModels)
	b.Key(AccessMode).String(s.AccessMode).
		Key("guest_password_set").Bool(s.GuestPassword != "").
		Key(GuestReveal).Bool(s.GuestRevealKeys).Key(PageSize).Int(s.PageSize)
	writeStrings(&b, ForwardHeaders, s.ForwardHeaders)
	writeStrings(&b, GatewayHeaders, s.GatewayHeaders)
	b.Key(RequestLogSample).Float(s.RequestLogSample)
	// Every provider's affinity as it is in force, defaults included.
	b.Key(PromptAffinity).Object()
	for _, name := range provider.Names() {
		p, _ := provider.Lookup(name)
		b.Key(name).Bool(s.AffinityOn(p))
	}
	b.EndObject()
	return b.EndObject().Bytes()
}

// writeSortedMap writes key: {name: value…} into the open object of b,
// names in order.
func writeSortedMap(b *jsonout.Builder, key string, m map[string]string) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	b.Key(key).Object()
	for _, n := range names {
		b.Key(n).String(m[n])
	}
	b.EndObject()
}

// writeStrings writes key: [list…] into the open object of b.
func writeStrings(b *jsonout.Builder, key string, list []string) {
	b.Key(key).Array()
	for _, v := range list {
		b.String(v)
	}
	b.EndArray()
}

// neverForwardWords mark header names no setting may allow: credentials,
// sessions and account or project selectors, in any provider's spelling.
var neverForwardWords = []string{"auth", "key", "token", "secret", "cookie", "session", "organization",
	"organisation", "project", "account", "user", "forwarded", "proxy"}

// NeverForward reports whether a header name (any case) must never go
// upstream whatever the settings say: the words above, hop-by-hop and
// runtime headers, client addresses and Cloudflare's own cf-* headers.
func NeverForward(name string) bool {
	cn := http.CanonicalHeaderKey(name)
	if neverForwardHeaders[cn] || strings.HasPrefix(cn, "Cf-") || strings.HasPrefix(cn, "Sec-") {
		return true
	}
	lower := strings.ToLower(cn)
	for _, w := range neverForwardWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// neverForwardHeaders are canonical names (http.CanonicalHeaderKey).
var neverForwardHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Expect": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Host": true, "Content-Length": true,
	"Accept-Encoding": true, "Content-Encoding": true, "X-Real-Ip": true, "True-Client-Ip": true,
	"Via": true, "Origin": true, "Referer": true,
}
