// keypool's D1 binding as its Go code sees it. A D1 that stops answering
// must not hang a client's request (the D1 driver ignores contexts, so Go
// cannot give a query a deadline):
// - a read (a statement that starts with SELECT or WITH) that has no
//   answer within READ_TIMEOUT_MS fails with a D1_UNAVAILABLE error, and
//   for the next PAUSE_MS every read fails at once the same way, so that
//   an outage costs one wait per isolate, not one per request; the Go side
//   then serves what its isolate has cached, or answers 503
//   store_unavailable;
// - a write is never cut short: a write that timed out might still land,
//   and keypool retries the ones that fail (usage counts, key states), so
//   cutting one could count it twice.
// With KEYPOOL_DEBUG=1 the admin route /admin/api/debug/faults can make
// every statement fail (down) or wait (slow) for a bounded time; it sets
// globalThis.keypoolFaults (workerjs.InjectFault) and nothing else does.

const READ_TIMEOUT_MS = 1500;
const PAUSE_MS = 5000;

let pausedUntil = 0;
const guarded = new WeakMap(); // env -> env with DB guarded

// guardEnv returns env with its DB binding guarded (env itself when it has
// none).
export function guardEnv(env) {
  if (!env || !env.DB) return env;
  let g = guarded.get(env);
  if (!g) {
    const db = guardDB(env.DB);
    g = new Proxy(env, { get: (target, name) => (name === "DB" ? db : Reflect.get(target, name)) });
    guarded.set(env, g);
  }
  return g;
}

function guardDB(db) {
  return {
    prepare(sql) {
      return guardStatement(db.prepare(sql), /^\s*(select|with)\b/i.test(sql));
    },
    batch(statements) {
      return guard(() => db.batch(statements.map((s) => s.inner ?? s)), false);
    },
    exec(sql) {
      return guard(() => db.exec(sql), false);
    },
  };
}

function guardStatement(stmt, read) {
  return {
    inner: stmt,
    bind: (...args) => guardStatement(stmt.bind(...args), read),
    run: () => guard(() => stmt.run(), read),
    all: () => guard(() => stmt.all(), read),
    raw: (options) => guard(() => stmt.raw(options), read),
    first: (column) => guard(() => stmt.first(column), read),
  };
}

function unavailable(why) {
  return Promise.reject(new Error("D1_UNAVAILABLE: " + why));
}

// fault is the injected D1 fault in force, if any.
function fault() {
  const f = globalThis.keypoolFaults?.d1;
  if (!f || Date.now() >= f.until) return null;
  return f;
}

function guard(call, read) {
  const f = fault();
  if (f?.mode === "down") return unavailable("D1 is down (a fault injected through /admin/api/debug/faults)");
  if (read && Date.now() < pausedUntil) {
    return unavailable("a read found no answer within " + READ_TIMEOUT_MS + " ms in the last " + PAUSE_MS / 1000 + " s; not waiting again yet");
  }
  const answer = f?.mode === "slow" ? new Promise((r) => setTimeout(r, f.delay)).then(call) : call();
  if (!read) return answer;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      pausedUntil = Date.now() + PAUSE_MS;
      reject(new Error("D1_UNAVAILABLE: no answer within " + READ_TIMEOUT_MS + " ms"));
    }, READ_TIMEOUT_MS);
    answer.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
