// #/dashboard: key counts and balances, charts of balances, status,
// balance trend and usage, and the newest keys.
import { api } from "../api.js";
import { draw, COLORS, PALETTE } from "../charts.js";
import { h, fill, checkField, select } from "../dom.js";
import { compact, money, num, percent, shortTime, time, utcDay } from "../format.js";
import { t } from "../i18n.js";
import { isCooling, balanceStats, keyState } from "../keys-model.js";

const CARDS = [
  ["card-total", "dash.total"],
  ["card-active", "dash.active"],
  ["card-cooling", "dash.cooling"],
  ["card-blocked", "dash.blocked"],
  ["card-exhausted", "dash.exhausted"],
  ["card-disabled", "dash.disabled"],
  ["card-balance-total", "dash.balanceTotal"],
  ["card-balance-avg", "dash.balanceAvg"],
  ["card-balance-median", "dash.balanceMedian"],
  ["card-balance-max", "dash.balanceMax"],
  ["card-balance-min", "dash.balanceMin"],
];

const view = { range: "30", outliers: false, granularity: "minute" };

function chartBox(titleKey, testid, extra) {
  const canvas = h("canvas", { testid, role: "img", i18nAttr: { "aria-label": titleKey } });
  const box = h("section", { class: "panel chart-panel", "aria-labelledby": testid + "-h" },
    h("div", { class: "panel-head" }, h("h2", { id: testid + "-h", i18n: titleKey }), extra || null),
    h("div", { class: "chart-box" }, canvas),
    h("p", { class: "chart-empty muted", i18n: "dash.noData", hidden: true }));
  return { box, canvas, empty: box.querySelector(".chart-empty") };
}

function setEmpty(c, empty) {
  c.empty.hidden = !empty;
}

// layout builds the page: the cards, the charts with their tools, the
// usage row and the newest keys.
function layout(root) {
  const cards = {};
  const cardGrid = h("div", { class: "cards" });
  for (const [id, key] of CARDS) {
    const value = h("span", { class: "card-value", testid: id + "-value", text: "…" });
    const card = h("div", { class: "card" + (id.startsWith("card-balance") ? " card-balance" : ""), testid: id },
      h("span", { class: "card-label", i18n: key }), value);
    cards[id] = value;
    cardGrid.appendChild(card);
  }
  const coolHint = h("p", { class: "muted small", i18n: "dash.coolingHint" });
  const known = h("p", { class: "muted small", testid: "balance-known" });

  const rangeSel = select({ testid: "trend-range", id: "trend-range", value: view.range }, [
    ["7", "dash.range7"], ["30", "dash.range30"], ["all", "dash.rangeAll"],
  ]);
  const outliers = h("input", { type: "checkbox", testid: "trend-outliers", checked: view.outliers });
  const trendTools = h("div", { class: "tools" },
    h("label", { for: "trend-range", class: "sr-only", i18n: "dash.trendRange" }), rangeSel,
    checkField("dash.hideOutliers", outliers));
  const granSel = select({ testid: "stats-granularity", id: "stats-granularity", value: view.granularity }, [
    ["minute", "dash.perMinute"], ["day", "dash.perDay"],
  ]);
  const granTools = h("div", { class: "tools" },
    h("label", { for: "stats-granularity", class: "sr-only", i18n: "dash.granularity" }), granSel);

  const ui = {
    cards, known, rangeSel, outliers, granSel,
    dist: chartBox("dash.balanceDist", "chart-balance-dist"),
    status: chartBox("dash.statusSplit", "chart-status"),
    trend: chartBox("dash.trend", "chart-balance-trend", trendTools),
    reqs: chartBox("dash.requests", "chart-requests", granTools),
    toks: chartBox("dash.tokens", "chart-tokens"),
    topModels: chartBox("dash.topModels", "chart-top-models"),
    topTokens: chartBox("dash.topTokens", "chart-top-tokens"),
    nowRow: h("div", { class: "now-row", testid: "stats-now" }),
    newest: h("ol", { class: "newest", testid: "newest-keys" }),
    refresh: h("button", { type: "button", class: "btn", testid: "dash-refresh", i18n: "common.refresh" }),
  };
  root.append(
    h("div", { class: "page-head" }, h("h1", { i18n: "dash.title" }), h("div", { class: "tools" }, ui.refresh)),
    cardGrid, h("div", { class: "card-notes" }, coolHint, known),
    h("div", { class: "grid2" }, ui.dist.box, ui.status.box),
    ui.trend.box,
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", { i18n: "dash.usage" })), ui.nowRow),
    h("div", { class: "grid2" }, ui.reqs.box, ui.toks.box),
    h("div", { class: "grid2" }, ui.topModels.box, ui.topTokens.box),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", { i18n: "dash.newest" })), ui.newest),
  );
  return ui;
}

// drawKeys fills the cards, the balance and status charts and the newest
// keys from the key list.
function drawKeys(ui, keys) {
  const counts = { total: keys.length, active: 0, cooling: 0, blocked: 0, exhausted: 0, disabled: 0 };
  const at = Date.now();
  for (const k of keys) {
    if (counts[k.status] != null) counts[k.status] += 1;
    if (isCooling(k, at)) counts.cooling += 1;
  }
  for (const s of ["total", "active", "cooling", "blocked", "exhausted", "disabled"]) ui.cards["card-" + s].textContent = num(counts[s]);
  const b = balanceStats(keys);
  ui.cards["card-balance-total"].textContent = money(b.total);
  ui.cards["card-balance-avg"].textContent = money(b.average);
  ui.cards["card-balance-median"].textContent = money(b.median);
  ui.cards["card-balance-max"].textContent = money(b.max);
  ui.cards["card-balance-min"].textContent = money(b.min);
  ui.known.textContent = t("dash.balanceKnown", { n: num(b.known) });
  drawBalanceBins(ui.dist, keys, b.known);
  drawStatusSplit(ui.status, counts);
  drawNewest(ui.newest, keys, at);
}

// drawBalanceBins: the balances over fixed, readable bins.
function drawBalanceBins(c, keys, known) {
  const edges = [0, 1, 5, 10, 20, 50, 100, 500, 1000];
  const bins = new Array(edges.length + 1).fill(0);
  for (const k of keys) {
    if (k.balance == null) continue;
    const x = k.balance;
    if (x <= 0) bins[0] += 1;
    else {
      let i = edges.findIndex((e, j) => j > 0 && x <= e);
      if (i === -1) i = edges.length;
      bins[i] += 1;
    }
  }
  const labels = ["0"];
  for (let i = 1; i < edges.length; i++) labels.push(edges[i - 1] + "–" + edges[i]);
  labels.push("> " + edges[edges.length - 1]);
  let last = bins.length - 1;
  while (last > 1 && bins[last] === 0) last--;
  setEmpty(c, known === 0);
  draw(c.canvas, {
    type: "bar",
    data: { labels: labels.slice(0, last + 1), datasets: [{ label: t("dash.keysCount"), data: bins.slice(0, last + 1), backgroundColor: COLORS.blue }] },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function drawStatusSplit(c, counts) {
  const split = [counts.active - counts.cooling, counts.cooling, counts.blocked, counts.exhausted, counts.disabled];
  setEmpty(c, counts.total === 0);
  draw(c.canvas, {
    type: "doughnut",
    data: {
      labels: [t("status.ready"), t("status.cooling"), t("status.blocked"), t("status.exhausted"), t("status.disabled")],
      datasets: [{ data: split, backgroundColor: [COLORS.active, COLORS.cooling, COLORS.blocked, COLORS.exhausted, COLORS.disabled] }],
    },
    options: { plugins: { legend: { position: "bottom" } } },
  });
}

// drawNewest lists the 10 keys added last.
function drawNewest(newest, keys, at) {
  const list = [...keys].sort((a, b2) => b2.created_at - a.created_at || b2.id - a.id).slice(0, 10);
  if (list.length === 0) {
    fill(newest, h("li", { class: "muted", i18n: "dash.noKeys" }));
    return;
  }
  fill(newest, list.map((k) => h("li", { class: "newest-item", dataset: { id: String(k.id) } },
    h("code", { class: "mono", text: k.key }),
    h("span", { class: "chip", text: k.provider }),
    k.label ? h("span", { class: "muted", text: k.label }) : null,
    h("span", { class: "badge badge-" + keyState(k, at), text: t("status." + keyState(k, at)) }),
    h("time", { class: "muted small", datetime: new Date(k.created_at).toISOString(), text: time(k.created_at) }))));
}

// drawTrend draws the pool's balance per day, without outliers when
// view.outliers is on.
function drawTrend(c, trendData) {
  const points = (trendData && trendData.points) || [];
  let totals = points.map((p) => p.total);
  if (view.outliers && points.length) {
    // Tukey's fences over every reading of the range: a few huge
    // balances no longer flatten the line.
    const all = points.flatMap((p) => p.balances || []).sort((a, b) => a - b);
    if (all.length >= 4) {
      const q = (f) => all[Math.floor(f * (all.length - 1))];
      const q1 = q(0.25);
      const q3 = q(0.75);
      const lo = q1 - 1.5 * (q3 - q1);
      const hi = q3 + 1.5 * (q3 - q1);
      totals = points.map((p) => (p.balances || []).filter((x) => x >= lo && x <= hi).reduce((s, x) => s + x, 0));
    }
  }
  setEmpty(c, points.length === 0);
  draw(c.canvas, {
    type: "line",
    data: {
      labels: points.map((p) => utcDay(p.day)),
      datasets: [
        { label: t("dash.trendTotal"), data: totals, borderColor: COLORS.blue, backgroundColor: "rgba(9,105,218,.12)", fill: true, tension: 0.25, yAxisID: "y" },
        { label: t("dash.trendKeys"), data: points.map((p) => p.keys), borderColor: COLORS.orange, borderDash: [4, 4], pointRadius: 2, yAxisID: "y1" },
      ],
    },
    options: {
      interaction: { mode: "index", intersect: false },
      scales: {
        y: { beginAtZero: true, ticks: { callback: (v) => compact(v) } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, ticks: { precision: 0 } },
      },
    },
  });
}

// buckets are the starts of the time buckets of stats.
function buckets(stats) {
  const step = view.granularity === "day" ? 86400000 : 60000;
  const out = [];
  if (!stats) return out;
  for (let b = stats.from; b < stats.to; b += step) out.push(b);
  return out;
}

// drawUsage draws requests and tokens per bucket, the top models and
// tokens, and the figures of now.
function drawUsage(ui, u) {
  const out = buckets(u.stats);
  const byBucket = new Map(((u.stats && u.stats.points) || []).map((p) => [p.bucket, p]));
  const label = (b) => (view.granularity === "day" ? utcDay(b) : shortTime(b));
  const series = (f) => out.map((b) => (byBucket.has(b) ? byBucket.get(b)[f] : 0));
  const totals = (u.stats && u.stats.totals) || {};
  stackedBars(ui.reqs, out.map(label), (totals.requests || 0) > 0, [
    { label: t("dash.successes"), data: series("successes"), backgroundColor: COLORS.active, stack: "r" },
    { label: t("dash.clientErrors"), data: series("client_errors"), backgroundColor: COLORS.cooling, stack: "r" },
    { label: t("dash.upstreamErrors"), data: series("upstream_errors"), backgroundColor: COLORS.blocked, stack: "r" },
    { label: t("dash.rejected"), data: series("rejected"), backgroundColor: COLORS.disabled, stack: "r" },
  ], { precision: 0 });
  stackedBars(ui.toks, out.map(label), (totals.total_tokens || 0) > 0, [
    { label: t("dash.prompt"), data: series("prompt_tokens"), backgroundColor: COLORS.blue, stack: "t" },
    { label: t("dash.completion"), data: series("completion_tokens"), backgroundColor: COLORS.teal, stack: "t" },
  ], { callback: (v) => compact(v) });
  drawTop(ui.topModels, u.byModel, "model", (g) => g);
  drawTop(ui.topTokens, u.byToken, "token", (g) => (g === "0" ? t("dash.authKey") : u.tokenNames.get(g) || "#" + g));
  drawNow(ui.nowRow, u.now, totals);
}

function stackedBars(c, labels, any, datasets, ticks) {
  setEmpty(c, !any);
  draw(c.canvas, {
    type: "bar",
    data: { labels, datasets },
    options: { interaction: { mode: "index", intersect: false }, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks } } },
  });
}

// drawNow draws the current rates and, for the period shown, the share
// of prompt tokens the providers read from their prompt caches.
function drawNow(nowRow, now, totals) {
  fill(nowRow, [
    ["now-rpm", "dash.rpm", now ? num(now.rpm) : "—"],
    ["now-tpm", "dash.tpm", now ? num(now.tpm) : "—"],
    ["now-rpd", "dash.rpd", now ? num(now.rpd) : "—"],
    ["now-tpd", "dash.tpd", now ? num(now.tpd) : "—"],
    ["now-success", "dash.successToday", now ? percent(now.success_rate_today) : "—"],
    ["now-cached", "dash.cachedShare", totals.cached_share == null ? "—" : percent(totals.cached_share)],
  ].map(([id, key, v]) => h("div", { class: "stat", testid: id }, h("span", { class: "card-label", i18n: key }), h("span", { class: "stat-value", text: v }))));
}

// drawTop draws the 10 groups with the most requests.
function drawTop(c, data, group, name) {
  const sums = new Map();
  for (const p of (data && data.points) || []) {
    const g = p[group];
    sums.set(g, (sums.get(g) || 0) + p.requests);
  }
  const top = [...sums.entries()].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).slice(0, 10);
  setEmpty(c, top.length === 0);
  draw(c.canvas, {
    type: "bar",
    data: {
      labels: top.map(([g]) => name(g)),
      datasets: [{ label: t("dash.requests"), data: top.map(([, n]) => n), backgroundColor: top.map((_, i) => PALETTE[i % PALETTE.length]) }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

// readUsage reads the usage figures the dashboard shows.
async function readUsage() {
  const g = "granularity=" + view.granularity;
  const [stats, byModel, byToken, now, toks] = await Promise.all([
    api("/admin/api/stats?" + g),
    api("/admin/api/stats?" + g + "&group=model"),
    api("/admin/api/stats?" + g + "&group=token"),
    api("/admin/api/stats/now"),
    api("/admin/api/tokens", { quiet: true }).catch(() => null),
  ]);
  return { stats, byModel, byToken, now, tokens: toks };
}

export async function dashboard(root, ctx) {
  const ui = layout(root);
  let keys = [];
  let trendData = null;
  let usage = { stats: null, byModel: null, byToken: null, now: null, tokenNames: new Map() };

  async function loadKeys() {
    const r = await api("/admin/api/keys");
    if (!ctx.alive) return;
    keys = r.keys || [];
    drawKeys(ui, keys);
  }
  async function loadTrend() {
    const days = view.range === "all" ? 0 : Number(view.range);
    trendData = await api("/admin/api/balance/trend?days=" + days);
    if (!ctx.alive) return;
    drawTrend(ui.trend, trendData);
  }
  async function loadStats() {
    const u = await readUsage();
    if (!ctx.alive) return;
    const tokenNames = u.tokens ? new Map((u.tokens.tokens || []).map((x) => [String(x.id), x.name])) : usage.tokenNames;
    usage = { ...u, tokenNames };
    drawUsage(ui, usage);
  }
  const loadAll = () => Promise.allSettled([loadKeys(), loadTrend(), loadStats()]);

  ui.rangeSel.addEventListener("change", () => {
    view.range = ui.rangeSel.value;
    loadTrend().catch(() => {});
  });
  ui.outliers.addEventListener("change", () => {
    view.outliers = ui.outliers.checked;
    drawTrend(ui.trend, trendData);
  });
  ui.granSel.addEventListener("change", () => {
    view.granularity = ui.granSel.value;
    loadStats().catch(() => {});
  });
  ui.refresh.addEventListener("click", () => loadAll());
  ctx.onLang(() => {
    drawKeys(ui, keys);
    drawTrend(ui.trend, trendData);
    drawUsage(ui, usage);
  });
  // Usage moves by the minute: refresh it while the dashboard is open.
  ctx.interval(() => {
    if (!document.hidden) loadStats().catch(() => {});
  }, 60000);

  await loadAll();
}
