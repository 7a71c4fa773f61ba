package handler

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/seal"
	"github.com/keypool/keypool/store"
)

type importAnswer struct {
	Provider   string `json:"provider"`
	Added      int    `json:"added"`
	Duplicates int    `json:"duplicates"`
	Rejected   int    `json:"rejected"`
	AddedKeys  []struct {
		ID  int64  `json:"id"`
		Key string `json:"key"`
	} `json:"added_keys"`
	DuplicateKeys []string `json:"duplicate_keys"`
	RejectedLines []struct {
		Line   int    `json:"line"`
		Value  string `json:"value"`
		Reason string `json:"reason"`
	} `json:"rejected_lines"`
}

type keyJSON struct {
	ID           int64    `json:"id"`
	Provider     string   `json:"provider"`
	Key          string   `json:"key"`
	Label        string   `json:"label"`
	Status       string   `json:"status"`
	StatusReason string   `json:"status_reason"`
	Balance      *float64 `json:"balance"`
	CreatedAt    int64    `json:"created_at"`
	UpdatedAt    int64    `json:"updated_at"`
	LastUsedAt   int64    `json:"last_used_at"`
	Requests     int64    `json:"requests"`
	Successes    int64    `json:"successes"`
	Failures     int64    `json:"failures"`
	Models       []struct {
		Model  string `json:"model"`
		State  string `json:"state"`
		Until  int64  `json:"until"`
		Reason string `json:"reason"`
		Streak int64  `json:"streak"`
	} `json:"models"`
	Events []struct {
		At      int64  `json:"at"`
		Model   string `json:"model"`
		From    string `json:"from"`
		To      string `json:"to"`
		Reason  string `json:"reason"`
		Status  int64  `json:"status"`
		Excerpt string `json:"excerpt"`
	} `json:"events"`
}

type keyList struct {
	Total int       `json:"total"`
	Keys  []keyJSON `json:"keys"`
}

func TestAdminNeedsPassword(t *testing.T) {
	e := newEnv(t, "ADMIN_PASSWORD", "")
	for _, path := range []string{"/admin/api/keys", "/admin/api/providers", "/admin/api/keys/1"} {
		// Even with a bearer token (the client token, or an empty password).
		for _, auth := range []string{"", "Bearer " + testAuthKey, "Bearer "} {
			w := e.serve(http.MethodGet, path, "", "Authorization", auth)
			er := wantError(t, w, http.StatusServiceUnavailable, "not_configured")
			if !strings.Contains(er.Error.Message, "wrangler secret put ADMIN_PASSWORD") || !strings.Contains(er.Error.Message, ".dev.vars") {
				t.Errorf("%s: message %q does not say how to set ADMIN_PASSWORD", path, er.Error.Message)
			}
		}
	}
}

func TestAdminAuth(t *testing.T) {
	e := newEnv(t)
	bad := []struct {
		name string
		auth string
	}{
		{"none", ""},
		{"wrong password", "Bearer wrong"},
		{"client token", "Bearer " + testAuthKey},
		{"password without scheme", testAdminPassword},
		{"basic scheme", "Basic " + testAdminPassword},
		{"empty bearer", "Bearer    "},
		{"password prefix", "Bearer " + testAdminPassword[:len(testAdminPassword)-1]},
	}
	for i, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			// An address per case: the login throttle would refuse a 6th
			// wrong password from one.
			w := e.serve(http.MethodGet, "/admin/api/keys", "", "Authorization", tc.auth, "Cf-Connecting-Ip", "198.18.1."+strconv.Itoa(i))
			wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
			if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
			}
		})
	}
	// The admin password is not accepted in the client's other places.
	w := e.serve(http.MethodGet, "/admin/api/keys", "", "x-api-key", testAdminPassword)
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")
	w = e.serve(http.MethodGet, "/admin/api/keys?key="+testAdminPassword, "")
	wantError(t, w, http.StatusUnauthorized, "invalid_admin_password")

	for _, auth := range []string{"Bearer " + testAdminPassword, "bearer " + testAdminPassword, "BEARER  " + testAdminPassword + " "} {
		w := e.serve(http.MethodGet, "/admin/api/keys", "", "Authorization", auth)
		if w.Code != http.StatusOK {
			t.Errorf("Authorization %q: status %d, want 200", auth, w.Code)
		}
	}
}

func TestAdminImport(t *testing.T) {
	e := newEnv(t)
	secrets := []string{"sk-aaaaaaaaaaaa0001", "sk-bbbbbbbbbbbb0002", "sk-cccccccccccc0003", "sk-dddddddddddd0004"}
	junk := []string{"hello", "AIzaSyNotOpenAI000001", "sk-x"}
	text := secrets[0] + "\n" + secrets[1] + ", " + secrets[0] + "; " + junk[0] + "\r\n" +
		`"` + secrets[2] + `"` + "\t" + junk[1] + "\n\n  " + junk[2] + "  "
	body := `{"provider":"openai","label":"team A","keys":` + strconv.Quote(text) + `}`

	noSecrets := func(t *testing.T, s string) {
		t.Helper()
		for _, k := range append(append([]string{}, secrets...), junk...) {
			if strings.Contains(s, k) {
				t.Errorf("answer contains the full value %q: %s", k, s)
			}
		}
	}

	w := e.admin(http.MethodPost, "/admin/api/keys", body)
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", w.Code, w.Body.String())
	}
	noSecrets(t, w.Body.String())
	var a importAnswer
	decode(t, w, &a)
	if a.Provider != "openai" || a.Added != 3 || a.Duplicates != 1 || a.Rejected != 3 {
		t.Errorf("answer provider %q added %d duplicates %d rejected %d, want openai/3/1/3; %s",
			a.Provider, a.Added, a.Duplicates, a.Rejected, w.Body.String())
	}
	if len(a.AddedKeys) != 3 || len(a.DuplicateKeys) != 1 || len(a.RejectedLines) != 3 {
		t.Fatalf("lists: %d added, %d duplicates, %d rejected; %s", len(a.AddedKeys), len(a.DuplicateKeys), len(a.RejectedLines), w.Body.String())
	}
	for i, k := range a.AddedKeys {
		if k.ID <= 0 || k.Key != provider.Mask(secrets[i]) {
			t.Errorf("added_keys[%d] = %+v, want an id and %q", i, k, provider.Mask(secrets[i]))
		}
	}
	if a.DuplicateKeys[0] != provider.Mask(secrets[0]) {
		t.Errorf("duplicate_keys %q, want %q", a.DuplicateKeys, provider.Mask(secrets[0]))
	}
	wantLines := []int{2, 3, 5}
	for i, r := range a.RejectedLines {
		if r.Line != wantLines[i] || r.Reason == "" || r.Value != provider.Mask(junk[i]) {
			t.Errorf("rejected_lines[%d] = %+v, want line %d, masked value %q and a reason", i, r, wantLines[i], provider.Mask(junk[i]))
		}
	}
	box, err := seal.New(testKeypoolSecret)
	if err != nil {
		t.Fatal(err)
	}
	keys := store.On(e.db, nil).Keys().Sealing(box)
	list, err := keys.List(t.Context(), "openai")
	if err != nil || len(list) != 3 {
		t.Fatalf("pool has %d keys (%v), want 3", len(list), err)
	}
	for i, k := range list {
		if k.Secret != "" || k.Masked != provider.Mask(secrets[i]) || k.Label != "team A" || k.Status != store.StatusActive || k.CreatedAt != t0.UnixMilli() {
			t.Errorf("stored key %d: secret %q masked %q label %q status %q created %d", i, k.Secret, k.Masked, k.Label, k.Status, k.CreatedAt)
		}
		// Stored sealed: the column holds no trace of the key, and opens
		// to it with KEYPOOL_SECRET only.
		var stored string
		if err := e.db.QueryRow(`SELECT secret FROM keys WHERE id = ?`, k.ID).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if !seal.IsSealed(stored) || strings.Contains(stored, secrets[i]) || strings.Contains(stored, secrets[i][3:12]) {
			t.Errorf("key %d stored as %q, want it sealed", k.ID, stored)
		}
		if got, err := keys.Reveal(t.Context(), k.ID); err != nil || got != secrets[i] {
			t.Errorf("Reveal(%d) = %q, %v; want the key", k.ID, got, err)
		}
		other, _ := seal.New("another-keypool-secret-0000")
		if _, err := store.On(e.db, nil).Keys().Sealing(other).Reveal(t.Context(), k.ID); err == nil {
			t.Errorf("key %d opened under another KEYPOOL_SECRET", k.ID)
		}
	}

	// An array, overlapping the pool and repeating itself.
	w = e.admin(http.MethodPost, "/admin/api/keys",
		`{"provider":"openai","keys":["`+secrets[0]+`","`+secrets[3]+`","  `+secrets[3]+`  "]}`)
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", w.Code, w.Body.String())
	}
	noSecrets(t, w.Body.String())
	a = importAnswer{}
	decode(t, w, &a)
	if a.Added != 1 || a.Duplicates != 2 || a.Rejected != 0 || len(a.DuplicateKeys) != 2 {
		t.Errorf("second import: added %d duplicates %d rejected %d, want 1/2/0; %s", a.Added, a.Duplicates, a.Rejected, w.Body.String())
	}

	// Nothing new: 200, not 201.
	w = e.admin(http.MethodPost, "/admin/api/keys", `{"provider":"openai","keys":"`+secrets[1]+`"}`)
	if w.Code != http.StatusOK {
		t.Errorf("import of a known key: status %d, want 200", w.Code)
	}
	a = importAnswer{}
	decode(t, w, &a)
	if a.Added != 0 || a.Duplicates != 1 || a.AddedKeys == nil || a.RejectedLines == nil {
		t.Errorf("import of a known key: %s", w.Body.String())
	}

	// The same secret for another provider is another key.
	w = e.admin(http.MethodPost, "/admin/api/keys", `{"provider":"deepseek","keys":"`+secrets[1]+`"}`)
	if w.Code != http.StatusCreated {
		t.Errorf("same secret for deepseek: status %d, want 201", w.Code)
	}

	// The list shows every key masked.
	w = e.admin(http.MethodGet, "/admin/api/keys", "")
	noSecrets(t, w.Body.String())
	var l keyList
	decode(t, w, &l)
	if l.Total != 5 || len(l.Keys) != 5 {
		t.Errorf("list total %d with %d keys, want 5", l.Total, len(l.Keys))
	}
	w = e.admin(http.MethodGet, "/admin/api/keys?provider=deepseek", "")
	l = keyList{}
	decode(t, w, &l)
	if l.Total != 1 || l.Keys[0].Provider != "deepseek" || l.Keys[0].Key != provider.Mask(secrets[1]) {
		t.Errorf("deepseek list %+v", l)
	}
	wantError(t, e.admin(http.MethodGet, "/admin/api/keys?provider=nope", ""), http.StatusBadRequest, "invalid_request")
}

func TestAdminImportErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, body string
		param      string // "" for null
	}{
		{"empty body", "", ""},
		{"not JSON", "sk-aaaaaaaaaaaa0001", ""},
		{"array", `["sk-aaaaaaaaaaaa0001"]`, ""},
		{"no provider", `{"keys":"sk-aaaaaaaaaaaa0001"}`, "provider"},
		{"provider not a string", `{"provider":1,"keys":"sk-aaaaaaaaaaaa0001"}`, "provider"},
		{"unknown provider", `{"provider":"nope","keys":"sk-aaaaaaaaaaaa0001"}`, "provider"},
		{"no keys", `{"provider":"openai"}`, "keys"},
		{"keys a number", `{"provider":"openai","keys":5}`, "keys"},
		{"keys array with a number", `{"provider":"openai","keys":["sk-aaaaaaaaaaaa0001",7]}`, "keys"},
		{"label not a string", `{"provider":"openai","keys":"sk-aaaaaaaaaaaa0001","label":1}`, "label"},
		{"label too long", `{"provider":"openai","keys":"sk-aaaaaaaaaaaa0001","label":"` + strings.Repeat("é", maxLabel+1) + `"}`, "label"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := e.admin(http.MethodPost, "/admin/api/keys", tc.body)
			er := wantError(t, w, http.StatusBadRequest, "invalid_request")
			switch {
			case tc.param == "" && er.Error.Param != nil:
				t.Errorf("param %q, want null", *er.Error.Param)
			case tc.param != "" && (er.Error.Param == nil || *er.Error.Param != tc.param):
				t.Errorf("param %v, want %q", er.Error.Param, tc.param)
			}
		})
	}
	// A label of exactly the limit is fine.
	w := e.admin(http.MethodPost, "/admin/api/keys",
		`{"provider":"openai","keys":"sk-aaaaaaaaaaaa0001","label":"`+strings.Repeat("é", maxLabel)+`"}`)
	if w.Code != http.StatusCreated {
		t.Errorf("label of %d characters: status %d, want 201", maxLabel, w.Code)
	}
	list, _ := store.On(e.db, nil).Keys().List(t.Context(), "")
	if len(list) != 1 {
		t.Errorf("pool has %d keys after the failed imports, want 1", len(list))
	}
}

func TestAdminGetKeyWithEvents(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0") // counters written per request
	ids := e.addKeys("openai", "sk-tracked-key-00001", "sk-spare-key-000002")
	tracked := "sk-tracked-key-00001"

	// At t0 the key is rate limited for gpt-4o-mini...
	e.up.SetRule(tracked, fakeupstream.OpenAIRateLimited("gpt-4o-mini", 30))
	wantServed(t, e.chat("gpt-4o-mini"), "2")
	// ...and a second later its credential is rejected.
	e.setNow(t0.Add(time.Second))
	e.up.SetRule(tracked, fakeupstream.OpenAIInvalidKey(tracked))
	wantServed(t, e.chat("gpt-4o"), "2")

	w := e.admin(http.MethodGet, "/admin/api/keys/"+strconv.FormatInt(ids[0], 10), "")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", w.Code, w.Body.String())
	}
	if strings.Contains(w.Body.String(), tracked) {
		t.Errorf("answer contains the full secret: %s", w.Body.String())
	}
	var k keyJSON
	decode(t, w, &k)
	if k.ID != ids[0] || k.Provider != "openai" || k.Key != provider.Mask(tracked) || k.Status != "blocked" || k.StatusReason == "" {
		t.Errorf("key %+v", k)
	}
	if k.Balance != nil || k.Requests != 2 || k.Failures != 2 || k.Successes != 0 || k.LastUsedAt != t0.Add(time.Second).UnixMilli() {
		t.Errorf("key counters: balance %v requests %d failures %d successes %d last used %d",
			k.Balance, k.Requests, k.Failures, k.Successes, k.LastUsedAt)
	}
	if len(k.Models) != 1 || k.Models[0].Model != "gpt-4o-mini" || k.Models[0].State != "cooling" ||
		k.Models[0].Until != t0.Add(30*time.Second).UnixMilli() || k.Models[0].Streak != 1 {
		t.Errorf("models %+v, want gpt-4o-mini cooling until t0+30s", k.Models)
	}
	if len(k.Events) != 2 {
		t.Fatalf("%d events, want 2: %s", len(k.Events), w.Body.String())
	}
	newest, oldest := k.Events[0], k.Events[1]
	if newest.At != t0.Add(time.Second).UnixMilli() || newest.From != "active" || newest.To != "blocked" ||
		newest.Status != 401 || newest.Model != "" || !strings.Contains(newest.Excerpt, provider.Mask(tracked)) {
		t.Errorf("newest event %+v, want the block at t0+1s with a masked excerpt", newest)
	}
	if oldest.At != t0.UnixMilli() || oldest.To != "cooling" || oldest.Model != "gpt-4o-mini" || oldest.Status != 429 ||
		!strings.Contains(oldest.Excerpt, "Rate limit reached") {
		t.Errorf("oldest event %+v, want the cooldown at t0", oldest)
	}

	// A fresh key has an empty (not null) event list.
	w = e.admin(http.MethodGet, "/admin/api/keys/"+strconv.FormatInt(ids[1], 10)+"/", "")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"events":[]`) || !strings.Contains(w.Body.String(), `"models":[]`) {
		t.Errorf("fresh key: status %d body %s", w.Code, w.Body.String())
	}

	// Ended cooldowns are not shown.
	e.setNow(t0.Add(31 * time.Second))
	w = e.admin(http.MethodGet, "/admin/api/keys/"+strconv.FormatInt(ids[0], 10), "")
	k = keyJSON{}
	decode(t, w, &k)
	if len(k.Models) != 0 {
		t.Errorf("ended cooldown still listed: %+v", k.Models)
	}
	w = e.admin(http.MethodGet, "/admin/api/keys", "")
	if strings.Contains(w.Body.String(), "gpt-4o-mini") {
		t.Errorf("ended cooldown in the key list: %s", w.Body.String())
	}

	wantError(t, e.admin(http.MethodGet, "/admin/api/keys/999", ""), http.StatusNotFound, "not_found")
}

func TestAdminDeleteKey(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-doomed-key-00001")
	e.up.SetRule("sk-doomed-key-00001", fakeupstream.OpenAIRateLimited("gpt-4o-mini", 30))
	wantError(t, e.chat("gpt-4o-mini"), http.StatusTooManyRequests, "rate_limited")
	path := "/admin/api/keys/" + strconv.FormatInt(ids[0], 10)

	w := e.admin(http.MethodDelete, path, "")
	if w.Code != http.StatusOK || w.Body.String() != `{"deleted":`+strconv.FormatInt(ids[0], 10)+`}` {
		t.Fatalf("delete: status %d body %s", w.Code, w.Body.String())
	}
	wantError(t, e.admin(http.MethodGet, path, ""), http.StatusNotFound, "not_found")
	wantError(t, e.admin(http.MethodDelete, path, ""), http.StatusNotFound, "not_found")
	for _, table := range []string{"keys", "key_models", "key_events"} {
		var n int
		if err := e.db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s has %d rows after the delete (%v), want 0", table, n, err)
		}
	}
	// The proxy no longer has a key.
	wantError(t, e.chat("gpt-4o"), http.StatusServiceUnavailable, "no_available_key")
}

func TestAdminBadKeyID(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"abc", "0", "-3", "1.5", "99999999999999999999"} {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			w := e.admin(method, "/admin/api/keys/"+id, "")
			er := wantError(t, w, http.StatusBadRequest, "invalid_request")
			if er.Error.Param == nil || *er.Error.Param != "id" {
				t.Errorf("%s %s: param %v, want id", method, id, er.Error.Param)
			}
		}
	}
}

func TestAdminMethodNotAllowed(t *testing.T) {
	e := newEnv(t)
	ids := e.addKeys("openai", "sk-test-key-0001")
	keyPath := "/admin/api/keys/" + strconv.FormatInt(ids[0], 10)
	tests := []struct {
		method, path, allow string
	}{
		{http.MethodPut, "/admin/api/keys", "GET, POST"},
		{http.MethodDelete, "/admin/api/keys", "GET, POST"},
		{http.MethodPatch, "/admin/api/keys/", "GET, POST"},
		{http.MethodPost, keyPath, "GET, PATCH, DELETE"},
		{http.MethodPut, keyPath, "GET, PATCH, DELETE"},
		{http.MethodPost, "/admin/api/providers", "GET"},
		{http.MethodDelete, "/admin/api/providers", "GET"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			w := e.admin(tc.method, tc.path, "")
			wantError(t, w, http.StatusMethodNotAllowed, "method_not_allowed")
			if got := w.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
	// Nothing was changed.
	if _, err := store.On(e.db, nil).Keys().List(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	if k, _ := e.key(ids[0]); k.Status != store.StatusActive {
		t.Errorf("key changed by a refused method")
	}
	// Unknown admin routes are 404.
	wantError(t, e.admin(http.MethodGet, "/admin/api/nope", ""), http.StatusNotFound, "not_found")
}

func TestAdminProviders(t *testing.T) {
	e := newEnv(t, "DEFAULT_PROVIDER", "groq", "SILICONFLOW_BASE_URL", "")
	e.set("OPENAI_BASE_URL", e.up.URL+"/")
	w := e.admin(http.MethodGet, "/admin/api/providers", "")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	var ans struct {
		Default   string `json:"default"`
		Providers []struct {
			Name       string `json:"name"`
			BaseURL    string `json:"base_url"`
			BaseURLVar string `json:"base_url_var"`
			Gateway    bool   `json:"gateway"`
			KeyHeader  string `json:"key_header"`
			OpenAI     struct {
				BaseURL string `json:"base_url"`
				Gateway bool   `json:"gateway"`
			} `json:"openai"`
		} `json:"providers"`
	}
	decode(t, w, &ans)
	if ans.Default != "groq" {
		t.Errorf("default %q, want groq", ans.Default)
	}
	if len(ans.Providers) != len(provider.Names()) {
		t.Fatalf("%d providers, want %d", len(ans.Providers), len(provider.Names()))
	}
	byName := map[string]int{}
	for i, p := range ans.Providers {
		byName[p.Name] = i
	}
	check := func(name, baseURL, envVar string, gateway bool, header string) {
		t.Helper()
		i, ok := byName[name]
		if !ok {
			t.Errorf("provider %s missing", name)
			return
		}
		p := ans.Providers[i]
		if p.BaseURL != baseURL || p.BaseURLVar != envVar || p.Gateway != gateway || p.KeyHeader != header {
			t.Errorf("%s = %+v, want base %q var %q gateway %v header %q", name, p, baseURL, envVar, gateway, header)
		}
		// No gateway configured: every route goes direct.
		if pp, _ := provider.Lookup(name); p.OpenAI.BaseURL != baseURL+pp.OpenAIPrefix || p.OpenAI.Gateway {
			t.Errorf("%s /v1 base %q (gateway %v), want %q direct", name, p.OpenAI.BaseURL, p.OpenAI.Gateway, baseURL+pp.OpenAIPrefix)
		}
	}
	check("openai", e.up.URL, "OPENAI_BASE_URL", true, "Authorization")
	check("siliconflow", "https://api.siliconflow.cn", "SILICONFLOW_BASE_URL", false, "Authorization")
	check("google-ai-studio", e.up.URL, "GOOGLE_AI_STUDIO_BASE_URL", true, "x-goog-api-key")
	check("anthropic", e.up.URL, "ANTHROPIC_BASE_URL", true, "x-api-key")
}
