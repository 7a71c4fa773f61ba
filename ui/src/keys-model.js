// What the UI derives from the key JSON of the admin API (writeKey):
// {id, provider, key (masked), label, status, status_reason, balance,
//  created_at, updated_at, last_used_at, requests, successes, failures,
//  models: [{model, state: "cooling"|"blocked", until?, reason, streak}]}.

// A key is cooling when it is active and some model of it has a
// cooldown that has not ended.
export function isCooling(k, now = Date.now()) {
  return k.status === "active" && (k.models || []).some((m) => m.state === "cooling" && m.until > now);
}

// The state the UI shows: cooling, or the key's status.
export function keyState(k, now = Date.now()) {
  return isCooling(k, now) ? "cooling" : k.status;
}

// Whether k is in the state filter ("all", "active" includes cooling keys,
// "cooling", "blocked", "exhausted", "disabled").
export function inState(k, state, now = Date.now()) {
  if (state === "all") return true;
  if (state === "cooling") return isCooling(k, now);
  return k.status === state;
}

// Figures of the known balances, as the guest summary computes them.
export function balanceStats(keys) {
  const bs = keys.filter((k) => k.balance != null).map((k) => k.balance).sort((a, b) => a - b);
  if (bs.length === 0) return { known: 0, total: null, average: null, median: null, min: null, max: null };
  const total = bs.reduce((s, x) => s + x, 0);
  const mid = Math.floor(bs.length / 2);
  const median = bs.length % 2 ? bs[mid] : (bs[mid - 1] + bs[mid]) / 2;
  return { known: bs.length, total, average: total / bs.length, median, min: bs[0], max: bs[bs.length - 1] };
}

export function successRate(k) {
  return k.requests > 0 ? k.successes / k.requests : null;
}
