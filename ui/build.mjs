// Builds the admin UI: ui/src/main.js (and the CSS it imports) bundled and
// minified by esbuild into ui/public/assets/app.js and app.css, Chart.js
// included. Any warning fails the build, and so does a dictionary gap
// (check-i18n.mjs). Run by `make ui`.
//   node ui/build.mjs            build once
//   node ui/build.mjs --watch    rebuild on every change
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { checkI18n } from "./check-i18n.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const watch = process.argv.includes("--watch");

const options = {
  entryPoints: { app: path.join(here, "src", "main.js") },
  outdir: path.join(here, "public", "assets"),
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome90", "firefox90", "safari14"],
  legalComments: "eof",
  metafile: true,
  logLevel: "silent",
  define: { "process.env.NODE_ENV": '"production"' },
};

function report(result) {
  for (const m of esbuild.formatMessagesSync(result.warnings, { kind: "warning", color: false })) {
    console.error(m);
  }
  for (const [file, out] of Object.entries(result.metafile.outputs)) {
    console.log(`ui: ${path.relative(process.cwd(), file)} ${(out.bytes / 1024).toFixed(1)} KiB`);
  }
  return result.warnings.length === 0;
}

if (watch) {
  const ctx = await esbuild.context({
    ...options,
    plugins: [{ name: "report", setup(b) { b.onEnd((r) => { if (r.metafile) report(r); }); } }],
  });
  await ctx.watch();
  console.log("ui: watching ui/src for changes");
} else {
  const gaps = checkI18n();
  if (gaps.length) {
    for (const g of gaps) console.error("ui: i18n: " + g);
    process.exit(1);
  }
  let result;
  try {
    result = await esbuild.build(options);
  } catch (e) {
    // esbuild has printed nothing (logLevel silent): print its errors.
    for (const m of esbuild.formatMessagesSync(e.errors || [], { kind: "error", color: false })) console.error(m);
    if (!e.errors) console.error(e);
    process.exit(1);
  }
  if (!report(result)) {
    console.error("ui: the build has warnings; fix them");
    process.exit(1);
  }
}
