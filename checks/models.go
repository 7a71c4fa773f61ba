package checks

import (
	"context"
	"database/sql"
	"io"
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/store"
)

// modelListAge is how old a provider's stored model list may grow before
// it is fetched again.
const modelListAge = 24 * time.Hour

// ModelListTries bounds the keys one refresh tries: the list is the
// provider's, so any key that answers will do, and one key's 529, 5xx,
// 429 or network error says little about the next.
const ModelListTries = 3

// RefreshModels fetches prov's model list with one of its keys, trying
// another when one fails, and stores it. A key the provider rejects is
// not blamed here: the proxy path and the checks judge keys.
func (c *Checker) RefreshModels(ctx context.Context, db *sql.DB, name string, queries store.Counter) ([]string, bool) {
	prov, ok := provider.Lookup(name)
	if !ok || prov.NoOpenAI {
		return nil, false
	}
	now := c.Now()
	keys := store.On(db, queries).Keys()
	if b, err := c.Box(); err == nil {
		keys.Sealing(b)
	}
	cands, err := keys.Candidates(ctx, name, "", now.UnixMilli(), ModelListTries, true)
	if err != nil || len(cands) == 0 {
		return nil, false
	}
	for i, k := range cands {
		// A further try costs a fetch, and still needs the 2 writes.
		if b, ok := queries.(*Budget); ok && i > 0 && b.limit-b.Load() < 3 {
			break
		}
		body, status, err := c.fetchModelList(ctx, prov, k.Secret, k.ID, queries)
		if err != nil || status != http.StatusOK {
			if err != nil {
				log.Printf("keypool: fetching %s models with key %d: %v", name, k.ID, err)
			} else {
				log.Printf("keypool: fetching %s models with key %d: HTTP %d", name, k.ID, status)
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
func (c *Checker) fetchModelList(ctx context.Context, prov provider.Provider, secret string, keyID int64, queries store.Counter) ([]byte, int, error) {
	base, viaGateway := prov.OpenAIBase(c.Target(prov))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/models", nil)
	if err != nil {
		return nil, 0, err
	}
	if viaGateway {
		c.GatewayHeaders(req.Header, ownMetadata(keyID, "models"), true)
	}
	prov.Authorize(req.Header, secret, prov.Family != provider.FamilyAnthropic)
	if b, ok := queries.(*Budget); ok {
		b.fetched() // a subrequest like the D1 queries it counts
	}
	resp, err := c.Fetch(req)
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
func (c *Checker) refreshStaleModels(ctx context.Context, db *sql.DB, limit int, budget *Budget) int {
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
		// RefreshModels spends a fetch more per further key only if left.
		if tried >= limit || budget.limit-budget.Load() < 4 {
			break
		}
		if l, ok := lists[p]; ok && c.Now().Sub(time.UnixMilli(l.UpdatedAt)) < modelListAge {
			continue
		}
		tried++
		if _, ok := c.RefreshModels(ctx, db, p, budget); ok {
			n++
		}
	}
	return n
}

// ownMetadata is the cf-aig-metadata of a request keypool makes for
// itself with a key: task is "check" or "models".
func ownMetadata(keyID int64, task string) string {
	return `{"keypool_key":` + strconv.FormatInt(keyID, 10) + `,"keypool_task":"` + task + `"}`
}
