package handler

import (
	"context"
	"database/sql"
	"io"
	"log"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

// modelListAge is how old a provider's stored model list may grow before
// it is fetched again.
const modelListAge = 24 * time.Hour

const modelsKey = "models"

// listModels serves GET /v1/models: every model the pool can serve, in
// OpenAI's list format. Ids are "provider/model" for every provider with a
// usable key, bare for the default provider, plus the aliases. The lists
// come from D1; a provider whose list was never fetched is asked once here.
func (h *Handler) listModels(w http.ResponseWriter, r *http.Request, db *sql.DB, set settings.Settings, c client) {
	message, doing := "", ""
	body, _, err := h.readThrough(modelsKey, false, func() (string, bool, error) {
		ctx := r.Context()
		models := store.On(db, h.d.Queries).Models()
		servable, err := models.Servable(ctx)
		if err != nil {
			message, doing = "keypool could not read its key pool", "reading providers with keys"
			return "", false, err
		}
		lists, err := models.All(ctx)
		if err != nil {
			message, doing = "keypool could not read its model lists", "reading model lists"
			return "", false, err
		}
		for _, p := range servable {
			if _, ok := lists[p]; !ok {
				if got, ok := h.refreshModels(ctx, db, p, h.d.Queries); ok {
					lists[p] = store.ProviderModels{Models: got, UpdatedAt: h.d.Now().UnixMilli()}
				}
			}
		}
		return string(modelList(servable, lists, set, h.defaultProvider())), true, nil
	})
	if err != nil {
		failed(w, err, message, "%s", doing)
		return
	}
	writeJSON(w, http.StatusOK, scopeModels([]byte(body), c, set, h.defaultProvider()))
}

// scopeModels keeps the models of a list that the client's token may use.
func scopeModels(body []byte, c client, set settings.Settings, defaultProv string) []byte {
	t := c.tok
	if t == nil || len(t.Providers) == 0 && len(t.Models) == 0 {
		return body
	}
	var b jsonout.Builder
	b.Object().Key("object").String("list").Key("data").Array()
	for _, m := range gjson.GetBytes(body, "data").Array() {
		id := m.Get("id").String()
		prov, model := defaultProv, id
		if target, ok := set.Aliases[id]; ok {
			id = target
		}
		if pre, bare, ok := strings.Cut(id, "/"); ok {
			if _, known := provider.Lookup(pre); known {
				prov, model = pre, bare
			}
		}
		if len(t.Providers) > 0 && !slices.Contains(t.Providers, prov) || len(t.Models) > 0 && !modelAllowed(t.Models, prov, model) {
			continue
		}
		b.Raw([]byte(m.Raw))
	}
	return b.EndArray().EndObject().Bytes()
}

// modelList builds the /v1/models answer.
func modelList(servable []string, lists map[string]store.ProviderModels, set settings.Settings, defaultProv string) []byte {
	owner := map[string]string{}
	add := func(id, prov string) {
		if _, dup := owner[id]; !dup && id != "" {
			owner[id] = prov
		}
	}
	can := map[string]bool{}
	for _, p := range servable {
		can[p] = true
	}
	for _, p := range servable {
		names := append([]string(nil), lists[p].Models...)
		for _, f := range set.FreeModels {
			// Whitelisted models are listed when they name one model.
			if pre, m, ok := strings.Cut(f, "/"); ok && pre == p && !strings.Contains(m, "*") {
				names = append(names, m)
			}
		}
		for _, m := range names {
			add(p+"/"+m, p)
			if p == defaultProv {
				add(m, p)
			}
		}
	}
	for name, target := range set.Aliases {
		if p, _, _ := strings.Cut(target, "/"); can[p] {
			add(name, p)
		}
	}
	ids := make([]string, 0, len(owner))
	for id := range owner {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b jsonout.Builder
	b.Object().Key("object").String("list").Key("data").Array()
	for _, id := range ids {
		b.Object().Key("id").String(id).Key("object").String("model").Key("created").Int(0).
			Key("owned_by").String(owner[id]).EndObject()
	}
	return b.EndArray().EndObject().Bytes()
}

// modelListTries bounds the keys one refresh tries: the list is the
// provider's, so any key that answers will do, and one key's 529, 5xx,
// 429 or network error says little about the next.
const modelListTries = 3

// refreshModels fetches prov's model list with one of its keys, trying
// another when one fails, and stores it. A key the provider rejects is
// not blamed here: the proxy path and the checks judge keys.
func (h *Handler) refreshModels(ctx context.Context, db *sql.DB, name string, queries store.Counter) ([]string, bool) {
	prov, ok := provider.Lookup(name)
	if !ok || prov.NoOpenAI {
		return nil, false
	}
	now := h.d.Now()
	keys := store.On(db, queries).Keys()
	if b, err := h.box(); err == nil {
		keys.Sealing(b)
	}
	cands, err := keys.Candidates(ctx, name, "", now.UnixMilli(), modelListTries, true)
	if err != nil || len(cands) == 0 {
		return nil, false
	}
	for i, c := range cands {
		// A further try costs a fetch, and still needs the 2 writes.
		if b, ok := queries.(*checkBudget); ok && i > 0 && b.limit-b.Load() < 3 {
			break
		}
		body, status, err := h.fetchModelList(ctx, prov, c.Secret, c.ID, queries)
		if err != nil || status != http.StatusOK {
			if err != nil {
				log.Printf("keypool: fetching %s models with key %d: %v", name, c.ID, err)
			} else {
				log.Printf("keypool: fetching %s models with key %d: HTTP %d", name, c.ID, status)
			}
			if err != nil || status >= 500 || status == http.StatusTooManyRequests ||
				status == http.StatusUnauthorized || status == http.StatusForbidden {
				continue // the next key may answer
			}
			return nil, false
		}
		list := parseModelList(body)
		if len(list) == 0 {
			return nil, false
		}
		if err := store.On(db, queries).Models().Replace(ctx, name, list, now.UnixMilli()); err != nil {
			log.Printf("keypool: storing %s models: %v", name, err)
		}
		return list, true
	}
	return nil, false
}

// fetchModelList asks prov for its model list with one key.
func (h *Handler) fetchModelList(ctx context.Context, prov provider.Provider, secret string, keyID int64, queries store.Counter) ([]byte, int, error) {
	base, viaGateway := prov.OpenAIBase(h.target(prov))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/models", nil)
	if err != nil {
		return nil, 0, err
	}
	if viaGateway {
		h.setGatewayHeaders(req.Header, ownMetadata(keyID, "models"), true)
	}
	prov.Authorize(req.Header, secret, prov.Family != provider.FamilyAnthropic)
	if b, ok := queries.(*checkBudget); ok {
		b.fetched() // a subrequest like the D1 queries it counts
	}
	resp, err := h.d.Fetch(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return body, resp.StatusCode, err
}

// parseModelList reads the ids of an OpenAI-style list ({"data":[{"id"}]})
// or Gemini's native one ({"models":[{"name":"models/…"}]}), without
// Google's "models/" prefix.
func parseModelList(body []byte) []string {
	var out []string
	seen := map[string]bool{}
	add := func(id string) {
		id = strings.TrimPrefix(strings.TrimSpace(id), "models/")
		if id != "" && !seen[id] && len(id) <= 200 {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, m := range gjson.GetBytes(body, "data").Array() {
		add(m.Get("id").String())
	}
	for _, m := range gjson.GetBytes(body, "models").Array() {
		add(m.Get("name").String())
	}
	sort.Strings(out)
	return out
}

// refreshStaleModels refreshes the model lists older than a day of the
// providers with usable keys, at most limit of them (each costs a
// subrequest). Used by the cron task.
func (h *Handler) refreshStaleModels(ctx context.Context, db *sql.DB, limit int, budget *checkBudget) int {
	models := store.On(db, budget).Models()
	servable, err := models.Servable(ctx)
	if err != nil {
		log.Printf("keypool cron: reading providers: %v", err)
		return 0
	}
	lists, err := models.All(ctx)
	if err != nil {
		log.Printf("keypool cron: reading model lists: %v", err)
		return 0
	}
	tried, n := 0, 0
	for _, p := range servable {
		// Each try costs at least 4 subrequests (a key, a fetch, 2 writes);
		// refreshModels spends a fetch more per further key only if left.
		if tried >= limit || budget.limit-budget.Load() < 4 {
			break
		}
		if l, ok := lists[p]; ok && h.d.Now().Sub(time.UnixMilli(l.UpdatedAt)) < modelListAge {
			continue
		}
		tried++
		if _, ok := h.refreshModels(ctx, db, p, budget); ok {
			n++
		}
	}
	return n
}
