// The API client: same-origin fetch with the session cookie; the CSRF
// token from POST /admin/login (sessionStorage "kp-csrf") goes with every
// change as X-Keypool-CSRF. A 401 (or a change refused for its CSRF
// token) sends the admin to #/login; other errors show their message in
// the toast and reject with an ApiError.
import { t } from "./i18n.js";
import { toast } from "./toast.js";

const CSRF = "kp-csrf";

export class ApiError extends Error {
  constructor(status, message, code, param) {
    super(message);
    this.status = status;
    this.code = code || "";
    this.param = param || null;
  }
}

export function csrf() {
  try {
    return sessionStorage.getItem(CSRF) || "";
  } catch {
    return "";
  }
}

export function setCsrf(value) {
  try {
    if (value) sessionStorage.setItem(CSRF, value);
    else sessionStorage.removeItem(CSRF);
  } catch {
    // no storage: changes will ask for a new login
  }
}

// Where the admin goes back to after logging in.
export function toLogin(message) {
  setCsrf("");
  const here = location.hash;
  if (here.startsWith("#/login")) return;
  try {
    if (here && here !== "#/guest") sessionStorage.setItem("kp-next", here);
    if (message) sessionStorage.setItem("kp-login-message", message);
  } catch {
    // ignore
  }
  location.hash = "#/login";
}

// api(path, {method, body, raw, quiet, auth}):
//   body: a JSON-able value; raw: return the Response (text answers);
//   quiet: no toast; auth: "admin" (401 → login) or "none".
export async function api(path, opts = {}) {
  const method = opts.method || "GET";
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    const token = csrf();
    if (token) headers["X-Keypool-CSRF"] = token;
  }
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    if (!opts.quiet) toast(t("common.networkError"), "error");
    throw new ApiError(0, t("common.networkError"), "network");
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    let code = "";
    let param = null;
    try {
      const j = await res.json();
      if (j && j.error) {
        message = j.error.message || message;
        code = j.error.code || "";
        param = j.error.param || null;
      }
    } catch {
      // not JSON: keep the status line
    }
    const err = new ApiError(res.status, message, code, param);
    const admin = (opts.auth || "admin") === "admin";
    if (admin && (res.status === 401 || (res.status === 403 && code === "csrf"))) {
      toLogin(res.status === 403 ? t("common.sessionExpired") : "");
      throw err;
    }
    if (!opts.quiet) toast(message, "error");
    throw err;
  }
  if (opts.raw) return res;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}
