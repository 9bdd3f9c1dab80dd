// The presence dashboard: JSON reads under api/, live updates from the
// Server-Sent Events stream api/events. Read with fetch rather than
// EventSource, which cannot send the Authorization header. Every value from
// the server goes into the page as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_EVENTS = 200;
let token = "";
let roomsCursor = "0", roomsNext = "0";
let room = "", channel = null;

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v; else if (k === "onclick") e.onclick = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k ?? "")));
  return e;
}

function ago(ms) {
  if (ms < 0) ms = 0;
  if (ms < 1000) return ms + " ms ago";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s ago";
  return Math.round(ms / 60000) + " min ago";
}

function timeOf(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }

function stateText(s) { return s == null ? "" : JSON.stringify(s); }

// stateCell shows the state, its "status" (a common field) highlighted.
function stateCell(s) {
  const td = el("td", { class: "mono" });
  if (s && typeof s === "object" && typeof s.status === "string") {
    td.append(el("span", { class: "state-" + s.status.replace(/[^a-z]/gi, "") }, s.status), " ");
  }
  td.append(stateText(s));
  return td;
}

function setLoginShown(shown) {
  $("login").hidden = !shown;
  $("main").hidden = shown;
}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch("api/" + path, { headers, cache: "no-store" });
  if (r.status === 401) { setLoginShown(true); throw new Error("unauthorized"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ---- rooms
async function loadRooms(cursor) {
  try {
    const page = await api("rooms?count=50&cursor=" + encodeURIComponent(cursor));
    roomsCursor = cursor; roomsNext = page.next;
    const tb = $("rooms").tBodies[0];
    tb.replaceChildren(...page.rooms.map((r) => {
      const tr = el("tr", { "data-room": r.room, onclick: () => selectRoom(r.room) },
        el("td", {}, r.room), el("td", { class: "num" }, r.conns), el("td", { class: "num" }, r.users));
      if (r.room === room) tr.classList.add("selected");
      return tr;
    }));
    $("rooms-note").textContent = page.rooms.length + " on this page" + (page.next === "0" ? "" : ", more after");
    $("rooms-next").disabled = page.next === "0";
    $("rooms-first").disabled = cursor === "0";
  } catch (e) { $("rooms-note").textContent = "(" + e.message + ")"; }
}

// ---- one room
function selectRoom(r) {
  room = r;
  for (const tr of $("rooms").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.room === r);
  $("room-title").textContent = r;
  loadRoom();
}

async function loadRoom() {
  if (!room) return;
  const want = room;
  try {
    const snap = await api("room?room=" + encodeURIComponent(want));
    if (want !== room) return;
    $("room-empty").textContent = snap.members.length ? "" : "No live connection in this room.";
    $("members").tBodies[0].replaceChildren(...snap.members.map((m) => el("tr", { "data-conn": m.connId },
      el("td", {}, m.userId), el("td", { class: "mono" }, m.connId), el("td", { class: "num" }, m.epoch),
      el("td", {}, ago(snap.nowMs - m.lastSeenMs)), stateCell(m.state))));
  } catch (e) { $("room-empty").textContent = "(" + e.message + ")"; }
}

// soon runs fn once within ms however many events ask for it meanwhile:
// a busy room sends tens of events a second.
const timers = {};
function soon(timer, fn, ms) {
  if (timers[timer]) return;
  timers[timer] = setTimeout(() => { timers[timer] = 0; fn(); }, ms);
}
function roomSoon() { soon("room", loadRoom, 300); }

// ---- one metadata channel
function selectChannel(type, name) {
  channel = { type, name };
  $("channel-title").textContent = type + ":" + name;
  loadChannel();
}

async function loadChannel() {
  if (!channel) return;
  const want = channel;
  try {
    const m = await api("channel?type=" + encodeURIComponent(want.type) + "&name=" + encodeURIComponent(want.name));
    if (want !== channel) return;
    const keys = Object.keys(m.metadata).sort();
    $("channel-info").textContent = "major revision " + m.majorRevision + ", " + m.totalCount + " item(s), " +
      (m.locks.length ? m.locks.length + " lock(s) held" : "no lock held");
    $("locks").tBodies[0].replaceChildren(...m.locks.map((l) => el("tr", {},
      el("td", {}, l.name), el("td", { class: "held" }, l.owner),
      el("td", {}, l.expiresAtMs ? ((l.expiresAtMs - m.nowMs) / 1000).toFixed(1) + " s" : "never"))));
    $("items").tBodies[0].replaceChildren(...keys.map((k) => {
      const it = m.metadata[k];
      return el("tr", {}, el("td", { class: "mono" }, k), el("td", { class: "mono" }, it.value),
        el("td", { class: "num" }, it.revision), el("td", {}, it.updated || ""), el("td", {}, it.authorUid || ""));
    }));
  } catch (e) { $("channel-info").textContent = "(" + e.message + ")"; }
}

function channelSoon() { soon("channel", loadChannel, 300); }

function showChannels(list) {
  $("channels-seen").replaceChildren(...(list || []).map((c) =>
    el("button", { class: "chip", type: "button", onclick: () => selectChannel(c.channelType, c.channelName) },
      c.channelType + ":" + c.channelName)));
}

// ---- live events
// Rows are built on a timer, not per event: thousands of events a second
// would otherwise keep the page busy. Between two renders only the newest
// MAX_EVENTS are kept.
let pending = [];
function addEvent(make, forRoom) {
  if ($("events-room-only").checked && forRoom !== room) return;
  pending.push(make);
  if (pending.length > MAX_EVENTS) pending = pending.slice(-MAX_EVENTS);
  soon("events", renderEvents, 200);
}

function renderEvents() {
  const rows = pending.map((make) => { const r = make(); r.classList.add("flash"); return r; });
  pending = [];
  const tb = $("events").tBodies[0];
  tb.prepend(...rows.reverse());
  while (tb.rows.length > MAX_EVENTS) tb.deleteRow(-1);
}

function onPresence(ev) {
  addEvent(() => el("tr", { "data-type": ev.type },
    el("td", {}, timeOf(ev.ts)), el("td", { class: "ev-" + ev.type }, ev.type),
    el("td", {}, ev.roomId), el("td", {}, ev.userId + " ", el("span", { class: "mono" }, ev.connId)),
    el("td", { class: "mono" }, "epoch " + ev.epoch + " " + stateText(ev.state))), ev.roomId);
  if (ev.roomId === room) roomSoon();
  if (ev.type !== "update" && $("rooms").tBodies[0].querySelector(`tr[data-room="${CSS.escape(ev.roomId)}"]`)) roomsSoon();
}

function roomsSoon() { soon("rooms", () => loadRooms(roomsCursor), 1000); }

function onMetadata(ev) {
  const items = (ev.items || []).map((i) => i.key + "=" + i.value + " (rev " + i.revision + ")").join(", ");
  addEvent(() => el("tr", { "data-type": "metadata" },
    el("td", {}, timeOf(ev.timestamp)), el("td", { class: "ev-meta" }, "metadata " + ev.operation),
    el("td", {}, ev.channelType + ":" + ev.channelName), el("td", {}, ev.authorUid || ""),
    el("td", { class: "mono" }, items)), null);
  if (channel && channel.type === ev.channelType && channel.name === ev.channelName) channelSoon();
}

function onStatus(s) {
  $("presence-rate").textContent = s.presencePerSec.toFixed(1);
  $("metadata-rate").textContent = s.metadataPerSec.toFixed(1);
  $("sockets").textContent = s.sockets ?? "–";
  $("dropped").textContent = s.dropped;
  const r = $("redis");
  if (s.redis) {
    const failed = (s.redis.checks || []).filter((c) => !c.ok);
    r.textContent = s.redis.ok ? "Redis ok" : "Redis unhealthy";
    r.className = "pill" + (s.redis.ok ? "" : " bad");
    r.title = (s.redis.checks || []).map((c) => c.name + ": " + (c.ok ? "ok" : c.error)).join("\n") || "no checks";
    if (failed.length) r.textContent += " (" + failed.length + " failing)";
  }
  showChannels(s.channels);
}

// stream reads the event stream until it ends, then connects again.
async function stream() {
  const live = $("live");
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch("api/events", { headers, cache: "no-store" });
    if (r.status === 401) { setLoginShown(true); return; }
    if (!r.ok) throw new Error(r.statusText);
    live.textContent = "live"; live.className = "pill";
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const msg = buf.slice(0, end); buf = buf.slice(end + 2);
        let event = "message", data = "";
        for (const line of msg.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (!data) continue;
        const v = JSON.parse(data);
        if (event === "presence") onPresence(v);
        else if (event === "metadata") onMetadata(v);
        else if (event === "status") onStatus(v);
      }
    }
  } catch (e) { /* reconnect below */ }
  live.textContent = "reconnecting"; live.className = "pill off";
  setTimeout(stream, 2000);
}

function start() {
  setLoginShown(false);
  loadRooms("0");
  stream();
  setInterval(() => loadRooms(roomsCursor), 3000);
  setInterval(loadRoom, 2000);
  setInterval(loadChannel, 2000);
}

window.addEventListener("DOMContentLoaded", () => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("presence-dashboard-token", token);
    history.replaceState(null, "", location.pathname);
  } else {
    token = sessionStorage.getItem("presence-dashboard-token") || "";
  }
  $("rooms-next").onclick = () => loadRooms(roomsNext);
  $("rooms-first").onclick = () => loadRooms("0");
  $("room-open").onsubmit = (e) => { e.preventDefault(); if ($("room-name").value) selectRoom($("room-name").value); };
  $("channel-open").onsubmit = (e) => {
    e.preventDefault();
    if ($("channel-type").value && $("channel-name").value) selectChannel($("channel-type").value, $("channel-name").value);
  };
  let started = false;
  $("login").onsubmit = (e) => {
    e.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("presence-dashboard-token", token);
    if (started) { setLoginShown(false); loadRooms("0"); stream(); } else { started = true; start(); }
  };
  started = true;
  start();
});
