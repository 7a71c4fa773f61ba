// #/settings: the run-time settings (GET/PUT /admin/api/settings).
import { api, toLogin } from "../api.js";
import { confirmDialog } from "../dialog.js";
import { checkField, field, h, select } from "../dom.js";
import { t } from "../i18n.js";

// "name = value" lines → object; throws naming the first bad line.
function parsePairs(text, fieldKey, want) {
  const out = {};
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    const k = eq > 0 ? line.slice(0, eq).trim() : "";
    const v = eq > 0 ? line.slice(eq + 1).trim() : "";
    if (!k || !v) throw new Error(t("settings.badLine", { field: t(fieldKey), n: i + 1, want }));
    out[k] = v;
  }
  return out;
}

function pairsText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => k + " = " + v).join("\n");
}

// prompt_affinity as "provider = on|off" lines, and back.
function affinityText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => k + " = " + (v ? "on" : "off")).join("\n");
}

function parseAffinity(text) {
  const out = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const m = /^([^=\s]+)\s*=\s*(on|off)$/.exec(line);
    if (!m) throw new Error(t("settings.badLine", { field: t("settings.affinity"), n: i + 1, want: "provider = on|off" }));
    out[m[1]] = m[2] === "on";
  });
  return out;
}

export async function settings(root, ctx) {
  const mode = select({ testid: "set-access-mode" }, [
    ["open", "settings.modeOpen"], ["restricted", "settings.modeRestricted"], ["private", "settings.modePrivate"],
  ]);
  const guestPw = h("input", { type: "password", testid: "set-guest-password", autocomplete: "new-password", minlength: "8" });
  const pwState = h("small", { class: "hint", testid: "set-guest-password-state" });
  const reveal = h("input", { type: "checkbox", testid: "set-guest-reveal" });
  const pageSize = h("input", { type: "number", testid: "set-page-size", min: "10", max: "500", step: "1", class: "short" });
  const free = h("textarea", { testid: "set-free-models", rows: 5, spellcheck: "false", class: "mono" });
  const aliases = h("textarea", { testid: "set-aliases", rows: 5, spellcheck: "false", class: "mono", placeholder: "fast = groq/llama-3.1-8b-instant" });
  const checks = h("textarea", { testid: "set-check-models", rows: 4, spellcheck: "false", class: "mono", placeholder: "openai = gpt-4o-mini" });
  const wait = h("input", { type: "number", testid: "set-wait", min: "0", max: "30", step: "1", class: "short" });
  const affinity = h("textarea", { testid: "set-affinity", rows: 6, spellcheck: "false", class: "mono", placeholder: "groq = on" });
  const save = h("button", { type: "submit", class: "btn primary", testid: "settings-save", i18n: "settings.save" });
  const status = h("p", { class: "form-status", testid: "settings-status", role: "status", "aria-live": "polite" });

  const pwField = field("settings.guestPassword", guestPw);
  pwField.appendChild(pwState);
  const form = h("form", { class: "form settings", novalidate: true, testid: "settings-form" },
    h("fieldset", {}, h("legend", { i18n: "settings.access" }),
      field("settings.accessMode", mode),
      pwField,
      checkField("settings.guestReveal", reveal),
      field("settings.pageSize", pageSize)),
    h("fieldset", {}, h("legend", { i18n: "settings.routing" }),
      field("settings.freeModels", free, "settings.freeModelsHint"),
      field("settings.aliases", aliases),
      field("settings.checkModels", checks, "settings.checkModelsHint"),
      field("settings.wait", wait),
      field("settings.affinity", affinity, "settings.affinityHint")),
    h("div", { class: "form-actions" }, save, status));
  // Log out everywhere: every admin and guest session ends, this one too.
  const everywhere = h("button", { type: "button", class: "btn danger", testid: "logout-everywhere", i18n: "settings.logoutEverywhere" });
  everywhere.addEventListener("click", async () => {
    if (!(await confirmDialog(t("settings.logoutEverywhereConfirm"), "settings.logoutEverywhere"))) return;
    await api("/admin/api/sessions/revoke", { method: "POST" });
    toLogin(t("settings.loggedOutEverywhere"));
  });
  const sessions = h("section", { class: "form settings" }, h("fieldset", {}, h("legend", { i18n: "settings.sessions" }),
    h("p", { class: "hint", i18n: "settings.sessionsHint" }), h("div", { class: "form-actions" }, everywhere)));
  const body = h("div", { class: "view-body" }, h("div", { class: "page-head" }, h("h1", { i18n: "settings.title" })), form, sessions);

  let pwSet = false;
  function renderPwState() {
    pwState.textContent = t(pwSet ? "settings.guestPasswordSet" : "settings.guestPasswordUnset");
  }

  function show(s) {
    mode.value = s.access_mode;
    pwSet = !!s.guest_password_set;
    renderPwState();
    guestPw.value = "";
    reveal.checked = !!s.guest_reveal_keys;
    pageSize.value = String(s.page_size);
    free.value = (s.free_models || []).join("\n");
    aliases.value = pairsText(s.aliases);
    checks.value = pairsText(s.check_models);
    wait.value = String(s.wait_for_cooldown_seconds);
    affinity.value = affinityText(s.prompt_affinity);
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    delete status.dataset.i18n;
    status.textContent = "";
    status.dataset.kind = "";
    let body;
    try {
      body = {
        access_mode: mode.value,
        guest_reveal_keys: reveal.checked,
        page_size: pageSize.value === "" ? null : Number(pageSize.value),
        free_models: free.value.split(/\r?\n/).map((x) => x.trim()).filter((x) => x && !x.startsWith("#")),
        aliases: parsePairs(aliases.value, "settings.aliases", "name = provider/model"),
        check_models: parsePairs(checks.value, "settings.checkModels", "provider = model"),
        wait_for_cooldown_seconds: wait.value === "" ? null : Number(wait.value),
        prompt_affinity: parseAffinity(affinity.value),
      };
      if (guestPw.value) body.guest_password = guestPw.value;
    } catch (err) {
      status.textContent = err.message;
      status.dataset.kind = "error";
      return;
    }
    save.disabled = true;
    try {
      const s = await api("/admin/api/settings", { method: "PUT", body });
      show(s);
      status.textContent = t("settings.saved");
      status.dataset.kind = "ok";
      status.dataset.i18n = "settings.saved";
    } catch (err) {
      delete status.dataset.i18n;
      status.textContent = err.message;
      status.dataset.kind = "error";
    } finally {
      save.disabled = false;
    }
  });
  // Editing again clears the last result.
  form.addEventListener("input", () => {
    delete status.dataset.i18n;
    status.textContent = "";
  });

  ctx.onLang(renderPwState);
  // The form appears with its values: nothing typed is overwritten.
  root.append(h("p", { class: "muted", i18n: "common.loading" }));
  const s = await api("/admin/api/settings");
  if (!ctx.alive) return;
  show(s);
  root.replaceChildren(body);
}
