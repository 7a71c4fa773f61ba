// The "add keys" and "export keys" dialogs of the keys page.
import { api } from "./api.js";
import { copyText, openDialog } from "./dialog.js";
import { checkField, field, fill, h, select } from "./dom.js";
import { num } from "./format.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";

// openAdd({providers, provider, onAdded}): POST /admin/api/keys with the
// pasted or loaded text; the API splits on newlines, commas, spaces,
// semicolons and tabs and reports added / duplicate / rejected entries.
export function openAdd({ providers, provider, onAdded }) {
  const prov = h("select", { testid: "add-provider" });
  for (const p of providers) prov.appendChild(h("option", { value: p, text: p }));
  if (provider) prov.value = provider;
  const text = h("textarea", { testid: "add-text", rows: 8, spellcheck: "false", autocomplete: "off", class: "mono" });
  const file = h("input", { type: "file", testid: "add-file", accept: ".txt,.csv,.tsv,text/plain,text/csv" });
  const label = h("input", { type: "text", testid: "add-label", maxlength: "200", autocomplete: "off" });
  const submit = h("button", { type: "submit", class: "btn primary", testid: "add-submit", i18n: "add.submit" });
  const result = h("div", { class: "add-result", testid: "add-result", hidden: true, "aria-live": "polite" });

  file.addEventListener("change", async () => {
    const f = file.files && file.files[0];
    if (!f) return;
    const content = await f.text();
    text.value = text.value.trim() ? text.value.replace(/\s*$/, "\n") + content : content;
    text.dispatchEvent(new Event("input"));
  });

  const form = h("form", { class: "form", novalidate: true },
    field("add.provider", prov),
    field("add.text", text, "add.textHint"),
    field("add.file", file),
    field("add.label", label),
    h("div", { class: "form-actions" }, submit),
    result);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!text.value.trim()) {
      toast(t("add.empty"), "error");
      text.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = t("add.busy");
    try {
      const body = { provider: prov.value, keys: text.value };
      if (label.value.trim()) body.label = label.value.trim();
      const r = await api("/admin/api/keys", { method: "POST", body });
      showResult(r);
      if (r.added > 0) text.value = "";
      if (onAdded) onAdded(r);
    } catch {
      // the toast has the API's message
    } finally {
      submit.disabled = false;
      submit.textContent = t("add.submit");
    }
  });

  function showResult(r) {
    const rejected = r.rejected_lines || [];
    fill(result,
      h("dl", { class: "result-counts" },
        h("div", {}, h("dt", { i18n: "add.added" }), h("dd", { testid: "add-added", text: String(r.added) })),
        h("div", {}, h("dt", { i18n: "add.duplicates" }), h("dd", { testid: "add-duplicates", text: String(r.duplicates) })),
        h("div", {}, h("dt", { i18n: "add.rejected" }), h("dd", { testid: "add-rejected", text: String(r.rejected) }))),
      rejected.length
        ? h("div", {},
          h("h3", { i18n: "add.rejectedLines" }),
          h("ul", { class: "rejected-lines", testid: "add-rejected-lines" }, rejected.map((x) => h("li", { testid: "add-rejected-line" },
            h("span", { class: "muted", text: t("add.line", { n: x.line }) + ": " }),
            h("code", { class: "mono", text: x.value }),
            " — ",
            h("span", { text: x.reason })))))
        : null);
    result.hidden = false;
  }

  return openDialog({ testid: "add-dialog", titleKey: "add.title", body: form, kind: "wide" });
}

const SEPARATORS = {
  newline: "\n", comma: ",", space: " ", semicolon: ";", tab: "\t",
};

// openExport({provider, selection, scope}): POST /admin/api/keys/export.
// provider: the current tab ("" for all); selection: selected key ids.
export function openExport({ provider, selection, scope }) {
  const withBalance = h("input", { type: "checkbox", testid: "export-with-balance" });
  const sep = select({ testid: "export-sep" }, [
    ["newline", "export.sepNewline"], ["comma", "export.sepComma"], ["space", "export.sepSpace"],
    ["semicolon", "export.sepSemicolon"], ["tab", "export.sepTab"], ["custom", "export.sepCustom"],
  ]);
  const custom = h("input", { type: "text", testid: "export-sep-custom", maxlength: "10", autocomplete: "off", class: "mono short" });
  const scopeSel = select({ testid: "export-scope" }, [
    ["all", "export.scopeAll"], ["valid", "export.scopeValid"], ["balance", "export.scopeBalance"], ["selection", "export.scopeSelection"],
  ]);
  scopeSel.value = scope || "all";
  const minBal = h("input", { type: "number", testid: "export-min-balance", step: "any", min: "0", inputmode: "decimal", class: "short" });
  const run = h("button", { type: "submit", class: "btn primary", testid: "export-run", i18n: "export.run" });
  const out = h("textarea", { testid: "export-text", rows: 8, readonly: true, spellcheck: "false", class: "mono" });
  const count = h("p", { class: "muted", testid: "export-count", "aria-live": "polite" });
  const copy = h("button", { type: "button", class: "btn", testid: "export-copy", i18n: "export.copy" });
  const download = h("button", { type: "button", class: "btn", testid: "export-download", i18n: "export.download" });
  const note = h("p", { class: "muted small" });

  // Typing a custom separator or a threshold picks the matching option.
  custom.addEventListener("input", () => {
    if (custom.value) sep.value = "custom";
  });
  minBal.addEventListener("input", () => {
    if (minBal.value !== "") scopeSel.value = "balance";
  });
  function renderNote() {
    const parts = [];
    if (provider && scopeSel.value !== "selection") parts.push(t("export.providerNote", { p: provider }));
    if (scopeSel.value === "selection") parts.push(t("keys.selected") + ": " + num(selection.length));
    note.textContent = parts.join(" · ");
  }
  scopeSel.addEventListener("change", renderNote);
  renderNote();

  const form = h("form", { class: "form", novalidate: true },
    h("div", { class: "form-row" },
      field("export.scope", scopeSel),
      field("export.minBalance", minBal)),
    note,
    h("div", { class: "form-row" },
      field("export.sep", sep),
      field("export.sepCustomLabel", custom)),
    checkField("export.withBalance", withBalance),
    h("div", { class: "form-actions" }, run),
    field("export.result", out),
    count,
    h("div", { class: "form-actions" }, copy, download));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { with_balance: withBalance.checked };
    if (sep.value === "custom") {
      if (!custom.value) {
        toast(t("export.needCustom"), "error");
        custom.focus();
        return;
      }
      body.separator = custom.value;
    } else body.separator = SEPARATORS[sep.value];
    switch (scopeSel.value) {
      case "selection":
        if (!selection.length) {
          toast(t("export.noSelection"), "error");
          return;
        }
        body.ids = selection;
        break;
      case "valid":
        body.only = "valid";
        break;
      case "balance":
        if (minBal.value === "" || Number.isNaN(Number(minBal.value))) {
          toast(t("export.needMin"), "error");
          minBal.focus();
          return;
        }
        body.only = "balance";
        body.min_balance = Number(minBal.value);
        break;
      default:
        body.only = "all";
    }
    if (provider && scopeSel.value !== "selection") body.provider = provider;
    run.disabled = true;
    run.textContent = t("export.busy");
    try {
      const res = await api("/admin/api/keys/export", { method: "POST", body, raw: true });
      out.value = await res.text();
      const n = res.headers.get("X-Keypool-Count");
      count.textContent = t("export.count", { n: n == null ? "?" : num(Number(n)) });
    } catch {
      // the toast has the API's message
    } finally {
      run.disabled = false;
      run.textContent = t("export.run");
    }
  });

  copy.addEventListener("click", async () => {
    const ok = await copyText(out.value);
    toast(t(ok ? "common.copied" : "common.copyFailed"), ok ? "info" : "error");
  });
  download.addEventListener("click", () => {
    const blob = new Blob([out.value], { type: "text/plain;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: "keypool-keys.txt", hidden: true });
    form.appendChild(a); // inside the modal dialog: the page behind it is inert
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });

  return openDialog({ testid: "export-dialog", titleKey: "export.title", body: form, kind: "wide" });
}
