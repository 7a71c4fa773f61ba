// #/tokens: client tokens (scopes, limits, usage), created with the
// secret shown once.
import { api } from "../api.js";
import { confirmDialog, copyText, openDialog } from "../dialog.js";
import { checkField, field, fill, h } from "../dom.js";
import { compact, num, time } from "../format.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";

function splitList(s) {
  return s.split(/[,\s;]+/).map((x) => x.trim()).filter(Boolean);
}

const COLS = ["tokens.colName", "tokens.colPrefix", "tokens.colScope", "tokens.colUsage", "tokens.colExpires", "tokens.colLastUsed", "tokens.colStatus", "tokens.colActions"];

// showSecret shows a new token's secret once, with copy and dismiss.
function showSecret(secretBox, tok) {
  const copy = h("button", { type: "button", class: "btn primary", testid: "token-copy", i18n: "tokens.copy" });
  const done = h("button", { type: "button", class: "btn ghost", testid: "token-secret-dismiss", i18n: "tokens.dismiss" });
  copy.addEventListener("click", async () => {
    const ok = await copyText(tok.token);
    toast(t(ok ? "common.copied" : "common.copyFailed"), ok ? "info" : "error");
  });
  done.addEventListener("click", () => {
    secretBox.hidden = true;
    secretBox.replaceChildren();
  });
  fill(secretBox,
    h("h2", { i18n: "tokens.secretTitle" }),
    h("p", { i18n: "tokens.secretNote" }),
    h("div", { class: "secret-row" }, h("code", { class: "mono full-key", testid: "token-secret", text: tok.token }), copy, done));
  secretBox.hidden = false;
  copy.focus();
}

// usageCell: today's and the total use against the quotas, and the rpm.
function usageCell(tok) {
  const today = Math.floor(Date.now() / 86400000) * 86400000;
  const u = tok.used || {};
  const dayReq = u.day === today ? u.day_requests : 0;
  const dayTok = u.day === today ? u.day_tokens : 0;
  const rq = (n) => (n > 0 ? num(n) : t("common.unlimited"));
  const kq = (n) => (n > 0 ? compact(n) : t("common.unlimited"));
  const lines = [
    t("tokens.usageToday", { r: num(dayReq), rq: rq(tok.requests_day), k: compact(dayTok), kq: kq(tok.tokens_day) }),
    t("tokens.usageTotal", { r: num(u.requests || 0), rq: rq(tok.requests_total), k: compact(u.tokens || 0), kq: kq(tok.tokens_total) }),
  ];
  if (tok.rpm > 0) lines.push(t("tokens.rpmLimit", { n: num(tok.rpm) }));
  // One line each; the hidden separators keep the text readable as a whole.
  return h("td", { testid: "token-usage", class: "small" },
    lines.map((l, i) => h("div", {}, i ? h("span", { class: "sr-only", text: " · " }) : null, l)));
}

// endpointsCell: the endpoint scope, shown and changed in the row: off,
// the inference endpoints only; on, full pass-through.
function endpointsCell(tok, reload) {
  const all = tok.endpoints === "all";
  const box = h("input", { type: "checkbox", testid: "token-row-all-endpoints", checked: all });
  box.addEventListener("change", async () => {
    box.disabled = true;
    try {
      await api("/admin/api/tokens/" + tok.id, { method: "PATCH", body: { endpoints: box.checked ? "all" : "inference" } });
      await reload();
    } catch {
      box.checked = all;
      box.disabled = false;
    }
  });
  return h("div", { testid: "token-endpoints", dataset: { endpoints: all ? "all" : "inference" }, class: all ? "" : "muted" },
    checkField("tokens.passThrough", box));
}

// rowActions: enable or disable, and delete.
function rowActions(tok, reload) {
  const toggle = h("button", {
    type: "button", class: "btn", testid: "token-disable", "aria-pressed": tok.disabled ? "true" : "false",
    i18n: tok.disabled ? "tokens.enable" : "tokens.disable",
  });
  toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    try {
      await api("/admin/api/tokens/" + tok.id, { method: "PATCH", body: { disabled: !tok.disabled } });
      await reload();
    } catch {
      toggle.disabled = false;
    }
  });
  const del = h("button", { type: "button", class: "btn danger", testid: "token-delete", i18n: "tokens.delete" });
  del.addEventListener("click", async () => {
    if (!(await confirmDialog(t("tokens.confirmDelete", { name: tok.name }), "common.delete"))) return;
    try {
      await api("/admin/api/tokens/" + tok.id, { method: "DELETE" });
    } catch {
      return;
    }
    await reload().catch(() => {});
  });
  return h("td", { class: "nowrap" }, toggle, " ", del);
}

function tokenRow(tok, now, reload) {
  const expired = tok.expires_at > 0 && tok.expires_at <= now;
  const stateKey = tok.disabled ? "tokens.disabled" : expired ? "tokens.expired" : "tokens.enabled";
  return h("tr", { testid: "token-row", dataset: { id: String(tok.id), disabled: String(tok.disabled) } },
    h("td", { testid: "token-row-name", text: tok.name }),
    h("td", {}, h("code", { class: "mono", text: tok.prefix })),
    h("td", { class: "small" },
      h("div", { text: tok.providers.length ? tok.providers.join(", ") : t("tokens.allProviders") }),
      h("div", { class: "muted", text: tok.models.length ? tok.models.join(", ") : t("tokens.allModels") }),
      endpointsCell(tok, reload)),
    usageCell(tok),
    h("td", { class: "nowrap small", text: tok.expires_at ? time(tok.expires_at) : t("common.never") }),
    h("td", { class: "nowrap small", text: tok.last_used_at ? time(tok.last_used_at) : t("common.never") }),
    h("td", {}, h("span", { class: "badge badge-" + (tok.disabled || expired ? "disabled" : "active"), testid: "token-state", text: t(stateKey) })),
    rowActions(tok, reload));
}

// tokenForm is the create form and its inputs.
function tokenForm() {
  const number = (testid) => h("input", { type: "number", testid, min: "0", step: "1", class: "short", inputmode: "numeric" });
  const f = {
    name: h("input", { type: "text", testid: "token-name", maxlength: "100", autocomplete: "off" }),
    provs: h("input", { type: "text", testid: "token-providers", autocomplete: "off", placeholder: "openai, groq" }),
    models: h("input", { type: "text", testid: "token-models", autocomplete: "off", placeholder: "gpt-4o*, groq/llama-*" }),
    rpm: number("token-rpm"),
    reqDay: number("token-requests-day"),
    tokDay: number("token-tokens-day"),
    reqTotal: number("token-requests-total"),
    tokTotal: number("token-tokens-total"),
    expires: h("input", { type: "number", testid: "token-expires-days", min: "0", step: "any", class: "short", inputmode: "decimal" }),
    allEndpoints: h("input", { type: "checkbox", testid: "token-all-endpoints" }),
    submit: h("button", { type: "submit", class: "btn primary", testid: "token-submit", i18n: "tokens.submit" }),
  };
  f.form = h("form", { class: "form", novalidate: true, testid: "token-form" },
    field("tokens.name", f.name),
    field("tokens.providers", f.provs),
    field("tokens.models", f.models),
    h("div", { class: "form-row" }, field("tokens.rpm", f.rpm), field("tokens.requestsDay", f.reqDay), field("tokens.tokensDay", f.tokDay)),
    h("div", { class: "form-row" }, field("tokens.requestsTotal", f.reqTotal), field("tokens.tokensTotal", f.tokTotal), field("tokens.expiresDays", f.expires)),
    checkField("tokens.allEndpoints", f.allEndpoints),
    h("p", { class: "hint muted small", i18n: "tokens.allEndpointsHint" }),
    h("div", { class: "form-actions" }, f.submit));
  return f;
}

// tokenBody is the POST body the form asks for.
function tokenBody(f) {
  const body = { name: f.name.value.trim() };
  const p = splitList(f.provs.value);
  if (p.length) body.providers = p;
  const m = f.models.value.split(",").map((x) => x.trim()).filter(Boolean);
  if (m.length) body.models = m;
  for (const [input, key] of [[f.rpm, "rpm"], [f.reqDay, "requests_day"], [f.tokDay, "tokens_day"], [f.reqTotal, "requests_total"], [f.tokTotal, "tokens_total"]]) {
    if (input.value !== "") body[key] = Number(input.value);
  }
  if (f.expires.value !== "" && Number(f.expires.value) > 0) body.expires_in_days = Number(f.expires.value);
  if (f.allEndpoints.checked) body.endpoints = "all";
  return body;
}

// openCreate opens the create dialog; created gets the new token.
function openCreate(created) {
  const f = tokenForm();
  const d = openDialog({ testid: "token-dialog", titleKey: "tokens.create", body: f.form, kind: "wide" });
  f.form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!f.name.value.trim()) {
      toast(t("tokens.nameRequired"), "error");
      f.name.focus();
      return;
    }
    f.submit.disabled = true;
    try {
      const tok = await api("/admin/api/tokens", { method: "POST", body: tokenBody(f) });
      d.close();
      await created(tok);
    } catch {
      // the toast has the API's message
    } finally {
      f.submit.disabled = false;
    }
  });
}

export async function tokens(root, ctx) {
  let list = [];
  const create = h("button", { type: "button", class: "btn primary", testid: "token-create", i18n: "tokens.create" });
  const secretBox = h("section", { class: "panel secret", testid: "token-secret-panel", hidden: true, "aria-live": "polite" });
  const tbody = h("tbody", {});
  const body = h("div", { class: "view-body" },
    h("div", { class: "page-head" }, h("h1", { i18n: "tokens.title" }), h("div", { class: "tools" }, create)),
    h("p", { class: "muted", i18n: "tokens.intro" }),
    secretBox,
    h("div", { class: "table-wrap" }, h("table", { class: "table", testid: "tokens-table" },
      h("thead", {}, h("tr", {}, COLS.map((c) => h("th", { scope: "col", i18n: c })))), tbody)));

  function render() {
    if (!list.length) {
      fill(tbody, h("tr", {}, h("td", { colspan: String(COLS.length), class: "muted", i18n: "tokens.empty" })));
      return;
    }
    const now = Date.now();
    fill(tbody, list.map((tok) => tokenRow(tok, now, load)));
  }

  async function load() {
    const r = await api("/admin/api/tokens");
    if (!ctx.alive) return;
    list = r.tokens || [];
    render();
  }

  create.addEventListener("click", () => openCreate(async (tok) => {
    showSecret(secretBox, tok);
    await load().catch(() => {});
  }));

  ctx.onLang(render);
  root.append(h("p", { class: "muted", i18n: "common.loading" }));
  try {
    await load();
  } finally {
    if (ctx.alive) root.replaceChildren(body);
  }
}
