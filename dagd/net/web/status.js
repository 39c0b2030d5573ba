// Run and step statuses: their words and symbols. Colours are the CSS variables
// --status-<status> in style.css, applied through a `data-status` attribute; every coloured
// mark also carries the status as text (a title, an aria-label or a symbol), never colour
// alone.

export const RUN_STATUSES = ["queued", "running", "success", "failed", "cancelled"];
export const STEP_STATUSES = [
  "pending", "running", "retrying", "success", "failed", "upstream_failed", "skipped", "cancelled",
];
export const FINISHED_RUN = new Set(["success", "failed", "cancelled"]);
export const ACTIVE_RUN = new Set(["queued", "running"]);

const SYMBOLS = {
  queued: "…", pending: "…", running: "▶", retrying: "↻", success: "✓", failed: "✕",
  upstream_failed: "⇡", skipped: "⤼", cancelled: "⊘",
};

/** "upstream_failed" -> "upstream failed". */
export function statusLabel(status) {
  return status ? String(status).replace(/_/g, " ") : "no status";
}

/** A one-character mark for `status` (shape, not only colour). */
export function statusSymbol(status) {
  return SYMBOLS[status] || "·";
}
