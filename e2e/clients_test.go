//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// TestClients runs the client programs users point at keypool, at the
// exact versions e2e/clients/package-lock.json pins, against wrangler dev
// and the fake upstream: each call must succeed, print the fake's answer,
// and reach the upstream with a pool key (never the client's token).
func TestClients(t *testing.T) {
	dir := clientsDir(t)
	for _, build := range builds(t) {
		t.Run(build, func(t *testing.T) {
			up, err := fakeupstream.Start()
			must(t, err)
			defer up.Close()
			w := startWorker(t, build, up, nil)
			pool := map[string]string{
				"openai":           "sk-client-" + randomHex(12),
				"anthropic":        "sk-ant-client-" + randomHex(12),
				"google-ai-studio": "AIzaClient" + randomHex(12),
			}
			for prov, k := range pool {
				w.importKeys(t, prov, k)
			}
			t.Run("ai-sdk", func(t *testing.T) { w.testAISDK(t, dir, pool) })
			t.Run("claude-code", func(t *testing.T) { w.testClaudeCode(t, dir, pool) })
			t.Run("gemini-cli", func(t *testing.T) { w.testGeminiCLI(t, dir, pool) })
			t.Run("codex", func(t *testing.T) { w.testCodex(t, dir, pool) })
			t.Run("codex-websocket", func(t *testing.T) { w.testCodexSocket(t, dir, pool) })
		})
	}
}

// clientsDir installs e2e/clients' pinned packages (npm ci, once) and
// returns the directory.
func clientsDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "e2e", "clients")
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	must(t, err)
	if mod, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !mod.ModTime().Before(lock.ModTime()) {
		return dir
	}
	began := time.Now()
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in e2e/clients: %v\n%s", err, tail(string(out), 3000))
	}
	t.Logf("npm ci in e2e/clients: %v", time.Since(began).Round(time.Millisecond))
	return dir
}

// runClient runs a program of e2e/clients with env, within a minute.
func runClient(t *testing.T, dir string, env []string, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	began := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %v, exit %v", name, strings.Join(args, " "), time.Since(began).Round(time.Millisecond), err)
	if err != nil {
		t.Fatalf("%s failed: %v\nstdout: %s\nstderr: %s", name, err, tail(out.String(), 2000), tail(errb.String(), 2000))
	}
	return out.Bytes()
}

// testAISDK: generateText and streamText through keypool with the AI
// SDK's OpenAI (chat and Responses), Anthropic and Google providers.
func (w *worker) testAISDK(t *testing.T, dir string, pool map[string]string) {
	before := len(w.up.Requests())
	out := runClient(t, dir, []string{"KEYPOOL_BASE=" + w.base, "KEYPOOL_TOKEN=" + w.token}, "node", "aisdk.mjs")
	results := gjson.ParseBytes(out).Array()
	// What the fake says: its canned answers, and its streams' pieces.
	want := map[string]string{
		"openai-chat generate":      "Hello from the fake upstream.",
		"openai-chat stream":        "Hello",
		"openai-responses generate": "Hello from the fake upstream.",
		"openai-responses stream":   "w1 w2 w3 w4 ",
		"anthropic generate":        "Hello from the fake Claude.",
		"anthropic stream":          "w1 w2 w3 w4 ",
		"google generate":           "Hello from the fake Gemini.",
		"google stream":             "w1 w2 w3 w4 ",
	}
	if len(results) != len(want) {
		t.Fatalf("the AI SDK script printed %d results, want %d: %s", len(results), len(want), out)
	}
	for _, r := range results {
		name := r.Get("name").String()
		t.Logf("%s: %q (%d chunks, %d input / %d output tokens, %d ms) %s", name, r.Get("text").String(), r.Get("chunks").Int(),
			r.Get("usage.inputTokens").Int(), r.Get("usage.outputTokens").Int(), r.Get("ms").Int(), r.Get("error").String())
		if w, ok := want[name]; !ok || r.Get("error").Exists() || r.Get("text").String() != w || r.Get("usage.outputTokens").Int() == 0 {
			t.Errorf("%s: %s, want the text %q and its usage", name, r.Raw, w)
		}
		if strings.HasSuffix(name, "stream") && r.Get("chunks").Int() < 2 {
			t.Errorf("%s: %d chunks, want the stream in pieces", name, r.Get("chunks").Int())
		}
	}
	paths := map[string]int{}
	keys := map[string]bool{}
	for _, k := range pool {
		keys[k] = true
	}
	for _, q := range w.up.Requests()[before:] {
		paths[q.Path]++
		if !keys[q.Key] {
			t.Errorf("%s reached the upstream with %q, not a pool key", q.Path, q.Key)
		}
	}
	t.Logf("upstream paths: %v", paths)
	// (Through the harness's AI Gateway: the paths end as the providers'.)
	for suffix, n := range map[string]int{"/chat/completions": 2, "/responses": 2, "/anthropic/v1/messages": 2,
		"/models/gemini-2.0-flash:generateContent": 1, "/models/gemini-2.0-flash:streamGenerateContent": 1} {
		got := 0
		for p, c := range paths {
			if strings.HasSuffix(p, suffix) {
				got += c
			}
		}
		if got != n {
			t.Errorf("upstream paths ending %s: %d requests, want %d", suffix, got, n)
		}
	}
}

// testClaudeCode: Claude Code, one prompt, not interactive, with
// ANTHROPIC_BASE_URL at keypool's /api/anthropic and the client token as
// ANTHROPIC_API_KEY (and again with ANTHROPIC_AUTH_TOKEN).
func (w *worker) testClaudeCode(t *testing.T, dir string, pool map[string]string) {
	for _, cred := range []string{"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"} {
		before := len(w.up.Requests())
		env := []string{"HOME=" + t.TempDir(), "ANTHROPIC_BASE_URL=" + w.base + "/api/anthropic", cred + "=" + w.token,
			"DISABLE_AUTOUPDATER=1", "DISABLE_TELEMETRY=1", "DISABLE_ERROR_REPORTING=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"}
		out := runClient(t, dir, env, filepath.Join(dir, "node_modules", ".bin", "claude"), "-p", "Say hi", "--model", "claude-sonnet-4-5")
		t.Logf("claude -p with %s printed %q", cred, strings.TrimSpace(string(out)))
		paths := w.upstreamSince(t, before, pool["anthropic"])
		if !strings.Contains(string(out), "w1 w2 w3 w4") || len(paths) == 0 {
			t.Errorf("claude -p with %s: %q, want the fake's streamed answer", cred, out)
		}
	}
}

// testGeminiCLI: Gemini CLI, one prompt, not interactive, with
// GOOGLE_GEMINI_BASE_URL at keypool's /api/google-ai-studio, the client
// token as GEMINI_API_KEY and the API key auth chosen in its settings.
func (w *worker) testGeminiCLI(t *testing.T, dir string, pool map[string]string) {
	home := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(home, ".gemini"), 0o755))
	must(t, os.WriteFile(filepath.Join(home, ".gemini", "settings.json"),
		[]byte(`{"security":{"auth":{"selectedType":"gemini-api-key"}}}`), 0o644))
	before := len(w.up.Requests())
	env := []string{"HOME=" + home, "GOOGLE_GEMINI_BASE_URL=" + w.base + "/api/google-ai-studio", "GEMINI_API_KEY=" + w.token,
		"GEMINI_CLI_NO_RELAUNCH=true", "GEMINI_CLI_TRUST_WORKSPACE=true", "NO_COLOR=1"}
	out := runClient(t, dir, env, filepath.Join(dir, "node_modules", ".bin", "gemini"), "-p", "Say hi")
	t.Logf("gemini -p printed %q", strings.TrimSpace(string(out)))
	paths := w.upstreamSince(t, before, pool["google-ai-studio"])
	if !strings.Contains(string(out), "w1 w2 w3 w4") || len(paths) == 0 {
		t.Errorf("gemini -p: %q, want the fake's streamed answer", out)
	}
}

// testCodex: Codex CLI's exec, with a custom provider at keypool's /v1
// (wire_api "responses") and the client token in the variable it names.
func (w *worker) testCodex(t *testing.T, dir string, pool map[string]string) {
	home := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(home, ".codex"), 0o755))
	must(t, os.WriteFile(filepath.Join(home, ".codex", "config.toml"), []byte(`model = "gpt-4o-mini"
model_provider = "keypool"

[model_providers.keypool]
name = "keypool"
base_url = "`+w.base+`/v1"
env_key = "KEYPOOL_TOKEN"
wire_api = "responses"
`), 0o644))
	before := len(w.up.Requests())
	env := []string{"HOME=" + home, "CODEX_HOME=" + filepath.Join(home, ".codex"), "KEYPOOL_TOKEN=" + w.token, "NO_COLOR=1"}
	out := runClient(t, dir, env, filepath.Join(dir, "node_modules", ".bin", "codex"), "exec", "--skip-git-repo-check", "Say hi")
	t.Logf("codex exec printed %q", strings.TrimSpace(string(out)))
	paths := w.upstreamSince(t, before, pool["openai"])
	if !strings.Contains(string(out), "w1 w2 w3 w4") || len(paths) == 0 {
		t.Errorf("codex exec: %q, want the fake's streamed answer", out)
	}
}

// testCodexSocket: Codex CLI's exec over the Responses WebSocket, with
// its built-in OpenAI provider pointed at keypool (openai_base_url), and
// with a custom provider that allows the socket: the whole exec (its
// prewarm and its turn) goes over the socket, with no fallback to HTTPS
// (which Codex takes only after six seconds of failed handshakes).
func (w *worker) testCodexSocket(t *testing.T, dir string, pool map[string]string) {
	configs := []struct{ name, toml, env string }{
		{"built-in provider", `model = "gpt-4o-mini"
openai_base_url = "` + w.base + `/v1"
`, "CODEX_API_KEY"},
		{"custom provider", `model = "gpt-4o-mini"
model_provider = "keypool"

[model_providers.keypool]
name = "keypool"
base_url = "` + w.base + `/v1"
env_key = "KEYPOOL_TOKEN"
wire_api = "responses"
supports_websockets = true
`, "KEYPOOL_TOKEN"},
	}
	for _, c := range configs {
		home := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(home, ".codex"), 0o755))
		must(t, os.WriteFile(filepath.Join(home, ".codex", "config.toml"), []byte(c.toml), 0o644))
		before := len(w.up.Requests())
		env := []string{"HOME=" + home, "CODEX_HOME=" + filepath.Join(home, ".codex"), c.env + "=" + w.token, "NO_COLOR=1"}
		out := runClient(t, dir, env, filepath.Join(dir, "node_modules", ".bin", "codex"), "exec", "--skip-git-repo-check", "Say hi")
		t.Logf("%s: codex exec printed %q", c.name, strings.TrimSpace(string(out)))
		var shakes, msgs int
		for _, p := range w.upstreamSince(t, before, pool["openai"]) {
			switch {
			case strings.HasPrefix(p, "GET /v1/responses"):
				shakes++
			case strings.HasPrefix(p, fakeupstream.SocketMethod+" /v1/responses gpt-4o-mini"):
				msgs++
			default:
				t.Errorf("%s: %s reached the upstream: Codex left the WebSocket", c.name, p)
			}
		}
		if !strings.Contains(string(out), "w1 w2 w3 w4") || shakes == 0 || msgs < 2 {
			t.Errorf("%s: codex exec: %q after %d handshakes and %d messages, want the fake's answer over the socket", c.name, out, shakes, msgs)
		}
	}
}

// upstreamSince is what reached the fake since its request number
// before (method, path, model), each checked to carry key, the pool's.
func (w *worker) upstreamSince(t *testing.T, before int, key string) []string {
	t.Helper()
	var paths []string
	for _, q := range w.up.Requests()[before:] {
		paths = append(paths, q.Method+" "+q.Path+" "+q.Model)
		if q.Key != key {
			t.Errorf("%s reached the upstream with %q, not the pool's key", q.Path, q.Key)
		}
	}
	t.Logf("upstream: %v", paths)
	return paths
}
