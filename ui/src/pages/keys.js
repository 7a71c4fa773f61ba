// #/keys: provider tabs, search, filters, sorting, pages, selection
// across pages, bulk actions, check jobs, export, and the key drawer.
import { api } from "../api.js";
import { confirmDialog } from "../dialog.js";
import { field, fill, h, select } from "../dom.js";
import { money, num, percent, time } from "../format.js";
import { t } from "../i18n.js";
import { openAdd, openExport } from "../keys-dialogs.js";
import { openKeyDrawer } from "../keys-drawer.js";
import { jobPanel } from "../keys-job.js";
import { inState, keyState, successRate } from "../keys-model.js";
import { toast } from "../toast.js";

// The view survives leaving the page and coming back.
const S = {
  provider: "all",
  search: "",
  state: "all",
  minBalance: "",
  sort: "added",
  dir: "desc",
  pageSize: 20,
  page: 1,
  selected: new Set(),
  check: { concurrency: "", interval_ms: "", jitter_ms: "", retries: "", retry_interval_ms: "" },
};
try {
  const ps = Number(localStorage.getItem("kp-page-size"));
  if ([10, 20, 50, 100].includes(ps)) S.pageSize = ps;
} catch {
  // default page size
}

const SORTS = {
  balance: (k) => k.balance,
  added: (k) => k.created_at,
  updated: (k) => k.updated_at,
  usage: (k) => k.requests,
  success: (k) => successRate(k),
};

// filtered is the keys the view's filters let through.
function filtered(all) {
  const now = Date.now();
  const q = S.search.trim().toLowerCase();
  const idQ = q.replace(/^#/, "");
  const min = S.minBalance === "" ? null : Number(S.minBalance);
  return all.filter((k) =>
    (S.provider === "all" || k.provider === S.provider) &&
    inState(k, S.state, now) &&
    (min == null || Number.isNaN(min) || (k.balance != null && k.balance >= min)) &&
    (!q || k.key.toLowerCase().includes(q) || (k.label || "").toLowerCase().includes(q) || String(k.id) === idQ));
}

// sorted orders keys by the view's sort; unknown values go last.
function sorted(list) {
  const f = SORTS[S.sort] || SORTS.added;
  const sign = S.dir === "asc" ? 1 : -1;
  return list.slice().sort((a, b) => {
    const x = f(a);
    const y = f(b);
    if (x == null && y == null) return a.id - b.id;
    if (x == null) return 1; // unknown values last, either way
    if (y == null) return -1;
    return (x - y) * sign || (a.id - b.id) * sign;
  });
}

// checkBody adds the check options set on the page to a job's body.
function checkBody(body) {
  for (const [name, v] of Object.entries(S.check)) {
    if (v !== "" && v != null && !Number.isNaN(Number(v))) body[name] = Number(v);
  }
  return body;
}

// pageHead: the title and the page's tools (add, check all, export,
// refresh).
function pageHead(v) {
  const addBtn = h("button", { type: "button", class: "btn primary", testid: "keys-add", i18n: "keys.add" });
  const checkAll = h("button", { type: "button", class: "btn", testid: "keys-check-all", i18n: "keys.checkAll", i18nAttr: { title: "keys.checkAllTab" } });
  const exportBtn = h("button", { type: "button", class: "btn", testid: "keys-export", i18n: "keys.export" });
  const refresh = h("button", { type: "button", class: "btn ghost", testid: "keys-refresh", i18n: "common.refresh" });
  exportBtn.addEventListener("click", () => openExport({
    provider: S.provider === "all" ? "" : S.provider, selection: [...S.selected], scope: "all",
  }));
  checkAll.addEventListener("click", () => v.startCheck(S.provider === "all" ? {} : { provider: S.provider }));
  addBtn.addEventListener("click", () => openAdd({
    providers: v.providers.length ? v.providers : [v.defaultProvider].filter(Boolean),
    provider: S.provider !== "all" ? S.provider : v.defaultProvider,
    onAdded: v.reload,
  }));
  refresh.addEventListener("click", v.reload);
  return h("div", { class: "page-head" }, h("h1", { i18n: "keys.title" }), h("div", { class: "tools wrap" }, addBtn, checkAll, exportBtn, refresh));
}

// providerTabs: a tab per provider with its key count; a tab filters the
// table, and the arrow keys move between tabs.
function providerTabs(v) {
  const el = h("div", { class: "tabs", role: "tablist", testid: "provider-tabs", i18nAttr: { "aria-label": "keys.colProvider" } });
  function render() {
    const counts = new Map();
    for (const k of v.all) counts.set(k.provider, (counts.get(k.provider) || 0) + 1);
    fill(el, ["all", ...v.providers].map((name) => {
      const n = name === "all" ? v.all.length : counts.get(name) || 0;
      const selected = S.provider === name;
      const b = h("button", {
        type: "button", role: "tab", class: "tab" + (n === 0 ? " empty" : ""), testid: "provider-tab-" + name,
        "aria-selected": selected ? "true" : "false", tabindex: selected ? "0" : "-1", dataset: { provider: name },
      }, h("span", { text: name === "all" ? t("keys.all") : name }), " ", h("span", { class: "count", text: num(n) }));
      b.addEventListener("click", () => {
        S.provider = name;
        S.page = 1;
        v.render();
      });
      return b;
    }));
  }
  el.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft" && e.key !== "Home" && e.key !== "End") return;
    const list = [...el.querySelectorAll('[role="tab"]')];
    const i = list.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    let j = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : e.key === "Home" ? 0 : list.length - 1;
    j = (j + list.length) % list.length;
    list[j].click();
    el.querySelectorAll('[role="tab"]')[j].focus();
  });
  return { el, render };
}

// filters: search, state, minimum balance, sort and page size; each
// change redraws the table (from its first page, except for the sort).
function filters(v) {
  const search = h("input", { type: "search", testid: "keys-search", value: S.search, autocomplete: "off", i18nAttr: { placeholder: "keys.searchPlaceholder" } });
  const stateSel = select({ testid: "keys-filter-state", value: S.state }, [
    ["all", "keys.stateAll"], ["active", "status.active"], ["cooling", "status.cooling"],
    ["blocked", "status.blocked"], ["exhausted", "status.exhausted"], ["disabled", "status.disabled"],
  ]);
  const minBal = h("input", { type: "number", testid: "keys-filter-balance-min", value: S.minBalance, step: "any", inputmode: "decimal", class: "short" });
  const sortSel = select({ testid: "keys-sort", value: S.sort }, [
    ["balance", "keys.sortBalance"], ["added", "keys.sortAdded"], ["updated", "keys.sortUpdated"],
    ["usage", "keys.sortUsage"], ["success", "keys.sortSuccess"],
  ]);
  const dirSel = select({ testid: "keys-sort-dir", value: S.dir }, [["desc", "keys.desc"], ["asc", "keys.asc"]]);
  const sizeSel = h("select", { testid: "keys-page-size" }, [10, 20, 50, 100].map((n) => h("option", { value: String(n), text: String(n) })));
  sizeSel.value = String(S.pageSize);
  const on = (el, event, apply, firstPage = true) => el.addEventListener(event, () => {
    apply();
    if (firstPage) S.page = 1;
    v.renderTable();
  });
  on(search, "input", () => { S.search = search.value; });
  on(stateSel, "change", () => { S.state = stateSel.value; });
  on(minBal, "input", () => { S.minBalance = minBal.value; });
  on(sortSel, "change", () => { S.sort = sortSel.value; }, false);
  on(dirSel, "change", () => { S.dir = dirSel.value; }, false);
  on(sizeSel, "change", () => {
    S.pageSize = Number(sizeSel.value);
    try {
      localStorage.setItem("kp-page-size", String(S.pageSize));
    } catch {
      // not remembered
    }
  });
  return h("div", { class: "filters" },
    field("keys.search", search), field("keys.state", stateSel), field("keys.minBalance", minBal),
    field("keys.sort", sortSel), field("keys.dir", dirSel), field("keys.pageSize", sizeSel));
}

// checkOptions: the check job options, sent with every job started here.
function checkOptions() {
  const opt = (name, key, min, max) => {
    const input = h("input", { type: "number", testid: "check-" + name.replace(/_/g, "-"), min: String(min), max: String(max), step: "1", value: S.check[name], class: "short" });
    input.addEventListener("input", () => {
      S.check[name] = input.value;
    });
    return field(key, input);
  };
  return h("details", { class: "check-options" },
    h("summary", { i18n: "keys.checkOptions" }),
    h("div", { class: "form-row" },
      opt("concurrency", "keys.concurrency", 1, 6), opt("interval_ms", "keys.interval", 0, 60000),
      opt("jitter_ms", "keys.jitter", 0, 60000), opt("retries", "keys.retries", 0, 5),
      opt("retry_interval_ms", "keys.retryInterval", 0, 60000)));
}

// bulkAction enables, disables or deletes the selected keys (deleting
// asks first), then reloads.
async function bulkAction(action, reload) {
  const ids = [...S.selected];
  if (!ids.length) return;
  if (action === "delete" && !(await confirmDialog(t("keys.confirmDelete", { n: num(ids.length) }), "common.delete"))) return;
  try {
    const r = await api("/admin/api/keys/bulk", { method: "POST", body: { ids, action } });
    const name = { enable: "keys.actionEnable", disable: "keys.actionDisable", delete: "keys.actionDelete" }[action];
    toast(t("keys.bulkDone", { action: t(name), changed: num(r.changed), n: num(r.requested) }));
    if (action === "delete") S.selected.clear();
  } catch {
    // the toast has the API's message
  }
  await reload();
}

// selectionBar: select all matching or none, the count selected (across
// pages), and the bulk actions on them.
function selectionBar(v) {
  const selectAll = h("button", { type: "button", class: "btn ghost", testid: "keys-select-all" });
  const selectNone = h("button", { type: "button", class: "btn ghost", testid: "keys-select-clear", i18n: "keys.selectNone" });
  const selCount = h("span", { class: "sel-count", testid: "keys-selected-count", "aria-live": "polite", text: "0" });
  const bulk = (testid, key, cls = "btn") => h("button", { type: "button", class: cls, testid, i18n: key });
  const bCheck = bulk("bulk-check", "keys.bulkCheck");
  const bEnable = bulk("bulk-enable", "keys.bulkEnable");
  const bDisable = bulk("bulk-disable", "keys.bulkDisable");
  const bDelete = bulk("bulk-delete", "keys.bulkDelete", "btn danger");
  const bExport = bulk("bulk-export", "keys.bulkExport");
  const buttons = [bCheck, bEnable, bDisable, bDelete, bExport];
  selectAll.addEventListener("click", () => {
    for (const k of filtered(v.all)) S.selected.add(k.id);
    v.renderSelection();
  });
  selectNone.addEventListener("click", () => {
    S.selected.clear();
    v.renderSelection();
  });
  bCheck.addEventListener("click", () => v.startCheck({ ids: [...S.selected] }));
  bEnable.addEventListener("click", () => bulkAction("enable", v.reload));
  bDisable.addEventListener("click", () => bulkAction("disable", v.reload));
  bDelete.addEventListener("click", () => bulkAction("delete", v.reload));
  bExport.addEventListener("click", () => openExport({ provider: "", selection: [...S.selected], scope: "selection" }));
  const el = h("div", { class: "selection-bar" },
    h("div", { class: "tools wrap" }, selectAll, selectNone, h("span", { class: "sel" }, selCount, " ", h("span", { i18n: "keys.selected" }))),
    h("div", { class: "tools wrap" }, buttons));
  return {
    el,
    // matching shows how many keys "select all" would take.
    matching(n) {
      selectAll.textContent = t("keys.selectAll") + " (" + num(n) + ")";
      selectAll.dataset.count = String(n);
    },
    render() {
      // Drop ids that are gone.
      const ids = new Set(v.all.map((k) => k.id));
      for (const id of S.selected) if (!ids.has(id)) S.selected.delete(id);
      selCount.textContent = String(S.selected.size);
      for (const b of buttons) b.disabled = S.selected.size === 0;
    },
  };
}

// keyRow is a key's row: its selection box, figures and state; a click
// elsewhere on the row opens the key's drawer.
function keyRow(k, now, v) {
  const st = keyState(k, now);
  const cooling = (k.models || []).filter((m) => m.state === "cooling" && m.until > now).length;
  const blockedModels = (k.models || []).filter((m) => m.state === "blocked").length;
  const cb = h("input", { type: "checkbox", testid: "key-select", checked: S.selected.has(k.id), "aria-label": t("keys.selectRow", { id: k.id }) });
  cb.addEventListener("change", () => {
    if (cb.checked) S.selected.add(k.id);
    else S.selected.delete(k.id);
    v.renderSelection();
  });
  const tr = h("tr", { testid: "key-row", class: S.selected.has(k.id) ? "selected" : "", dataset: { id: String(k.id), status: k.status, state: st } },
    h("td", { class: "sel-col" }, cb),
    h("td", { class: "num", text: String(k.id) }),
    h("td", {}, h("span", { class: "chip", text: k.provider })),
    h("td", {}, h("button", { type: "button", class: "link mono", testid: "key-open", text: k.key })),
    h("td", { testid: "key-label", class: "label-cell", text: k.label || "" }),
    h("td", { class: "nowrap" },
      h("span", { class: "badge badge-" + st, testid: "key-status", text: t("status." + st) }),
      cooling && st === "cooling" ? h("span", { class: "muted small", text: " " + t("keys.coolingFor", { n: cooling }) }) : null,
      blockedModels ? h("span", { class: "muted small", text: " " + t("status.modelBlocked") + ": " + blockedModels }) : null),
    h("td", { class: "num", testid: "key-balance", text: money(k.balance) }),
    h("td", { class: "num", text: num(k.requests) }),
    h("td", { class: "num", text: percent(successRate(k)) }),
    h("td", { class: "nowrap small", text: time(k.created_at) }),
    h("td", { class: "nowrap small", text: time(k.updated_at) }));
  tr.addEventListener("click", (e) => {
    if (e.target.closest("input, label, .sel-col")) return;
    v.openDrawer(k.id);
  });
  return tr;
}

const COLS = ["keys.colId", "keys.colProvider", "keys.colKey", "keys.colLabel", "keys.colStatus", "keys.colBalance", "keys.colRequests", "keys.colSuccess", "keys.colAdded", "keys.colUpdated"];

// keyTable: one page of the filtered, sorted keys with a box that selects
// the page, and the pager.
function keyTable(v) {
  const selectPage = h("input", { type: "checkbox", testid: "keys-select-page", i18nAttr: { "aria-label": "keys.selectPage", title: "keys.selectPage" } });
  const tbody = h("tbody", { testid: "keys-tbody" });
  const table = h("table", { class: "table keys-table", testid: "keys-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "sel-col" }, selectPage), COLS.map((c) => h("th", { scope: "col", i18n: c })))),
    tbody);
  const prev = h("button", { type: "button", class: "btn", testid: "keys-prev", i18n: "keys.prev" });
  const next = h("button", { type: "button", class: "btn", testid: "keys-next", i18n: "keys.next" });
  const pageText = h("span", { class: "page-text", testid: "keys-page", "aria-live": "polite" });
  const matching = h("span", { class: "muted", testid: "keys-matching" });
  prev.addEventListener("click", () => {
    S.page -= 1;
    render();
  });
  next.addEventListener("click", () => {
    S.page += 1;
    render();
  });
  selectPage.addEventListener("change", () => {
    for (const tr of tbody.querySelectorAll('[data-testid="key-row"]')) {
      const id = Number(tr.dataset.id);
      if (selectPage.checked) S.selected.add(id);
      else S.selected.delete(id);
    }
    v.renderSelection();
  });
  function render() {
    const list = sorted(filtered(v.all));
    const pages = Math.max(1, Math.ceil(list.length / S.pageSize));
    S.page = Math.min(Math.max(1, S.page), pages);
    const rows = list.slice((S.page - 1) * S.pageSize, S.page * S.pageSize);
    const now = Date.now();
    v.nextExpiry = Infinity;
    for (const k of rows) {
      for (const m of k.models || []) if (m.state === "cooling" && m.until > now) v.nextExpiry = Math.min(v.nextExpiry, m.until);
    }
    if (rows.length === 0) {
      fill(tbody, h("tr", { class: "empty-row" }, h("td", { colspan: String(COLS.length + 1), class: "muted", i18n: "keys.empty" })));
    } else {
      fill(tbody, rows.map((k) => keyRow(k, now, v)));
    }
    pageText.textContent = S.page + " / " + pages;
    prev.disabled = S.page <= 1;
    next.disabled = S.page >= pages;
    matching.textContent = t("keys.matching", { n: num(list.length) });
    v.matching(list.length);
    v.renderSelection();
  }
  // renderChecks shows the selection on the page's rows.
  function renderChecks() {
    const boxes = [...tbody.querySelectorAll('[data-testid="key-row"]')];
    let on = 0;
    for (const tr of boxes) {
      const sel = S.selected.has(Number(tr.dataset.id));
      tr.classList.toggle("selected", sel);
      tr.querySelector('[data-testid="key-select"]').checked = sel;
      if (sel) on += 1;
    }
    selectPage.checked = boxes.length > 0 && on === boxes.length;
    selectPage.indeterminate = on > 0 && on < boxes.length;
  }
  const el = [h("div", { class: "table-wrap" }, table), h("div", { class: "pager" }, matching, h("div", { class: "tools" }, prev, pageText, next))];
  return { el, render, renderChecks };
}

// keys is the page: it loads the keys and the providers and wires the
// components above to one view (v) they share.
export async function keys(root, ctx) {
  const v = { all: [], providers: [], defaultProvider: "", nextExpiry: Infinity };
  async function load() {
    const r = await api("/admin/api/keys");
    if (!ctx.alive) return;
    v.all = r.keys || [];
    v.render();
  }
  v.reload = () => load().catch(() => {});
  const jobs = jobPanel(ctx, v.reload);
  v.startCheck = async (body) => {
    try {
      await jobs.start(checkBody(body));
    } catch {
      // the toast has the API's message
    }
  };
  let drawer = null;
  v.openDrawer = (id) => {
    if (drawer) drawer.close();
    drawer = openKeyDrawer(id, { onChanged: v.reload, startCheck: (ids) => v.startCheck({ ids }) });
  };
  const tabs = providerTabs(v);
  const bar = selectionBar(v);
  const table = keyTable(v);
  v.matching = bar.matching;
  v.renderTable = table.render;
  v.renderSelection = () => {
    bar.render();
    table.renderChecks();
  };
  v.render = () => {
    tabs.render();
    table.render();
  };
  // Shown once the first list has loaded (no flash of an empty table).
  const body = h("div", { class: "view-body" }, pageHead(v), tabs.el, filters(v), checkOptions(), jobs.el, bar.el, table.el);

  ctx.onLang(v.render);
  ctx.onCleanup(() => {
    if (drawer) drawer.close();
  });
  // Cooldowns end by themselves: redraw when one shown has ended.
  ctx.interval(() => {
    if (Date.now() >= v.nextExpiry) v.renderTable();
  }, 5000);

  root.append(h("p", { class: "muted", i18n: "common.loading" }));
  try {
    const [prov] = await Promise.all([
      api("/admin/api/providers"),
      load(),
    ]);
    v.providers = (prov.providers || []).map((p) => p.name);
    v.defaultProvider = prov.default || v.providers[0] || "";
  } finally {
    if (ctx.alive) {
      v.render();
      root.replaceChildren(body);
    }
  }
  if (!ctx.alive) return;
  // A job still running (started earlier, or elsewhere): follow it.
  api("/admin/api/checks", { quiet: true }).then((r) => {
    const running = ((r && r.jobs) || []).find((j) => j.state === "running");
    if (running && ctx.alive) jobs.follow(running);
  }).catch(() => {});
}
