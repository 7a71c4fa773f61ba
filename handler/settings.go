package handler

import (
	"context"
	"database/sql"
	"log"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/settings"
	"github.com/keypool/keypool/store"
)

const settingsKey = "settings"

// settings returns the run-time settings.Settings, read from D1 at most every
// CACHE_SECONDS per isolate.
func (h *Handler) settings(ctx context.Context, db *sql.DB) settings.Settings {
	return h.settingsCounted(ctx, db, h.d.Queries)
}

// settingsCounted is settings with its D1 query counted in queries.
func (h *Handler) settingsCounted(ctx context.Context, db *sql.DB, queries store.Counter) settings.Settings {
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
		return settings.Settings{}
	case hit:
		m = stringMap(gjson.Parse(v))
	}
	return settings.Parse(m)
}
