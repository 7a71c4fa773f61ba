// Package devworker writes the wrangler.toml with which the end-to-end
// suite and the benchmarks run a built worker under `wrangler dev`, so
// that both run it exactly as configured.
package devworker

import (
	"fmt"
	"path/filepath"
)

// Config returns a wrangler.toml for the worker whose entry module is main,
// with keypool's static assets from the repository at root and, when d1 is
// set, the D1 binding DB with root's migrations and the cron trigger.
func Config(name, main, root string, d1 bool) string {
	conf := fmt.Sprintf(`name = %q
main = %q
compatibility_date = "2025-09-01"
compatibility_flags = ["enable_request_signal"]
[assets]
directory = %q
`, name, main, filepath.Join(root, "ui", "public"))
	if d1 {
		conf += fmt.Sprintf(`[[d1_databases]]
binding = "DB"
database_name = "keypool"
database_id = "00000000-0000-0000-0000-000000000000"
migrations_dir = %q
[triggers]
crons = ["*/5 * * * *"]
`, filepath.Join(root, "migrations"))
	}
	return conf
}
