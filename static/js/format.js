// Pure formatting helpers shared by the views (money, tokens, times, durations, colours).

import { NodeStatus, SessionStatus } from "./vocabulary.js";

/** "$0.0142": fixed decimals so live numbers do not jump around. */
export function formatUsd(value, decimals = 4) {
  const n = Number(value);
  return `$${(Number.isFinite(n) ? n : 0).toFixed(decimals)}`;
}

/** A cost, or "price unknown" for null (a model without a price: never shown as $0). */
export function formatCost(value, decimals = 4) {
  return value === null || value === undefined ? "price unknown" : formatUsd(value, decimals);
}

/** "3,210" */
export function formatTokens(value) {
  const n = Number(value);
  return (Number.isFinite(n) ? Math.round(n) : 0).toLocaleString("en-US");
}

/** "14:02" in the viewer's local time, "" for null/invalid. */
export function formatClock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** "3m12s", "1h04m", "42s" */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor((Number(ms) || 0) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

/** "4:32" countdown, "0:00" once past. */
export function formatCountdown(ms) {
  const total = Math.max(0, Math.ceil((Number(ms) || 0) / 1000));
  const m = Math.floor(total / 60);
  const s = total % 60;
  return `${m}:${String(s).padStart(2, "0")}`;
}

/** A label for every session and node status (the two share most of their words). */
export const STATUS_LABELS = Object.freeze({
  [SessionStatus.CREATED]: "not started",
  [NodeStatus.PENDING]: "pending",
  [NodeStatus.RUNNING]: "running",
  [NodeStatus.PAUSED]: "paused",
  [NodeStatus.WAITING_REVIEW]: "waiting for review",
  [NodeStatus.COMPLETED]: "completed",
  [NodeStatus.FAILED]: "failed",
  [NodeStatus.SKIPPED]: "skipped",
  [NodeStatus.STOPPED]: "stopped",
});

export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || "unknown");
}

// Calm, distinguishable hues with enough contrast on white for text and avatars.
const AGENT_COLORS = ["#2563eb", "#7c3aed", "#0d9488", "#c2410c", "#be185d", "#4d7c0f", "#0369a1", "#a16207"];

function hash(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i += 1) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

/** A stable colour for an agent id (same id, same colour, on every page load). */
export function agentColor(agentId) {
  return AGENT_COLORS[hash(String(agentId || "")) % AGENT_COLORS.length];
}

/** The initial shown in an avatar. */
export function initialOf(name) {
  const s = String(name || "?").trim();
  return (s.codePointAt(0) ? String.fromCodePoint(s.codePointAt(0)) : "?").toUpperCase();
}

/** Group workflow nodes by depth: level 0 has no dependencies, level n depends on level n-1. */
export function levelsOf(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id) || !byId.has(id)) return -1; // cycle or unknown dependency
    visiting.add(id);
    const deps = byId.get(id).depends_on || [];
    const d = deps.length ? 1 + Math.max(...deps.map(depthOf)) : 0;
    visiting.delete(id);
    depth.set(id, Math.max(0, d));
    return depth.get(id);
  };
  const levels = [];
  for (const node of nodes) {
    const d = depthOf(node.id);
    (levels[d] ||= []).push(node);
  }
  return levels.filter(Boolean);
}

/** Points of a sparkline polyline for [[iso, value], ...] in a width x height box. */
export function sparklinePoints(series, width, height, pad = 2) {
  if (!series || series.length === 0) return [];
  const xs = series.map(([t]) => Date.parse(t));
  const ys = series.map(([, v]) => Number(v) || 0);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs);
  const yMax = Math.max(...ys, 0);
  const w = width - 2 * pad;
  const h = height - 2 * pad;
  const yOf = (v) => Math.round((yMax > 0 ? pad + h - (v / yMax) * h : pad + h) * 10) / 10;
  const r = (x) => Math.round(x * 10) / 10;
  if (series.length === 1) return [[r(pad), yOf(ys[0])], [r(pad + w), yOf(ys[0])]];
  return series.map((_, i) => {
    const x = x1 === x0 ? pad + (w * i) / (series.length - 1) : pad + ((xs[i] - x0) / (x1 - x0)) * w;
    return [r(x), yOf(ys[i])];
  });
}
