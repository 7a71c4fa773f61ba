// #/login: POST /admin/login {"password"} → a session cookie and the CSRF
// token every change must send back (kept in sessionStorage "kp-csrf").
import { api, setCsrf } from "../api.js";
import { field, h } from "../dom.js";
import { t } from "../i18n.js";

export function login(root) {
  const pw = h("input", { type: "password", testid: "login-password", autocomplete: "current-password", autocapitalize: "off", spellcheck: "false" });
  const submit = h("button", { type: "submit", class: "btn primary wide", testid: "login-submit", i18n: "login.submit" });
  const err = h("p", { class: "error", testid: "login-error", role: "alert", hidden: true });
  const form = h("form", { class: "form login panel", novalidate: true },
    h("h1", { i18n: "login.title" }),
    field("login.password", pw, "login.hint"),
    submit, err,
    h("p", { class: "small" }, h("a", { href: "#/guest", i18n: "login.guest" })));
  root.append(form);
  let message = "";
  try {
    message = sessionStorage.getItem("kp-login-message") || "";
    sessionStorage.removeItem("kp-login-message");
  } catch {
    // no storage
  }
  if (message) {
    err.textContent = message;
    err.hidden = false;
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!pw.value) {
      err.textContent = t("login.empty");
      err.hidden = false;
      pw.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = t("login.busy");
    try {
      const r = await api("/admin/login", { method: "POST", body: { password: pw.value }, auth: "none", quiet: true });
      setCsrf(r.csrf);
      let next = "#/dashboard";
      try {
        next = sessionStorage.getItem("kp-next") || next;
        sessionStorage.removeItem("kp-next");
      } catch {
        // default
      }
      if (!/^#\/(dashboard|keys|tokens|settings|audit|api)\b/.test(next)) next = "#/dashboard";
      location.hash = next;
    } catch (x) {
      err.textContent = x.message;
      err.hidden = false;
      pw.select();
    } finally {
      submit.disabled = false;
      submit.textContent = t("login.submit");
    }
  });
  pw.focus();
}
