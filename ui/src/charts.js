// Chart.js, only the parts the UI draws with (tree-shaken into the bundle).
import {
  Chart, BarController, BarElement, LineController, LineElement, PointElement, DoughnutController, ArcElement,
  CategoryScale, LinearScale, Tooltip, Legend, Filler,
} from "chart.js";

Chart.register(BarController, BarElement, LineController, LineElement, PointElement, DoughnutController, ArcElement,
  CategoryScale, LinearScale, Tooltip, Legend, Filler);

Chart.defaults.maintainAspectRatio = false;
Chart.defaults.datasets.bar.maxBarThickness = 28;
Chart.defaults.scale.ticks.maxRotation = 0;
Chart.defaults.scale.ticks.autoSkipPadding = 12;
Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, 'PingFang SC', 'Microsoft YaHei', sans-serif";
if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
  Chart.defaults.animation = false;
}

export const COLORS = {
  active: "#1a7f37",
  cooling: "#bf8700",
  blocked: "#cf222e",
  exhausted: "#8250df",
  disabled: "#6e7781",
  blue: "#0969da",
  teal: "#1b7c83",
  orange: "#bc4c00",
  pink: "#bf3989",
};

export const PALETTE = [COLORS.blue, COLORS.active, COLORS.orange, COLORS.exhausted, COLORS.teal, COLORS.pink,
  COLORS.cooling, COLORS.blocked, "#57606a", "#0550ae"];

function themeColors() {
  const s = getComputedStyle(document.documentElement);
  return { text: s.getPropertyValue("--muted").trim() || "#57606a", grid: s.getPropertyValue("--grid").trim() || "#d0d7de" };
}

// draw(canvas, config): creates the chart, or updates the one already on
// the canvas in place (no flicker on refresh).
export function draw(canvas, config) {
  const c = themeColors();
  Chart.defaults.color = c.text;
  Chart.defaults.borderColor = c.grid;
  const existing = Chart.getChart(canvas);
  if (existing && existing.config.type === config.type) {
    existing.data = config.data;
    existing.options = config.options || {};
    existing.update("none");
    return existing;
  }
  if (existing) existing.destroy();
  return new Chart(canvas, config);
}

export function destroyAll(root) {
  for (const canvas of root.querySelectorAll("canvas")) {
    const c = Chart.getChart(canvas);
    if (c) c.destroy();
  }
}
