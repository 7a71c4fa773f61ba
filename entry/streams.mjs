// Upstream answer bodies, moved and read in JS so that Go never touches
// their bytes: Go makes one call to hand an answer to the client and gets
// one small summary after it has gone, however many chunks it had.
//
// - relay(res, strip, kind, idleMs) returns [body, done]: body is what the client
//   gets, res's body read through a pull source whose per-chunk work
//   is byte scanning (and, for SSE, one JSON.parse per data line) with no
//   call into Go; done resolves once the body has ended, failed or been
//   cancelled by the client, with the summary Go reads usage from (see
//   summary below). A client that hangs up cancels the upstream body,
//   which closes the upstream connection. An upstream body that fails
//   mid-way, or sends nothing for idleMs (0: no limit), ends the client's
//   body cleanly after what arrived.
// - read(res, n) reads the next n bytes of res's body (fewer only at its
//   end) in one call: a failed answer's head, for Go to classify. A body
//   relayed after such reads starts again from its first byte.
// - cancel(res) discards a body nobody will read.
// - relayDone(stream, signal) is the done promise of a body relay made,
//   for the entry module (which needs to know when a response body is
//   over); when signal (the incoming request's) aborts, the client has
//   hung up and the relay cancels the upstream body at once. workerd
//   cancels a response body whose client left only on its next chunk, or
//   not at all (workerd#6832); request.signal (compatibility flag
//   enable_request_signal) says so when it happens.
//
// The Go side is workerjs/relay.go; the scanning mirrors Go's
// usage.Stream (text counted for estimates, usage lines kept) and
// usage.StripUsage (the usage-only chunk keypool asked for is taken out,
// events passed on whole as soon as they are complete).

const KIND_OTHER = 0;
const KIND_SSE = 1;
const KIND_JSON = 2;
const KIND_NONE = 3; // relayed without reading: no summary

const NL = 10;
const CR = 13;
// maxLine: like usage.Stream, a longer SSE line is skipped (its size counted).
const MAX_LINE = 1 << 20;
// maxJSON: like handler's maxUsageBody, a larger JSON answer is relayed
// without reading its usage.
const MAX_JSON = 16 << 20;

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const bodies = new WeakMap(); // upstream Response -> Reader, once Go has read from it
const relayed = new WeakMap(); // body handed to the client -> { done, hangUp }

function concat(parts, length) {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// Reader reads an upstream body for Go and keeps what it handed over, so
// that the body can still be relayed whole.
class Reader {
  constructor(stream) {
    this.reader = stream ? stream.getReader() : null;
    this.done = !stream;
    this.given = []; // chunks handed to Go, in order
    this.leftover = null; // read from upstream, not yet handed to Go
  }

  async read(n) {
    const parts = [];
    let got = 0;
    while (got < n) {
      let chunk = this.leftover;
      this.leftover = null;
      if (!chunk) {
        if (this.done) break;
        const r = await this.reader.read();
        if (r.done) {
          this.done = true;
          break;
        }
        chunk = r.value;
      }
      if (got + chunk.length > n) {
        this.leftover = chunk.subarray(n - got);
        chunk = chunk.subarray(0, n - got);
      }
      parts.push(chunk);
      got += chunk.length;
    }
    const out = concat(parts, got);
    if (got > 0) this.given.push(out);
    return out;
  }

  // stream is the whole body again: what Go read, then the rest.
  stream() {
    const self = this;
    return new ReadableStream(
      {
        start(c) {
          for (const p of self.given) c.enqueue(p);
          if (self.leftover) c.enqueue(self.leftover);
          self.given = [];
          self.leftover = null;
          if (self.done) c.close();
        },
        async pull(c) {
          const r = await self.reader.read();
          if (r.done) c.close();
          else c.enqueue(r.value);
        },
        cancel(reason) {
          return self.reader && self.reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
  }
}

export function read(res, n) {
  let r = bodies.get(res);
  if (!r) {
    r = new Reader(res.body);
    bodies.set(res, r);
  }
  return r.read(n);
}

export function cancel(res) {
  const r = bodies.get(res);
  const p = r ? r.reader && r.reader.cancel() : res.body && res.body.cancel();
  if (p) p.catch(() => {});
}

export function relayDone(stream, signal) {
  const r = stream && relayed.get(stream);
  if (!r) return undefined;
  if (signal && signal.aborted) r.hangUp();
  else if (signal) signal.addEventListener("abort", r.hangUp, { once: true });
  return r.done;
}

// STALLED ends a read that waited longer than the stream idle limit.
const STALLED = new Error("the upstream sent nothing for longer than STREAM_IDLE_SECONDS");

// readWithin reads the next chunk, or rejects with STALLED when none has
// come within ms (0: waits as long as it takes).
function readWithin(reader, ms) {
  if (!(ms > 0)) return reader.read();
  let timer;
  const stalled = new Promise((_, reject) => (timer = setTimeout(() => reject(STALLED), ms)));
  return Promise.race([reader.read(), stalled]).finally(() => clearTimeout(timer));
}

export function relay(res, strip, kind, idleMs) {
  const r = bodies.get(res);
  const source = r ? r.stream() : res.body;
  if (!source) return [null, Promise.resolve(summary(0, "1", 0, null))];
  const scan = kind === KIND_SSE ? new SSEScan(strip) : kind === KIND_JSON ? new JSONScan() : new CountScan();
  let settle;
  const done = new Promise((resolve) => (settle = resolve));
  let over = false;
  // end: "1" the body reached its end; "0" the client left; "cut" the
  // upstream's body failed; "stalled" it sent nothing for idleMs.
  const finish = (end) => {
    if (over) return;
    over = true;
    settle(kind === KIND_NONE ? null : summary(scan.bytes, end, scan.text, scan.payload(end === "1")));
  };
  // The body pulls from the upstream one chunk per read by the client.
  // Its cancel (the client's side cancelled) and hangUp (the request's
  // signal) cancel the upstream body, which closes the upstream
  // connection. (A TransformStream piped to did not pass workerd's cancel
  // on reliably: the upstream was read to its end.)
  const reader = source.getReader();
  const stop = (reason) => {
    finish("0");
    reader.cancel(reason).catch(() => {});
  };
  const body = new ReadableStream(
    {
      async pull(c) {
        const out = { c, sent: false, enqueue: (x) => ((out.sent = true), c.enqueue(x)) };
        while (!out.sent) {
          let r;
          try {
            r = await readWithin(reader, idleMs);
          } catch (e) {
            if (over) {
              c.error(new Error("the client hung up"));
              return;
            }
            // The upstream broke off (or stalled: it is let go): the
            // client gets what came and a clean end, and Go hears why.
            if (e === STALLED) reader.cancel(e).catch(() => {});
            scan.end(out);
            finish(e === STALLED ? "stalled" : "cut");
            c.close();
            return;
          }
          if (over) {
            // Cancelled while reading: by the client (the stream is closed
            // already) or on its hang-up (the stream must end too).
            c.error(new Error("the client hung up"));
            return;
          }
          if (r.done) {
            scan.end(out);
            finish("1");
            c.close();
            return;
          }
          scan.push(r.value, out);
        }
      },
      cancel: stop,
    },
    { highWaterMark: 0 },
  );
  relayed.set(body, { done: done.then(() => true), hangUp: () => stop(new Error("the client hung up")) });
  return [body, done];
}

// summary is what Go gets after a relay, in one Uint8Array: the line
// "<bytes> <end> <text>\n" (bytes: the upstream body's size; end: see
// relay's finish;
// text: for SSE, the text an estimate counts, as usage.Stream.StreamedBytes)
// then the payload: for SSE, the data lines that carry usage, each ending
// in "\n", for usage.Stream; for JSON, an object with the answer's usage
// fields, for usage.FromJSON.
function summary(bytes, end, text, payload) {
  const head = encoder.encode(bytes + " " + end + " " + text + "\n");
  if (!payload || payload.length === 0) return head;
  return concat([head, payload], head.length + payload.length);
}

class CountScan {
  constructor() {
    this.bytes = 0;
    this.text = 0;
  }
  push(chunk, c) {
    this.bytes += chunk.length;
    c.enqueue(chunk);
  }
  end() {}
  payload() {
    return null;
  }
}

// JSONScan keeps a JSON answer (up to MAX_JSON) to read its usage at the
// end; the chunks pass on at once.
class JSONScan extends CountScan {
  constructor() {
    super();
    this.parts = [];
  }
  push(chunk, c) {
    super.push(chunk, c);
    if (!this.parts) return;
    if (this.bytes >= MAX_JSON) this.parts = null;
    else this.parts.push(chunk.slice());
  }
  payload(complete) {
    if (!complete || !this.parts || this.bytes === 0) return null;
    let v;
    try {
      v = JSON.parse(decoder.decode(concat(this.parts, this.bytes)));
    } catch {
      return null;
    }
    // As usage.FromJSON: an array's last element (Gemini's OpenAI API).
    if (Array.isArray(v)) v = v[v.length - 1];
    if (!isObject(v)) return null;
    const out = {};
    for (const k of ["usage", "usageMetadata"]) if (k in v) out[k] = v[k];
    for (const k of ["message", "response"]) if (isObject(v[k]) && "usage" in v[k]) out[k] = { usage: v[k].usage };
    return encoder.encode(JSON.stringify(out));
  }
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

// startsWithData: the bytes begin "data:".
function startsWithData(b) {
  return b.length >= 5 && b[0] === 100 && b[1] === 97 && b[2] === 116 && b[3] === 97 && b[4] === 58;
}

function isSpace(b) {
  return b === 32 || (b >= 9 && b <= 13);
}

// utf8Length is the UTF-8 size of a JS string (a lone surrogate counts as
// U+FFFD, as Go decodes it).
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// textOf is gjson's String() of a value, for its size.
function textSize(v) {
  if (v === undefined || v === null) return 0;
  if (typeof v === "string") return utf8Length(v);
  return utf8Length(typeof v === "object" ? JSON.stringify(v) : String(v));
}

// SSEScan follows an SSE stream line by line, as usage.Stream does, and,
// when strip is set, event by event, as usage.StripUsage does.
class SSEScan extends CountScan {
  constructor(strip) {
    super();
    this.strip = strip;
    this.line = []; // pieces of the current line
    this.lineLength = 0;
    this.long = false; // the current line outgrew MAX_LINE: skipped to its end
    this.longData = false;
    this.longBytes = 0;
    this.kept = []; // [kind, line] of the lines that carry usage, in order
    this.pending = []; // strip: the chunks of an event not yet complete
    this.pendingLength = 0;
    this.tail = new Uint8Array(0); // strip: its last two bytes
  }

  push(chunk, c) {
    this.bytes += chunk.length;
    this.lines(chunk);
    if (this.strip) this.events(chunk, c);
    else c.enqueue(chunk);
  }

  end(c) {
    const rest = concat(this.pending, this.pendingLength);
    if (this.strip && rest.length > 0 && !usageOnly(rest)) c.enqueue(rest);
    this.pending = [];
    this.pendingLength = 0;
  }

  lines(chunk) {
    for (let start = 0; ; ) {
      const i = chunk.indexOf(NL, start);
      const part = chunk.subarray(start, i < 0 ? chunk.length : i);
      if (this.long) this.longBytes += part.length;
      else if (this.lineLength + part.length > MAX_LINE) {
        const head = concat([...this.line, part.subarray(0, 5)], this.lineLength + Math.min(part.length, 5));
        this.long = true;
        this.longData = startsWithData(head);
        this.longBytes = this.lineLength + part.length - 5;
        this.line = [];
        this.lineLength = 0;
      } else if (part.length > 0) {
        // A piece kept past this chunk is copied: the chunk goes on to the client.
        this.line.push(i < 0 ? part.slice() : part);
        this.lineLength += part.length;
      }
      if (i < 0) return;
      if (this.long) {
        if (this.longData) this.text += this.longBytes;
        this.long = this.longData = false;
        this.longBytes = 0;
      } else if (this.lineLength > 0) {
        let line = concat(this.line, this.lineLength);
        if (line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
        this.data(line);
      }
      this.line = [];
      this.lineLength = 0;
      start = i + 1;
    }
  }

  // data reads one line as usage.Stream's event does.
  data(line) {
    if (!startsWithData(line)) return;
    let a = 5;
    let b = line.length;
    while (a < b && isSpace(line[a])) a++;
    while (b > a && isSpace(line[b - 1])) b--;
    if (a === b) return;
    let o;
    if (line[a] === 123) {
      try {
        o = JSON.parse(decoder.decode(line.subarray(a, b)));
      } catch {
        o = undefined;
      }
    }
    if (!isObject(o)) {
      this.text += b - a;
      return;
    }
    this.text +=
      textSize(o.choices?.[0]?.delta?.content) +
      textSize(o.candidates?.[0]?.content?.parts?.[0]?.text) +
      textSize(o.delta?.text) +
      (o.type === "response.output_text.delta" ? textSize(o.delta) : 0);
    const kind = usageKind(o);
    if (kind) this.keep(kind, line);
  }

  // keep remembers a usage line. A "full" one replaces all before it (Go
  // takes its counts whole); a "start" (message_start: prompt) or "delta"
  // (message_delta: completion) one replaces the earlier one of its kind.
  keep(kind, line) {
    if (kind === "full") this.kept = [];
    else this.kept = this.kept.filter((k) => k[0] !== kind);
    this.kept.push([kind, line.slice()]);
  }

  payload() {
    const parts = [];
    let n = 0;
    for (const [, line] of this.kept) {
      parts.push(line, new Uint8Array([NL]));
      n += line.length + 1;
    }
    return n ? concat(parts, n) : null;
  }

  // events passes complete events on, without the usage-only one. An
  // event not yet complete is kept as its chunks (joined once, when it
  // ends: a large event in many small chunks costs its size, not more).
  events(chunk, c) {
    let start = 0; // of the current event in chunk
    if (this.pending.length > 0) {
      // Its end may begin in the last two bytes kept ("\n", "\n\r").
      const tail = this.tail;
      const end = eventEnd(concat([tail, chunk], tail.length + chunk.length), 0);
      if (end < 0) {
        this.keepPending(chunk);
        return;
      }
      start = end - tail.length;
      const ev = concat([...this.pending, chunk.subarray(0, start)], this.pendingLength + start);
      this.pending = [];
      this.pendingLength = 0;
      if (!usageOnly(ev)) c.enqueue(ev);
    }
    let out = start; // start of what is not yet passed on
    for (let end; (end = eventEnd(chunk, start)) >= 0; start = end) {
      if (usageOnly(chunk.subarray(start, end))) {
        if (start > out) c.enqueue(chunk.subarray(out, start));
        out = end;
      }
    }
    if (start > out) c.enqueue(chunk.subarray(out, start));
    if (start < chunk.length) this.keepPending(chunk.subarray(start));
  }

  keepPending(part) {
    this.pending.push(part);
    this.pendingLength += part.length;
    const last = concat(this.pending.slice(-2), this.pending.slice(-2).reduce((n, p) => n + p.length, 0));
    this.tail = last.slice(Math.max(last.length - 2, 0));
  }
}

// eventEnd is the end of the first complete event in b (after its blank
// line) at or after from, or -1, as usage's eventEnd.
function eventEnd(b, from) {
  for (let i = b.indexOf(NL, from); i >= 0; i = b.indexOf(NL, i + 1)) {
    let j = i + 1;
    if (j < b.length && b[j] === CR) j++;
    if (j < b.length && b[j] === NL) return j + 1;
  }
  return -1;
}

// usageOnly: the event's first data line is a chunk with a "usage" and an
// empty "choices", as usage's usageOnly.
function usageOnly(ev) {
  for (let start = 0; start < ev.length; ) {
    let i = ev.indexOf(NL, start);
    if (i < 0) i = ev.length;
    let line = ev.subarray(start, i);
    start = i + 1;
    if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
    if (!startsWithData(line)) continue;
    let o;
    try {
      o = JSON.parse(decoder.decode(line.subarray(5)));
    } catch {
      return false;
    }
    return isObject(o) && isObject(o.usage) && Array.isArray(o.choices) && o.choices.length === 0;
  }
  return false;
}

// usageKind is what a stream event's usage means to usage.Stream, or "".
function usageKind(o) {
  if (o.type === "message_delta") return isObject(o.usage) && "output_tokens" in o.usage ? "delta" : "";
  let u = null;
  for (const x of [o.usage, o.message?.usage, o.response?.usage]) {
    if (isObject(x)) {
      u = x;
      break;
    }
  }
  const ok = u
    ? "prompt_tokens" in u || "completion_tokens" in u || "input_tokens" in u || "output_tokens" in u
    : isObject(o.usageMetadata);
  if (!ok) return "";
  return o.type === "message_start" ? "start" : "full";
}
