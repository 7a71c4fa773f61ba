package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keypool/keypool/store"
	"github.com/keypool/keypool/store/sqlitetest"
)

// TestRequestLog: entries are written in one statement, read back newest
// first through every filter, found by id, paged, and pruned by age and
// by count.
func TestRequestLog(t *testing.T) {
	ctx := context.Background()
	q := store.On(sqlitetest.Open(t), nil).Requests()
	const ms = int64(1_750_000_000_000)
	id := func(at int64, r int64) int64 { return at<<store.RequestIDShift | r }
	entries := []store.LoggedRequest{
		{ID: id(ms, 1), TokenID: 0, Provider: "openai", Model: "gpt-a", Route: "/v1/chat/completions", Status: 200, Class: "success",
			KeyID: 3, Keys: []int64{3}, Attempts: `[{"key":3,"status":200}]`, Prompt: 5, Completion: 7, LatencyMS: 12},
		{ID: id(ms+1000, 2), TokenID: 7, Provider: "openai", Model: "gpt-a", Route: "/v1/chat/completions", Status: 200, Class: "success",
			KeyID: 4, Keys: []int64{13, 4}, Attempts: `[{"key":13,"status":429},{"key":4,"status":200}]`, Cached: 3},
		{ID: id(ms+2000, 3), TokenID: 7, Provider: "anthropic", Model: "claude", Route: "/api/anthropic/v1/messages", Status: 503,
			Class: "rejected", Keys: nil, Attempts: `[]`},
	}
	if err := q.Add(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if err := q.Add(ctx, entries[:1]); err != nil { // the same id again: kept once
		t.Fatal(err)
	}
	ids := func(f store.RequestFilter, limit int) []int64 {
		t.Helper()
		page, err := q.Page(ctx, f, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range page {
			out = append(out, e.ID&(1<<store.RequestIDShift-1))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    store.RequestFilter
		want []int64
	}{
		{"all, newest first", store.RequestFilter{}, []int64{3, 2, 1}},
		{"time range", store.RequestFilter{From: ms + 500, To: ms + 1500}, []int64{2}},
		{"before an id (paging)", store.RequestFilter{Before: id(ms+1000, 2)}, []int64{1}},
		{"status class 5xx", store.RequestFilter{Status: 5}, []int64{3}},
		{"class success", store.RequestFilter{Class: "success"}, []int64{2, 1}},
		{"AUTH_KEY", store.RequestFilter{HasToken: true}, []int64{1}},
		{"token 7", store.RequestFilter{HasToken: true, TokenID: 7}, []int64{3, 2}},
		{"a key tried, not only the one that answered", store.RequestFilter{KeyID: 13}, []int64{2}},
		{"key 3 is not key 13", store.RequestFilter{KeyID: 3}, []int64{1}},
		{"provider and model", store.RequestFilter{Provider: "anthropic", Model: "claude"}, []int64{3}},
		{"route", store.RequestFilter{Route: "/v1/chat/completions"}, []int64{2, 1}},
	} {
		if got := ids(tc.f, 10); !equalIDs(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := ids(store.RequestFilter{}, 2); !equalIDs(got, []int64{3, 2}) {
		t.Errorf("limit 2: %v", got)
	}
	e, err := q.Get(ctx, id(ms+1000, 2))
	if err != nil || e.TokenID != 7 || len(e.Keys) != 2 || e.Keys[0] != 13 || e.Cached != 3 || e.At() != ms+1000 ||
		e.Attempts != `[{"key":13,"status":429},{"key":4,"status":200}]` {
		t.Errorf("get: %+v %v", e, err)
	}
	if _, err := q.Get(ctx, id(ms, 9)); !errors.Is(err, store.ErrRequestNotFound) {
		t.Errorf("get a missing id: %v", err)
	}
	// Older than ms+500 goes, and of the rest only the newest 1 stays.
	if n, err := q.Prune(ctx, ms+500, 1); err != nil || n != 2 {
		t.Errorf("prune: %d %v, want 2 gone", n, err)
	}
	if got := ids(store.RequestFilter{}, 10); !equalIDs(got, []int64{3}) {
		t.Errorf("after pruning: %v", got)
	}
}
