// The benchmark's baseline: a plain JS worker that forwards every request,
// untouched, to the origin in the UPSTREAM_URL var. keypool's figures are
// compared against it (same machine, same wrangler dev, same fake upstream).
export default {
  fetch(request, env) {
    const url = new URL(request.url);
    return fetch(env.UPSTREAM_URL + url.pathname + url.search, request);
  },
};
