// The check-job panel: progress, rate, ETA, state and a stop button.
// While a job runs the UI polls GET /admin/api/checks/{id} every second;
// each poll also advances the job by a chunk (README "Health checks").
import { api } from "./api.js";
import { h } from "./dom.js";
import { duration, num } from "./format.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";

// jobView is the panel's elements and how a job shows in them (none:
// hidden).
function jobView() {
  const title = h("h2", { class: "job-title" });
  const state = h("span", { class: "badge", testid: "job-state", "aria-live": "polite" });
  const bar = h("div", { class: "progress-bar" });
  const progress = h("div", {
    class: "progress", role: "progressbar", testid: "job-progress",
    "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", i18nAttr: { "aria-label": "job.progress" },
  }, bar);
  const pct = h("span", { class: "job-pct", testid: "job-percent" });
  const counts = h("span", { testid: "job-counts" });
  const rate = h("span", { testid: "job-rate" });
  const eta = h("span", { testid: "job-eta" });
  const stop = h("button", { type: "button", class: "btn danger", testid: "job-stop", i18n: "job.stop" });
  const resume = h("button", { type: "button", class: "btn", testid: "job-resume", i18n: "job.resume" });
  const dismiss = h("button", { type: "button", class: "btn ghost", testid: "job-dismiss", i18n: "job.dismiss" });
  const el = h("section", { class: "panel job", testid: "job-panel", hidden: true },
    h("div", { class: "panel-head" }, h("div", { class: "job-head" }, title, state), h("div", { class: "tools" }, stop, resume, dismiss)),
    h("div", { class: "job-bar" }, progress, pct),
    h("p", { class: "job-figures muted" }, counts, " · ", rate, " · ", eta));

  function render(job) {
    if (!job) {
      el.hidden = true;
      return;
    }
    el.hidden = false;
    title.textContent = t("job.title", { id: job.id });
    state.textContent = t("job.state." + job.state);
    state.dataset.state = job.state;
    state.className = "badge badge-job-" + job.state;
    const p = Math.max(0, Math.min(100, Number(job.percent) || 0));
    progress.setAttribute("aria-valuenow", String(Math.round(p)));
    progress.setAttribute("aria-valuetext", p + "%");
    bar.style.width = p + "%";
    pct.textContent = p + "%";
    counts.textContent = t("job.counts", { done: num(job.done), total: num(job.total), changed: num(job.changed), errors: num(job.errors) });
    rate.textContent = job.rate_per_s == null ? "—" : t("job.rate", { r: job.rate_per_s });
    eta.textContent = job.state === "done" ? t("job.eta", { d: duration(0) }) : job.eta_s == null ? "—" : t("job.eta", { d: duration(job.eta_s) });
    stop.hidden = job.state !== "running";
    resume.hidden = job.state !== "stopped";
    dismiss.hidden = job.state === "running";
  }

  return { el, stop, resume, dismiss, render };
}

export function jobPanel(ctx, onFinished) {
  const { el, stop, resume, dismiss, render: show } = jobView();
  let job = null;
  let timer = null;
  let inflight = false;
  let gen = 0; // bumped by stop/resume/start: older poll answers are dropped
  const render = () => show(job);

  function schedule() {
    clearTimeout(timer);
    if (job && job.state === "running" && ctx.alive) timer = setTimeout(poll, 1000);
  }

  function update(j) {
    const was = job && job.id === j.id ? job.state : null;
    job = j;
    render();
    if (was === "running" && j.state !== "running") {
      if (j.state === "done") toast(t("job.finished", { changed: num(j.changed) }));
      if (onFinished) onFinished(j);
    }
    schedule();
  }

  async function poll() {
    if (!job || job.state !== "running" || !ctx.alive || inflight) return;
    const id = job.id;
    const g = gen;
    inflight = true;
    try {
      const j = await api("/admin/api/checks/" + id, { quiet: true });
      if (ctx.alive && job && job.id === id && g === gen) update(j);
    } catch {
      // A failed poll (network, a busy worker) is retried.
      if (ctx.alive && job && job.id === id && g === gen) timer = setTimeout(poll, 3000);
    } finally {
      inflight = false;
      if (g !== gen) schedule();
    }
  }

  stop.addEventListener("click", async () => {
    if (!job) return;
    clearTimeout(timer);
    gen += 1;
    stop.disabled = true;
    try {
      update(await api("/admin/api/checks/" + job.id, { method: "DELETE" }));
    } catch {
      schedule();
    } finally {
      stop.disabled = false;
    }
  });
  resume.addEventListener("click", async () => {
    if (!job) return;
    gen += 1;
    update(await api("/admin/api/checks/" + job.id + "/resume", { method: "POST" }));
  });
  dismiss.addEventListener("click", () => {
    job = null;
    render();
  });
  ctx.onCleanup(() => clearTimeout(timer));
  ctx.onLang(render);

  return {
    el,
    // start(body) starts a job (POST /admin/api/checks) and follows it.
    async start(body) {
      const j = await api("/admin/api/checks", { method: "POST", body });
      gen += 1;
      job = null;
      update(j);
      if (j.state === "done") {
        toast(t("job.finished", { changed: num(j.changed) }));
        if (onFinished) onFinished(j);
      } else toast(t("job.started", { n: num(j.total) }));
      el.scrollIntoView({ block: "nearest" });
      return j;
    },
    // follow(job) shows a job already running (found on page load).
    follow(j) {
      update(j);
    },
  };
}
