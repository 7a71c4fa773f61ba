package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// row is one line of the table.
type row struct {
	id, label string
	prec      int
	noRatio   bool
	goal      *goal // issue 13's target for the figure, if any
}

// goal is a target a keypool figure should meet: on its ratio to the
// baseline, or on the figure itself.
type goal struct {
	text    string
	onRatio bool
	met     func(v float64) bool
}

func atLeast(x float64) *goal {
	return &goal{text: fmt.Sprintf("≥ %.2f×", x), onRatio: true, met: func(v float64) bool { return v >= x }}
}

func atMost(x float64) *goal {
	return &goal{text: fmt.Sprintf("≤ %.2g×", x), onRatio: true, met: func(v float64) bool { return v <= x }}
}

var (
	firstByteGoal = &goal{text: "≤ +2 ms", met: func(v float64) bool { return v <= 2 }}
	chunksGoal    = &goal{text: "0.90–1.10", met: func(v float64) bool { return v >= 0.9 && v <= 1.1 }}
)

var rows = []row{
	{id: "start", label: "wrangler dev start → \"Ready on\" (ms)"},
	{id: "cold", label: "cold first proxied request (ms)", goal: atMost(3)},
	{id: "ns1_rps", label: "non-stream, 1 client: req/s", prec: 1, goal: atLeast(0.9)},
	{id: "ns1_p50", label: "non-stream, 1 client: p50 (ms)", prec: 1},
	{id: "ns1_p99", label: "non-stream, 1 client: p99 (ms)", prec: 1},
	{id: "ns16_rps", label: "non-stream, 16 clients: req/s", prec: 1, goal: atLeast(0.85)},
	{id: "ns16_p50", label: "non-stream, 16 clients: p50 (ms)", prec: 1},
	{id: "ns16_p99", label: "non-stream, 16 clients: p99 (ms)", prec: 1},
	{id: "st1_ttfb", label: "stream, 1 client: first byte p50 (ms)", prec: 1},
	{id: "st1_total", label: "stream, 1 client: total p50 (ms)", prec: 1},
	{id: "st16_ttfb", label: "stream, 16 clients: first byte p50 (ms)", prec: 1},
	{id: "st16_total", label: "stream, 16 clients: total p50 (ms)", prec: 1},
	{id: "st16_rps", label: "stream, 16 clients: req/s", prec: 1, goal: atLeast(0.85)},
	{id: "ls_fb", label: "long stream (200 chunks, 2 s): first byte − upstream's, p50 (ms)", prec: 1, noRatio: true, goal: firstByteGoal},
	{id: "ls_spread", label: "long stream: client's first → last byte, p50 (ms)", prec: 0},
	{id: "cpu_chunks10", label: "worker CPU/streamed request, 10 chunks (ms)", prec: 2},
	{id: "cpu_chunks1000", label: "worker CPU/streamed request, 1 000 chunks (ms)", prec: 2},
	{id: "chunks_ratio", label: "  1 000 chunks ÷ 10 chunks", prec: 2, noRatio: true, goal: chunksGoal},
	{id: "cpu_per_chunk", label: "  CPU per extra chunk (µs)", prec: 0},
	{id: "cpu_ns16", label: "workerd CPU/request, non-stream (ms)", prec: 2},
	{id: "cpu_rt_ns16", label: "  of which the worker's workerd (ms)", prec: 2, goal: atMost(1.6)},
	{id: "cpu_st16", label: "workerd CPU/request, stream (ms)", prec: 2},
	{id: "node_ns16", label: "wrangler node CPU/request, non-stream (ms)", prec: 2},
	{id: "d1", label: "D1 queries per proxied request", prec: 2, noRatio: true},
	{id: "big_req", label: "1 MB request body, median (ms)", prec: 0},
	{id: "big_resp", label: "4 MB streamed response, median (ms)", prec: 0},
	{id: "wasm_raw", label: "app.wasm raw (MB)", prec: 2, noRatio: true},
	{id: "wasm_gz", label: "app.wasm gzip (MB)", prec: 2, noRatio: true},
	{id: "rss_start", label: "workerd RSS after start (MB)", prec: 1},
	{id: "rss_end", label: "workerd RSS after the phases (MB)", prec: 1},
	{id: "other_cpu", label: "other processes' CPU, 16-client phase (%)", prec: 0, noRatio: true},
	{id: "requests", label: "requests measured", noRatio: true},
	{id: "failed", label: "failed requests", noRatio: true},
}

func printTable(w io.Writer, env *benchEnv, results []*measurement) {
	if len(results) == 0 {
		return
	}
	mode := "full"
	if env.cfg.quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "\nkeypool benchmark (%s run): wrangler dev on 127.0.0.1, fake upstream in-process, one Go load generator\n", mode)
	fmt.Fprintf(w, "durations: warm-up %s, non-stream %s (1 client) / %s (16), stream %s / %s; large bodies: median of %d after 1 untimed\n\n",
		env.sz.warm, env.sz.ns1, env.sz.ns16, env.sz.st1, env.sz.st16, env.sz.bigReps)
	printAligned(w, tableCells(results))
	fmt.Fprintln(w)
	fmt.Fprint(w, tableNotes)
}

// tableCells is the table, a header line and a line per row: each
// target's figure, then each keypool target's ratio to the baseline.
func tableCells(results []*measurement) [][]string {
	var base *measurement
	for _, m := range results {
		if !m.spec.keypool {
			base = m
		}
	}
	header := []string{"metric"}
	for _, m := range results {
		header = append(header, m.spec.label)
	}
	var ratioOf []*measurement
	if base != nil {
		for _, m := range results {
			if m.spec.keypool {
				header = append(header, strings.TrimPrefix(m.spec.label, "keypool-")+"/baseline")
				ratioOf = append(ratioOf, m)
			}
		}
	}
	header = append(header, "goal (issue 13)")
	table := [][]string{header}
	for _, r := range rows {
		line := []string{r.label}
		for _, m := range results {
			line = append(line, formatCell(m, r)+mark(m, r, false, 0))
		}
		for _, m := range ratioOf {
			line = append(line, ratio(m, base, r))
		}
		g := ""
		if r.goal != nil {
			g = r.goal.text
		}
		table = append(table, append(line, g))
	}
	return table
}

// printAligned prints table in columns, the first left-aligned, a rule
// under the header.
func printAligned(w io.Writer, table [][]string) {
	widths := make([]int, len(table[0]))
	for _, line := range table {
		for i, c := range line {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for li, line := range table {
		var b strings.Builder
		for i, c := range line {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if li == 0 {
			total := len(widths) - 1
			for _, wd := range widths {
				total += wd + 1
			}
			fmt.Fprintln(w, strings.Repeat("─", total))
		}
	}
}

// tableNotes says how to read the table.
const tableNotes = `Ratios (keypool ÷ baseline, same run, same machine) are the figures that count: wrangler dev
adds its own overhead to every target (a proxy workerd in front of the worker, devtools messages
to node for every fetch, a log line per request), so absolute numbers are not production numbers.
For req/s a ratio below 1 is slower; for times, CPU and memory a ratio above 1 is costlier.
Goals are issue 13's, on the ratio (×) or on keypool's own figure; ✓/✗ marks the cell they judge.
Long streams come from the bench's own upstream, which stamps when it flushed each stream's first
chunk: "first byte − upstream's" is the client's first byte after that moment (same clock). The
10- and 1 000-chunk streams send tiny events 1 ms apart; their CPU is the worker's workerd's.
workerd itself spends CPU per chunk even for the baseline: compare keypool's CPU per extra chunk
with the baseline's (its ratio) as well as the 1 000 ÷ 10 goal.
CPU: utime+stime of the workerd processes of each wrangler dev, over the 16-client phase, per request;
"of which the worker's workerd" leaves out wrangler's proxy workerd (the one on the client port).
"other processes' CPU" is the share of all cores used by anything but this program and its
wrangler during that phase: well above 0 means the machine was busy and the figures are skewed.
`

func formatCell(m *measurement, r row) string {
	c, ok := m.cells[r.id]
	if !ok {
		if m.err != nil {
			return "error"
		}
		return "—"
	}
	if !c.ok {
		return c.text
	}
	return fmt.Sprintf("%.*f", r.prec, c.v)
}

func ratio(m, base *measurement, r row) string {
	if r.noRatio {
		return ""
	}
	a, aok := m.cells[r.id]
	b, bok := base.cells[r.id]
	if !aok || !bok || !a.ok || !b.ok || b.v == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a.v/b.v) + mark(m, r, true, a.v/b.v)
}

// mark is " ✓" or " ✗" after the cell a goal is about: the ratio (onRatio)
// or a keypool target's own figure.
func mark(m *measurement, r row, isRatio bool, v float64) string {
	if r.goal == nil || r.goal.onRatio != isRatio || !m.spec.keypool {
		return ""
	}
	if !isRatio {
		c, ok := m.cells[r.id]
		if !ok || !c.ok {
			return ""
		}
		v = c.v
	}
	if r.goal.met(v) {
		return " ✓"
	}
	return " ✗"
}

// printDetails lists per target what went wrong or looked wrong, wrangler's
// own request log summed, and the soak series.
func printDetails(w io.Writer, results []*measurement) {
	for _, m := range results {
		fmt.Fprintf(w, "\n%s:\n", m.spec.label)
		if m.err != nil {
			fmt.Fprintf(w, "  ERROR: %v\n", m.err)
		}
		if m.statuses != "" {
			fmt.Fprintf(w, "  wrangler request log: %s\n", m.statuses)
		}
		if len(m.problems) == 0 {
			fmt.Fprintln(w, "  no failed requests, no errors in the worker log")
		} else {
			fmt.Fprintln(w, "  problems (failed requests; worker log lines other than 2xx request lines):")
			for _, p := range m.problems {
				fmt.Fprintf(w, "    %s\n", p)
			}
		}
		if len(m.soak) > 0 {
			fmt.Fprintln(w, "  soak, 16 clients, non-stream: requests done → workerd RSS in MB: all = worker runtime + wrangler's proxy")
			for _, s := range m.soak {
				line := fmt.Sprintf("    %7d → all %7.1f", s.done, float64(s.rss)/1e6)
				if s.proxy >= 0 {
					line += fmt.Sprintf(" = %7.1f + %6.1f", float64(s.rss-s.proxy)/1e6, float64(s.proxy)/1e6)
				}
				if s.done > 0 {
					line += fmt.Sprintf("  [%.1f req/s, %d failed]", s.rps, s.failed)
				}
				fmt.Fprintln(w, line)
			}
			first, last := m.soak[0], m.soak[len(m.soak)-1]
			if last.done > 0 {
				line := fmt.Sprintf("    growth over %d requests: all %+.1f MB (%+.1f KB/request)",
					last.done, float64(last.rss-first.rss)/1e6, float64(last.rss-first.rss)/1e3/float64(last.done))
				if first.proxy >= 0 && last.proxy >= 0 {
					wr := (last.rss - last.proxy) - (first.rss - first.proxy)
					line += fmt.Sprintf("; worker runtime %+.1f MB (%+.1f KB/request)", float64(wr)/1e6, float64(wr)/1e3/float64(last.done))
				}
				fmt.Fprintln(w, line)
			}
		}
	}
}
