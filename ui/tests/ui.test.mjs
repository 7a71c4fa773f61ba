// Browser tests of the admin UI: Playwright (playwright-core) driving
// Debian's headless chromium against a keypool under `wrangler dev`.
// e2e/ui_test.go (TestUI) starts the worker and a fake upstream, seeds a
// small pool and runs this file with `node --test`, passing:
//   BASE_URL        the worker, e.g. http://127.0.0.1:8787
//   ADMIN_PASSWORD  its admin password
//   CLIENT_TOKEN    its AUTH_KEY
//   ARTIFACTS       a directory for screenshots (and failure shots)
//   FAKE_INFO       JSON about the fake upstream and what Go seeded
// Each test runs in a fresh browser context (cookies, storage), at
// 1280×800 unless it says otherwise, and elements are found by their
// data-testid only. Tests add their own keys, each set in a provider or
// under a label of its own, so they do not depend on one another.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdir } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { chromium } from "playwright-core";

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through TestUI (go test -tags e2e ./e2e/ -run TestUI)`);
  return v;
}

const BASE_URL = env("BASE_URL").replace(/\/$/, "");
const ADMIN_PASSWORD = env("ADMIN_PASSWORD");
const CLIENT_TOKEN = env("CLIENT_TOKEN");
const ARTIFACTS = env("ARTIFACTS");
const FAKE = JSON.parse(process.env.FAKE_INFO || "{}");
const CHROMIUM = "/usr/bin/chromium";

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let browser;

before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
});

// ---- helpers ---------------------------------------------------------

const hex = (n) => randomBytes(n).toString("hex");
const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// admin calls the admin API with the password, for setting up and
// checking what the UI did.
async function admin(method, p, body) {
  const res = await fetch(BASE_URL + "/admin/api" + p, {
    method,
    headers: { Authorization: "Bearer " + ADMIN_PASSWORD, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} /admin/api${p}: ${res.status} ${text}`);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// importKeys adds keys through the API; one call per label.
async function importKeys(provider, keys, label) {
  const r = await admin("POST", "/keys", { provider, keys: keys.join("\n"), ...(label ? { label } : {}) });
  assert.equal(r.added, keys.length, `import of ${keys.length} ${provider} keys: ${JSON.stringify(r)}`);
  return r;
}

// listKeys: the pool as the API lists it (masked), in id order.
async function listKeys(provider) {
  const r = await admin("GET", "/keys" + (provider ? "?provider=" + encodeURIComponent(provider) : ""));
  return r.keys.sort((a, b) => a.id - b.id);
}

const mask = (s) => s.slice(0, 5) + "…" + s.slice(-4);

// eventually polls fn until it returns a truthy value (returned), or
// fails with what, and the last value or error.
async function eventually(what, fn, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const got = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${got}`);
    }
    await sleep(100);
  }
}

// withPage runs fn with a page in a fresh context. Uncaught errors in the
// page fail the test; a failing test leaves a screenshot in ARTIFACTS.
async function withPage(t, opts, fn) {
  const context = await browser.newContext({
    viewport: opts.viewport || DESKTOP,
    baseURL: BASE_URL,
    locale: "en-US",
    acceptDownloads: true,
  });
  if (opts.permissions) await context.grantPermissions(opts.permissions, { origin: BASE_URL });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // Failed requests are summed up once, by route, at the end (the
  // console's "Failed to load resource" lines do not say which).
  const httpErrors = new Map();
  page.on("response", (r) => {
    if (r.status() < 400) return;
    const u = new URL(r.url());
    const k = `${r.status()} ${r.request().method()} ${u.pathname}`;
    httpErrors.set(k, (httpErrors.get(k) || 0) + 1);
  });
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) t.diagnostic(`browser console: ${m.text()}`);
  });
  // The UI must never use alert/confirm/prompt; an XSS payload that ran
  // alert would show here too.
  page.on("dialog", (d) => {
    pageErrors.push(`unexpected ${d.type()} dialog: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  try {
    await fn(page, context);
    assert.deepEqual(pageErrors, [], "uncaught errors in the page");
  } catch (e) {
    const shot = path.join(ARTIFACTS, "failure-" + slug(t.name) + ".png");
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    t.diagnostic(`failed at ${page.url()}; screenshot ${shot}`);
    if (pageErrors.length) t.diagnostic(`page errors: ${pageErrors.join(" | ")}`);
    throw e;
  } finally {
    if (httpErrors.size) t.diagnostic(`HTTP errors the page met: ${[...httpErrors].map(([k, n]) => (n > 1 ? `${k} ×${n}` : k)).join(", ")}`);
    await context.close();
  }
}

const byId = (page, id) => page.getByTestId(id, { exact: true });

async function login(page, password = ADMIN_PASSWORD) {
  await page.goto("/");
  await byId(page, "login-password").fill(password);
  await byId(page, "login-submit").click();
}

async function loginOK(page) {
  await login(page);
  await byId(page, "card-total-value").waitFor();
}

// go opens a section through the nav (opening the menu first on a phone,
// where the nav may be folded away).
async function go(page, section) {
  const link = byId(page, "nav-" + section);
  await link.waitFor({ state: "attached" });
  if (!(await link.isVisible())) {
    const menu = page.getByRole("button", { name: /menu|菜单/i });
    if (await menu.count()) await menu.first().click();
  }
  await link.click();
  const landmark = {
    dashboard: "card-total-value",
    keys: "keys-search",
    tokens: "token-create",
    settings: "settings-save",
    audit: "audit-row",
    requests: "requests-table",
    api: "api-curl",
  }[section];
  await byId(page, landmark).first().waitFor();
}

// choose sets a choice control to value: a <select>, or a group of radio
// buttons (or buttons with data-value) under the test id.
async function choose(loc, value) {
  const n = await loc.count();
  if (n === 0) throw new Error(`choose ${value}: no element`);
  const tag = await loc.first().evaluate((e) => e.tagName);
  if (n === 1 && tag === "SELECT") {
    await loc.selectOption(value);
    return;
  }
  for (let i = 0; i < n; i++) {
    const el = loc.nth(i);
    const radio = (await el.evaluate((e) => e.tagName === "INPUT")) ? el : el.locator(`input[value="${value}"]`);
    if ((await radio.count()) && (await radio.first().getAttribute("value")) === value) {
      await radio.first().check();
      return;
    }
    const btn = el.locator(`[data-value="${value}"]`);
    if (await btn.count()) {
      await btn.first().click();
      return;
    }
  }
  throw new Error(`choose ${value}: no such choice in ${n} <${tag.toLowerCase()}> element(s)`);
}

// options lists a <select>'s option values.
const options = (loc) => loc.locator("option").evaluateAll((os) => os.map((o) => o.value));

// text of a control or an element.
async function textOf(loc) {
  return loc.evaluate((e) => ("value" in e && (e.tagName === "TEXTAREA" || e.tagName === "INPUT") ? e.value : e.textContent));
}

// num reads the first number in an element's text.
async function num(loc) {
  const s = (await loc.textContent()).replace(/[,\s]/g, "");
  const m = s.match(/-?\d+(\.\d+)?/);
  if (!m) throw new Error(`no number in ${JSON.stringify(s)}`);
  return Number(m[0]);
}

async function rowIds(page) {
  return byId(page, "key-row").evaluateAll((rs) => rs.map((r) => Number(r.dataset.id)));
}

async function waitRows(page, n, what) {
  await eventually(`${n} key rows (${what})`, async () => (await byId(page, "key-row").count()) === n || `${await byId(page, "key-row").count()} rows`);
}

async function closeDialogs(page) {
  await page.keyboard.press("Escape");
}

async function pageLabel(page) {
  return ((await byId(page, "keys-page").textContent()) || "").replace(/\s+/g, " ").trim();
}

// ---- tests -----------------------------------------------------------

test("login shows the dashboard", async (t) => {
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    const api = await admin("GET", "/keys");
    await eventually("card-total-value = the pool's size", async () => (await num(byId(page, "card-total-value"))) === api.total);
    for (const c of ["chart-balance-dist", "chart-status", "chart-balance-trend", "chart-requests", "chart-tokens", "chart-top-models", "chart-top-tokens"]) {
      const canvas = byId(page, c);
      assert.equal(await canvas.count(), 1, `${c} present`);
      assert.equal(await canvas.evaluate((e) => e.tagName), "CANVAS", `${c} is a canvas`);
    }
    await byId(page, "newest-keys").waitFor();
    if (FAKE.balances?.length) {
      assert.equal(await num(byId(page, "card-balance-max-value")), Math.max(...FAKE.balances), "card-balance-max");
      assert.equal(await num(byId(page, "card-balance-min-value")), Math.min(...FAKE.balances), "card-balance-min");
    }
  });
});

test("a wrong password shows login-error", async (t) => {
  await withPage(t, {}, async (page) => {
    await login(page, "not-the-password-" + hex(4));
    const err = byId(page, "login-error");
    await err.waitFor();
    assert.ok(((await err.textContent()) || "").trim().length > 0, "login-error says something");
    assert.equal(await byId(page, "card-total-value").count(), 0, "no dashboard");
    assert.ok(await byId(page, "login-password").isVisible(), "still on the login form");
  });
});

test("bulk import counts added, duplicate and rejected keys", async (t) => {
  await withPage(t, {}, async (page) => {
    const keys = [1, 2, 3].map((i) => `sk-uiimp${i}-${hex(12)}`);
    // One duplicate line and one junk line. The junk is one token: the
    // importer splits lines at spaces too, so "not a key!" would be
    // three rejected entries.
    const text = [keys[0], keys[1], keys[2], keys[1], "not-a-key!"].join("\n");
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "keys-add").click();
    await choose(byId(page, "add-provider"), "openai");
    await byId(page, "add-text").fill(text);
    await byId(page, "add-submit").click();
    await byId(page, "add-result").waitFor();
    assert.equal(await num(byId(page, "add-added")), 3, "add-added");
    assert.equal(await num(byId(page, "add-duplicates")), 1, "add-duplicates");
    assert.equal(await num(byId(page, "add-rejected")), 1, "add-rejected");
    const pool = (await listKeys("openai")).map((k) => k.key);
    for (const k of keys) assert.ok(pool.includes(mask(k)), `${mask(k)} in the pool`);
  });
});

test("search and state filter narrow the key list", async (t) => {
  const tag = "flt" + hex(4);
  const keys = [1, 2, 3].map((i) => `sk-uiflt${i}-${hex(12)}`);
  await importKeys("openai", keys, tag + "-a");
  await importKeys("openai", [`sk-uiflt9-${hex(12)}`], "other" + hex(4));
  const mine = (await listKeys("openai")).filter((k) => k.label === tag + "-a");
  assert.equal(mine.length, 3);
  await admin("PATCH", "/keys/" + mine[1].id, { status: "disabled" });
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "keys-search").fill(tag);
    await waitRows(page, 3, `search ${tag}`);
    assert.deepEqual((await rowIds(page)).sort((a, b) => a - b), mine.map((k) => k.id), "the searched keys");
    for (const l of await byId(page, "key-label").allTextContents()) assert.equal(l, tag + "-a");
    await choose(byId(page, "keys-filter-state"), "disabled");
    await waitRows(page, 1, "state disabled");
    assert.deepEqual(await rowIds(page), [mine[1].id], "the disabled key");
    await choose(byId(page, "keys-filter-state"), "active");
    await waitRows(page, 2, "state active");
    assert.deepEqual((await rowIds(page)).sort((a, b) => a - b), [mine[0].id, mine[2].id], "the active keys");
  });
});

test("sort by balance orders the key list both ways; balance floor filters", async (t) => {
  // The SiliconFlow keys Go seeded, whose check read their balances: in
  // neither id nor string order.
  const mine = (await listKeys("siliconflow")).filter((k) => k.balance != null);
  assert.ok(mine.length >= 3, `seeded siliconflow keys with balances: ${JSON.stringify(mine)}`);
  const balanceOf = new Map(mine.map((k) => [k.id, k.balance]));
  const asc = JSON.stringify([...balanceOf.values()].sort((a, b) => a - b));
  const desc = JSON.stringify([...balanceOf.values()].sort((a, b) => b - a));
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "provider-tab-siliconflow").click();
    await waitRows(page, mine.length, "siliconflow tab");
    const sort = byId(page, "keys-sort");
    const field = (await options(sort)).find((v) => /balance/i.test(v));
    assert.ok(field, `keys-sort offers a balance order; it has ${JSON.stringify(await options(sort))}`);
    await choose(sort, field);
    const order = async () => JSON.stringify((await rowIds(page)).map((id) => balanceOf.get(id)));
    const first = await eventually(`rows sorted by balance (${asc} or ${desc})`, async () => {
      const o = await order();
      return (o === asc || o === desc) && o;
    });
    const want = first === asc ? desc : asc;
    const dir = byId(page, "keys-sort-dir");
    if ((await dir.evaluate((e) => e.tagName)) === "SELECT") {
      const cur = await dir.inputValue();
      await dir.selectOption((await options(dir)).find((v) => v !== cur));
    } else {
      await dir.click();
    }
    await eventually(`rows sorted by balance the other way (${want})`, async () => (await order()) === want || (await order()));
    t.diagnostic(`balances shown: ${first}, then ${want}`);
    // And the balance floor filter keeps the keys at or above it.
    const floor = 10;
    const above = mine.filter((k) => k.balance >= floor).length;
    await byId(page, "keys-filter-balance-min").fill(String(floor));
    await waitRows(page, above, `balance ≥ ${floor}`);
    for (const id of await rowIds(page)) assert.ok(balanceOf.get(id) >= floor, `key ${id} balance ${balanceOf.get(id)} ≥ ${floor}`);
  });
});

test("pagination: 25 keys, 10 a page", async (t) => {
  const keys = Array.from({ length: 25 }, (_, i) => `csk-uipage${String(i).padStart(2, "0")}-${hex(12)}`);
  await importKeys("cerebras", keys);
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "provider-tab-cerebras").click();
    await choose(byId(page, "keys-page-size"), "10");
    await waitRows(page, 10, "page 1");
    await eventually('keys-page "1 / 3"', async () => /\b1\s*\/\s*3\b/.test(await pageLabel(page)) || (await pageLabel(page)));
    const p1 = await rowIds(page);
    await byId(page, "keys-next").click();
    await eventually('keys-page "2 / 3"', async () => /\b2\s*\/\s*3\b/.test(await pageLabel(page)) || (await pageLabel(page)));
    await waitRows(page, 10, "page 2");
    const p2 = await rowIds(page);
    assert.equal(p1.filter((id) => p2.includes(id)).length, 0, `pages 1 and 2 share no key: ${p1} / ${p2}`);
    await byId(page, "keys-next").click();
    await eventually('keys-page "3 / 3"', async () => /\b3\s*\/\s*3\b/.test(await pageLabel(page)) || (await pageLabel(page)));
    await waitRows(page, 5, "page 3");
    assert.ok(await byId(page, "keys-next").isDisabled(), "keys-next disabled on the last page");
    const all = new Set([...p1, ...p2, ...(await rowIds(page))]);
    assert.equal(all.size, 25, "the three pages hold the 25 keys");
    await byId(page, "keys-prev").click();
    await eventually('keys-page "2 / 3" again', async () => /\b2\s*\/\s*3\b/.test(await pageLabel(page)) || (await pageLabel(page)));
  });
});

test("export with a custom separator: text, clipboard and download agree", async (t) => {
  const keys = [1, 2, 3, 4].map((i) => `xai-uiexp${i}-${hex(14)}`);
  await importKeys("grok", keys);
  const want = keys.join(" | ");
  await withPage(t, { permissions: ["clipboard-read", "clipboard-write"] }, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "provider-tab-grok").click();
    await waitRows(page, 4, "grok tab");
    await byId(page, "keys-select-page").check();
    await eventually("keys-selected-count 4", async () => (await num(byId(page, "keys-selected-count"))) === 4);
    await byId(page, "bulk-export").click();
    await byId(page, "export-dialog").waitFor();
    await choose(byId(page, "export-scope"), "selection");
    const withBalance = byId(page, "export-with-balance");
    if (await withBalance.isChecked()) await withBalance.uncheck();
    await choose(byId(page, "export-sep"), "custom");
    await byId(page, "export-sep-custom").fill(" | ");
    await byId(page, "export-run").click();
    const text = await eventually("export-text", async () => textOf(byId(page, "export-text")));
    assert.equal(text, want, "export-text");

    await byId(page, "export-copy").click();
    const clip = await eventually("the clipboard", () => page.evaluate(() => navigator.clipboard.readText()));
    assert.equal(clip, want, "clipboard");

    const [download] = await Promise.all([page.waitForEvent("download"), byId(page, "export-download").click()]);
    assert.equal(download.suggestedFilename(), "keypool-keys.txt", "download file name");
    const file = await readFile(await download.path(), "utf8");
    assert.equal(file, want, "downloaded file");
  });
});

test("a check job can be stopped", async (t) => {
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    const before = (await admin("GET", "/checks")).jobs.map((j) => j.id);
    await byId(page, "keys-check-all").click();
    // A confirmation, if the UI asks for one.
    const ok = byId(page, "confirm-ok");
    if (await ok.isVisible({ timeout: 1000 }).catch(() => false)) await ok.click();
    await byId(page, "job-progress").waitFor();
    assert.equal(await byId(page, "job-progress").getAttribute("role"), "progressbar");
    const job = await eventually("a new check job", async () => (await admin("GET", "/checks")).jobs.find((j) => !before.includes(j.id)));
    await byId(page, "job-stop").click();
    await eventually("job-state stopped", async () => /stopped/i.test(await byId(page, "job-state").textContent()) || (await byId(page, "job-state").textContent()));
    const now = (await admin("GET", "/checks")).jobs.find((j) => j.id === job.id);
    assert.equal(now.state, "stopped", `job ${job.id} as the API sees it: ${JSON.stringify(now)}`);
    assert.ok(now.done < now.total, `stopped before the end: ${now.done}/${now.total}`);
    const v = Number(await byId(page, "job-progress").getAttribute("aria-valuenow"));
    assert.ok(v >= 0 && v <= 100, `aria-valuenow ${v}`);
  });
});

test("a token made in the UI calls the proxy", async (t) => {
  const name = "ui-token-" + hex(4);
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "tokens");
    await byId(page, "token-create").click();
    await byId(page, "token-name").fill(name);
    await byId(page, "token-submit").click();
    const secret = (await eventually("token-secret", async () => textOf(byId(page, "token-secret")))).trim();
    assert.ok(secret.length >= 16 && !/\s/.test(secret), `token-secret looks like a token: ${secret.slice(0, 7)}…`);
    await eventually(`a token-row for ${name}`, async () => (await byId(page, "token-row").filter({ hasText: name }).count()) === 1);

    const model = FAKE.model || "gpt-4o-mini";
    const res = await fetch(BASE_URL + "/v1/chat/completions", {
      method: "POST",
      headers: { Authorization: "Bearer " + secret, "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, `proxy answer: ${body}`);
    const got = JSON.parse(body);
    assert.equal(got.model, model);
    if (FAKE.chat_completion) {
      assert.equal(got.choices[0].message.content, JSON.parse(FAKE.chat_completion).choices[0].message.content, "the fake upstream's answer");
    }
    // The client token from the environment still works alongside.
    const res2 = await fetch(BASE_URL + "/v1/models", { headers: { Authorization: "Bearer " + CLIENT_TOKEN } });
    assert.equal(res2.status, 200, "GET /v1/models with CLIENT_TOKEN");
  });
});

test("the request log finds a refused request by its id and shows it in a drawer", async (t) => {
  // A token scoped to one model, calling another: refused (403), so the
  // request log keeps it.
  const tok = await admin("POST", "/tokens", { name: "ui-log-" + hex(3), models: ["only-this-model"] });
  const res = await fetch(BASE_URL + "/v1/chat/completions", {
    method: "POST",
    headers: { Authorization: "Bearer " + tok.token, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  await res.text();
  const rid = res.headers.get("x-keypool-request-id");
  assert.equal(res.status, 403, "a model outside the token's scope");
  assert.ok(rid, "the answer carries X-Keypool-Request-Id");
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "requests");
    await choose(byId(page, "req-status"), "4xx");
    await byId(page, "req-token").fill(String(tok.id));
    await byId(page, "requests-apply").click();
    const row = page.locator(`[data-testid="request-row"][data-id="${rid}"]`);
    await eventually(`the row of request ${rid}`, async () => (await row.count()) === 1);
    assert.equal(await byId(page, "request-row").count(), 1, "the filters leave only that request");
    await row.click();
    const drawer = byId(page, "request-drawer");
    await drawer.waitFor();
    const text = await drawer.textContent();
    assert.ok(text.includes(rid) && text.includes("403") && text.includes("/v1/chat/completions"), `the drawer shows the request: ${text}`);
    await page.screenshot({ path: path.join(ARTIFACTS, "requests-desktop.png"), fullPage: true });

    // A key's drawer links to the requests that tried it, filtered.
    await go(page, "keys");
    const key = byId(page, "key-row").first();
    await key.waitFor();
    const keyID = await key.getAttribute("data-id");
    await key.getByTestId("key-open").click();
    const link = byId(page, "drawer-requests");
    await link.waitFor();
    assert.equal(await link.getAttribute("href"), "#/requests?key=" + keyID, "the key drawer's requests link");
    await link.click();
    await byId(page, "requests-table").waitFor();
    assert.equal(await byId(page, "req-key").inputValue(), keyID, "the Requests page opened on that key");
  });
});

test("a token's endpoint scope is shown and changed in the UI", async (t) => {
  const name = "ui-scope-" + hex(4);
  const files = (secret) => fetch(BASE_URL + "/v1/files", { headers: { Authorization: "Bearer " + secret } });
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "tokens");
    await byId(page, "token-create").click();
    await byId(page, "token-name").fill(name);
    assert.equal(await byId(page, "token-all-endpoints").isChecked(), false, "full pass-through is off by default");
    await byId(page, "token-submit").click();
    const secret = (await eventually("token-secret", async () => textOf(byId(page, "token-secret")))).trim();
    const row = byId(page, "token-row").filter({ hasText: name });
    await eventually(`a token-row for ${name}`, async () => (await row.count()) === 1);
    const scope = row.getByTestId("token-endpoints");
    assert.equal(await scope.getAttribute("data-endpoints"), "inference");
    let res = await files(secret);
    const refused = await res.text();
    assert.equal(res.status, 403, `GET /v1/files with a default token: ${refused}`);
    assert.equal(JSON.parse(refused).error.code, "endpoint_not_allowed");

    await row.getByTestId("token-row-all-endpoints").check();
    await eventually("the row shows full pass-through", async () =>
      (await row.getByTestId("token-endpoints").getAttribute("data-endpoints")) === "all");
    res = await files(secret);
    assert.equal(res.status, 200, `GET /v1/files with full pass-through: ${await res.text()}`);

    // Made with the box ticked, a token has full pass-through from the start.
    const name2 = name + "-all";
    await byId(page, "token-create").click();
    await byId(page, "token-name").fill(name2);
    await byId(page, "token-all-endpoints").check();
    await byId(page, "token-submit").click();
    const row2 = byId(page, "token-row").filter({ hasText: name2 });
    await eventually(`a token-row for ${name2}`, async () => (await row2.count()) === 1);
    assert.equal(await row2.getByTestId("token-endpoints").getAttribute("data-endpoints"), "all");
    assert.equal(await row2.getByTestId("token-row-all-endpoints").isChecked(), true);
  });
});

test("a key label with HTML renders as text", async (t) => {
  const payload = "<img src=x onerror=window.__xss=1>";
  const key = `pplx-uixss-${hex(14)}`;
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "keys-add").click();
    await choose(byId(page, "add-provider"), "perplexity-ai");
    await byId(page, "add-text").fill(key);
    await byId(page, "add-label").fill(payload);
    await byId(page, "add-submit").click();
    await byId(page, "add-result").waitFor();
    assert.equal(await num(byId(page, "add-added")), 1, "add-added");
    await closeDialogs(page);
    await byId(page, "provider-tab-perplexity-ai").click();
    await waitRows(page, 1, "perplexity-ai tab");
    const cell = byId(page, "key-row").first().getByTestId("key-label");
    await eventually("the label cell shows the payload", async () => (await cell.textContent()) === payload || (await cell.textContent()));
    await sleep(300); // an onerror would have run by now
    assert.equal(await page.evaluate(() => window.__xss), undefined, "window.__xss");
    const table = byId(page, "key-row").first().locator("xpath=ancestor::table[1]");
    const scope = (await table.count()) ? table : byId(page, "key-row").first().locator("xpath=..");
    assert.equal(await scope.locator("img").count(), 0, "no <img> in the key table");
    assert.equal(await page.locator('img[src="x"]').count(), 0, "no <img src=x> anywhere");
    // The drawer and the dashboard's newest keys show the label too.
    await byId(page, "key-row").first().click();
    await byId(page, "key-drawer").waitFor();
    await go(page, "dashboard");
    await byId(page, "newest-keys").waitFor();
    await sleep(300);
    assert.equal(await page.evaluate(() => window.__xss), undefined, "window.__xss after the drawer and the dashboard");
    assert.equal(await page.locator('img[src="x"]').count(), 0, "no <img src=x> after the drawer and the dashboard");
  });
});

test("the key drawer reveals, relabels, disables, enables and deletes a key", async (t) => {
  const key = "uidrawer" + hex(12);
  await importKeys("mistral", [key], "drawer-before");
  const [mine] = await listKeys("mistral").then((l) => l.filter((k) => k.label === "drawer-before"));
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    await go(page, "keys");
    await byId(page, "provider-tab-mistral").click();
    await byId(page, "keys-search").fill("#" + mine.id);
    await waitRows(page, 1, "the drawer's key");
    await byId(page, "key-row").first().click();
    const drawer = byId(page, "key-drawer");
    await drawer.waitFor();
    assert.equal(await drawer.getAttribute("data-id"), String(mine.id), "the drawer is the clicked key's");
    assert.notEqual((await byId(page, "drawer-key").textContent()).trim(), key, "the key is masked until revealed");
    await byId(page, "drawer-reveal").click();
    await eventually("the revealed key", async () => (await byId(page, "drawer-key-full").textContent()).trim() === key);

    await byId(page, "drawer-label").fill("drawer-after");
    await byId(page, "drawer-label-save").click();
    await eventually("the new label in the table", async () =>
      (await byId(page, "key-row").first().getByTestId("key-label").textContent()) === "drawer-after");
    await eventually("the new label in the store", async () => (await admin("GET", "/keys/" + mine.id)).label === "drawer-after");

    await byId(page, "drawer-disable").click();
    await eventually("drawer-status disabled", async () => (await byId(page, "drawer-status").getAttribute("class")).includes("badge-disabled"));
    assert.equal((await admin("GET", "/keys/" + mine.id)).status, "disabled", "the store has the key disabled");
    await eventually("the change in the key's history", async () => (await byId(page, "drawer-event").count()) >= 1);
    await byId(page, "drawer-enable").click();
    await eventually("drawer-status active", async () => (await byId(page, "drawer-status").getAttribute("class")).includes("badge-active"));
    assert.equal((await admin("GET", "/keys/" + mine.id)).status, "active", "the store has the key active again");

    await byId(page, "drawer-delete").click();
    await byId(page, "confirm-ok").click();
    await eventually("the drawer closes", async () => (await drawer.count()) === 0 || !(await drawer.isVisible()));
    await waitRows(page, 0, "the deleted key");
    assert.equal((await listKeys("mistral")).filter((k) => k.id === mine.id).length, 0, "the key is gone from the store");
  });
});

test("the language switch to Chinese sticks across a reload", async (t) => {
  await withPage(t, {}, async (page) => {
    await loginOK(page);
    const nav = byId(page, "nav-keys");
    const english = (await nav.textContent()).trim();
    assert.match(await page.evaluate(() => document.documentElement.lang), /^en/i);
    const toggle = byId(page, "lang-toggle");
    if ((await toggle.evaluate((e) => e.tagName)) === "SELECT") {
      await toggle.selectOption((await options(toggle)).find((v) => /^zh/i.test(v)));
    } else {
      await toggle.click();
    }
    const cjk = /[\u4e00-\u9fff]/;
    await eventually("Chinese nav", async () => cjk.test(await nav.textContent()) || (await nav.textContent()));
    assert.notEqual((await nav.textContent()).trim(), english);
    assert.match(await page.evaluate(() => document.documentElement.lang), /^zh(-CN)?$/i);
    await page.reload();
    await nav.waitFor({ state: "attached" });
    assert.match(await page.evaluate(() => document.documentElement.lang), /^zh(-CN)?$/i, "<html lang> after reload");
    await eventually("Chinese nav after reload", async () => cjk.test(await nav.textContent()) || (await nav.textContent()));
    assert.ok(cjk.test(await byId(page, "nav-dashboard").textContent()), "nav-dashboard in Chinese");
  });
});

test("log out everywhere ends every session", async (t) => {
  await withPage(t, {}, async (page) => {
    await withPage(t, {}, async (other) => {
      await loginOK(other);
      await loginOK(page);
      await go(page, "settings");
      await byId(page, "logout-everywhere").click();
      await byId(page, "confirm-ok").click();
      await byId(page, "login-password").waitFor();
      assert.ok(((await byId(page, "login-error").textContent()) || "").includes("session"), "the login form says why");
      await other.reload();
      await byId(other, "login-password").waitFor();
      assert.equal(await byId(other, "card-total-value").count(), 0, "the other browser's session ended too");
    });
  });
});

test("screenshots: dashboard and keys, desktop and phone", async (t) => {
  for (const [name, viewport] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ]) {
    await withPage(t, { viewport }, async (page) => {
      await loginOK(page);
      await page.waitForLoadState("networkidle");
      await sleep(1200); // chart animations
      await page.screenshot({ path: path.join(ARTIFACTS, `dashboard-${name}.png`), fullPage: true });
      await go(page, "keys");
      await byId(page, "key-row").first().waitFor();
      await page.waitForLoadState("networkidle");
      await page.screenshot({ path: path.join(ARTIFACTS, `keys-${name}.png`), fullPage: true });
      // Nothing wider than the screen on a phone.
      if (name === "phone") {
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        t.diagnostic(`keys page at ${viewport.width} px: horizontal overflow ${overflow} px`);
      }
    });
  }
});
