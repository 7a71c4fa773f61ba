// #/guest: the pool's public status (GET /guest/api/summary), as the
// access_mode setting allows; the guest password form when restricted.
import { api } from "../api.js";
import { field, fill, h } from "../dom.js";
import { money, num } from "../format.js";
import { t } from "../i18n.js";
import { keyState } from "../keys-model.js";

export async function guest(root, ctx) {
  const body = h("div", { class: "guest" });
  root.append(h("div", { class: "page-head" }, h("h1", { i18n: "guest.title" })), body);
  let page = 1;
  let last = null;

  function loginForm(message) {
    const pw = h("input", { type: "password", testid: "guest-password", autocomplete: "current-password" });
    const submit = h("button", { type: "submit", class: "btn primary", testid: "guest-submit", i18n: "guest.submit" });
    const err = h("p", { class: "error", testid: "guest-error", role: "alert", hidden: true });
    const form = h("form", { class: "form narrow panel", novalidate: true },
      h("p", { i18n: message }), field("guest.password", pw), h("div", { class: "form-actions" }, submit), err);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      submit.disabled = true;
      try {
        await api("/guest/login", { method: "POST", body: { password: pw.value }, auth: "none", quiet: true });
        await load();
      } catch (x) {
        err.textContent = x.message;
        err.hidden = false;
        pw.select();
      } finally {
        submit.disabled = false;
      }
    });
    fill(body, form);
    pw.focus();
  }

  function render(s) {
    const stat = (testid, key, value) => h("div", { class: "card", testid }, h("span", { class: "card-label", i18n: key }), h("span", { class: "card-value", testid: testid + "-value", text: value }));
    const st = s.by_status || {};
    const b = s.balance || {};
    const provs = Object.entries(s.by_provider || {});
    const pages = Math.max(1, Math.ceil(s.total / s.page_size));
    const prev = h("button", { type: "button", class: "btn", testid: "guest-prev", i18n: "keys.prev", disabled: s.page <= 1 });
    const next = h("button", { type: "button", class: "btn", testid: "guest-next", i18n: "keys.next", disabled: s.page >= pages });
    prev.addEventListener("click", () => {
      page = s.page - 1;
      load();
    });
    next.addEventListener("click", () => {
      page = s.page + 1;
      load();
    });
    fill(body,
      h("div", { class: "cards" },
        stat("guest-total", "guest.total", num(s.total)),
        stat("guest-active", "status.active", num(st.active)),
        stat("guest-blocked", "status.blocked", num(st.blocked)),
        stat("guest-exhausted", "status.exhausted", num(st.exhausted)),
        stat("guest-disabled", "status.disabled", num(st.disabled)),
        stat("guest-balance-total", "dash.balanceTotal", money(b.total)),
        stat("guest-balance-avg", "dash.balanceAvg", money(b.average)),
        stat("guest-balance-median", "dash.balanceMedian", money(b.median)),
        stat("guest-balance-max", "dash.balanceMax", money(b.max)),
        stat("guest-balance-min", "dash.balanceMin", money(b.min))),
      provs.length ? h("section", { class: "panel" }, h("h2", { i18n: "guest.byProvider" }),
        h("div", { class: "table-wrap" }, h("table", { class: "table", testid: "guest-providers" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col", i18n: "keys.colProvider" }),
            ["active", "blocked", "exhausted", "disabled"].map((x) => h("th", { scope: "col", i18n: "status." + x })))),
          h("tbody", {}, provs.map(([p, c]) => h("tr", {}, h("td", {}, h("span", { class: "chip", text: p })),
            ["active", "blocked", "exhausted", "disabled"].map((x) => h("td", { class: "num", text: num(c[x]) })))))))) : null,
      h("section", { class: "panel" }, h("h2", { i18n: "guest.keys" }),
        h("div", { class: "table-wrap" }, h("table", { class: "table", testid: "guest-keys" },
          h("thead", {}, h("tr", {}, ["keys.colProvider", "keys.colKey", "keys.colStatus", "keys.colBalance"].map((c) => h("th", { scope: "col", i18n: c })))),
          h("tbody", {}, (s.keys || []).map((k) => {
            const state = keyState(k);
            return h("tr", { testid: "guest-key-row", dataset: { id: String(k.id) } },
              h("td", {}, h("span", { class: "chip", text: k.provider })),
              h("td", {}, h("code", { class: "mono", text: k.key })),
              h("td", {}, h("span", { class: "badge badge-" + state, text: t("status." + state) })),
              h("td", { class: "num", text: money(k.balance) }));
          })))),
        h("div", { class: "pager" }, h("span", { class: "muted", text: t("guest.known") + ": " + num(b.known) }),
          h("div", { class: "tools" }, prev, h("span", { testid: "guest-page", text: s.page + " / " + pages }), next))));
  }

  async function load() {
    let s;
    try {
      s = await api("/guest/api/summary?page=" + page, { auth: "none", quiet: true });
    } catch (e) {
      if (!ctx.alive) return;
      last = null;
      if (e.status === 401) loginForm("guest.needPassword");
      else if (e.status === 403) fill(body, h("p", { class: "panel", testid: "guest-private" }, h("span", { i18n: "guest.private" }), " ", h("a", { href: "#/login", i18n: "guest.adminLink" })));
      else fill(body, h("p", { class: "error", text: e.message }));
      return;
    }
    if (!ctx.alive) return;
    last = s;
    render(s);
  }
  ctx.onLang(() => {
    if (last) render(last);
  });
  await load();
}
