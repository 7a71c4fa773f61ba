// Small DOM helpers. Every piece of text goes in through textContent or
// text nodes: nothing here (or anywhere in the UI) parses HTML.
import { t } from "./i18n.js";

// Properties set as DOM properties rather than attributes.
const PROPS = new Set(["value", "checked", "disabled", "hidden", "selected", "indeterminate", "multiple", "readOnly", "required"]);

// h(tag, props, ...children) builds an element. props:
//   text: textContent; i18n: a dictionary key (kept in data-i18n, so a
//   language switch retranslates it); i18nAttr: {attribute: key};
//   testid: data-testid; class; on<Event>: listeners; dataset: {};
//   any other: an attribute (true → present, false/null → absent).
// children: nodes, strings (text nodes), arrays, null/false (skipped).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k === "i18n") {
        el.dataset.i18n = v;
        el.textContent = t(v);
      } else if (k === "i18nAttr") {
        el.dataset.i18nAttr = Object.entries(v).map(([a, key]) => a + ":" + key).join(";");
        for (const [a, key] of Object.entries(v)) el.setAttribute(a, t(key));
      } else if (k === "testid") el.setAttribute("data-testid", v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
      else if (PROPS.has(k)) el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

// Replaces el's children.
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A labelled form field: <label for=id>text</label> + control.
let seq = 0;
export function uid(prefix = "kp") {
  seq += 1;
  return prefix + "-" + seq;
}

export function field(labelKey, control, hintKey) {
  if (!control.id) control.id = uid("f");
  const hint = hintKey ? h("small", { class: "hint", id: control.id + "-hint", i18n: hintKey }) : null;
  if (hint) control.setAttribute("aria-describedby", hint.id);
  return h("div", { class: "field" }, h("label", { for: control.id, i18n: labelKey }), control, hint);
}

// A checkbox with its label after it.
export function checkField(labelKey, input) {
  if (!input.id) input.id = uid("c");
  return h("div", { class: "field check" }, input, h("label", { for: input.id, i18n: labelKey }));
}

// A <select> of [value, dictionary key] options.
export function select(props, options) {
  const s = h("select", props);
  for (const [value, key] of options) {
    s.appendChild(h("option", { value, i18n: key }));
  }
  if (props && props.value != null) s.value = props.value;
  return s;
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
