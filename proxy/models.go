package proxy

import (
	"database/sql"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

const modelsKey = "models"

// listModels serves GET /v1/models: every model the pool can serve, in
// OpenAI's list format. Ids are "provider/model" for every provider with a
// usable key, bare for the default provider, plus the aliases. The lists
// come from D1; a provider whose list was never fetched is asked once here.
func (px *Proxy) listModels(w http.ResponseWriter, r *http.Request, db *sql.DB, set settings.Settings, c client) {
	message, doing := "", ""
	body, _, err := px.readThrough(modelsKey, false, func() (string, bool, error) {
		ctx := r.Context()
		models := store.On(db, px.Queries).Models()
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
				if got, ok := px.RefreshModels(ctx, db, p, px.Queries); ok {
					lists[p] = store.ProviderModels{Models: got, UpdatedAt: px.Now().UnixMilli()}
				}
			}
		}
		return string(modelList(servable, lists, set, px.defaultProvider())), true, nil
	})
	if err != nil {
		reply.Failed(w, err, message, "%s", doing)
		return
	}
	reply.JSON(w, http.StatusOK, scopeModels([]byte(body), c, set, px.defaultProvider()))
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
