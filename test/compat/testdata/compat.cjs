// Compatibility check of the Go presence server against the official
// socket.io-client 4.x, as the existing SDKs use it.
//
//   node compat.cjs <urlNodeA> <urlNodeB> <websocket|polling|upgrade>
//
// Two clients on two server nodes (sharing one Redis) go through
// docs/PROTOCOL.md: join, heartbeat with patch, stale epoch, wrong room,
// metadata compare-and-set conflict, locks, validation errors, leave,
// disconnect, and the events each sees of the other. Prints "compat ok" and
// exits 0, or prints the failure and exits 1.
"use strict";
const { io } = require("socket.io-client");

const [urlA, urlB, mode] = process.argv.slice(2);
const transportOpts = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"], upgrade: false },
  upgrade: { transports: ["polling", "websocket"] },
}[mode];
if (!urlA || !urlB || !transportOpts) {
  console.error("usage: node compat.cjs <urlA> <urlB> <websocket|polling|upgrade>");
  process.exit(2);
}

const ACK_MS = 5000;
const room = "compat-" + mode + "-" + process.pid;

function check(cond, what, got) {
  if (!cond) throw new Error(what + (got === undefined ? "" : ": got " + JSON.stringify(got)));
}

// connect resolves with the socket once connected; onConnect runs inside
// the "connect" handler, as SDKs do (the first emit races the CONNECT).
function connect(url, onConnect) {
  const s = io(url, { ...transportOpts, forceNew: true, reconnection: false, timeout: ACK_MS });
  s.events = [];
  s.on("presence:event", (e) => s.events.push(["presence:event", e]));
  s.on("metadata:event", (e) => s.events.push(["metadata:event", e]));
  return new Promise((resolve, reject) => {
    let early;
    s.once("connect", () => {
      if (onConnect) early = onConnect(s);
      resolve({ s, early });
    });
    s.once("connect_error", (e) => reject(new Error("connect_error: " + e.message)));
  });
}

function call(s, ev, ...args) {
  return s.timeout(ACK_MS).emitWithAck(ev, ...args);
}

async function ok(s, ev, ...args) {
  const a = await call(s, ev, ...args);
  check(a && a.ok === true, ev + " must ack ok:true", a);
  return a;
}

async function fail(s, code, ev, ...args) {
  const a = await call(s, ev, ...args);
  check(a && a.ok === false && typeof a.error === "string" && a.error.length > 0, ev + " must ack {ok:false, error}", a);
  check(code ? a.code === code : !("code" in a), ev + " must ack code " + (code || "none"), a);
  return a;
}

function waitEvent(s, name, pred, ms = ACK_MS) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    (function poll() {
      const i = s.events.findIndex(([n, e]) => n === name && pred(e));
      if (i >= 0) return resolve(s.events.splice(i, 1)[0][1]);
      if (Date.now() > deadline) return reject(new Error("no matching " + name + " within " + ms + "ms; got " + JSON.stringify(s.events)));
      setTimeout(poll, 10);
    })();
  });
}

const presenceEv = (type, connId) => (e) => e.type === type && e.connId === connId;

async function main() {
  // Alice joins from inside her "connect" handler.
  const { s: a, early } = await connect(urlA, (s) =>
    call(s, "presence:join", { roomId: room, userId: "alice", state: { status: "online" } }));
  const ja = await early;
  check(ja.ok === true, "alice's join", ja);
  check(ja.self.connId === a.id, "self.connId is the socket id", ja.self);
  check(Number.isInteger(ja.self.epoch) && ja.self.epoch > 0, "self.epoch", ja.self);
  check(ja.snapshot.length === 1 && ja.snapshot[0].userId === "alice" && ja.snapshot[0].state.status === "online", "alice's snapshot", ja.snapshot);
  for (const k of ["connId", "userId", "state", "lastSeenMs", "epoch"]) check(k in ja.snapshot[0], "Entry has " + k, ja.snapshot[0]);

  // Bob, on the other node.
  const { s: b } = await connect(urlB);
  const jb = await ok(b, "presence:join", { roomId: room, userId: "bob" });
  check(jb.snapshot.length === 2, "bob's snapshot has both", jb.snapshot);
  const joinEv = await waitEvent(a, "presence:event", presenceEv("join", b.id));
  for (const k of ["type", "roomId", "userId", "connId", "state", "ts", "epoch"]) check(k in joinEv, "presence:event has " + k, joinEv);
  check(joinEv.roomId === room && joinEv.userId === "bob", "join event", joinEv);
  const epoch = jb.self.epoch;

  // Heartbeats: no payload, undefined payload, epoch only, then a patch.
  let hb = await ok(b, "presence:heartbeat");
  check(hb.changed === false && hb.epoch === epoch, "bare heartbeat", hb);
  await ok(b, "presence:heartbeat", undefined);
  await ok(b, "presence:heartbeat", { epoch });
  hb = await ok(b, "presence:heartbeat", { epoch, patchState: { typing: true } });
  check(hb.changed === true, "patch heartbeat changed", hb);
  const up = await waitEvent(a, "presence:event", presenceEv("update", b.id));
  check(up.state && up.state.typing === true, "update event carries the state", up);

  // Stale epoch; a different room; invalid payloads.
  await ok(b, "presence:heartbeat", { epoch: epoch + 5 });
  await fail(b, "PRESENCE_STALE_EPOCH", "presence:heartbeat", { epoch });
  const wrong = await fail(b, "PRESENCE_CONFLICT", "presence:join", { roomId: room + "-other", userId: "bob" });
  check(wrong.error === "Socket already joined a different presence room", "wrong-room message", wrong);
  await fail(b, "PRESENCE_INVALID", "presence:join", { roomId: room });

  // Metadata: compare-and-set conflict, then success; events.
  const set = await ok(a, "metadata:setChannel", { channelName: room, channelType: "doc",
    data: [{ key: "title", value: "Hello" }], options: { addTimestamp: true, addUserId: true } });
  check(set.majorRevision === 1 && set.totalCount === 1 && set.metadata.title.revision === 1 && set.metadata.title.authorUid === "alice", "set response", set);
  check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(set.metadata.title.updated), "updated is ISO-8601 UTC with ms", set.metadata.title);
  const setEv = await waitEvent(b, "metadata:event", (e) => e.operation === "set");
  check(setEv.channelName === room && setEv.majorRevision === 1 && setEv.items[0].key === "title", "set event", setEv);
  await fail(b, "METADATA_CONFLICT", "metadata:updateChannel", { channelName: room, channelType: "doc",
    data: [{ key: "title", value: "Stale" }], options: { majorRevision: 0 } });
  await fail(b, "METADATA_CONFLICT", "metadata:updateChannel", { channelName: room, channelType: "doc",
    data: [{ key: "title", value: "Stale", revision: 7 }] });
  const upd = await ok(b, "metadata:updateChannel", { channelName: room, channelType: "doc",
    data: [{ key: "title", value: "Hi", revision: 1 }], options: { majorRevision: 1 } });
  check(upd.majorRevision === 2 && upd.metadata.title.revision === 2 && upd.metadata.title.value === "Hi", "update response", upd);
  await waitEvent(a, "metadata:event", (e) => e.operation === "update" && e.majorRevision === 2);
  await fail(b, "METADATA_INVALID", "metadata:updateChannel", { channelName: room, channelType: "doc", data: [] });
  const got = await ok(a, "metadata:getChannel", { channelName: room, channelType: "doc" });
  check(got.majorRevision === 2 && got.metadata.title.value === "Hi", "get response", got);

  // Locks.
  const lk = await ok(a, "metadata:acquireLock", { channelName: room, channelType: "doc", lockName: "edit", ttlMs: 10000 });
  check(lk.owner === "alice" && lk.lockName === "edit" && lk.expiresAt > Date.now(), "acquire response", lk);
  await fail(b, "METADATA_LOCK", "metadata:acquireLock", { channelName: room, channelType: "doc", lockName: "edit", ttlMs: 10000 });
  await fail(b, "METADATA_LOCK", "metadata:setChannel", { channelName: room, channelType: "doc", data: [], options: { lockName: "edit" } });
  const gl = await ok(b, "metadata:getLock", { channelName: room, channelType: "doc", lockName: "edit" });
  check(gl.owner === "alice", "getLock owner", gl);
  await ok(a, "metadata:releaseLock", { channelName: room, channelType: "doc", lockName: "edit" });
  const free = await ok(b, "metadata:getLock", { channelName: room, channelType: "doc", lockName: "edit" });
  check(free.owner === null && free.expiresAt === null, "free lock is null", free);

  // Leave, rejoin, then disconnect: alice sees both leaves.
  await ok(b, "presence:leave");
  await waitEvent(a, "presence:event", presenceEv("leave", b.id));
  await ok(b, "presence:leave");
  await fail(b, "PRESENCE_NOT_JOINED", "presence:heartbeat");
  await ok(b, "presence:join", { roomId: room, userId: "bob" });
  await waitEvent(a, "presence:event", presenceEv("join", b.id));
  const bid = b.id;
  b.disconnect();
  await waitEvent(a, "presence:event", presenceEv("leave", bid));

  await ok(a, "presence:leave");
  a.disconnect();
  console.log("compat ok");
}

const timer = setTimeout(() => { console.error("FAIL: timed out"); process.exit(1); }, 60000);
main().then(() => { clearTimeout(timer); process.exit(0); },
  (e) => { console.error("FAIL:", e && e.stack || e); process.exit(1); });
