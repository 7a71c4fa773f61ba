// One toast at a time (data-testid="toast"): API errors and short
// confirmations. Errors stay longer and are announced assertively.
let timer;

export function toast(message, kind = "info") {
  const el = document.querySelector('[data-testid="toast"]');
  if (!el) return;
  clearTimeout(timer);
  el.textContent = String(message);
  el.dataset.kind = kind;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.hidden = false;
  // As a popover it is shown in the top layer, above an open modal dialog.
  if (typeof el.showPopover === "function") {
    try {
      if (el.matches(":popover-open")) el.hidePopover();
      el.showPopover();
    } catch {
      // not shown as a popover: still shown in the page
    }
  }
  timer = setTimeout(() => hideToast(), kind === "error" ? 8000 : 4000);
}

export function hideToast() {
  const el = document.querySelector('[data-testid="toast"]');
  if (!el) return;
  el.hidden = true;
  if (typeof el.hidePopover === "function" && el.matches(":popover-open")) el.hidePopover();
}
