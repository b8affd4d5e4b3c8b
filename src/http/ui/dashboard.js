// synod's dashboard: reads /v1/status and /eureka/apps every few seconds and renders them;
// actions go to the same Eureka routes every client uses, so the server decides who may do
// what (with an auth file: the operator role). Data is only ever written as text nodes.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
let lastApps = [];
let lastNow = Date.now();
let pendingCancel = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((lastNow - ms) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
  m.hidden = !text;
}

async function api(path, options) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { accept: "application/json" }, ...options });
  if (!resp.ok) {
    let reason = (await resp.text()).trim();
    try { reason = JSON.parse(reason).error || reason; } catch (_) { /* plain text */ }
    throw new Error(`${resp.status} ${reason || resp.statusText}`);
  }
  return resp;
}

function renderStatus(s) {
  lastNow = s.now_ms || Date.now();
  $("node").textContent = `node ${s.node_id} · ${s.replication}`;
  $("role").textContent = s.state || s.role;
  $("instances").textContent = s.instances;
  $("applications").textContent = s.applications;
  $("uptime").textContent = duration(s.uptime_seconds || 0);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  renderGauge(s.self_preservation);
  renderRenewals(s.renewals_per_minute || []);
  renderCluster(s);
}

function renderGauge(p) {
  const g = $("gauge");
  g.replaceChildren();
  const max = Math.max(p.expected_renews_per_min, p.renews_last_min, p.threshold, 1);
  const angle = (v) => Math.PI * (1 - Math.min(v, max) / max);
  const point = (a, r) => [100 + r * Math.cos(a), 100 - r * Math.sin(a)];
  const arc = (from, to, color) => {
    const [x1, y1] = point(angle(from), 80), [x2, y2] = point(angle(to), 80);
    g.append(svg("path", { d: `M ${x1} ${y1} A 80 80 0 0 1 ${x2} ${y2}`, stroke: color, "stroke-width": 16, fill: "none" }));
  };
  arc(0, p.threshold, "#f3c1c1");
  arc(p.threshold, max, "#c6e9cf");
  const [nx, ny] = point(angle(p.renews_last_min), 70);
  g.append(svg("line", { x1: 100, y1: 100, x2: nx, y2: ny, stroke: "#1d2329", "stroke-width": 3 }));
  const [tx, ty] = point(angle(p.threshold), 92);
  g.append(svg("line", { x1: tx, y1: ty, x2: point(angle(p.threshold), 72)[0], y2: point(angle(p.threshold), 72)[1], stroke: "#cf222e", "stroke-width": 2 }));
  g.append(svg("text", { x: 100, y: 116, "text-anchor": "middle" }, `${p.renews_last_min} / min (threshold ${p.threshold})`));
  let text;
  if (!p.enabled) text = "Self-preservation is off: expired leases are always evicted, even when the cause is a network problem.";
  else if (p.active) text = `Active: ${p.renews_last_min} renewals in the last minute, below the threshold of ${p.threshold} (of ${p.expected_renews_per_min.toFixed(0)} expected). Eviction is suspended: many instances stopped renewing at once, which is more likely a network problem than a mass failure. Instances shown UP may be gone.`;
  else text = `Eviction runs normally: ${p.renews_last_min} renewals in the last minute, threshold ${p.threshold} of ${p.expected_renews_per_min.toFixed(0)} expected. If renewals fall below the threshold, eviction stops until they recover.`;
  const e = $("preservation");
  e.textContent = text;
  e.className = p.active ? "banner" : "explain";
}

function renderRenewals(perMinute) {
  const g = $("renewals");
  g.replaceChildren();
  const max = Math.max(1, ...perMinute);
  const w = 320 / Math.max(perMinute.length, 1);
  perMinute.forEach((n, i) => {
    const h = (n / max) * 90;
    g.append(svg("rect", { x: i * w + 2, y: 100 - h, width: w - 4, height: h, fill: i === perMinute.length - 1 ? "#9cc3f5" : "#0969da" }));
  });
  g.append(svg("text", { x: 0, y: 115 }, "−15 min"));
  g.append(svg("text", { x: 320, y: 115, "text-anchor": "end" }, `now · max ${max}/min`));
}

function renderCluster(s) {
  const head = $("members").tHead, body = $("members").tBodies[0];
  head.replaceChildren();
  body.replaceChildren();
  if (s.members) {
    $("cluster-summary").textContent =
      `raft: ${s.state}, term ${s.term}, leader ${s.leader ?? "none"}, applied index ${s.applied_index ?? 0}` +
      (s.accepts_writes ? "" : " — this node cannot take writes now (no leader reachable)");
    head.append(el("tr", {}, el("th", {}, "Member"), el("th", {}, "URL"), el("th", {}, "Role"), el("th", {}, "Lag (entries)")));
    for (const m of s.members) {
      const role = m.id === s.leader ? "leader" : m.voter ? "voter" : "learner";
      body.append(el("tr", {}, el("td", {}, m.id), el("td", {}, m.url), el("td", {}, role), el("td", {}, m.lag ?? "(known on the leader)")));
    }
  } else if (s.peers && s.peers.length) {
    $("cluster-summary").textContent = `p2p: every node takes writes and replicates them to the others.`;
    head.append(el("tr", {}, ...["Peer", "URL", "Reachable", "Queue", "Needs resync", "Registries agree"].map((h) => el("th", {}, h))));
    for (const p of s.peers) {
      body.append(el("tr", {}, el("td", {}, p.id), el("td", {}, p.url), el("td", {}, p.reachable ? "yes" : "no"),
        el("td", {}, p.queue_depth), el("td", {}, p.needs_resync ? "yes" : "no"),
        el("td", {}, p.digests_agree == null ? "not compared yet" : p.digests_agree ? "yes" : "no")));
    }
  } else {
    $("cluster-summary").textContent = "A single node (replication none).";
  }
}

function zoneOf(i) {
  const m = i.metadata || {};
  const dc = (i.dataCenterInfo && i.dataCenterInfo.metadata) || {};
  return m.zone || dc["availability-zone"] || "";
}

function flatten(doc) {
  const apps = (doc.applications && doc.applications.application) || [];
  const out = [];
  for (const a of apps) for (const i of a.instance || []) out.push(i);
  out.sort((x, y) => (x.app + x.instanceId).localeCompare(y.app + y.instanceId));
  return out;
}

function renderInstances() {
  const query = $("filter").value.trim().toLowerCase();
  const status = $("status-filter").value;
  const body = $("instances-table").tBodies[0];
  body.replaceChildren();
  let shown = 0;
  for (const i of lastApps) {
    const port = i.port && i.port["@enabled"] !== "false" ? `:${i.port["$"]}` : "";
    const address = `${i.ipAddr || i.hostName}${port}`;
    const zone = zoneOf(i);
    const hay = `${i.app} ${i.instanceId} ${address} ${i.hostName} ${zone} ${i.status}`.toLowerCase();
    if ((query && !hay.includes(query)) || (status && i.status !== status)) continue;
    shown++;
    const lease = i.leaseInfo || {};
    const meta = Object.entries(i.metadata || {}).filter(([k]) => k !== "@class").map(([k, v]) => `${k}=${v}`).join("\n");
    const override = i.overriddenStatus && i.overriddenStatus !== "UNKNOWN" ? ` (override ${i.overriddenStatus})` : "";
    body.append(el("tr", { "data-app": i.app, "data-id": i.instanceId },
      el("td", {}, i.app),
      el("td", {}, i.instanceId),
      el("td", {}, el("span", { class: `status ${i.status}` }, i.status), override),
      el("td", {}, address),
      el("td", {}, zone),
      el("td", {}, ago(lease.lastRenewalTimestamp)),
      el("td", {}, ago(lease.registrationTimestamp)),
      el("td", { class: "meta" }, el("pre", {}, meta)),
      el("td", {}, ...actions(i))));
  }
  $("shown").textContent = `${shown} of ${lastApps.length} instances`;
}

function actions(i) {
  const path = `/eureka/apps/${encodeURIComponent(i.app)}/${encodeURIComponent(i.instanceId)}`;
  const out = [];
  if (i.overriddenStatus === "OUT_OF_SERVICE" || i.status === "OUT_OF_SERVICE") {
    out.push(el("button", { onclick: () => act(`${path}/status?value=UP`, "DELETE", `${i.instanceId} is back in service`) }, "Back in service"));
  } else {
    out.push(el("button", { onclick: () => act(`${path}/status?value=OUT_OF_SERVICE`, "PUT", `${i.instanceId} is out of service`) }, "Take out of service"));
  }
  const key = `${i.app}/${i.instanceId}`;
  if (pendingCancel === key) {
    out.push(el("button", { class: "danger", onclick: () => { pendingCancel = null; act(path, "DELETE", `${i.instanceId} cancelled`); } }, "Confirm cancel"));
    out.push(el("button", { onclick: () => { pendingCancel = null; renderInstances(); } }, "Keep"));
  } else {
    out.push(el("button", { class: "danger", onclick: () => { pendingCancel = key; renderInstances(); } }, "Cancel"));
  }
  return out;
}

async function act(path, method, done) {
  try {
    await api(path, { method });
    say(done, false);
  } catch (e) {
    const hint = /^40[13]/.test(e.message) ? " (this needs the operator role)" : "";
    say(`${method} ${path}: ${e.message}${hint}`, true);
  }
  await refresh();
}

async function refresh() {
  try {
    const [status, apps] = await Promise.all([api("/v1/status"), api("/eureka/apps")]);
    renderStatus(await status.json());
    lastApps = flatten(await apps.json());
    renderInstances();
    document.body.dataset.loaded = "true";
  } catch (e) {
    say(`cannot read the registry: ${e.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", renderInstances);
  $("status-filter").addEventListener("change", renderInstances);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
