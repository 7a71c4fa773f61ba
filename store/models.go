package store

import (
	"context"

	"github.com/keypool/keypool/jsonout"
)

// Models are the model lists of the providers, as their APIs last named
// them, and which providers the pool can serve at all.
type Models struct {
	db countingDB
}

// Replace makes models the model list of prov.
func (m *Models) Replace(ctx context.Context, prov string, models []string, now int64) error {
	if _, err := m.db.ExecContext(ctx,
		`INSERT INTO provider_models (provider, model, updated_at)
		 SELECT ?, value, ? FROM json_each(?) WHERE true
		 ON CONFLICT (provider, model) DO UPDATE SET updated_at = excluded.updated_at`,
		prov, now, string(jsonout.StringArray(models))); err != nil {
		return err
	}
	_, err := m.db.ExecContext(ctx,
		`DELETE FROM provider_models WHERE provider = ? AND model NOT IN (SELECT value FROM json_each(?))`,
		prov, string(jsonout.StringArray(models)))
	return err
}

// ProviderModels is one provider's stored model list.
type ProviderModels struct {
	Models    []string
	UpdatedAt int64 // unix ms of the last refresh; 0 when never
}

// All returns the stored model lists by provider.
func (m *Models) All(ctx context.Context) (map[string]ProviderModels, error) {
	rows, err := m.db.QueryContext(ctx, `SELECT provider, model, updated_at FROM provider_models ORDER BY provider, model`)
	if err != nil {
		return nil, err
	}
	out := map[string]ProviderModels{}
	for rows.Next() {
		var p, model string
		var at int64
		if err := rows.Scan(&p, &model, &at); err != nil {
			rows.Close()
			return nil, err
		}
		pm := out[p]
		pm.Models = append(pm.Models, model)
		pm.UpdatedAt = max(pm.UpdatedAt, at)
		out[p] = pm
	}
	return out, closeRows(rows)
}

// Servable returns the providers with at least one active key.
func (m *Models) Servable(ctx context.Context) ([]string, error) {
	rows, err := m.db.QueryContext(ctx,
		`SELECT DISTINCT provider FROM keys WHERE status = 'active' ORDER BY provider`)
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, closeRows(rows)
}
