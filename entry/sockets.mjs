// The Responses API over WebSocket (GET /v1/responses with Upgrade:
// websocket, which Codex opens first), relayed in JS: Go chooses the key
// and opens the upstream socket at the handshake, then hands both ends
// here; every message moves in JS. Go is called only for what it decides:
// the model of each response.create when the client's token is limited to
// some models (allow), and once per finished response for its usage
// (next). The Go side is workerjs/socket.go.
//
// relay(res, allow, idleMs) returns [client, next], or null when the
// isolate already relays MAX_OPEN sockets (each one holds a Go instance,
// waiting on next, for its whole life; the upstream's is closed then):
// - res is the upstream's 101 Response; its webSocket is accepted here;
// - client is the socket the worker's 101 answer hands to the client;
// - allow(model) (null: every model is allowed) answers "" to let a
//   response.create through, else the message of the error event the
//   client gets instead; the message does not reach the upstream;
// - next() resolves with the next finished response, as the JSON
//   {"model", "usage", "status", "ms"} (usage as the provider reported
//   it; ms since the client's last message before it ended), or
//   null once the session is over: either side closed or failed, or
//   nothing moved for idleMs (0: no limit);
// - a close on one side closes the other with the same code and reason.

export const MAX_OPEN = 6;
let open = 0;

// relayable: close codes an endpoint may send (1005, 1006 and 1015 are
// only ever reported, never sent).
function sendableCode(code) {
  return code === 1000 || (code >= 1001 && code <= 1014 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
    ? code
    : 1000;
}

// errorEvent is an error as the Responses WebSocket sends one.
function errorEvent(status, code, type, message) {
  return JSON.stringify({ type: "error", status, error: { type, code, message, param: status === 403 ? "model" : null } });
}

export function relay(res, allow, idleMs) {
  const upstream = res.webSocket;
  if (!upstream) return null;
  if (open >= MAX_OPEN) {
    try {
      upstream.accept();
      upstream.close(1013, "keypool relays as many sessions as it may");
    } catch {
      // closed already
    }
    return null;
  }
  open++;
  const pair = new WebSocketPair();
  const client = pair[0];
  const server = pair[1];
  upstream.accept();
  server.accept();

  const finished = []; // responses not yet taken by next()
  let waiting = null; // next()'s resolver
  let over = false;
  let timer = null;
  let asked = Date.now(); // when the client last sent a message

  const deliver = (v) => {
    if (waiting) {
      const w = waiting;
      waiting = null;
      w(v);
    } else finished.push(v);
  };
  const end = (code, reason) => {
    if (over) return;
    over = true;
    open--;
    clearTimeout(timer);
    for (const ws of [server, upstream]) {
      try {
        ws.close(sendableCode(code), String(reason || "").slice(0, 120));
      } catch {
        // closed already
      }
    }
    deliver(null);
  };
  const touch = () => {
    if (!(idleMs > 0)) return;
    clearTimeout(timer);
    timer = setTimeout(() => end(1000, "idle for longer than STREAM_IDLE_SECONDS"), idleMs);
  };
  touch();

  server.addEventListener("message", (e) => {
    touch();
    asked = Date.now();
    if (allow) {
      const why = refusal(e.data, allow);
      if (why) {
        server.send(why);
        return;
      }
    }
    try {
      upstream.send(e.data);
    } catch {
      end(1011, "the upstream socket failed");
    }
  });
  upstream.addEventListener("message", (e) => {
    touch();
    try {
      server.send(e.data);
    } catch {
      end(1000, "the client socket is closed");
      return;
    }
    if (typeof e.data === "string" && isFinal(e.data)) {
      const v = finishedResponse(e.data, Date.now() - asked);
      if (v) deliver(v);
    }
  });
  server.addEventListener("close", (e) => end(e.code, e.reason));
  upstream.addEventListener("close", (e) => end(e.code, e.reason));
  server.addEventListener("error", () => end(1011, "the client socket failed"));
  upstream.addEventListener("error", () => end(1011, "the upstream socket failed"));

  const next = () => {
    if (finished.length > 0) return Promise.resolve(finished.shift());
    if (over) return Promise.resolve(null);
    return new Promise((resolve) => (waiting = resolve));
  };
  return [client, next];
}

// refusal is the error event answering a client message that may not go
// upstream, or "". Only a response.create asks for a model; one whose
// model cannot be read is refused, as its model could not be checked.
function refusal(data, allow) {
  if (typeof data !== "string") return "";
  let o;
  try {
    o = JSON.parse(data);
  } catch {
    return errorEvent(400, "invalid_json", "invalid_request_error", "keypool could not read this message as JSON");
  }
  if (!o || o.type !== "response.create") return "";
  let why;
  try {
    why = allow(typeof o.model === "string" ? o.model : "");
  } catch {
    why = "keypool could not check this message's model";
  }
  return why ? errorEvent(403, "model_not_allowed", "permission_error", why) : "";
}

// isFinal: a server message that may end a response; a cheap test before
// the parse, as most messages are text deltas.
function isFinal(s) {
  return s.includes('"response.completed"') || s.includes('"response.failed"') || s.includes('"response.incomplete"');
}

function finishedResponse(s, ms) {
  let o;
  try {
    o = JSON.parse(s);
  } catch {
    return null;
  }
  const r = o && o.response;
  if (!r || !/^response\.(completed|failed|incomplete)$/.test(o.type)) return null;
  return JSON.stringify({ model: String(r.model || ""), usage: r.usage || null, status: o.type.slice("response.".length), ms });
}
