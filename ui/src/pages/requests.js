// #/requests: the request log (GET /admin/api/requests), newest first, 50
// at a time, with filters; a row opens a drawer with the attempts.
// #/requests?key=<id> opens it filtered on a key (the key drawer links
// here).
import { api } from "../api.js";
import { openDialog } from "../dialog.js";
import { field, fill, h, select } from "../dom.js";
import { num, time } from "../format.js";
import { t } from "../i18n.js";

// filterControls are the page's filters, named as the API's parameters.
function filterControls(initial) {
  const text = (name, testid, cls) => {
    const el = h("input", { type: "text", testid, class: cls || "", spellcheck: "false" });
    el.value = initial.get(name) || "";
    return el;
  };
  const c = {
    status: select({ testid: "req-status" }, [["", "requests.any"], ["2xx", "requests.2xx"], ["4xx", "requests.4xx"], ["5xx", "requests.5xx"]]),
    class: select({ testid: "req-class" }, [["", "requests.any"], ["success", "requests.success"], ["client", "requests.client"],
      ["upstream", "requests.upstream"], ["rejected", "requests.rejected"]]),
    token: text("token", "req-token", "short"),
    key: text("key", "req-key", "short"),
    model: text("model", "req-model"),
    route: text("route", "req-route"),
  };
  c.status.value = initial.get("status") || "";
  c.class.value = initial.get("class") || "";
  return c;
}

// query is the API query the filters make.
function query(c, before) {
  const q = new URLSearchParams({ limit: "50" });
  for (const [name, el] of Object.entries(c)) if (el.value.trim()) q.set(name, el.value.trim());
  if (before) q.set("before", before);
  return "/admin/api/requests?" + q.toString();
}

export async function requests(root, ctx) {
  const initial = new URLSearchParams(location.hash.split("?")[1] || "");
  const c = filterControls(initial);
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "btn", testid: "requests-more", i18n: "audit.more" });
  const empty = h("p", { class: "muted", i18n: "requests.empty", hidden: true });
  const apply = h("button", { type: "submit", class: "btn primary", testid: "requests-apply", i18n: "requests.apply" });
  const form = h("form", { class: "filters", testid: "requests-filters" },
    field("requests.status", c.status), field("requests.class", c.class), field("requests.token", c.token),
    field("requests.key", c.key), field("requests.model", c.model), field("requests.route", c.route), apply);
  const cols = ["audit.colTime", "requests.colStatus", "requests.colModel", "requests.colRoute", "requests.colKey",
    "requests.colAttempts", "requests.colTokens", "requests.colLatency"];
  root.append(
    h("div", { class: "page-head" }, h("h1", { i18n: "requests.title" })),
    h("p", { class: "muted small", i18n: "requests.hint" }),
    form,
    h("div", { class: "table-wrap" }, h("table", { class: "table", testid: "requests-table" },
      h("thead", {}, h("tr", {}, cols.map((k) => h("th", { scope: "col", i18n: k })))), tbody)),
    empty,
    h("div", { class: "pager" }, more));

  let before = null;
  // A page that comes back after the filters changed is dropped: only
  // the newest query's rows are shown.
  let latest = 0;
  async function page() {
    const mine = ++latest;
    more.disabled = true;
    const r = await api(query(c, before));
    if (!ctx.alive || mine !== latest) return;
    for (const e of r.requests || []) tbody.appendChild(requestRow(e));
    before = r.next_before;
    empty.hidden = tbody.children.length > 0;
    more.disabled = before == null;
    more.dataset.i18n = before == null ? "audit.noMore" : "audit.more";
    more.textContent = t(more.dataset.i18n);
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    before = null;
    tbody.replaceChildren();
    page().catch(() => {});
  });
  more.addEventListener("click", () => page().catch(() => {}));
  await page();
}

// requestRow is one entry; clicking it opens its drawer.
function requestRow(e) {
  const row = h("tr", { testid: "request-row", class: "clickable", tabindex: "0", dataset: { id: e.id } },
    h("td", { class: "nowrap small", text: time(e.at) }),
    h("td", {}, h("span", { class: "badge badge-" + statusBadge(e), text: String(e.status) })),
    h("td", { class: "mono small", text: e.provider + "/" + e.model }),
    h("td", { class: "mono small", text: e.route }),
    h("td", { class: "mono small", text: e.key ? e.key_masked || "#" + e.key : "—" }),
    h("td", { text: String(e.attempts.length) }),
    h("td", { class: "small", text: num(e.prompt_tokens) + " / " + num(e.completion_tokens) }),
    h("td", { class: "small", text: num(e.latency_ms) + " ms" }));
  const open = () => openRequestDrawer(e);
  row.addEventListener("click", open);
  row.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") open();
  });
  return row;
}

function statusBadge(e) {
  if (e.class === "success") return "active";
  if (e.class === "client") return "cooling";
  return e.class === "rejected" ? "disabled" : "blocked";
}

// openRequestDrawer shows one entry: its facts and each attempt.
function openRequestDrawer(e) {
  const fact = (key, value) => h("div", { class: "fact" }, h("dt", { i18n: key }), h("dd", { text: value }));
  const attempts = h("table", { class: "table small", testid: "request-attempts" },
    h("thead", {}, h("tr", {}, ["requests.colKey", "requests.colStatus", "requests.verdict", "requests.reason", "requests.at"]
      .map((k) => h("th", { scope: "col", i18n: k })))),
    h("tbody", {}, e.attempts.map((a) => h("tr", { testid: "request-attempt" },
      h("td", { class: "mono", text: a.key_masked || "#" + a.key }),
      h("td", { text: a.status ? String(a.status) : "—" }),
      h("td", { text: a.verdict }),
      h("td", { class: "small", text: a.reason }),
      h("td", { class: "small", text: "+" + num(a.ms) + " ms" })))));
  const body = h("div", { class: "drawer-content" });
  fill(body,
    h("dl", { class: "facts" },
      fact("requests.id", e.id),
      fact("audit.colTime", time(e.at)),
      fact("requests.colStatus", e.status + " (" + t("requests." + e.class) + ")"),
      fact("requests.colModel", e.provider + "/" + e.model),
      fact("requests.colRoute", e.route),
      fact("requests.token", e.token ? "#" + e.token : t("dash.authKey")),
      fact("requests.colTokens", num(e.prompt_tokens) + " / " + num(e.completion_tokens) + " (" + t("requests.cached") + " " +
        num(e.cached_tokens) + (e.estimated ? ", " + t("requests.estimated") : "") + ")"),
      fact("requests.colLatency", num(e.latency_ms) + " ms")),
    h("section", { class: "drawer-section" }, h("h3", { i18n: "requests.colAttempts" }),
      e.attempts.length ? attempts : h("p", { class: "muted", i18n: "requests.noAttempts" })));
  openDialog({ testid: "request-drawer", title: t("requests.drawerTitle", { id: e.id }), kind: "drawer", modal: false, body });
}
