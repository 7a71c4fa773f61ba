package usage

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// relayCase is one body the JS relay (entry/streams.mjs) is run on.
type relayCase struct {
	Name   string   `json:"name"`
	Chunks []string `json:"chunks"` // base64
	Strip  bool     `json:"strip"`
	Kind   Kind     `json:"kind"`
	// Head: bytes read with read() before the body is relayed, as Go
	// reads a failed answer's head.
	Head int `json:"head"`
}

type relayResult struct {
	Out     string `json:"out"`     // base64: what the client got
	Summary string `json:"summary"` // base64: what Go gets
	Error   string `json:"error"`
}

// relayScript runs entry/streams.mjs's relay on the cases read from
// stdin, with Node's web streams (as workerd's).
const relayScript = `
import { relay, read } from process.argv[1];
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const b64 = (u8) => Buffer.from(u8 || []).toString("base64");
const out = [];
for (const c of cases) {
  try {
    const chunks = c.chunks.map((s) => new Uint8Array(Buffer.from(s, "base64")));
    let next = 0;
    const src = new ReadableStream({ pull(ctl) { if (next < chunks.length) ctl.enqueue(chunks[next++]); else ctl.close(); } });
    const res = new Response(src);
    if (c.head > 0) await read(res, c.head);
    const [body, done] = relay(res, c.strip, c.kind);
    const got = new Uint8Array(await new Response(body).arrayBuffer());
    out.push({ out: b64(got), summary: b64(await done) });
  } catch (e) {
    out.push({ error: String(e && e.stack || e) });
  }
}
process.stdout.write(JSON.stringify(out));
`

func runRelayJS(t *testing.T, cases []relayCase) []relayResult {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	mod := filepath.Join(filepath.Dir(filepath.Dir(here)), "entry", "streams.mjs")
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	script := "import { createRequire } from 'module'; const require = createRequire(import.meta.url);\n" +
		strings.Replace(relayScript, "process.argv[1]", "'file://"+mod+"'", 1)
	cmd := exec.Command("node", "--input-type=module", "-e", script)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var res []relayResult
	if err := json.Unmarshal(outb, &res); err != nil || len(res) != len(cases) {
		t.Fatalf("node said %q (%v)", outb, err)
	}
	return res
}

func chunked(b []byte, sizes ...int) []string {
	var out []string
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		out = append(out, base64.StdEncoding.EncodeToString(b[:n]))
		b = b[n:]
	}
	return out
}

// TestRelayJSMatchesGo: for every recorded stream and answer, in many
// chunkings, the JS relay sends the client exactly what StripUsage (or
// nothing) would, and its summary gives Go the usage, found flag and
// estimate size that Stream and FromJSON give on the whole body.
func TestRelayJSMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	long := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":999,\"completion_tokens\":999},\"pad\":\"" +
		strings.Repeat("x", 1<<20) + "\"}\n\n"
	streams := map[string]string{
		"openai usage": openAIStreamUsage, "openai plain": openAIStreamPlain, "gemini": geminiSSE,
		"anthropic": anthropicSSE, "responses": responsesSSE,
		"openai crlf":     strings.ReplaceAll(openAIStreamUsage, "\n", "\r\n"),
		"no final nl":     "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}",
		"broken json":     "data: {\"usage\":{\"prompt_tokens\":1\n\ndata: [DONE]\n\n",
		"comments":        ": ping\n\nid: 1\n" + openAIUsageEvent + "data: [DONE]\n\n",
		"unicode":         "data: {\"choices\":[{\"delta\":{\"content\":\"é✓😀\\ud800\"}}]}\n\ndata: [DONE]\n\n",
		"long then plain": long + openAIStreamPlain,
	}
	var cases []relayCase
	for name, s := range streams {
		b := []byte(s)
		splits := [][]int{{len(b) + 1}, {4096}, {1 + rng.Intn(50), 1 + rng.Intn(300)}}
		if len(b) < 8000 {
			splits = append(splits, []int{1}, []int{7})
		}
		for _, sz := range splits {
			for _, strip := range []bool{false, true} {
				cases = append(cases, relayCase{Name: name, Chunks: chunked(b, sz...), Strip: strip, Kind: KindSSE})
			}
		}
	}
	answers := []string{openAIChat, openAIResponse, anthropicMessage, anthropicCached, geminiGenerate, openAIEmbedding,
		geminiArray, `[]`, `{"usage":`, `"just a string"`}
	for _, a := range answers {
		cases = append(cases, relayCase{Name: a[:min(len(a), 20)], Chunks: chunked([]byte(a), 5), Kind: KindJSON})
	}
	// A failed answer's head read first, then the whole body relayed.
	cases = append(cases, relayCase{Name: "head read", Chunks: chunked([]byte(openAIChat), 3), Kind: KindNone, Head: 10},
		relayCase{Name: "head read, all of it", Chunks: chunked([]byte(openAIChat), 100), Kind: KindJSON, Head: 1 << 20})
	res := runRelayJS(t, cases)
	for i, c := range cases {
		r := res[i]
		if r.Error != "" {
			t.Fatalf("%s: %s", c.Name, r.Error)
		}
		var in []byte
		for _, ch := range c.Chunks {
			b, _ := base64.StdEncoding.DecodeString(ch)
			in = append(in, b...)
		}
		out, _ := base64.StdEncoding.DecodeString(r.Out)
		want := in
		if c.Strip {
			want = stripAll(t, in)
		}
		if !bytes.Equal(out, want) {
			t.Errorf("%s (strip %v, %d chunks): client got %q, want %q", c.Name, c.Strip, len(c.Chunks), head(out), head(want))
		}
		if c.Kind == KindNone {
			continue
		}
		sum, _ := base64.StdEncoding.DecodeString(r.Summary)
		got := FromSummary(c.Kind, sum)
		wantR := Relayed{Bytes: int64(len(in)), Complete: true}
		if c.Kind == KindSSE {
			var st Stream
			st.Write(in)
			wantR.Usage, wantR.Found, wantR.Bytes = st.Usage, st.Found, st.StreamedBytes()
		} else {
			wantR.Usage, wantR.Found = FromJSON(in)
		}
		if got != wantR {
			t.Errorf("%s (strip %v, %d chunks): summary %q gives %+v, Go reads %+v", c.Name, c.Strip, len(c.Chunks), head(sum), got, wantR)
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 300)] }

func TestFromSummary(t *testing.T) {
	sse := FromSummary(KindSSE, []byte("120 1 33\n"+`data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}`+"\n"))
	if sse != (Relayed{Usage: Usage{Prompt: 5, Completion: 7}, Found: true, Bytes: 33, Complete: true}) {
		t.Errorf("sse: %+v", sse)
	}
	js := FromSummary(KindJSON, []byte(`50 0 0`+"\n"+`{"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3}}`))
	if js != (Relayed{Usage: Usage{Prompt: 2, Completion: 3}, Found: true, Bytes: 50}) {
		t.Errorf("json: %+v", js)
	}
	if o := FromSummary(KindOther, []byte("2048 1 0\n")); o != (Relayed{Bytes: 2048, Complete: true}) {
		t.Errorf("other: %+v", o)
	}
	if bad := FromSummary(KindSSE, []byte("garbage")); bad != (Relayed{}) {
		t.Errorf("garbage: %+v", bad)
	}
}

// hangUpScript relays an endless stream, reads one chunk, then either
// cancels the client's side or aborts the request's signal, and reports
// whether the upstream body was cancelled and what the summary says.
const hangUpScript = `
import { relay, relayDone } from MODULE;
const out = {};
for (const how of ["cancel", "signal"]) {
  let cancelled = false;
  const enc = new TextEncoder();
  const src = new ReadableStream({
    pull(c) { return new Promise((r) => setTimeout(r, 5)).then(() => c.enqueue(enc.encode('data: {"choices":[{"delta":{"content":"ab"}}]}\n\n'))); },
    cancel() { cancelled = true; },
  });
  const [body, done] = relay(new Response(src), false, 1);
  const ctrl = new AbortController();
  relayDone(body, ctrl.signal);
  const reader = body.getReader();
  await reader.read();
  if (how === "cancel") await reader.cancel();
  else ctrl.abort();
  const sum = new TextDecoder().decode(await done);
  await new Promise((r) => setTimeout(r, 20));
  out[how] = { cancelled, summary: sum };
}
process.stdout.write(JSON.stringify(out));
`

// runStreamsScript runs a node script that imports entry/streams.mjs as
// MODULE and reads the JSON it prints into res.
func runStreamsScript(t *testing.T, script string, res any) {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	mod := "'file://" + filepath.Join(filepath.Dir(filepath.Dir(here)), "entry", "streams.mjs") + "'"
	cmd := exec.Command("node", "--input-type=module", "-e", strings.Replace(script, "MODULE", mod, 1))
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	if err := json.Unmarshal(b, res); err != nil {
		t.Fatalf("node said %q: %v", b, err)
	}
}

// TestRelayJSHangUp: a client that cancels its side, or whose request
// signal aborts, cancels the upstream body at once, and Go is told the
// body did not complete, with what was seen until then.
func TestRelayJSHangUp(t *testing.T) {
	var res map[string]struct {
		Cancelled bool   `json:"cancelled"`
		Summary   string `json:"summary"`
	}
	runStreamsScript(t, hangUpScript, &res)
	for _, how := range []string{"cancel", "signal"} {
		r := res[how]
		got := FromSummary(KindSSE, []byte(r.Summary))
		if !r.Cancelled || got.Complete || got.Bytes < 2 {
			t.Errorf("%s: upstream cancelled %v, summary %q (%+v): want cancelled, incomplete, the text seen", how, r.Cancelled, r.Summary, got)
		}
	}
}

// brokenScript relays a stream that sends two events and then fails
// ("cut"), goes quiet ("stalled", with a 50 ms idle limit) or pauses
// 30 ms under a 200 ms limit and ends ("paused"), and reports what the
// client got, whether its body ended cleanly, and the summary.
const brokenScript = `
import { relay } from MODULE;
const enc = new TextEncoder();
const out = {};
for (const how of ["cut", "stalled", "paused"]) {
  let sent = 0, cancelled = false;
  const src = new ReadableStream({
    pull(c) {
      if (sent < 2) { sent++; c.enqueue(enc.encode('data: {"choices":[{"delta":{"content":"w' + sent + '"}}]}\n\n')); return; }
      if (how === "cut") { c.error(new Error("connection reset")); return; }
      if (how === "stalled") return new Promise(() => {});
      return new Promise((r) => setTimeout(r, 30)).then(() => { c.enqueue(enc.encode("data: [DONE]\n\n")); c.close(); });
    },
    cancel() { cancelled = true; },
  });
  const [body, done] = relay(new Response(src), false, 1, how === "stalled" ? 50 : 200);
  let text = "", clean = true;
  try { text = await new Response(body).text(); } catch (e) { clean = false; }
  out[how] = { text, clean, cancelled, summary: new TextDecoder().decode(await done) };
}
process.stdout.write(JSON.stringify(out));
`

// TestRelayJSBrokenUpstream: an upstream body that fails mid-way, or
// sends nothing for the idle limit, ends the client's body cleanly after
// what arrived (a stalled one is let go), and Go hears which; a pause
// shorter than the limit is relayed whole.
func TestRelayJSBrokenUpstream(t *testing.T) {
	var res map[string]struct {
		Text      string `json:"text"`
		Clean     bool   `json:"clean"`
		Cancelled bool   `json:"cancelled"`
		Summary   string `json:"summary"`
	}
	runStreamsScript(t, brokenScript, &res)
	two := "data: {\"choices\":[{\"delta\":{\"content\":\"w1\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"w2\"}}]}\n\n"
	for how, want := range map[string]struct {
		text   string
		broke  string
		cancel bool
	}{
		"cut":     {two, "cut", false},
		"stalled": {two, "stalled", true},
		"paused":  {two + "data: [DONE]\n\n", "", false},
	} {
		r := res[how]
		got := FromSummary(KindSSE, []byte(r.Summary))
		if r.Text != want.text || !r.Clean || got.Broke != want.broke || got.Complete != (want.broke == "") || r.Cancelled != want.cancel {
			t.Errorf("%s: client got %q (clean end %v), upstream cancelled %v, summary %q (%+v); want %q, a clean end, cancelled %v, broke %q",
				how, r.Text, r.Clean, r.Cancelled, r.Summary, got, want.text, want.cancel, want.broke)
		}
	}
}
