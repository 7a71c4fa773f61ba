// keypool's Workers entry module. It replaces the worker.mjs that
// workers-assets-gen generates, and works with both compilers' wasm_exec.js.
//
// What it adds: when the Go program dies mid-request (a TinyGo panic is a
// wasm trap, since TinyGo cannot recover() on wasm; a standard Go program can
// exit or throw out of a nested JS call), the request gets a 500 in the
// OpenAI error format at once instead of hanging until workerd cancels it.
import "./wasm_exec.js";
import { createRuntimeContext, loadModule } from "./runtime.mjs";

// syumai/workers calls this from Go to catch JS exceptions.
globalThis.tryCatch = (fn) => {
  try {
    return { result: fn() };
  } catch (e) {
    return { error: e };
  }
};

const internalError = JSON.stringify({
  error: {
    message: "internal error in keypool; the request was not completed",
    type: "server_error",
    param: null,
    code: "internal_error",
  },
});

// start runs a fresh Go instance for one event. It resolves once Go has
// registered its handlers, with { died }: a promise that rejects when the
// program traps or exits, so the caller can stop waiting for it. (Wrapped
// in an object: an async function returning a promise would wait for it.)
async function start(env, ctx, binding) {
  const mod = await loadModule();
  const go = new Go();
  let fail;
  const died = new Promise((_, reject) => {
    fail = reject;
  });
  died.catch(() => {}); // observed through Promise.race only
  let ready;
  const isReady = new Promise((resolve) => {
    ready = resolve;
  });
  const instance = new WebAssembly.Instance(mod, {
    ...go.importObject,
    workers: { ready: () => ready() },
  });
  const running = go.run(instance, createRuntimeContext({ env, ctx, binding }));
  running.then(
    () => fail(new Error("the Go program exited")),
    (e) => fail(e),
  );
  // Every re-entry into Go goes through exports.resume (both compilers) or
  // exports.go_scheduler (TinyGo timers); a trap surfaces there as a throw.
  // The real exports object is frozen, so the glue gets a guarded copy.
  const exports = { ...instance.exports };
  for (const name of ["resume", "go_scheduler"]) {
    const f = instance.exports[name];
    if (typeof f !== "function") continue;
    exports[name] = (...args) => {
      try {
        return f(...args);
      } catch (e) {
        fail(e);
        throw e;
      }
    };
  }
  go._inst = { exports };
  await Promise.race([isReady, died]);
  return { died };
}

async function fetch(req, env, ctx) {
  try {
    const binding = {};
    const { died } = await start(env, ctx, binding);
    return await Promise.race([binding.handleRequest(req), died]);
  } catch (e) {
    console.error("keypool: the Go program failed during a request:", String(e && e.message || e));
    return new Response(internalError, {
      status: 500,
      headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
    });
  }
}

async function scheduled(event, env, ctx) {
  try {
    const binding = {};
    const { died } = await start(env, ctx, binding);
    await Promise.race([binding.runScheduler(event), died]);
  } catch (e) {
    console.error("keypool: the Go program failed during a cron event:", String(e && e.message || e));
  }
}

export default { fetch, scheduled };
