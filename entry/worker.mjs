// keypool's Workers entry module, for both compilers' wasm_exec.js. It
// replaces the worker.mjs that workers-assets-gen generates, which starts a
// new Go instance (and pays Go's start-up, ~16 ms of CPU) for every event.
//
// Here Go instances are kept and reused:
// - one event runs in an instance at a time; a request never waits for an
//   instance (with no I/O of its own, workerd would cancel it as hung): when
//   none is idle, a new one is started;
// - an instance goes back to the pool only when the response body has been
//   produced, every promise it passed to waitUntil has settled, and its
//   program is alive; idle ones are kept up to a memory budget, the rest
//   are dropped;
// - each event sets the instance's env and ctx (the Go side reads them
//   lazily), and re-arms the Go timers an earlier event scheduled: their
//   setTimeout died with that event, and a time.Sleep would never wake;
// - a program that traps (a TinyGo panic: TinyGo cannot recover() on wasm),
//   exits, or throws out of a nested JS call fails the current event with a
//   500 in the OpenAI error format at once, and the instance is dropped; so
//   is an instance whose response body the client abandoned;
// - instances are retired after a number of events or above a memory mark,
//   which bounds TinyGo's growth (it never frees memory, and has no
//   finalizers, so JS references a request creates are never released).
// This relies on wasm_exec.js internals: re-test it when Go, TinyGo or
// syumai/workers is upgraded.
import "./wasm_exec.js";
import { createRuntimeContext, loadModule } from "./runtime.mjs";
import * as streams from "./streams.mjs";
import * as sockets from "./sockets.mjs";
import { guardEnv } from "./store.mjs";

// Go's workerjs hands upstream bodies to streams.mjs through this global.
globalThis.keypoolStreams = streams;
// … and Responses WebSockets to sockets.mjs.
globalThis.keypoolSockets = sockets;

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

// Limits. Idle instances are kept while their wasm memory adds up to at
// most POOL_MEMORY (standard Go: ~5.5 MiB each, so about 11), which keeps
// the pool well inside the 128 MB a Worker may use. A burst needs one
// instance per concurrent request anyway; the budget decides how many stay
// warm for the next one.
const POOL_MEMORY = 64 << 20;
// TinyGo is built with the leaking collector (README "Builds" says why):
// its memory is everything it allocated, so an instance retires once it
// passes 10 MiB after an event (a fresh one holds about 3 MiB), which keeps
// the largest instance near 10 MiB plus one event's worth, the 6 MiB body
// limit included.
const LIMITS = {
  go: { maxEvents: 10000, maxMemory: 64 << 20 },
  tinygo: { maxEvents: 200, maxMemory: 10 << 20 },
};

const idle = [];
const live = new Set(); // every instance not yet dropped
let peakMemory = 0; // wasm memory only grows: its size after an event is its peak
let mod;

// The request boundary's JS half (workerjs/serve.go says why): Go reads
// these through the runtime context's `boundary`.
const boundary = {
  // headers builds a Headers from "name\0value\0…" in one call.
  headers(s) {
    const h = new Headers();
    const parts = s.split("\0");
    for (let i = 0; i + 1 < parts.length; i += 2) h.append(parts[i], parts[i + 1]);
    return h;
  },
  // headerString is a Headers as "name\0value\0…", values whole.
  headerString(headers) {
    let s = "";
    for (const [name, value] of headers) s += name + "\0" + value + "\0";
    return s;
  },
  // memory: the live instances, their wasm memory and the most one
  // instance has held at the end of an event, for debug stats.
  memory() {
    let n = 0;
    let bytes = 0;
    for (const inst of live) {
      if (inst.dead || !inst.memory) continue;
      n++;
      bytes += inst.memory.buffer.byteLength;
    }
    return [n, bytes, peakMemory];
  },
  // readBody reads a request body into one Uint8Array, counting as it
  // goes: past limit bytes it cancels the stream and answers null, so a
  // body without Content-Length never costs more than the limit.
  // With a Content-Length (length >= 0) the chunks go straight into one
  // buffer of that size, so the body is never held twice.
  async readBody(stream, limit, length) {
    const reader = stream.getReader();
    const into = length >= 0 && length <= limit ? new Uint8Array(length) : null;
    const chunks = [];
    let n = 0;
    let filled = 0; // bytes of `into` used
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.byteLength;
      if (n > limit) {
        reader.cancel().catch(() => {});
        return null;
      }
      if (into && chunks.length === 0 && filled + value.byteLength <= into.byteLength) {
        into.set(value, filled);
        filled += value.byteLength;
      } else chunks.push(value);
    }
    if (into && chunks.length === 0) return filled === into.byteLength ? into : into.subarray(0, filled);
    if (into) chunks.unshift(into.subarray(0, filled));
    if (chunks.length === 1) return chunks[0];
    const out = new Uint8Array(n);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  },
};

// noBody: answers that never carry a body, whatever Go sent with them.
function noBody(method, status) {
  return method === "HEAD" || status === 204 || status === 205 || status === 304 || status < 200;
}

// serve makes the one call into Go for a request and builds the Response
// from Go's one answer: status, "name\0value\0…" headers, and a body that
// is null, bytes, a stream handed on, or true (Go pushes chunks into the
// writer returned to it); for a 101 it is the WebSocket the client gets
// (sockets.mjs). A body-less answer keeps its headers (HEAD's
// Content-Length) and never gets a body.
function serve(inst, req) {
  let head = req.method + "\0" + req.url + "\0";
  for (const [name, value] of req.headers) head += name + "\0" + value + "\0";
  return new Promise((resolve) => {
    inst.binding.serve(head, req.body, (status, headers, body) => {
      const init = { status, headers: boundary.headers(headers) };
      if (status === 101) {
        resolve(new Response(null, { ...init, webSocket: body }));
        return undefined;
      }
      if (noBody(req.method, status)) {
        if (body instanceof ReadableStream) body.cancel().catch(() => {});
        resolve(new Response(null, init));
        return undefined;
      }
      if (body !== true) {
        resolve(new Response(body, init));
        return undefined;
      }
      let ctrl;
      const stream = new ReadableStream({ start: (c) => (ctrl = c) });
      resolve(new Response(stream, init));
      return {
        write(chunk) {
          try {
            ctrl.enqueue(chunk);
            return true;
          } catch {
            return false; // the client is gone
          }
        },
        close() {
          try {
            ctrl.close();
          } catch {
            // cancelled already
          }
        },
      };
    });
  });
}

function idleMemory() {
  let n = 0;
  for (const inst of idle) n += inst.memory.buffer.byteLength;
  return n;
}

class Instance {
  constructor() {
    this.go = new Go();
    this.binding = {};
    this.context = createRuntimeContext({ env: undefined, ctx: undefined, binding: this.binding });
    this.context.boundary = boundary;
    this.dead = false;
    this.events = 0;
    this.fail = null; // rejects the current event's `died` promise
    this.deadlines = new Map(); // Go timer id -> wall-clock deadline (standard Go)
  }

  // start instantiates the program and runs it until it has registered its
  // handlers (workers.Ready).
  async start(died) {
    mod ??= await loadModule();
    const go = this.go;
    const imports = go.importObject;
    let ready;
    const isReady = new Promise((resolve) => (ready = resolve));
    this.hookTimers(imports);
    const instance = new WebAssembly.Instance(mod, {
      ...imports,
      workers: { ready: () => ready() },
    });
    this.memory = instance.exports.mem || instance.exports.memory;
    this.compiler = instance.exports.go_scheduler ? "tinygo" : "go";
    // go.run's promise belongs to this first event; settling it later would
    // cross request contexts, so exit is detected through the hooks below.
    go.run(instance, this.context);
    go._resolveExitPromise = () => this.die(new Error("the Go program exited"));
    const exit = go.exit;
    go.exit = (code) => {
      this.die(new Error("the Go program exited with code " + code));
      if (exit) exit.call(go, code);
    };
    // Every re-entry into Go goes through exports.resume (both compilers)
    // or exports.go_scheduler (TinyGo timers); a trap surfaces there as a
    // throw. The real exports are frozen, so the glue gets a guarded copy.
    const exports = { ...instance.exports };
    for (const name of ["resume", "go_scheduler"]) {
      const f = instance.exports[name];
      if (typeof f !== "function") continue;
      exports[name] = (...args) => {
        try {
          return f(...args);
        } catch (e) {
          this.die(e);
          throw e;
        }
      };
    }
    if (go._inst) go._inst = { exports };
    await Promise.race([isReady, died]);
  }

  // hookTimers takes over the timers Go asks for. A setTimeout belongs to
  // the event that was running when Go asked; if it fired after the
  // instance moved on to another event, Go would run that event's work in
  // the old event's context (its I/O then stalls or dies with it). So a
  // timer only wakes Go during the event that armed it, and each event
  // re-arms the timers still pending (standard Go), or TinyGo asks afresh
  // when it is resumed.
  hookTimers(imports) {
    const gojs = imports.gojs;
    const go = this.go;
    if (gojs["runtime.scheduleTimeoutEvent"]) {
      const clear = gojs["runtime.clearTimeoutEvent"];
      gojs["runtime.scheduleTimeoutEvent"] = (sp) => {
        sp >>>= 0;
        const delay = go.mem.getUint32(sp + 8, true) + go.mem.getInt32(sp + 12, true) * 4294967296;
        const id = go._nextCallbackTimeoutID++;
        this.deadlines.set(id, Date.now() + delay);
        this.armTimeout(id, delay);
        go.mem.setInt32(sp + 16, id, true);
      };
      gojs["runtime.clearTimeoutEvent"] = (sp) => {
        this.deadlines.delete(go.mem.getInt32((sp >>> 0) + 8, true));
        clear(sp);
      };
    }
    if (gojs["runtime.sleepTicks"]) {
      gojs["runtime.sleepTicks"] = (timeout) => {
        const event = this.events;
        setTimeout(() => {
          if (event !== this.events || this.dead || go.exited) return;
          try {
            go._inst.exports.go_scheduler();
          } catch {
            // A trap or exit; the guarded export has recorded it.
          }
        }, Number(timeout) / 1e6);
      };
    }
  }

  // armTimeout sets a standard Go timeout for the current event, as
  // wasm_exec.js does, but inert once the event is over.
  armTimeout(id, delay) {
    const go = this.go;
    const event = this.events;
    go._scheduledTimeouts.set(
      id,
      setTimeout(() => {
        if (event !== this.events || this.dead) return;
        go._resume();
        // As wasm_exec.js does, for a timeout Go failed to register.
        for (let i = 0; i < 10 && go._scheduledTimeouts.has(id); i++) go._resume();
      }, Math.max(0, delay)),
    );
  }

  rearmTimers() {
    for (const [id, deadline] of this.deadlines) this.armTimeout(id, deadline - Date.now());
  }

  // died returns a promise for this event that rejects if the program dies.
  died() {
    const p = new Promise((_, reject) => (this.fail = reject));
    p.catch(() => {}); // observed through Promise.race only
    if (this.dead) this.fail(new Error("the Go program is dead"));
    return p;
  }

  die(err) {
    this.dead = true;
    live.delete(this);
    if (this.fail) this.fail(err);
  }

  // begin binds the instance to an event.
  begin(env, ctx) {
    this.events++;
    this.pending = [];
    const pending = this.pending;
    this.context.env = guardEnv(env); // D1 reads bounded in time (store.mjs)
    this.context.ctx = {
      waitUntil(p) {
        pending.push(Promise.resolve(p).catch(() => {}));
        ctx.waitUntil(p);
      },
      passThroughOnException() {
        ctx.passThroughOnException();
      },
      get props() {
        return ctx.props;
      },
    };
    if (this.events > 1) this.rearmTimers();
    return this.died();
  }

  // end returns the instance to the pool once its body is produced and all
  // of its waitUntil work has settled, unless it must be dropped.
  async end(bodyDone) {
    const ok = await bodyDone;
    for (let seen = 0; seen < this.pending.length; ) {
      seen = this.pending.length;
      await Promise.all(this.pending);
    }
    const limit = LIMITS[this.compiler];
    peakMemory = Math.max(peakMemory, this.memory.buffer.byteLength);
    const keep =
      ok &&
      !this.dead &&
      !this.go.exited &&
      this.events < limit.maxEvents &&
      this.memory.buffer.byteLength <= limit.maxMemory &&
      idleMemory() + this.memory.buffer.byteLength <= POOL_MEMORY;
    this.fail = null;
    if (keep) idle.push(this);
    else live.delete(this);
  }
}

async function acquire(env, ctx) {
  const inst = idle.pop() ?? new Instance();
  live.add(inst);
  const died = inst.begin(env, ctx);
  if (inst.events === 1) await inst.start(died);
  return { inst, died };
}

// track passes a response through and reports, via the returned promise,
// whether its body was produced completely (false: failed or abandoned).
// The copy is a read/write loop: workerd cannot pipeTo between its own
// streams. A body with a Content-Length stays a FixedLengthStream. A body
// streams.mjs relays is not copied: it knows when it is over, and Go does
// not produce it, so a client that abandons it leaves the instance sound;
// hangUp (the request's signal) tells it when the client has gone.
function track(resp, hangUp) {
  if (resp.body === null) return { resp, bodyDone: Promise.resolve(true) };
  const len = Number(resp.headers.get("content-length"));
  const relayed = streams.relayDone(resp.body, hangUp);
  if (relayed && !(len > 0)) return { resp, bodyDone: relayed };
  const { readable, writable } =
    len > 0 && typeof FixedLengthStream === "function" ? new FixedLengthStream(len) : new TransformStream();
  const bodyDone = copy(resp.body.getReader(), writable.getWriter());
  return { resp: new Response(readable, resp), bodyDone };
}

async function copy(reader, writer) {
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await writer.write(value);
    }
    await writer.close();
    return true;
  } catch (e) {
    reader.cancel(e).catch(() => {});
    writer.abort(e).catch(() => {});
    return false;
  }
}

function errorResponse() {
  return new Response(internalError, {
    status: 500,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

async function fetch(req, env, ctx) {
  let inst, died;
  try {
    ({ inst, died } = await acquire(env, ctx));
    const out = track(await Promise.race([serve(inst, req), died]), req.signal);
    ctx.waitUntil(inst.end(out.bodyDone));
    return out.resp;
  } catch (e) {
    if (inst) inst.die(e);
    console.error("keypool: the Go program failed during a request:", String((e && e.message) || e));
    return errorResponse();
  }
}

async function scheduled(event, env, ctx) {
  let inst, died;
  try {
    ({ inst, died } = await acquire(env, ctx));
    await Promise.race([inst.binding.runScheduler(event), died]);
    await inst.end(Promise.resolve(true));
  } catch (e) {
    if (inst) inst.die(e);
    console.error("keypool: the Go program failed during a cron event:", String((e && e.message) || e));
  }
}

export default { fetch, scheduled };
