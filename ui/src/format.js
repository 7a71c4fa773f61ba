// Number, time and duration formatting in the current language.
import { lang } from "./i18n.js";

function locale() {
  return lang() === "zh" ? "zh-CN" : "en-US";
}

// A count: 1234 → "1,234".
export function num(n) {
  if (n == null || Number.isNaN(n)) return "—";
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(n);
}

// A balance: up to 4 decimals, as providers report them ("—" when unknown).
export function money(n) {
  if (n == null || Number.isNaN(n)) return "—";
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 4 }).format(n);
}

// 12345 → "12.3k"; for chart ticks and token counts.
export function compact(n) {
  if (n == null) return "—";
  return new Intl.NumberFormat(locale(), { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

export function percent(x) {
  if (x == null || Number.isNaN(x)) return "—";
  return new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 1 }).format(x);
}

const p2 = (n) => String(n).padStart(2, "0");

// A unix-ms time, local, as "2025-01-31 14:05:09" (the same in both
// languages, and compact in tables); "—" for 0.
export function time(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

export function shortTime(ms) {
  const d = new Date(ms);
  return p2(d.getHours()) + ":" + p2(d.getMinutes());
}

// A UTC day (unix ms of its midnight) as "MM-DD".
export function utcDay(ms) {
  const d = new Date(ms);
  return String(d.getUTCMonth() + 1).padStart(2, "0") + "-" + String(d.getUTCDate()).padStart(2, "0");
}

// Seconds as "1h 02m 03s" / "4m 05s" / "6s".
export function duration(s) {
  if (s == null || !Number.isFinite(s)) return "—";
  s = Math.max(0, Math.round(s));
  const hrs = Math.floor(s / 3600);
  const min = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const p = (n) => String(n).padStart(2, "0");
  if (hrs > 0) return `${hrs}h ${p(min)}m ${p(sec)}s`;
  if (min > 0) return `${min}m ${p(sec)}s`;
  return `${sec}s`;
}
