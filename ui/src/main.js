// keypool's admin UI: a hash-routed single page over the admin API.
import "./style.css";
import { api, ApiError, setCsrf } from "./api.js";
import { destroyAll } from "./charts.js";
import { h } from "./dom.js";
import { applyI18n, lang, setLang } from "./i18n.js";
import { apiPage } from "./pages/apidoc.js";
import { audit } from "./pages/audit.js";
import { requests } from "./pages/requests.js";
import { dashboard } from "./pages/dashboard.js";
import { guest } from "./pages/guest.js";
import { keys } from "./pages/keys.js";
import { login } from "./pages/login.js";
import { settings } from "./pages/settings.js";
import { tokens } from "./pages/tokens.js";
import { hideToast } from "./toast.js";

const routes = { login, dashboard, keys, tokens, requests, settings, audit, api: apiPage, guest };
// Pages that need no admin session (the admin navigation is hidden there).
const open = new Set(["login", "guest"]);

let current = null;

// A page's context: whether it is still shown, and what to undo when it
// is left (timers, charts, listeners).
function pageContext(root) {
  let alive = true;
  const cleanups = [];
  const langs = [];
  return {
    root,
    get alive() {
      return alive;
    },
    onCleanup(fn) {
      cleanups.push(fn);
    },
    onLang(fn) {
      langs.push(fn);
    },
    interval(fn, ms) {
      const id = setInterval(fn, ms);
      cleanups.push(() => clearInterval(id));
      return id;
    },
    relang() {
      for (const fn of langs) {
        try {
          fn();
        } catch (e) {
          console.error(e);
        }
      }
    },
    dispose() {
      alive = false;
      for (const fn of cleanups) {
        try {
          fn();
        } catch (e) {
          console.error(e);
        }
      }
      destroyAll(root);
    },
  };
}

// checkSession makes one cheap admin call before the first protected page
// of this tab loads, so that without a session the login form comes at
// once instead of after a page's worth of refused calls.
let sessionChecked = false;
async function checkSession() {
  if (sessionChecked) return;
  await api("/admin/api/providers", { quiet: true });
  sessionChecked = true;
}

function routeName() {
  const m = location.hash.match(/^#\/([a-z]+)/);
  return m ? m[1] : "";
}

function navigate() {
  const name = routeName();
  if (!routes[name]) {
    location.replace("#/dashboard");
    return;
  }
  // Dialogs belong to the page being left.
  for (const d of document.querySelectorAll("dialog[open]")) d.dispatchEvent(new Event("cancel", { cancelable: true }));
  const fromNav = document.activeElement && document.activeElement.closest && document.activeElement.closest("#nav");
  if (current) current.ctx.dispose();
  const main = document.getElementById("main");
  const root = h("div", { class: "view view-" + name });
  main.replaceChildren(root);
  document.body.dataset.route = name;
  document.body.classList.toggle("public", open.has(name));
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  setMenu(false);
  const ctx = pageContext(root);
  current = { name, ctx };
  Promise.resolve()
    .then(() => (open.has(name) ? null : checkSession()))
    .then(() => routes[name](root, ctx))
    .catch((e) => {
      if (!(e instanceof ApiError)) console.error(e);
      if (ctx.alive && e instanceof ApiError && e.status !== 401) {
        root.appendChild(h("p", { class: "error panel", testid: "page-error", text: e.message }));
      }
    });
  if (fromNav) main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function setMenu(openMenu) {
  const btn = document.querySelector('[data-testid="nav-toggle"]');
  if (!btn) return;
  btn.setAttribute("aria-expanded", openMenu ? "true" : "false");
  document.body.classList.toggle("menu-open", openMenu);
}

function start() {
  applyI18n();
  document.querySelector('[data-testid="lang-toggle"]').addEventListener("click", () => {
    setLang(lang() === "zh" ? "en" : "zh");
  });
  window.addEventListener("kp:lang", () => {
    if (current) current.ctx.relang();
  });
  document.querySelector('[data-testid="logout"]').addEventListener("click", async () => {
    try {
      await api("/admin/logout", { method: "POST", auth: "none", quiet: true });
    } catch {
      // the session is dropped here either way
    }
    setCsrf("");
    sessionChecked = false;
    location.hash = "#/login";
  });
  document.querySelector('[data-testid="nav-toggle"]').addEventListener("click", () => {
    setMenu(!document.body.classList.contains("menu-open"));
  });
  document.querySelector("[data-skip]").addEventListener("click", () => document.getElementById("main").focus());
  document.querySelector('[data-testid="toast"]').addEventListener("click", hideToast);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("menu-open")) setMenu(false);
  });
  // The key drawer opens below the top bar, whose height wraps on phones.
  const bar = document.querySelector(".topbar");
  const setBar = () => document.documentElement.style.setProperty("--topbar-h", bar.offsetHeight + "px");
  if (window.ResizeObserver) new ResizeObserver(setBar).observe(bar);
  setBar();
  window.addEventListener("hashchange", navigate);
  navigate();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
