package store_test

import (
	"testing"

	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// A token's endpoint scope: inference unless it is given full
// pass-through, kept by Update, and the only two values D1 accepts.
func TestTokenEndpoints(t *testing.T) {
	db := sqlitetest.Open(t)
	st := store.On(db, nil).Tokens()

	def, err := st.Create(ctx, store.Token{Name: "default", Prefix: "kp-Dddd"}, "hash-d", t0)
	if err != nil || def.Endpoints != store.EndpointsInference || def.AllEndpoints() {
		t.Fatalf("Create without a scope = %+v, %v; want endpoints %q", def, err, store.EndpointsInference)
	}
	all, err := st.Create(ctx, store.Token{Name: "all", Prefix: "kp-Aaaa", Endpoints: store.EndpointsAll}, "hash-all", t0)
	if err != nil || !all.AllEndpoints() {
		t.Fatalf("Create with all = %+v, %v", all, err)
	}
	for _, c := range []struct {
		id   int64
		want string
	}{{def.ID, store.EndpointsInference}, {all.ID, store.EndpointsAll}} {
		got, err := st.Get(ctx, c.id)
		if err != nil || got.Endpoints != c.want {
			t.Errorf("Get %d: endpoints %q, %v; want %q", c.id, got.Endpoints, err, c.want)
		}
	}
	byHash, err := st.ByHash(ctx, "hash-all")
	if err != nil || byHash.Endpoints != store.EndpointsAll {
		t.Errorf("ByHash: endpoints %q, %v", byHash.Endpoints, err)
	}

	// Update sets it either way; anything but "all" is inference.
	def.Endpoints = store.EndpointsAll
	if err := st.Update(ctx, def, t0+1); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ctx, def.ID); got.Endpoints != store.EndpointsAll {
		t.Errorf("after Update to all: %q", got.Endpoints)
	}
	all.Endpoints = ""
	if err := st.Update(ctx, all, t0+1); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ctx, all.ID); got.Endpoints != store.EndpointsInference {
		t.Errorf("after Update with no scope: %q, want %q", got.Endpoints, store.EndpointsInference)
	}

	// A row written before the migration (no endpoints column given) is
	// inference-only; the column takes no other value.
	mustExec(t, db, `INSERT INTO tokens (name, hash, prefix, created_at, updated_at) VALUES ('old', 'hash-old', 'kp-Oooo', 1, 1)`)
	old, err := st.ByHash(ctx, "hash-old")
	if err != nil || old.Endpoints != store.EndpointsInference {
		t.Errorf("a row without endpoints: %q, %v", old.Endpoints, err)
	}
	if _, err := db.Exec(`UPDATE tokens SET endpoints = 'everything' WHERE id = ?`, old.ID); err == nil {
		t.Errorf("endpoints = 'everything' was accepted")
	}
}
