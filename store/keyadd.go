package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
)

// Add inserts secrets for provider and reports which were new and which
// were already in the pool. Each chunk of keys is a single statement, so a
// bulk import of thousands of keys costs a handful of D1 round trips, and a
// concurrent import of the same key cannot insert it twice. Sealed keys
// are told apart by their fingerprints.
func (k *Keys) Add(ctx context.Context, prov, label string, secrets []string, now int64) (added []Key, duplicates []string, err error) {
	seen := make(map[string]bool, len(secrets))
	unique := secrets[:0:0]
	for _, s := range secrets {
		if seen[s] {
			duplicates = append(duplicates, s)
			continue
		}
		seen[s] = true
		unique = append(unique, s)
	}
	secrets = unique
	// Every key is sealed and verified before the first chunk is written,
	// so a mismatch stores nothing.
	stored, fps := secrets, make([]string, len(secrets))
	if k.sealer != nil {
		stored = make([]string, len(secrets))
		for i, sec := range secrets {
			if stored[i], fps[i], err = k.sealVerified(sec, prov); err != nil {
				return nil, duplicates, err
			}
		}
	}
	for start := 0; start < len(secrets); start += addChunk {
		end := min(start+addChunk, len(secrets))
		// The answer names rows by fingerprint (or by the plain secret
		// when not sealed).
		ident := stored[start:end]
		if k.sealer != nil {
			ident = fps[start:end]
		}
		fresh, err := k.insertChunk(ctx, prov, label, now, secrets[start:end], stored[start:end], fps[start:end])
		if err != nil {
			return added, duplicates, err
		}
		for i, s := range secrets[start:end] {
			id, ok := fresh[ident[i]]
			if !ok {
				duplicates = append(duplicates, s)
				continue
			}
			added = append(added, Key{ID: id, Provider: prov, Secret: s, Masked: provider.Mask(s), Label: label,
				Status: StatusActive, CreatedAt: now, UpdatedAt: now})
		}
	}
	return added, duplicates, nil
}

// insertChunk inserts one chunk of keys in one statement and returns the
// ids of the rows it added, by fingerprint (by stored secret when the
// store does not seal).
func (k *Keys) insertChunk(ctx context.Context, prov, label string, now int64, secrets, stored, fps []string) (map[string]int64, error) {
	// Each row: [stored secret, fingerprint, masked].
	var b jsonout.Builder
	b.Array()
	for i, sec := range secrets {
		b.Array().String(stored[i]).String(fps[i]).String(provider.Mask(sec)).EndArray()
	}
	conflict, returning := `(provider, secret)`, `secret`
	if k.sealer != nil {
		conflict, returning = `(provider, fingerprint) WHERE fingerprint <> ''`, `fingerprint`
	}
	rows, err := k.db.QueryContext(ctx,
		`INSERT INTO keys (provider, secret, fingerprint, masked, label, created_at, updated_at)
		 SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, ?, ?, ? FROM json_each(?) AS j WHERE true
		 ON CONFLICT `+conflict+` DO NOTHING
		 RETURNING id, `+returning,
		prov, label, now, now, string(b.EndArray().Bytes()))
	if err != nil {
		return nil, err
	}
	fresh := map[string]int64{}
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			rows.Close()
			return nil, err
		}
		fresh[s] = id
	}
	return fresh, closeRows(rows)
}

// sealVerified seals sec and checks the result before anything is
// written: it must open to sec, and the fingerprint must come out the same
// twice.
func (k *Keys) sealVerified(sec, prov string) (stored, fp string, err error) {
	stored, fp = k.sealer.Seal(sec, prov), k.sealer.Fingerprint(sec, prov)
	if back, err := k.sealer.Open(stored, prov); err != nil || back != sec || k.sealer.Fingerprint(sec, prov) != fp {
		return "", "", ErrIntegrity
	}
	return stored, fp, nil
}

// SealLegacy seals up to limit keys stored plain (before keys were sealed)
// and reports how many it sealed. A plain key that turns out to duplicate
// a sealed one is deleted. It needs Sealing.
func (k *Keys) SealLegacy(ctx context.Context, limit int) (int, error) {
	if k.sealer == nil {
		return 0, errors.New("SealLegacy needs a Sealer")
	}
	rows, err := k.db.QueryContext(ctx,
		`SELECT id, provider, secret FROM keys WHERE fingerprint = '' ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return 0, err
	}
	type legacy struct {
		id        int64
		prov, sec string
	}
	var list []legacy
	for rows.Next() {
		var x legacy
		if err := rows.Scan(&x.id, &x.prov, &x.sec); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, x)
	}
	if err := closeRows(rows); err != nil || len(list) == 0 {
		return 0, err
	}
	var b jsonout.Builder
	b.Array()
	for _, x := range list {
		stored, fp, err := k.sealVerified(x.sec, x.prov)
		if err != nil {
			return 0, err
		}
		b.Array().Int(x.id).String(stored).String(fp).String(provider.Mask(x.sec)).String(x.prov).EndArray()
	}
	data := string(b.EndArray().Bytes())
	// Duplicates of sealed keys go first, then the rest is sealed in one
	// statement.
	if _, err := k.db.ExecContext(ctx,
		`DELETE FROM keys WHERE id IN (
		   SELECT u.value ->> 0 FROM json_each(?) AS u
		   WHERE EXISTS (SELECT 1 FROM keys k2 WHERE k2.provider = u.value ->> 4 AND k2.fingerprint = u.value ->> 2))`,
		data); err != nil {
		return 0, err
	}
	res, err := k.db.ExecContext(ctx,
		`UPDATE keys SET secret = u.value ->> 1, fingerprint = u.value ->> 2, masked = u.value ->> 3
		 FROM json_each(?) AS u WHERE keys.id = u.value ->> 0 AND keys.fingerprint = ''`, data)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// Reveal returns a key in full, for the admin who asked for it.
func (k *Keys) Reveal(ctx context.Context, id int64) (string, error) {
	var prov, stored string
	err := k.db.QueryRowContext(ctx, `SELECT provider, secret FROM keys WHERE id = ?`, id).Scan(&prov, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", err
	}
	return k.open(prov, stored)
}
