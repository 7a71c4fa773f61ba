// bench/profile.mjs takes V8 CPU profiles of a worker running under
// `wrangler dev --inspector-port <port>`: wrangler's inspector proxy on
// that port forwards the Chrome DevTools protocol to the workerd that runs
// the worker. `go run ./bench -profile` starts it and drives the load; it
// can also be used by hand against any wrangler dev:
//
//	node bench/profile.mjs --inspector 9229 --out build/profile
//	node bench/profile.mjs --report build/profile-go-profile-nonstream.cpuprofile [--requests n]
//
// Commands come one per line on stdin:
//
//	start           Profiler.start
//	stop <name> [n] Profiler.stop (n: requests sent meanwhile); writes <out>-<name>.cpuprofile (open it in
//	                Chrome DevTools or speedscope) and prints the top frames
//	                by self and by total time, aggregated by function name
//	quit
//
// Each command answers one line on stdout, "ok ..." or "error ...", after
// its report. ws comes with wrangler (miniflare depends on it).
import { readFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const args = parseArgs(process.argv.slice(2));
const port = args.inspector || "9229";
const out = args.out || "build/profile";
const interval = Number(args.interval || 100); // µs between samples
const top = Number(args.top || 25);
const sources = new Map(); // scriptId -> its lines, for anonymous frames
// plumbing are the frames every entry into Go passes through (wasm_exec.js
// resuming Go, Go's event dispatch), near 100% in total time and
// telling nothing.
const plumbing = /^(js-to-wasm|wasm-to-js|wasm_export_|wasm_pc_f_loop|exports\.<computed>|_resume |runtime\.handleEvent |syscall_js\.handleEvent |runtime\.rt0_go |\(anonymous\) )/;

function parseArgs(list) {
  const o = {};
  for (let i = 0; i < list.length; i += 2) o[list[i].replace(/^--/, "")] = list[i + 1];
  return o;
}

if (args.report) {
  // Offline: the report of a saved profile.
  report(args.report, JSON.parse(readFileSync(args.report, "utf8")), Number(args.requests || 0));
  process.exit(0);
}

// Ids far above the ones wrangler's own devtools session uses, so that its
// answers are never taken for ours.
let nextId = 7_000_000;
const pending = new Map();
const ws = new WebSocket(port.startsWith("ws") ? port : `ws://127.0.0.1:${port}/ws`);
ws.on("message", (data) => {
  const msg = JSON.parse(data);
  const p = msg.id !== undefined && pending.get(msg.id);
  if (!p) return; // events (Network.*, console) and wrangler's own answers
  pending.delete(msg.id);
  if (msg.error) p.reject(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
  else p.resolve(msg.result || {});
});

function send(method, params = {}) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject, method });
    ws.send(JSON.stringify({ id, method, params }));
  });
}

await new Promise((resolve, reject) => {
  ws.once("open", resolve);
  ws.once("error", reject);
});
await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval });
console.log(`ok connected to ${port}`);

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, name = "profile", requests = "0"] = line.trim().split(/\s+/);
  try {
    if (cmd === "start") {
      await send("Profiler.start");
      console.log("ok started");
    } else if (cmd === "stop") {
      const { profile } = await send("Profiler.stop");
      const file = `${out}-${name}.cpuprofile`;
      await loadSources(profile);
      // The file keeps the names found, for DevTools and --report.
      for (const n of profile.nodes) if (!n.callFrame.functionName) n.callFrame.functionName = propertyAt(n.callFrame);
      writeFileSync(file, JSON.stringify(profile));
      report(name, profile, Number(requests));
      console.log(`ok wrote ${file}`);
    } else if (cmd === "quit") {
      break;
    } else if (cmd) {
      console.log(`error unknown command ${cmd}`);
    }
  } catch (e) {
    console.log(`error ${e.message}`);
  }
}
ws.close();
process.exit(0);

// frameName names a frame: wasm frames by their Go function, JS frames by
// function and file; an anonymous JS function by the property it is
// defined as when its line says (wasm_exec.js's "syscall/js.valueGet":
// (sp) => ... imports).
function frameName(cf) {
  let fn = cf.functionName;
  if (fn.startsWith("(") && !cf.url) return fn; // (program), (garbage collector), (idle), (root)
  if (cf.url.startsWith("wasm")) return fn.replace(/^\$/, "") + " [wasm]";
  const file = cf.url.split("/").pop() || "?";
  if (!fn) fn = propertyAt(cf) || "(anonymous)";
  return `${fn} [${file}:${cf.lineNumber + 1}]`;
}

function propertyAt(cf) {
  const line = sources.get(cf.scriptId)?.[cf.lineNumber] || "";
  const m = line.match(/^\s*["']([\w./$]+)["']\s*:/);
  return m ? m[1] : "";
}

// loadSources fetches the source of the scripts with anonymous frames.
async function loadSources(profile) {
  const ids = new Set();
  for (const n of profile.nodes) if (!n.callFrame.functionName && n.callFrame.url) ids.add(n.callFrame.scriptId);
  if (ids.size === 0) return;
  await send("Debugger.enable");
  for (const id of ids) {
    if (sources.has(id)) continue;
    try {
      const { scriptSource } = await send("Debugger.getScriptSource", { scriptId: id });
      sources.set(id, scriptSource.split("\n"));
    } catch {
      sources.set(id, []);
    }
  }
  await send("Debugger.disable");
}

// goPackage is the Go package of a wasm frame name ("" for JS frames).
// V8 shows Go's names with "/" turned to "_":
// github.com_syumai_workers_internal_jshttp.__ResponseWriter_.Write.
function goPackage(name) {
  if (!name.endsWith(" [wasm]")) return "";
  const fn = name.slice(0, -7);
  const host = fn.match(/^[a-z0-9-]+(\.[a-z0-9-]+)+_/); // github.com_, golang.org_
  const from = host ? host[0].length : 0;
  const dot = fn.indexOf(".", from);
  return dot < 0 ? "(" + fn.replace(/[_:].*/, "") + ")" : fn.slice(0, dot);
}

// report prints self and total time per function name (a recursive
// function counts once per sample in total), and per Go package.
function report(label, profile, requests) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children || []) parent.set(c, n.id);
  const weight = new Map(); // node id -> µs of samples with it as leaf
  const deltas = profile.timeDeltas || [];
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = deltas[i + 1] ?? interval; // a sample's time runs until the next one
    weight.set(profile.samples[i], (weight.get(profile.samples[i]) || 0) + Math.max(dt, 0));
  }
  const self = new Map();
  const total = new Map();
  const pkgTotal = new Map();
  let all = 0;
  let idle = 0;
  for (const [id, w] of weight) {
    const leaf = frameName(byId.get(id).callFrame);
    all += w;
    if (leaf === "(idle)") {
      idle += w;
      continue;
    }
    self.set(leaf, (self.get(leaf) || 0) + w);
    const seen = new Set();
    const pkgs = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const name = frameName(byId.get(cur).callFrame);
      if (name === "(root)") continue;
      seen.add(name);
      const pkg = goPackage(name);
      if (pkg) pkgs.add(pkg);
    }
    for (const name of seen) total.set(name, (total.get(name) || 0) + w);
    for (const pkg of pkgs) pkgTotal.set(pkg, (pkgTotal.get(pkg) || 0) + w);
  }
  const busy = all - idle;
  const pct = (w) => ((100 * w) / Math.max(busy, 1)).toFixed(1).padStart(5) + "%";
  const msOf = (w) => (w / 1000).toFixed(1).padStart(8);
  const print = (title, map, n) => {
    console.log(`  ${title}`);
    const rows = [...map].sort((a, b) => b[1] - a[1]).slice(0, n);
    for (const [name, w] of rows) console.log(`    ${pct(w)} ${msOf(w)} ms  ${name}`);
  };
  const per = requests > 0 ? `, ${(busy / 1000 / requests).toFixed(2)} ms per request over ${requests}` : "";
  console.log(`\nprofile ${label}: ${(all / 1000).toFixed(0)} ms sampled, ${(busy / 1000).toFixed(0)} ms not idle${per}; shares are of the non-idle time`);
  print(`top ${top} by self time`, self, top);
  const glue = new Map([...total].filter(([name]) => !plumbing.test(name)));
  print(`top ${top} by total time (the frame and what it called; entry glue left out)`, glue, top);
  print("Go packages by total time (wasm frames)", pkgTotal, 20);
}
