package store_test

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// settingRows renders the settings table as "name=value@updated" (updated
// relative to t0), sorted by name.
func settingRows(t *testing.T, s *store.Settings) string {
	t.Helper()
	all, err := s.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if all == nil {
		t.Fatal("All returned a nil map")
	}
	var out []string
	for n, v := range all {
		out = append(out, n+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestSettings(t *testing.T) {
	db := sqlitetest.Open(t)
	s := store.On(db, nil).Settings()
	steps := []struct {
		name    string
		at      int64 // relative to t0
		set     map[string]string
		want    string // All, sorted
		updated string // name@updated_at of every row, sorted
	}{
		{"empty", 0, nil, "", ""},
		{"insert", 0, map[string]string{"cooldown": "60", "models": `{"openai":["gpt-4o"]}`},
			`cooldown=60 models={"openai":["gpt-4o"]}`, "cooldown@0 models@0"},
		{"update one", 10, map[string]string{"cooldown": "90"},
			`cooldown=90 models={"openai":["gpt-4o"]}`, "cooldown@10 models@0"},
		{"same value again", 20, map[string]string{"cooldown": "90"},
			`cooldown=90 models={"openai":["gpt-4o"]}`, "cooldown@20 models@0"},
		{"insert, update and delete at once", 30, map[string]string{"models": "", "flush": "5", "cooldown": "120"},
			"cooldown=120 flush=5", "cooldown@30 flush@30"},
		{"delete a missing name", 40, map[string]string{"nope": ""}, "cooldown=120 flush=5", "cooldown@30 flush@30"},
		{"values needing escapes", 50, map[string]string{"note": "it's \"quoted\"\n\\ é😀"},
			"cooldown=120 flush=5 note=it's \"quoted\"\n\\ é😀", "cooldown@30 flush@30 note@50"},
		{"delete all", 60, map[string]string{"cooldown": "", "flush": "", "note": ""}, "", ""},
	}
	for _, st := range steps {
		if err := s.Set(ctx, st.set, t0+st.at); err != nil {
			t.Fatalf("%s: Set: %v", st.name, err)
		}
		if got := settingRows(t, s); got != st.want {
			t.Errorf("%s: All = %q, want %q", st.name, got, st.want)
		}
		rows, err := db.Query(`SELECT name, updated_at FROM settings ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var n string
			var at int64
			if err := rows.Scan(&n, &at); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s@%d", n, at-t0))
		}
		rows.Close()
		if g := strings.Join(got, " "); g != st.updated {
			t.Errorf("%s: rows %q, want %q", st.name, g, st.updated)
		}
	}
}

func TestSettingsRoundTrips(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	s := store.On(db, &n).Settings()
	if err := s.Set(ctx, map[string]string{"a": "1"}, t0); err != nil {
		t.Fatal(err)
	}
	if got := n.Swap(0); got != 1 {
		t.Errorf("Set of one value: %d round trips, want 1", got)
	}
	if err := s.Set(ctx, nil, t0); err != nil {
		t.Fatal(err)
	}
	if got := n.Swap(0); got != 0 {
		t.Errorf("Set of nothing: %d round trips, want 0", got)
	}
	if _, err := s.All(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.Swap(0); got != 1 {
		t.Errorf("All: %d round trips, want 1", got)
	}
}
