// A small client of the presence server (docs/PROTOCOL.md), with the
// official socket.io-client 4.x:
//
//   npm install
//   PRESENCE_URL=http://localhost:3000 node main.js
//
// It joins a room and mirrors it by the room's sequence numbers (see
// RoomMirror), heartbeats with a state patch, prints the presence
// events it receives, edits the channel's metadata with compare-and-set
// (majorRevision), takes a lock and writes under it, then leaves. It exits
// 0 when everything behaved as the protocol says, 1 otherwise.
//
// Environment: PRESENCE_URL (default http://localhost:3000), PRESENCE_ROOM
// (default "demo"), PRESENCE_USER (default "alice"), PRESENCE_TOKEN (a
// token for a server with PRESENCE_AUTH_SECRET; `presence-server
// -sign-token alice` prints one).
"use strict";
const { io } = require("socket.io-client");

const url = process.env.PRESENCE_URL || "http://localhost:3000";
const room = process.env.PRESENCE_ROOM || "demo";
const user = process.env.PRESENCE_USER || "alice";
const token = process.env.PRESENCE_TOKEN;
const ACK_MS = 5000;

// call emits an event and resolves with its ack, or rejects after ACK_MS.
function call(socket, event, payload) {
  return socket.timeout(ACK_MS).emitWithAck(event, payload);
}

// expectOk throws unless the ack is {ok: true, ...}.
function expectOk(event, ack) {
  if (!ack || ack.ok !== true) {
    throw new Error(`${event} failed: ${JSON.stringify(ack)}`);
  }
  return ack;
}

// waitFor resolves with the first event for which pred is true, from those
// already received or still to come.
function waitFor(seen, pred, what) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ACK_MS;
    (function poll() {
      const e = seen.find(pred);
      if (e) return resolve(e);
      if (Date.now() > deadline) return reject(new Error(`no ${what} within ${ACK_MS} ms`));
      setTimeout(poll, 10);
    })();
  });
}

// RoomMirror keeps a room's members exactly as the server has them, from
// the join snapshot and the presence:events that follow (docs/PROTOCOL.md,
// "Mirroring a room"). Events are buffered until a snapshot arrives; then
// only those with seq above the snapshot's apply, in order. A gap in seq,
// or a "resync" event, means events were lost: take a new snapshot with
// presence:sync.
class RoomMirror {
  constructor(socket) {
    this.socket = socket;
    this.members = new Map(); // connId → {userId, state, epoch}
    this.seq = null; // the last seq applied; null until the first snapshot
    this.pending = []; // events received before the snapshot
    this.syncing = false;
  }

  // snapshot adopts a snapshot (join ack or presence:sync ack) and applies
  // the buffered events it does not hold.
  snapshot(ack) {
    this.members = new Map(ack.snapshot.map((e) => [e.connId, { userId: e.userId, state: e.state, epoch: e.epoch }]));
    this.seq = ack.seq;
    const pending = this.pending;
    this.pending = [];
    for (const e of pending) this.event(e);
  }

  event(e) {
    if (e.type === "resync") return this.resync();
    if (this.seq === null || this.syncing) {
      this.pending.push(e);
      return;
    }
    if (e.seq <= this.seq) return; // already in the snapshot
    if (e.seq !== this.seq + 1) {
      this.pending.push(e);
      return this.resync(); // a gap: events were lost
    }
    this.seq = e.seq;
    if (e.type === "leave") this.members.delete(e.connId);
    else this.members.set(e.connId, { userId: e.userId, state: e.state, epoch: e.epoch });
  }

  async resync() {
    if (this.syncing) return;
    this.syncing = true;
    try {
      const ack = expectOk("presence:sync", await call(this.socket, "presence:sync"));
      this.syncing = false;
      this.snapshot(ack);
    } finally {
      this.syncing = false;
    }
  }
}

async function main() {
  const socket = io(url, {
    transports: ["websocket"],
    reconnection: false,
    auth: token ? { token } : undefined,
  });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`cannot connect to ${url}: ${err.message}`)));
  });
  console.log(`connected to ${url} as socket ${socket.id}`);

  // Follow the room: join, update and leave of every connection, from
  // every server node. Metadata events of channels named like the room
  // arrive too.
  const presenceEvents = [];
  const metadataEvents = [];
  const mirror = new RoomMirror(socket);
  socket.on("presence:event", (e) => {
    presenceEvents.push(e);
    mirror.event(e);
    console.log(`presence:event ${e.type} seq=${e.seq} user=${e.userId} conn=${e.connId} state=${JSON.stringify(e.state)}`);
  });
  socket.on("metadata:event", (e) => {
    metadataEvents.push(e);
    console.log(`metadata:event ${e.operation} majorRevision=${e.majorRevision} items=${JSON.stringify(e.items)}`);
  });

  // Join: the ack carries the room's snapshot (this connection included)
  // and this connection's epoch, which fences later heartbeats.
  const join = expectOk("presence:join", await call(socket, "presence:join", {
    roomId: room, userId: user, state: { status: "online", typing: false },
  }));
  const epoch = join.self.epoch;
  mirror.snapshot(join);
  console.log(`joined ${room}: epoch ${epoch}, seq ${join.seq}, ${join.snapshot.length} connection(s) in the room`);
  for (const e of join.snapshot) console.log(`  ${e.userId} (${e.connId}) ${JSON.stringify(e.state)}`);

  // Heartbeat with a state patch: only the named top-level keys change.
  // Real clients heartbeat every few seconds, well within the TTL (30 s).
  const hb = expectOk("presence:heartbeat", await call(socket, "presence:heartbeat", {
    epoch, patchState: { typing: true },
  }));
  console.log(`heartbeat: changed=${hb.changed} epoch=${hb.epoch}`);
  if (!hb.changed) throw new Error("a heartbeat that sets typing=true must report changed");
  const ownUpdate = await waitFor(presenceEvents, (e) => e.type === "update" && e.connId === socket.id && e.state.typing === true,
    "presence:event update of our own heartbeat");
  if (!(ownUpdate.seq > join.seq)) throw new Error(`the update's seq ${ownUpdate.seq} must follow the join's ${join.seq}`);

  // The mirror holds the room as presence:sync reports it.
  const sync = expectOk("presence:sync", await call(socket, "presence:sync"));
  await waitFor([true], () => mirror.seq >= sync.seq, "the mirror catching up with presence:sync");
  const mine = mirror.members.get(socket.id);
  if (!mine || mine.state.typing !== true || mirror.members.size !== sync.snapshot.length) {
    throw new Error(`mirror ${JSON.stringify([...mirror.members])} differs from presence:sync ${JSON.stringify(sync)}`);
  }
  console.log(`mirror at seq ${mirror.seq}: ${mirror.members.size} connection(s), as presence:sync says`);

  // Metadata compare-and-set: read the channel's majorRevision, then write
  // only if nobody wrote in between.
  const channel = { channelName: room, channelType: "doc" };
  const cur = expectOk("metadata:getChannel", await call(socket, "metadata:getChannel", channel));
  console.log(`channel ${room}: majorRevision ${cur.majorRevision}, ${cur.totalCount} item(s)`);
  const set = expectOk("metadata:setChannel", await call(socket, "metadata:setChannel", {
    ...channel,
    data: [{ key: "title", value: "Draft" }],
    options: { majorRevision: cur.majorRevision, addTimestamp: true, addUserId: true },
  }));
  console.log(`set title: majorRevision ${set.majorRevision}, revision ${set.metadata.title.revision}, by ${set.metadata.title.authorUid}`);

  // The same majorRevision again is stale: the write is refused.
  const stale = await call(socket, "metadata:updateChannel", {
    ...channel, data: [{ key: "title", value: "Lost" }], options: { majorRevision: cur.majorRevision },
  });
  console.log(`update with a stale majorRevision: ok=${stale.ok} code=${stale.code}`);
  if (stale.ok !== false || stale.code !== "METADATA_CONFLICT") {
    throw new Error(`a stale majorRevision must fail with METADATA_CONFLICT: ${JSON.stringify(stale)}`);
  }

  // A lock serializes writers; its TTL frees it if this client dies.
  const lock = expectOk("metadata:acquireLock", await call(socket, "metadata:acquireLock", {
    ...channel, lockName: "edit", ttlMs: 10000,
  }));
  console.log(`lock ${lock.lockName} held by ${lock.owner} until ${new Date(lock.expiresAt).toISOString()}`);
  const upd = expectOk("metadata:updateChannel", await call(socket, "metadata:updateChannel", {
    ...channel,
    data: [{ key: "title", value: "Final", revision: set.metadata.title.revision }],
    options: { majorRevision: set.majorRevision, lockName: "edit" },
  }));
  console.log(`updated title under the lock: "${upd.metadata.title.value}", majorRevision ${upd.majorRevision}`);
  expectOk("metadata:releaseLock", await call(socket, "metadata:releaseLock", { ...channel, lockName: "edit" }));
  await waitFor(metadataEvents, (e) => e.operation === "update" && e.majorRevision === upd.majorRevision,
    "metadata:event of our update");

  expectOk("presence:leave", await call(socket, "presence:leave"));
  console.log("left; done");
  socket.disconnect();
}

const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 30000);
main().then(
  () => { clearTimeout(timer); process.exit(0); },
  (err) => { console.error(err.message || err); process.exit(1); },
);
