// Checks the UI's dictionaries: English and Chinese have the same keys,
// and every key the sources name (i18n: "…", t("…"), …Key: "…", and
// "section.key" string literals) exists. Run by build.mjs; exits 1 on a gap.
import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const src = path.join(path.dirname(fileURLToPath(import.meta.url)), "src");

function files(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".js") ? [p] : [];
  });
}

export function checkI18n() {
  const text = readFileSync(path.join(src, "i18n.js"), "utf8");
  const dict = (name) => {
    const start = text.indexOf(`const ${name} = {`);
    const end = text.indexOf("\n};", start);
    return new Set([...text.slice(start, end).matchAll(/^\s*"([\w.]+)":/gm)].map((m) => m[1]));
  };
  const en = dict("en");
  const zh = dict("zh");
  const problems = [];
  for (const k of en) if (!zh.has(k)) problems.push(`zh lacks ${k}`);
  for (const k of zh) if (!en.has(k)) problems.push(`en lacks ${k}`);
  const sections = new Set([...en].map((k) => k.split(".")[0]));
  for (const f of files(src)) {
    if (f.endsWith("i18n.js")) continue;
    const body = readFileSync(f, "utf8");
    for (const m of body.matchAll(/"([a-z]+)\.([a-zA-Z]+(?:\.[a-zA-Z]+)?)"/g)) {
      const key = m[1] + "." + m[2];
      if (sections.has(m[1]) && !en.has(key) && !/\.(js|css|mjs)$/.test(key)) {
        problems.push(`${path.relative(src, f)}: unknown key ${key}`);
      }
    }
  }
  return problems;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const p = checkI18n();
  for (const x of p) console.error("i18n: " + x);
  process.exit(p.length ? 1 : 0);
}
