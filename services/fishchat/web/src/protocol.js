// The client protocol over WebSocket: one frame (a protobuf message of external/*.proto, encoded by
// @bufbuild/protobuf from code generated out of the same .proto files as the servers') per binary
// message. A Session logs in, pings, syncs on notify, sends, marks receipts, and reconnects after a
// network drop or a server's drain, resending what was not acknowledged (sends are idempotent by msgID).

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as access from "../gen/external/access_pb.js";
import { BaseSchema } from "../gen/external/base_pb.js";
import { ErrorSchema } from "../gen/external/error_pb.js";

export const Cmd = Object.freeze({
  LOGIN: 20001,
  PING: 20002,
  SEND_P2P: 20003,
  SEND_GROUP: 20005,
  SYNC: 20006,
  NOTIFY: 20007,
  LOGOUT: 20008,
  RECONNECT: 20009,
  MARK_DELIVERED: 20010,
  MARK_READ: 20011,
  ERROR: 90001,
});

const REPLIES = new Map([
  [Cmd.LOGIN, ErrorSchema],
  [Cmd.PING, ErrorSchema],
  [Cmd.ERROR, ErrorSchema],
  [Cmd.SEND_P2P, access.ResSendP2PMsgSchema],
  [Cmd.SEND_GROUP, access.ResSendGroupMsgSchema],
  [Cmd.SYNC, access.ResSyncMsgSchema],
  [Cmd.NOTIFY, access.ResNotifySchema],
  [Cmd.LOGOUT, access.ResLogoutSchema],
  [Cmd.RECONNECT, access.ResReconnectSchema],
  [Cmd.MARK_DELIVERED, access.ResMarkSchema],
  [Cmd.MARK_READ, access.ResMarkSchema],
]);

const PING_INTERVAL_MS = 10_000;
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_MS = 15_000;

export class RequestRefused extends Error {
  constructor(code, text) {
    super(`${code} ${text}`);
    this.code = code;
    this.text = text;
  }
}

function decode(bytes) {
  const cmd = fromBinary(BaseSchema, bytes).cmd;
  const schema = REPLIES.get(cmd);
  if (schema === undefined) return { cmd, message: null };
  return { cmd, message: fromBinary(schema, bytes) };
}

function newMsgId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  return `${Date.now().toString(16)}${Math.random().toString(16).slice(2)}`;
}

// Requests waiting for their reply: sends by msgID, everything else first-in first-out per cmd
// (the server answers each lane in arrival order).
class Pending {
  constructor() {
    this.byCmd = new Map();
  }
  add(cmd, key) {
    let resolve, reject;
    const promise = new Promise((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    const entry = { key, resolve, reject };
    entry.timer = setTimeout(() => this.remove(cmd, entry, new Error(`no reply to ${cmd} in time`)), REQUEST_TIMEOUT_MS);
    const queue = this.byCmd.get(cmd) ?? [];
    queue.push(entry);
    this.byCmd.set(cmd, queue);
    return promise;
  }
  remove(cmd, entry, error) {
    const queue = this.byCmd.get(cmd) ?? [];
    const index = queue.indexOf(entry);
    if (index >= 0) queue.splice(index, 1);
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
  }
  resolve(cmd, message, key) {
    const queue = this.byCmd.get(cmd) ?? [];
    const entry = key ? queue.find((e) => e.key === key) : queue[0];
    if (!entry) return false;
    this.remove(cmd, entry);
    entry.resolve(message);
    return true;
  }
  failOldest(error) {
    let oldest = null;
    for (const [cmd, queue] of this.byCmd) if (queue.length && !oldest) oldest = [cmd, queue[0]];
    if (oldest) this.remove(oldest[0], oldest[1], error);
  }
  failAll(error) {
    for (const [cmd, queue] of this.byCmd) for (const entry of [...queue]) this.remove(cmd, entry, error);
  }
}

// A chat session of one user: `onEntries(entries)` gets synced timeline entries (messages and
// receipts) in version order, `onState(state, detail)` the connection state, `onEnded(reason)` the end
// of the session (replaced, revoked, logged out).
export class Session {
  constructor({ uid, token, device, locate, onEntries, onState, onEnded }) {
    this.uid = BigInt(uid);
    this.token = token;
    this.device = device;
    this.locate = locate;
    this.onEntries = onEntries;
    this.onState = onState;
    this.onEnded = onEnded;
    this.cursor = 0n;
    this.ws = null;
    this.online = false;
    this.stopped = false;
    this.failures = 0;
    this.pending = new Pending();
    this.unacked = new Map(); // msgID -> {cmd, message, resolve, reject}: resent after a reconnect
    this.syncing = null;
    this.syncAgain = false;
    this.pingTimer = null;
    this.reconnectTimer = null;
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000, "signed out");
    this.pending.failAll(new Error("signed out"));
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting");
    let url;
    try {
      url = await this.locate();
    } catch (error) {
      this.retryLater(`cannot find a server: ${error.message}`);
      return;
    }
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (event) => {
      if (typeof event.data === "string") return;
      this.frame(new Uint8Array(event.data));
    };
    ws.onclose = (event) => this.closed(ws, event);
  }

  async opened(ws) {
    try {
      const reply = await this.request(Cmd.LOGIN, access.ReqLoginSchema, {
        UID: this.uid,
        token: this.token,
        device: this.device,
      });
      if (reply.errCode !== 0) {
        // 93005/93006: the token is gone (logged out elsewhere, expired): the session is over.
        if ([93001, 93005, 93006].includes(reply.errCode)) {
          this.end(`login refused: ${reply.errStr}`);
        } else {
          ws.close(1000, "login refused");
        }
        return;
      }
    } catch (error) {
      ws.close(1000, "login failed");
      return;
    }
    this.online = true;
    this.failures = 0;
    this.onState("online");
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.ping(), PING_INTERVAL_MS);
    for (const [msgID, send] of this.unacked) this.transmit(send.cmd, send.schema, send.fields, msgID);
    this.sync();
  }

  closed(ws, event) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.online = false;
    clearInterval(this.pingTimer);
    this.pending.failAll(new Error("connection lost"));
    if (this.stopped) return;
    const reason = event.reason ? ` (${event.code} ${event.reason})` : ` (${event.code})`;
    this.retryLater(`connection lost${reason}`);
  }

  retryLater(why, delayMs) {
    if (this.stopped) return;
    this.failures += 1;
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures, 6));
    const wait = delayMs ?? backoff / 2 + Math.random() * (backoff / 2);
    this.onState("offline", `${why}; reconnecting in ${Math.ceil(wait / 1000)} s`);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), wait);
  }

  end(reason) {
    this.stop();
    this.onEnded(reason);
  }

  frame(bytes) {
    let cmd, message;
    try {
      ({ cmd, message } = decode(bytes));
    } catch (error) {
      console.warn("ignoring an unreadable frame", error);
      return;
    }
    if (message === null) return;
    if (cmd === Cmd.NOTIFY) {
      if (message.currentID > this.cursor) this.sync();
      return;
    }
    if (cmd === Cmd.RECONNECT) {
      if (message.reason === "draining") {
        const ws = this.ws;
        this.ws = null;
        this.online = false;
        ws?.close(1000, "moving");
        this.pending.failAll(new Error("server draining"));
        this.retryLater("the server is restarting", Math.random() * (message.retryAfterMs || 1000));
      } else {
        this.end(message.reason === "replaced" ? "signed in on another tab or device" : "signed out");
      }
      return;
    }
    if (cmd === Cmd.ERROR) {
      this.pending.failOldest(new RequestRefused(message.errCode, message.errStr));
      return;
    }
    const key = cmd === Cmd.SEND_P2P || cmd === Cmd.SEND_GROUP ? message.msgID : undefined;
    this.pending.resolve(cmd, message, key);
  }

  transmit(cmd, schema, fields, key) {
    const promise = this.pending.add(cmd, key);
    const bytes = toBinary(schema, create(schema, { cmd, ...fields }));
    this.ws.send(bytes);
    return promise;
  }

  request(cmd, schema, fields) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("offline"));
    return this.transmit(cmd, schema, fields, undefined);
  }

  ping() {
    // No answer: the connection is dead even if the socket looks open (a network that dropped it).
    this.request(Cmd.PING, access.ReqPingSchema, { UID: this.uid }).catch(() => this.ws?.close(4000, "no answer to ping"));
  }

  // Messages after the cursor until the server has no more; concurrent calls fold into one run.
  sync() {
    if (this.syncing) {
      this.syncAgain = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      try {
        do {
          this.syncAgain = false;
          let more = true;
          while (more && this.online) {
            const page = await this.request(Cmd.SYNC, access.ReqSyncMsgSchema, {
              UID: this.uid,
              currentID: this.cursor,
              receipts: true,
            });
            if (page.errCode !== 0) throw new RequestRefused(page.errCode, page.errStr);
            const before = this.cursor;
            const fresh = page.Msgs.filter((entry) => entry.version > this.cursor);
            if (fresh.length) {
              this.cursor = fresh[fresh.length - 1].version;
              this.onEntries(fresh);
            } else if (page.currentID > this.cursor) {
              this.cursor = page.currentID; // past entries this client does not show
            }
            more = page.more && this.cursor > before; // no progress: wait for the next notify
          }
        } while (this.syncAgain && this.online);
      } catch (error) {
        console.warn("sync failed", error);
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }

  // A send: resolved with the ack once the server stored it durably; kept and resent on the next
  // connection until then (the msgID makes a resend safe).
  send(target, body) {
    const msgID = newMsgId();
    const group = target.kind === "group";
    const cmd = group ? Cmd.SEND_GROUP : Cmd.SEND_P2P;
    const schema = group ? access.ReqSendGroupMsgSchema : access.ReqSendP2PMsgSchema;
    const fields = group
      ? { sourceUID: this.uid, groupID: target.id, msgID, msg: body }
      : { sourceUID: this.uid, targetUID: target.id, msgID, msg: body };
    const ack = new Promise((resolve, reject) => this.unacked.set(msgID, { cmd, schema, fields, resolve, reject }));
    const attempt = () => {
      if (!this.online) return;
      this.transmit(cmd, schema, fields, msgID)
        .then((reply) => {
          const send = this.unacked.get(msgID);
          if (!send) return;
          if (reply.errCode === 10007 || reply.errCode === 90002) {
            setTimeout(attempt, 1000); // over a rate limit or a server draining: try again shortly
            return;
          }
          this.unacked.delete(msgID);
          if (reply.errCode !== 0) send.reject(new RequestRefused(reply.errCode, reply.errStr));
          else send.resolve(reply);
        })
        .catch(() => {}); // a lost connection: resent after the next login
    };
    attempt();
    return { msgID, ack };
  }

  // "delivered up to" / "read up to" `version` of this user's timeline in a conversation.
  async mark(kind, target, version) {
    const cmd = kind === "read" ? Cmd.MARK_READ : Cmd.MARK_DELIVERED;
    const fields = { UID: this.uid, version };
    if (target.kind === "group") fields.groupID = target.id;
    else fields.peerUID = target.id;
    const reply = await this.request(cmd, access.ReqMarkSchema, fields);
    if (reply.errCode !== 0) throw new RequestRefused(reply.errCode, reply.errStr);
    return reply;
  }
}
