/* stepq console: polls /console/feed every 2 s and draws it. Everything from
 * the server is put in the page as text (never as HTML). The API token lives
 * only in the `token` input's value and is sent as a header with an action. */
"use strict";

const PHASES = ["job", "dual-write", "dual-read", "step-primary", "step"];
const POLL_MS = 2000;
const HISTORY = 90;
const history = []; /* {at, fallback_reads, lazy_migrations, primary_misses} */
let last = null;

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = el("td", c.text !== undefined ? c.text : c, c.cls);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbodyOf, rows) {
  const tb = $(tbodyOf).querySelector("tbody");
  tb.replaceChildren(...rows);
}

const fmtN = (n) => (typeof n === "number" ? n.toLocaleString() : "–");
const local = (ms) => (typeof ms === "number" && ms > 0 ? new Date(ms).toLocaleString() : "–");

function ago(ms) {
  if (typeof ms !== "number" || ms <= 0) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function duration(ms) {
  if (typeof ms !== "number") return "–";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function drawPhase(d) {
  const cur = PHASES.indexOf(d.phase);
  $("timeline").replaceChildren(...PHASES.map((p, i) => {
    const li = el("li", p, i < cur ? "past" : i === cur ? "current" : "");
    li.dataset.phase = p;
    return li;
  }));
  $("phase").textContent = d.phase || "unknown";
  $("phase-since").textContent = d.phase_since ? "since " + local(d.phase_since) : "";
  $("pin").textContent = d.pin ? "(this server is pinned to " + d.pin + ")" : "";
  $("reasons").replaceChildren(...(d.reasons || []).map((r) => el("li", r)));
  const moves = d.moves || [];
  $("moves").replaceChildren(...moves.map((m) => {
    const li = el("li");
    li.dataset.to = m.to;
    li.appendChild(el("strong", (m.direction === "forward" ? "→ " : "← ") + m.to));
    li.appendChild(el("span", m.allowed ? "preconditions met" : "preconditions not met",
      m.allowed ? "met" : "unmet"));
    const b = el("button", m.direction === "forward" ? "Move to " + m.to : "Move back to " + m.to);
    b.type = "button";
    b.dataset.move = m.to;
    b.addEventListener("click", () => movePhase(m.to));
    li.appendChild(b);
    const pre = el("ul", null, "pre");
    for (const p of m.preconditions || []) {
      const item = el("li", (p.met ? "✓ " : "✗ ") + p.rule, p.met ? "met" : "unmet");
      item.dataset.met = String(p.met);
      pre.appendChild(item);
    }
    if (!(m.preconditions || []).length) pre.appendChild(el("li", "no precondition for this move", "muted"));
    li.appendChild(pre);
    li.appendChild(el("span", m.allowed ? "the rules of '" + m.command + "' allow it"
      : m.refusal, "why"));
    return li;
  }));
  if (!moves.length) $("moves").appendChild(el("li", "no move from here (Redis unreachable?)", "muted"));
}

function drawKeys(d) {
  fill("keys", (d.keys || []).map((k) => {
    const tr = row([k.rule, { text: k.old, cls: "mono" }, { text: fmtN(k.old_keys), cls: "n" },
      { text: k.new, cls: "mono" }, { text: fmtN(k.new_keys), cls: "n" }]);
    tr.dataset.rule = k.rule;
    return tr;
  }));
}

function drawBackfill(d) {
  const b = d.backfill || {};
  const bar = $("backfill-bar");
  const paused = d.throttle && d.throttle.paused;
  if (!b.state) {
    bar.dataset.state = "none";
    bar.querySelector(".fill").style.width = "0";
    bar.querySelector(".label").textContent = paused ? "never ran (throttle paused)" : "never ran";
    $("backfill").textContent = "no backfill has run in this namespace";
    return;
  }
  const running = b.state === "running";
  const st = running && paused ? "paused" : b.state;
  bar.dataset.state = st;
  bar.querySelector(".fill").style.width = (b.percent || 0).toFixed(1) + "%";
  bar.querySelector(".label").textContent = (b.percent || 0).toFixed(1) + "% · " +
    fmtN(b.keys_done) + " / " + fmtN(b.keys_total) + " keys" +
    (st === "paused" ? " · PAUSED (migrate throttle --resume)" : running ? "" : " · " + b.state);
  const parts = [];
  parts.push("state " + b.state + (b.mode ? " (" + b.mode + ")" : ""));
  parts.push("started " + local(b.started_at));
  if (b.finished_at) parts.push("finished " + local(b.finished_at));
  if (typeof b.rate_per_s === "number") parts.push(fmtN(Math.round(b.rate_per_s)) + " keys/s average");
  if (running) parts.push(paused ? "ETA: none while paused" : "ETA " + duration(b.eta_ms));
  parts.push("copied " + fmtN(b.copied || 0) + ", merged " + fmtN(b.merged || 0) +
    ", errors " + fmtN(b.errors || 0));
  $("backfill").textContent = parts.join(" · ");
}

function drawVerify(d) {
  const v = d.verify || {};
  const p = $("verify");
  if (v.started_at === undefined) {
    p.textContent = "no verify has run in this namespace";
    p.dataset.clean = "";
    $("verify-offenders").replaceChildren();
    return;
  }
  const done = typeof v.finished_at === "number";
  p.dataset.clean = done ? String(v.clean) : "running";
  p.textContent = (done ? (v.clean ? "clean" : "NOT clean") : "running") +
    (v.reverse ? " (reverse: new against old)" : "") +
    " · old " + fmtN(v.old) + ", new " + fmtN(v.new) + " · equal " + fmtN(v.equal) +
    ", missing " + fmtN(v.missing) + ", different " + fmtN(v.different) +
    ", ttl off " + fmtN(v.ttl_off) + " · " + (done ? "finished " + local(v.finished_at)
      : "started " + local(v.started_at));
  p.className = done && !v.clean ? "bad" : "";
  const bad = typeof v.first_bad === "string" && v.first_bad ? v.first_bad.split(/[\n;]\s*/) : [];
  $("verify-offenders").replaceChildren(...bad.filter(Boolean).slice(0, 10).map((s) => el("li", s)));
}

function drawBackup(d) {
  const b = d.backup || {};
  $("backup").textContent = b.started_at === undefined ? "no backup taken in this namespace"
    : (b.side || "?") + " side · " + fmtN(b.keys) + " keys · " +
      (b.verified ? "verified" : "NOT verified") + " · taken in " + (b.phase || "?") +
      " · finished " + local(b.finished_at) + " · " + (b.path || "");
}

function drawCounters(d) {
  const c = d.counters || {};
  const now = { at: d.checked_at, fallback_reads: c.fallback_reads || 0,
    lazy_migrations: c.lazy_migrations || 0, primary_misses: c.primary_misses || 0 };
  if (!history.length || history[history.length - 1].at !== now.at) history.push(now);
  while (history.length > HISTORY) history.shift();
  $("counters").textContent = Object.keys(c).sort().map((k) => k + "=" + c[k]).join("  ");
  const cv = $("chart"), g = cv.getContext("2d");
  const w = cv.width, h = cv.height;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#e3e6eb";
  g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
  const series = [["fallback_reads", "#2f5fd0"], ["lazy_migrations", "#1a7f37"], ["primary_misses", "#c62828"]];
  const deltas = series.map(([k]) => history.slice(1).map((p, i) => Math.max(0, p[k] - history[i][k])));
  const max = Math.max(1, ...deltas.flat());
  const step = w / Math.max(1, HISTORY - 1);
  deltas.forEach((ds, si) => {
    g.strokeStyle = series[si][1];
    g.lineWidth = 2;
    g.beginPath();
    ds.forEach((v, i) => {
      const x = w - (ds.length - 1 - i) * step, y = h - 4 - (v / max) * (h - 12);
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  });
  g.fillStyle = "#667085";
  g.font = "11px system-ui";
  g.fillText("max " + max + " per poll", 4, 12);
}

function drawQueue(d) {
  const q = d.queue || {};
  fill("queue", Object.keys(q).map((s) => {
    const tr = row([s, { text: fmtN(q[s].old), cls: "n" }, { text: fmtN(q[s].new), cls: "n" }]);
    tr.dataset.state = s;
    return tr;
  }));
}

function drawThrottle(d) {
  const t = d.throttle || {};
  $("throttle").textContent = (t.paused ? "PAUSED: backfill, verify and cleanup wait" : "running") +
    " · rate " + (typeof t.rate === "number" ? fmtN(t.rate) + " keys/s (override)" : "as each run was started");
  $("throttle").dataset.paused = String(!!t.paused);
}

function drawTables(d) {
  fill("workers", (d.workers || []).map((w) => row([{ text: w.id, cls: "mono" }, w.state,
    { text: fmtN(w.steps), cls: "n" }, ago(w.heartbeat)])));
  fill("processes", (d.processes || []).map((p) => row([{ text: p.id, cls: "mono" }, p.kind,
    p.pin || "follows the stored phase", ago(p.seen)])));
  fill("audit", (d.audit || []).slice().reverse().map((a) => row([local(a.ts),
    a.action ? a.action : (a.from || "?") + " → " + (a.to || "?") + (a.force ? " (forced)" : ""),
    a.who || "", a.reason || (a.skipped ? "skipped: " + a.skipped : "")])));
}

function draw(d) {
  last = d;
  const hl = $("health");
  hl.dataset.status = d.status;
  hl.textContent = d.status === "healthy" ? "healthy" : d.status === "unavailable"
    ? "Redis unreachable" : "unhealthy: " + (d.reasons || []).length + " reason(s)";
  $("updated").textContent = "checked " + local(d.checked_at);
  drawPhase(d);
  drawKeys(d);
  drawBackfill(d);
  drawVerify(d);
  drawBackup(d);
  drawCounters(d);
  drawQueue(d);
  drawThrottle(d);
  drawTables(d);
  document.body.dataset.ready = "1";
}

function headers(json) {
  const h = {};
  const t = $("token").value.trim();
  if (t) h.Authorization = "Bearer " + t;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function poll() {
  try {
    const r = await fetch("/console/feed", { headers: headers(false), cache: "no-store" });
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || "HTTP " + r.status);
    draw(d);
  } catch (e) {
    $("health").dataset.status = "offline";
    $("health").textContent = "no answer from the server";
    $("updated").textContent = String(e.message || e);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function say(kind, text) {
  const p = $("action-result");
  p.dataset.kind = kind;
  p.textContent = text;
}

async function act(path, body, what) {
  if (!$("token").value.trim()) {
    say("error", "type the API token first (the server's STEPQ_API_TOKEN)");
    $("token").focus();
    return;
  }
  if (!window.confirm(what + "?")) {
    say("", "cancelled: " + what);
    return;
  }
  say("", what + "…");
  try {
    const r = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body),
      cache: "no-store" });
    const d = await r.json().catch(() => ({}));
    if (r.ok) say("ok", "done: " + what);
    else say("error", "refused (" + r.status + "): " + (d.error || "no reason given"));
  } catch (e) {
    say("error", "no answer: " + (e.message || e));
  }
}

function movePhase(to) {
  act("/migrate/phase", { to: to }, "Move the phase from " + (last ? last.phase : "?") + " to " + to);
}

$("pause").addEventListener("click", () => act("/migrate/throttle", { paused: true }, "Pause the throttle"));
$("resume").addEventListener("click", () => act("/migrate/throttle", { paused: false }, "Resume the throttle"));
poll();
