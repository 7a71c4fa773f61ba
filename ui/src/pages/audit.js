// #/audit: the audit log, newest first, 50 at a time.
import { api } from "../api.js";
import { h } from "../dom.js";
import { time } from "../format.js";
import { t } from "../i18n.js";

export async function audit(root, ctx) {
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "btn", testid: "audit-more", i18n: "audit.more" });
  const empty = h("p", { class: "muted", i18n: "audit.empty", hidden: true });
  const cols = ["audit.colTime", "audit.colActor", "audit.colIp", "audit.colAction", "audit.colTarget", "audit.colDetail"];
  root.append(
    h("div", { class: "page-head" }, h("h1", { i18n: "audit.title" })),
    h("div", { class: "table-wrap" }, h("table", { class: "table", testid: "audit-table" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", i18n: c })))), tbody)),
    empty,
    h("div", { class: "pager" }, more));

  let before = null;
  async function page() {
    more.disabled = true;
    const q = "/admin/api/audit?limit=50" + (before ? "&before=" + before : "");
    let r;
    try {
      r = await api(q);
    } catch (e) {
      more.disabled = before == null && tbody.children.length > 0;
      throw e;
    }
    if (!ctx.alive) return;
    for (const e of r.entries || []) {
      tbody.appendChild(h("tr", { testid: "audit-row", dataset: { id: String(e.id) } },
        h("td", { class: "nowrap small", text: time(e.at) }),
        h("td", { text: e.actor }),
        h("td", { class: "mono small", text: e.ip }),
        h("td", {}, h("code", { class: "mono", text: e.action })),
        h("td", { text: e.target }),
        h("td", { class: "small", text: e.detail })));
    }
    before = r.next_before;
    empty.hidden = tbody.children.length > 0;
    more.disabled = before == null;
    more.dataset.i18n = before == null ? "audit.noMore" : "audit.more";
    more.textContent = t(more.dataset.i18n);
  }
  more.addEventListener("click", () => page().catch(() => {}));
  await page();
}
