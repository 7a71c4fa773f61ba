package store

import (
	"context"
)

// Settings are the admin's settings, one value (JSON or text) per name.
type Settings struct {
	db countingDB
}

// All returns every stored setting by name.
func (s *Settings) All(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, value FROM settings`)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for rows.Next() {
		var n, v string
		if err := rows.Scan(&n, &v); err != nil {
			rows.Close()
			return nil, err
		}
		m[n] = v
	}
	return m, closeRows(rows)
}

// Set stores values by name, one statement each; an empty value deletes
// the setting (back to its default).
func (s *Settings) Set(ctx context.Context, values map[string]string, now int64) error {
	for name, v := range values {
		var err error
		if v == "" {
			_, err = s.db.ExecContext(ctx, `DELETE FROM settings WHERE name = ?`, name)
		} else {
			_, err = s.db.ExecContext(ctx,
				`INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?)
				 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
				name, v, now)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
