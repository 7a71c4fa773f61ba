// Modal dialogs on <dialog>.showModal(): the rest of the page is inert,
// Tab cycles inside the dialog, Escape closes it, and focus goes back to
// what had it before.
import { h, uid } from "./dom.js";
import { t } from "./i18n.js";

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

function visible(el) {
  return !el.closest("[hidden]") && el.getClientRects().length > 0;
}

// openDialog({testid, titleKey, title, body, actions, kind, modal, onClose})
// returns {el, body, close}. kind: "drawer" (a side panel) or "wide".
// modal: false opens it beside the page (the key drawer): no backdrop, no
// focus trap, the page stays usable; Escape still closes it.
export function openDialog(opts) {
  const titleId = uid("dlg");
  const heading = opts.titleKey ? h("h2", { id: titleId, i18n: opts.titleKey }) : h("h2", { id: titleId, text: opts.title || "" });
  const closeBtn = h("button", {
    type: "button", class: "icon-btn dialog-x", testid: (opts.testid || "dialog") + "-close",
    i18nAttr: { "aria-label": "common.close", title: "common.close" },
  }, "×");
  const body = h("div", { class: "dialog-body" });
  if (opts.body) body.append(opts.body);
  const footer = opts.actions ? h("div", { class: "dialog-actions" }, opts.actions) : null;
  const dlg = h("dialog", {
    class: "dialog" + (opts.kind ? " dialog-" + opts.kind : ""),
    testid: opts.testid, "aria-labelledby": titleId, "aria-modal": opts.modal === false ? "false" : "true",
  }, h("div", { class: "dialog-head" }, heading, closeBtn), body, footer);
  const opener = document.activeElement;
  const modal = opts.modal !== false;
  let closed = false;
  // Escape anywhere closes a non-modal panel, unless a modal dialog is up.
  const onDocKey = (e) => {
    if (e.key === "Escape" && !e.defaultPrevented && !document.querySelector('dialog[open][aria-modal="true"]')) {
      e.preventDefault();
      close();
    }
  };
  function close(result) {
    if (closed) return;
    closed = true;
    document.removeEventListener("keydown", onDocKey);
    if (dlg.open) dlg.close();
    dlg.remove();
    if (opts.onClose) opts.onClose(result);
    if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
  }
  closeBtn.addEventListener("click", () => close());
  // Escape: the browser fires "cancel"; close our way (cleanup, focus).
  dlg.addEventListener("cancel", (e) => {
    e.preventDefault();
    close();
  });
  dlg.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      close();
      return;
    }
    if (e.key !== "Tab" || !modal) return;
    const items = [...dlg.querySelectorAll(FOCUSABLE)].filter(visible);
    if (items.length === 0) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && (document.activeElement === first || !dlg.contains(document.activeElement))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (document.activeElement === last || !dlg.contains(document.activeElement))) {
      e.preventDefault();
      first.focus();
    }
  });
  // A click on the backdrop (the dialog box itself, outside its content)
  // closes it too.
  dlg.addEventListener("mousedown", (e) => {
    if (modal && e.target === dlg) {
      const r = dlg.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside) close();
    }
  });
  document.body.appendChild(dlg);
  if (modal) dlg.showModal();
  else {
    dlg.show();
    document.addEventListener("keydown", onDocKey);
  }
  const first = body.querySelector("[autofocus]") || [...body.querySelectorAll("input, select, textarea")].find(visible) ||
    [...dlg.querySelectorAll(FOCUSABLE)].filter(visible).find((el) => el !== closeBtn) || closeBtn;
  first.focus();
  return { el: dlg, body, close };
}

// confirmDialog(message) resolves true when confirm-ok is pressed.
export function confirmDialog(message, okKey = "common.confirm") {
  return new Promise((resolve) => {
    let answer = false;
    const ok = h("button", { type: "button", class: "btn danger", testid: "confirm-ok", i18n: okKey });
    const cancel = h("button", { type: "button", class: "btn", testid: "confirm-cancel", i18n: "common.cancel" });
    const d = openDialog({
      testid: "confirm-dialog", titleKey: "confirm.title",
      body: h("p", { testid: "confirm-message", text: message }),
      actions: [cancel, ok],
      onClose: () => resolve(answer),
    });
    ok.addEventListener("click", () => {
      answer = true;
      d.close();
    });
    cancel.addEventListener("click", () => d.close());
    ok.focus();
  });
}

// Copies text; true when it worked.
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Older browsers or an insecure origin: the textarea fallback.
    const ta = h("textarea", { class: "sr-only", readonly: true });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    ta.remove();
    return ok;
  }
}

