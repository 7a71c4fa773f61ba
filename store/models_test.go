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

// renderModels renders All as "provider@updated:model,model" (updated
// relative to t0), sorted by provider.
func renderModels(all map[string]store.ProviderModels) string {
	var out []string
	for p, pm := range all {
		out = append(out, fmt.Sprintf("%s@%d:%s", p, rel(pm.UpdatedAt), strings.Join(pm.Models, ",")))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestModelsReplace(t *testing.T) {
	db := sqlitetest.Open(t)
	m := store.On(db, nil).Models()
	steps := []struct {
		name   string
		prov   string
		at     int64 // relative to t0
		models []string
		want   string
	}{
		{"first list", "openai", 10, []string{"gpt-4o", "o1", "gpt-4o-mini"},
			"openai@10:gpt-4o,gpt-4o-mini,o1"},
		{"another provider", "deepseek", 20, []string{"deepseek-chat", "deepseek-reasoner"},
			"deepseek@20:deepseek-chat,deepseek-reasoner openai@10:gpt-4o,gpt-4o-mini,o1"},
		{"models dropped and added", "openai", 30, []string{"gpt-4o-mini", "gpt-5"},
			"deepseek@20:deepseek-chat,deepseek-reasoner openai@30:gpt-4o-mini,gpt-5"},
		{"same list again", "openai", 40, []string{"gpt-5", "gpt-4o-mini"},
			"deepseek@20:deepseek-chat,deepseek-reasoner openai@40:gpt-4o-mini,gpt-5"},
		{"a name listed twice", "deepseek", 50, []string{"deepseek-chat", "deepseek-chat"},
			"deepseek@50:deepseek-chat openai@40:gpt-4o-mini,gpt-5"},
		{"names needing escapes", "mistral", 60, []string{`we"ird\name`, "modèle/é"},
			"deepseek@50:deepseek-chat mistral@60:modèle/é,we\"ird\\name openai@40:gpt-4o-mini,gpt-5"},
		{"empty list", "mistral", 70, nil,
			"deepseek@50:deepseek-chat openai@40:gpt-4o-mini,gpt-5"},
	}
	for _, st := range steps {
		if err := m.Replace(ctx, st.prov, st.models, t0+st.at); err != nil {
			t.Fatalf("%s: Replace: %v", st.name, err)
		}
		all, err := m.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := renderModels(all); got != st.want {
			t.Errorf("%s: All =\n  %s\nwant\n  %s", st.name, got, st.want)
		}
	}
}

func TestModelsAllEmpty(t *testing.T) {
	m := store.On(sqlitetest.Open(t), nil).Models()
	all, err := m.All(ctx)
	if err != nil || all == nil || len(all) != 0 {
		t.Errorf("All on an empty table = %v, %v; want an empty map", all, err)
	}
}

func TestServable(t *testing.T) {
	tests := []struct {
		name string
		keys map[string][]string // provider: statuses of its keys
		want string
	}{
		{"no keys", nil, ""},
		{"active", map[string][]string{"openai": {"active"}}, "openai"},
		{"exhausted only", map[string][]string{"openai": {"exhausted"}}, ""},
		{"disabled and blocked only", map[string][]string{"openai": {"disabled", "blocked"}}, ""},
		{"mixed providers, sorted", map[string][]string{
			"openai":           {"active", "active", "disabled"},
			"anthropic":        {"blocked"},
			"deepseek":         {"disabled", "exhausted"},
			"google-ai-studio": {"blocked", "active"},
			"mistral":          {"disabled"},
		}, "google-ai-studio,openai"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := sqlitetest.Open(t)
			k := store.On(db, nil).Keys()
			for prov, statuses := range tt.keys {
				for i, st := range statuses {
					ids := mustAdd(t, k, prov, fmt.Sprintf("sk-%s-%d-000000", prov, i))
					mustExec(t, db, `UPDATE keys SET status = ? WHERE id = ?`, st, ids[0])
				}
			}
			// The model lists do not matter.
			if err := store.On(db, nil).Models().Replace(ctx, "mistral", []string{"mistral-large"}, t0); err != nil {
				t.Fatal(err)
			}
			got, err := store.On(db, nil).Models().Servable(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != tt.want {
				t.Errorf("Servable = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestModelsRoundTrips(t *testing.T) {
	db := sqlitetest.Open(t)
	var n atomic.Int64
	m := store.On(db, &n).Models()
	if err := m.Replace(ctx, "openai", []string{"a", "b"}, t0); err != nil {
		t.Fatal(err)
	}
	n.Store(0)
	if _, err := m.All(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.Swap(0); got != 1 {
		t.Errorf("All: %d round trips, want 1", got)
	}
	if _, err := m.Servable(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.Swap(0); got != 1 {
		t.Errorf("Servable: %d round trips, want 1", got)
	}
}
