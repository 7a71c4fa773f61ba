// The key drawer: one key's details, its per-model states with live
// cooldown countdowns, its history, balance readings, and actions.
import { api } from "./api.js";
import { draw, COLORS } from "./charts.js";
import { confirmDialog, copyText, openDialog } from "./dialog.js";
import { field, fill, h } from "./dom.js";
import { duration, money, num, time, utcDay } from "./format.js";
import { t } from "./i18n.js";
import { keyState } from "./keys-model.js";
import { toast } from "./toast.js";
import { Chart } from "chart.js";

export function openKeyDrawer(id, { onChanged, startCheck }) {
  const content = h("div", { class: "drawer-content" }, h("p", { class: "muted", i18n: "common.loading" }));
  let ticker = null;
  const d = openDialog({
    testid: "key-drawer", title: t("drawer.title", { id }), kind: "drawer", modal: false, body: content,
    onClose: () => {
      clearInterval(ticker);
      for (const c of content.querySelectorAll("canvas")) {
        const ch = Chart.getChart(c);
        if (ch) ch.destroy();
      }
    },
  });
  d.el.dataset.id = String(id);

  function tick() {
    const now = Date.now();
    for (const el of content.querySelectorAll("[data-until]")) {
      const left = (Number(el.dataset.until) - now) / 1000;
      el.textContent = left > 0 ? t("drawer.ends", { d: duration(left) }) : t("drawer.ended");
      el.classList.toggle("ended", left <= 0);
    }
  }

  const key = {
    id, drawer: d, onChanged, startCheck,
    async changed() {
      if (onChanged) onChanged();
      await load();
    },
  };

  async function load() {
    let k;
    try {
      k = await api("/admin/api/keys/" + id);
    } catch (e) {
      fill(content, h("p", { class: "error", text: e.message }));
      return;
    }
    fill(content,
      facts(k),
      revealSection(id),
      h("div", { class: "drawer-section" }, labelForm(k, key)),
      actions(k, key),
      h("section", { class: "drawer-section" }, h("h3", { i18n: "drawer.models" }), modelList(k)),
      balanceSection(id),
      h("section", { class: "drawer-section" }, h("h3", { i18n: "drawer.events" }), eventsTable(k)));
    tick();
    clearInterval(ticker);
    ticker = setInterval(tick, 1000);
  }

  load();
  return d;
}

function fact(key, value) {
  return h("div", { class: "fact" }, h("dt", { i18n: key }), h("dd", {}, value));
}

// facts: the key's provider, masked key, state, balance and counters.
function facts(k) {
  const st = keyState(k, Date.now());
  return h("dl", { class: "facts" },
    fact("drawer.provider", h("span", { class: "chip", text: k.provider })),
    fact("keys.colKey", h("code", { class: "mono", testid: "drawer-key", text: k.key })),
    fact("drawer.status", h("span", { class: "badge badge-" + st, testid: "drawer-status", text: t("status." + st) })),
    k.status_reason ? fact("drawer.reason", h("span", { text: k.status_reason })) : null,
    fact("drawer.balance", h("span", { text: money(k.balance) })),
    fact("drawer.requests", h("span", { text: num(k.requests) + " / " + num(k.successes) + " / " + num(k.failures) })),
    fact("drawer.added", h("span", { text: time(k.created_at) })),
    fact("drawer.updated", h("span", { text: time(k.updated_at) })),
    fact("drawer.lastUsed", h("span", { text: k.last_used_at ? time(k.last_used_at) : t("common.never") })),
    fact("nav.requests", h("a", { href: "#/requests?key=" + k.id, testid: "drawer-requests", i18n: "drawer.requestsLink" })));
}

// revealSection: the full key, shown (with a copy button) only when the
// admin asks for it.
function revealSection(id) {
  const reveal = h("button", { type: "button", class: "btn", testid: "drawer-reveal", i18n: "drawer.reveal" });
  const revealBox = h("div", { class: "reveal-box" });
  reveal.addEventListener("click", async () => {
    const r = await api("/admin/api/keys/" + id + "/reveal", { method: "POST" });
    const copy = h("button", { type: "button", class: "btn", testid: "drawer-copy", i18n: "common.copy" });
    copy.addEventListener("click", async () => {
      const ok = await copyText(r.key);
      toast(t(ok ? "common.copied" : "common.copyFailed"), ok ? "info" : "error");
    });
    fill(revealBox, h("code", { class: "mono full-key", testid: "drawer-key-full", text: r.key }), copy);
    reveal.hidden = true;
  });
  return h("div", { class: "drawer-section" }, h("div", { class: "tools wrap" }, reveal), revealBox, h("p", { class: "muted small", i18n: "drawer.revealNote" }));
}

// labelForm edits the key's label.
function labelForm(k, key) {
  const input = h("input", { type: "text", testid: "drawer-label", maxlength: "200", value: k.label || "", autocomplete: "off" });
  const save = h("button", { type: "submit", class: "btn", testid: "drawer-label-save", i18n: "drawer.saveLabel" });
  const form = h("form", { class: "inline-form" }, field("drawer.label", input), save);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    await api("/admin/api/keys/" + key.id, { method: "PATCH", body: { label: input.value } });
    toast(t("drawer.saved"));
    await key.changed();
  });
  return form;
}

// actions: enable, disable, clear the model states, check, delete; each
// button is disabled while its call runs.
function actions(k, key) {
  const el = h("div", { class: "tools wrap" });
  const act = (testid, i18n, fn, cls = "btn") => {
    const b = h("button", { type: "button", class: cls, testid, i18n });
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await fn();
      } catch {
        // the toast has the API's message
      } finally {
        b.disabled = false;
      }
    });
    el.appendChild(b);
  };
  const patch = async (body) => {
    await api("/admin/api/keys/" + key.id, { method: "PATCH", body });
    await key.changed();
  };
  if (k.status !== "active") act("drawer-enable", "drawer.enable", () => patch({ status: "active" }));
  if (k.status !== "disabled") act("drawer-disable", "drawer.disable", () => patch({ status: "disabled" }));
  if ((k.models || []).length) act("drawer-clear-models", "drawer.clearModels", () => patch({ clear_models: true }));
  if (key.startCheck && k.status !== "disabled") act("drawer-check", "drawer.check", async () => {
    key.drawer.close();
    await key.startCheck([key.id]);
  });
  act("drawer-delete", "drawer.delete", async () => {
    if (!(await confirmDialog(t("drawer.confirmDelete", { id: key.id })))) return;
    await api("/admin/api/keys/" + key.id, { method: "DELETE" });
    key.drawer.close();
    if (key.onChanged) key.onChanged();
  }, "btn danger");
  return el;
}

// modelList: the models the key is cooling or blocked for, with live
// countdowns (the drawer's ticker fills them).
function modelList(k) {
  const el = h("ul", { class: "model-list", testid: "drawer-models" });
  if (!(k.models || []).length) el.appendChild(h("li", { class: "muted", i18n: "drawer.noModels" }));
  for (const m of k.models || []) {
    el.appendChild(h("li", { class: "model-item", testid: "drawer-model", dataset: { model: m.model, state: m.state } },
      h("code", { class: "mono", text: m.model }),
      h("span", { class: "badge badge-" + (m.state === "blocked" ? "blocked" : "cooling"), text: t(m.state === "blocked" ? "status.modelBlocked" : "status.cooling") }),
      m.state === "cooling" ? h("span", { class: "countdown", testid: "model-countdown", dataset: { until: String(m.until) }, title: t("drawer.until", { t: time(m.until) }) }) : null,
      m.reason ? h("span", { class: "muted", text: m.reason }) : null,
      m.streak ? h("span", { class: "muted small", text: t("drawer.streak", { n: m.streak }) }) : null));
  }
  return el;
}

// eventsTable: the key's state changes, newest first, with the excerpt of
// the answer that caused each.
function eventsTable(k) {
  const events = k.events || [];
  if (!events.length) return h("p", { class: "muted", testid: "drawer-events", i18n: "drawer.noEvents" });
  return h("div", { class: "table-wrap" }, h("table", { class: "table compact", testid: "drawer-events" },
    h("thead", {}, h("tr", {}, ["drawer.colTime", "drawer.colModel", "drawer.colChange", "drawer.colReason", "drawer.colStatus"].map((c) => h("th", { scope: "col", i18n: c })))),
    h("tbody", {}, events.map((e) => h("tr", { testid: "drawer-event" },
      h("td", { class: "nowrap", text: time(e.at) }),
      h("td", {}, e.model ? h("code", { class: "mono", text: e.model }) : "—"),
      h("td", { class: "nowrap", text: (e.from || "—") + " → " + (e.to || "—") }),
      h("td", {}, h("span", { text: e.reason || "" }), e.excerpt ? h("pre", { class: "excerpt", text: e.excerpt }) : null),
      h("td", { text: e.status ? String(e.status) : "—" }))))));
}

// balanceSection: the key's balance over 30 days, loaded after the
// drawer shows and left hidden when there are no readings.
function balanceSection(id) {
  const canvas = h("canvas", { testid: "drawer-balance", role: "img", i18nAttr: { "aria-label": "drawer.balanceHistory" } });
  const box = h("section", { class: "drawer-section", hidden: true },
    h("h3", { i18n: "drawer.balanceHistory" }), h("div", { class: "chart-box small" }, canvas));
  api("/admin/api/keys/" + id + "/balance?days=30", { quiet: true }).then((r) => {
    const pts = (r && r.points) || [];
    if (!pts.length || !canvas.isConnected) return;
    box.hidden = false;
    draw(canvas, {
      type: "line",
      data: {
        labels: pts.map((p) => utcDay(p[0]) + " " + new Date(p[0]).toISOString().slice(11, 16)),
        datasets: [{ label: t("drawer.balance"), data: pts.map((p) => p[1]), borderColor: COLORS.blue, tension: 0.2, pointRadius: 2 }],
      },
      options: { plugins: { legend: { display: false } }, scales: { x: { ticks: { maxTicksLimit: 6 } }, y: { beginAtZero: true } } },
    });
  }).catch(() => {});
  return box;
}
