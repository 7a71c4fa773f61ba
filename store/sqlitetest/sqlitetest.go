// Package sqlitetest opens an in-memory SQLite database with keypool's
// migrations applied, so that store and handler tests run the same SQL the
// worker runs on D1. Only tests import it.
package sqlitetest

import (
	"database/sql"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"

	_ "modernc.org/sqlite"
)

var seq atomic.Int64

// Open returns a fresh database with every file of migrations/ applied in
// order, as `wrangler d1 migrations apply` would. Foreign keys are enforced,
// as they are on D1.
func Open(t testing.TB) *sql.DB {
	t.Helper()
	name := "file:kp" + strconv.FormatInt(seq.Add(1), 10) + "?mode=memory&cache=shared&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", name)
	if err != nil {
		t.Fatal(err)
	}
	// One connection: a shared in-memory database must stay open, and D1 is
	// a single connection too.
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	for _, f := range MigrationFiles(t) {
		sqlText, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(sqlText)); err != nil {
			t.Fatalf("migration %s: %v", filepath.Base(f), err)
		}
	}
	return db
}

// MigrationFiles lists migrations/*.sql in the order they apply.
func MigrationFiles(t testing.TB) []string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(here), "..", "..", "migrations")
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found in %s: %v", dir, err)
	}
	sort.Strings(files)
	return files
}
