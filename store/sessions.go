package store

import (
	"context"
	"database/sql"

	"github.com/keypool/keypool/jsonout"
)

// Sessions holds each session role's generation: a session cookie is good
// only while it carries its role's current generation.
type Sessions struct {
	db countingDB
}

// Generations returns every role's current generation.
func (s *Sessions) Generations(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT role, generation FROM session_generations`)
	if err != nil {
		return nil, err
	}
	return scanGenerations(rows)
}

// Bump ends every session of roles by raising their generation, and
// returns their new generations.
func (s *Sessions) Bump(ctx context.Context, roles ...string) (map[string]int64, error) {
	var b jsonout.Builder
	b.Array()
	for _, r := range roles {
		b.String(r)
	}
	rows, err := s.db.QueryContext(ctx,
		`INSERT INTO session_generations (role, generation) SELECT value, 2 FROM json_each(?) WHERE true
		 ON CONFLICT (role) DO UPDATE SET generation = session_generations.generation + 1
		 RETURNING role, generation`, string(b.EndArray().Bytes()))
	if err != nil {
		return nil, err
	}
	return scanGenerations(rows)
}

func scanGenerations(rows *sql.Rows) (map[string]int64, error) {
	m := map[string]int64{}
	for rows.Next() {
		var role string
		var gen int64
		if err := rows.Scan(&role, &gen); err != nil {
			rows.Close()
			return nil, err
		}
		m[role] = gen
	}
	return m, closeRows(rows)
}
