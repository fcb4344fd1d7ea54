// streamvid web page: plain JavaScript, no build step, talks to the JSON API of this server.
"use strict";

const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("streamvid-token") || "";
let pastedImage = null;

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (token) opts.headers["Authorization"] = "Bearer " + token;
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    const t = prompt("This server needs its access token:");
    if (t) { token = t.trim(); localStorage.setItem("streamvid-token", token); startEvents(); return api(method, path, body); }
  }
  const data = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

function showError(id, err) {
  const el = $(id);
  el.hidden = !err;
  el.textContent = err ? String(err.message || err) : "";
}

function fmtTime(s) {
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return [h, m, sec].map((v) => String(v).padStart(2, "0")).join(":");
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

async function refreshStreams() {
  try {
    const { streams } = await api("GET", "/streams");
    const tbody = $("streams").querySelector("tbody");
    tbody.replaceChildren();
    for (const s of streams) {
      const tr = document.createElement("tr");
      tr.dataset.sourceId = s.source_id;
      const name = cell(tr, s.source_id);
      name.title = s.uri;
      cell(tr, s.state, "state state-" + s.state).title = s.error || "";
      cell(tr, s.lag.toFixed(1) + " s");
      cell(tr, s.fps_in.toFixed(1) + " / " + s.fps_out.toFixed(1));
      cell(tr, String(s.drops));
      cell(tr, String(s.clips), "clips");
      const td = cell(tr, "");
      const del = document.createElement("button");
      del.className = "small";
      del.textContent = "✕";
      del.title = "stop this stream";
      del.onclick = async () => { await api("DELETE", "/streams/" + encodeURIComponent(s.source_id)).catch((e) => showError("stream-error", e)); refreshStreams(); };
      td.appendChild(del);
      tbody.appendChild(tr);
    }
    $("conn").textContent = "connected";
  } catch (e) {
    $("conn").textContent = "offline";
  }
}

$("add-stream").onsubmit = async (ev) => {
  ev.preventDefault();
  const body = { uri: $("stream-uri").value.trim() };
  if ($("stream-id").value.trim()) body.source_id = $("stream-id").value.trim();
  if ($("stream-fps").value) body.fps = Number($("stream-fps").value);
  try { await api("POST", "/streams", body); showError("stream-error", null); $("add-stream").reset(); }
  catch (e) { showError("stream-error", e); }
  refreshStreams();
};

function setRange(e) {
  $("ask-start").value = e.start;
  $("ask-end").value = e.end;
  if (e.source_id) $("ask-sources").value = e.source_id;
}

function showAnswer(ans) {
  $("answer").hidden = false;
  $("answer-text").textContent = ans.answer;
  const ol = $("evidence");
  ol.replaceChildren();
  for (const e of ans.evidence) {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.alt = "keyframe of clip " + e.clip_id;
    img.loading = "lazy";
    img.src = withToken("/clips/" + e.clip_id + "/keyframe");
    img.onerror = () => { img.hidden = true; };
    const div = document.createElement("div");
    const a = document.createElement("a");
    a.className = "time";
    a.textContent = fmtTime(e.start) + "–" + fmtTime(e.end);
    a.title = "ask again within this moment";
    a.onclick = () => setRange(e);
    div.append(a, " ", e.source_id ? "[" + e.source_id + "] " : "", "score " + e.score.toFixed(2));
    const p = document.createElement("div");
    p.textContent = e.text;
    div.appendChild(p);
    li.append(img, div);
    ol.appendChild(li);
  }
}

$("question").addEventListener("paste", (ev) => {
  for (const item of ev.clipboardData.items) {
    if (item.type.startsWith("image/")) {
      pastedImage = item.getAsFile();
      $("pasted").src = URL.createObjectURL(pastedImage);
      $("pasted").hidden = false;
      ev.preventDefault();
    }
  }
});

$("ask").onsubmit = async (ev) => {
  ev.preventDefault();
  const form = new FormData();
  form.append("text", $("question").value);
  const file = $("ask-image").files[0] || pastedImage;
  if (file) form.append("image", file);
  for (const k of ["source_ids", "start", "end"]) {
    const v = $("ask-" + (k === "source_ids" ? "sources" : k)).value.trim();
    if (v) form.append(k, v);
  }
  try { showAnswer(await api("POST", "/ask", form)); showError("ask-error", null); }
  catch (e) { showError("ask-error", e); }
};

async function refreshAlerts() {
  try {
    const { alerts } = await api("GET", "/alerts");
    const ul = $("alerts");
    ul.replaceChildren();
    for (const a of alerts) {
      const li = document.createElement("li");
      li.textContent = (a.text || "(image)") + " ≥ " + a.threshold + (a.source_ids.length ? " on " + a.source_ids.join(", ") : "") + " · fired " + a.fired + " ";
      const del = document.createElement("button");
      del.className = "small";
      del.textContent = "✕";
      del.onclick = async () => { await api("DELETE", "/alerts/" + a.id).catch(() => {}); refreshAlerts(); };
      li.appendChild(del);
      ul.appendChild(li);
    }
  } catch (e) { /* shown by the connection pill */ }
}

$("add-alert").onsubmit = async (ev) => {
  ev.preventDefault();
  const body = { text: $("alert-text").value, threshold: Number($("alert-threshold").value || 0.5) };
  const s = $("alert-sources").value.trim();
  if (s) body.source_ids = s.split(",").map((x) => x.trim()).filter(Boolean);
  try { await api("POST", "/alerts", body); showError("alert-error", null); $("alert-text").value = ""; }
  catch (e) { showError("alert-error", e); }
  refreshAlerts();
};

function describe(ev) {
  switch (ev.type) {
    case "alert": return "ALERT “" + ev.text + "”: " + ev.source_id + " " + fmtTime(ev.start) + "–" + fmtTime(ev.end) + " score " + ev.score.toFixed(2);
    case "commit": return "commit " + ev.generation + ": " + ev.clips + " clips";
    case "stream": return "stream " + ev.source_id + " " + ev.state;
    case "reconnect": return "stream " + ev.source_id + " reconnected (" + ev.reconnects + ")";
    case "drop": return "stream " + ev.source_id + ": " + ev.drops + " frames dropped";
    case "error": return "error " + (ev.source_id || ev.alert_id || "") + ": " + ev.error;
    default: return ev.type;
  }
}

let events = null;
function startEvents() {
  if (events) events.close();
  events = new EventSource(withToken("/events"));
  for (const kind of ["alert", "commit", "stream", "reconnect", "drop", "error"]) {
    events.addEventListener(kind, (msg) => {
      const ev = JSON.parse(msg.data);
      const li = document.createElement("li");
      li.className = ev.type;
      li.textContent = new Date(ev.time * 1000).toLocaleTimeString() + "  " + describe(ev);
      $("events").prepend(li);
      while ($("events").children.length > 200) $("events").lastChild.remove();
      if (ev.type === "alert") refreshAlerts();
      refreshStreams();
    });
  }
}

refreshStreams().then(() => { startEvents(); refreshAlerts(); });
setInterval(refreshStreams, 2000);
