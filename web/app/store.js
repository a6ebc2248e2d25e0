// What the client knows of the user's conversations, kept in step with the
// server: each conversation's inbox entry (conversation, last message,
// unread count, read marker) and the rev it reflects. Stream events are
// applied in rev order, once each: a repeat (rev at or below the one held)
// changes nothing, and a jump is filled from GET .../events first. The work
// of one conversation runs in order on a chain of promises. The store also
// holds the messages being sent (the outbox) until chatd acknowledges them.

import { ApiError } from "./api.js";
import { randomId } from "./dom.js";

const RESEND_MS = 10000; // a send frame not acknowledged by then goes again (same id)

// The later state of one message: a tombstone wins, then the later edit.
export function newerMessage(a, b) {
  if (!a) return b;
  if (!b) return a;
  if (a.deleted !== b.deleted) return a.deleted ? a : b;
  if ((a.edited_at || "") > (b.edited_at || "")) return a;
  return b;
}

export class Store extends EventTarget {
  constructor(api, me) {
    super();
    this.api = api;
    this.me = me; // {id, name}
    this.convs = new Map(); // id -> entry {id, conv, last, unread, readSeq, rev}
    this.chains = new Map(); // id -> promise of the conversation's running work
    this.names = new Map([[me.id, me.name]]);
    this.nameLoads = new Map();
    this.cursor = null; // of the next inbox page
    this.paged = false;
    this.stream = null;
    this.outbox = new Map(); // client_msg_id -> {cid, body, state, error, timer}
    this.inboxLoading = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- the inbox

  sorted() {
    const key = (c) => c.conv.last_message_at || c.conv.created_at;
    return [...this.convs.values()].sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      if (ka !== kb) return ka < kb ? 1 : -1;
      return b.id - a.id;
    });
  }

  positions() {
    const p = {};
    for (const c of this.convs.values()) p[c.id] = c.rev;
    return p;
  }

  // Loads the first page (again) and merges it. Resolves once the page is
  // read; an entry of a known conversation is merged on that conversation's
  // chain (never awaited here: a chain may itself be waiting for the inbox).
  refreshInbox() {
    if (!this.inboxLoading) {
      this.inboxLoading = this.api
        .inbox(null, 20)
        .then((page) => {
          // the first page's cursor starts the walk; later refreshes leave it
          if (!this.paged) this.cursor = page.next_cursor;
          this.paged = true;
          this.mergePage(page);
        })
        .finally(() => {
          this.inboxLoading = null;
        });
    }
    return this.inboxLoading;
  }

  async loadMore() {
    if (!this.cursor) return;
    const page = await this.api.inbox(this.cursor);
    this.cursor = page.next_cursor;
    this.mergePage(page);
  }

  mergePage(page) {
    for (const e of page.conversations) this.mergeEntry(e);
    this.emit("inbox");
  }

  // Runs fn after the conversation's earlier work.
  chain(id, fn) {
    const prev = this.chains.get(id) || Promise.resolve();
    const next = prev.then(fn).catch((e) => {
      if (!(e instanceof ApiError)) console.warn("chatd client:", e);
    });
    this.chains.set(id, next);
    next.then(() => {
      if (this.chains.get(id) === next) this.chains.delete(id);
    });
    return next;
  }

  addEntry(e) {
    this.convs.set(e.conversation.id, {
      id: e.conversation.id,
      conv: e.conversation,
      last: e.last_message,
      unread: e.unread_count,
      readSeq: e.last_read_seq,
      rev: e.rev,
    });
  }

  mergeEntry(e) {
    const id = e.conversation.id;
    if (!this.convs.has(id)) {
      this.addEntry(e);
      return;
    }
    this.chain(id, async () => {
      const c = this.convs.get(id);
      if (!c) return;
      // Behind the entry: walk the events up to its rev, so that an open view sees them.
      if (e.rev > c.rev) await this.fill(c, e.rev);
      if (c.rev === e.rev) {
        c.conv = e.conversation;
        c.last = e.last_message;
        c.unread = e.unread_count;
        c.readSeq = e.last_read_seq;
      } else {
        // ahead of the entry: only what events do not carry
        c.conv = { ...e.conversation, last_message_at: c.conv.last_message_at };
      }
      this.emit("inbox");
    });
  }

  // A conversation heard of on the stream that the client does not hold yet.
  async discover(id) {
    if (this.convs.has(id)) return this.convs.get(id);
    const page = await this.api.inbox(null, 100);
    const e = page.conversations.find((x) => x.conversation.id === id);
    if (e && !this.convs.has(id)) this.addEntry(e);
    if (!this.convs.has(id)) {
      // far down the inbox: its current rev from the events API, its newest message
      const [conv, ev, hist] = await Promise.all([
        this.api.conversation(id),
        this.api.events(id, 0, 1),
        this.api.history(id, 0, 1),
      ]);
      if (!this.convs.has(id))
        this.convs.set(id, {
          id,
          conv,
          last: hist.messages[0] || null,
          unread: 0,
          readSeq: 0,
          rev: ev.rev,
        });
    }
    this.emit("inbox");
    return this.convs.get(id);
  }

  // ---- events

  frame(f) {
    switch (f.type) {
      case "message":
      case "message_edited":
      case "message_deleted":
        this.chain(f.conversation_id, () => this.onEvent(f));
        break;
      case "typing":
        if (f.user_id !== this.me.id) this.emit("typing", f);
        break;
      case "read":
        this.chain(f.conversation_id, () => this.onRead(f.conversation_id, f.seq));
        break;
      case "added":
        this.chain(f.conversation_id, () => this.discover(f.conversation_id));
        break;
      case "removed":
        this.chain(f.conversation_id, () => {
          this.convs.delete(f.conversation_id);
          this.emit("removed", f);
          this.emit("inbox");
        });
        break;
      case "reset":
        this.chain(f.conversation_id, () => this.onReset(f));
        break;
      case "ack":
        this.acked(f.client_msg_id, f.message);
        break;
      case "error":
        if (f.client_msg_id) this.sendFailed(f.client_msg_id, f.error);
        else console.warn("chatd stream:", f.error && f.error.message);
        break;
      case "resumed":
        this.flushOutbox();
        break;
      default:
        break;
    }
  }

  async onEvent(ev) {
    let c = this.convs.get(ev.conversation_id);
    if (!c) {
      c = await this.discover(ev.conversation_id);
      if (!c) return;
    }
    if (ev.rev <= c.rev) return; // held already
    if (ev.rev > c.rev + 1) await this.fill(c, ev.rev - 1);
    if (ev.rev !== c.rev + 1) return;
    this.apply(c, ev);
    this.emit("inbox");
  }

  // Applies the events after c.rev up to rev, from the database.
  async fill(c, rev) {
    while (c.rev < rev) {
      const page = await this.api.events(c.id, c.rev, 1000);
      let moved = false;
      for (const ev of page.events) {
        if (ev.rev !== c.rev + 1) continue;
        this.apply(c, ev);
        moved = true;
      }
      if (!moved) break;
    }
    this.emit("inbox");
  }

  apply(c, ev) {
    const m = ev.message;
    c.rev = ev.rev;
    if (!c.last || m.seq >= c.last.seq) c.last = m;
    if (ev.type === "message") {
      c.conv = { ...c.conv, last_message_at: m.created_at };
      if (m.sender_id === this.me.id) {
        // sending moves the sender's marker to the new message
        c.readSeq = Math.max(c.readSeq, m.seq);
        c.unread = 0;
      } else if (m.seq > c.readSeq) {
        c.unread++;
      }
      if (m.client_msg_id && m.sender_id === this.me.id) this.acked(m.client_msg_id, m);
    } else if (ev.type === "message_deleted") {
      if (m.sender_id !== this.me.id && m.seq > c.readSeq) c.unread = Math.max(0, c.unread - 1);
    }
    this.emit("message", { cid: c.id, type: ev.type, message: m, live: true });
  }

  async onRead(id, seq) {
    const c = this.convs.get(id);
    if (!c || seq <= c.readSeq) return;
    c.readSeq = seq;
    if (c.last && seq >= c.last.seq) c.unread = 0;
    else {
      // how many are left unread only the server can say
      this.refreshInbox().catch(() => {});
    }
    this.emit("inbox");
  }

  async onReset(f) {
    const c = this.convs.get(f.conversation_id);
    if (c) c.rev = Math.max(c.rev, f.rev);
    this.emit("reset", { cid: f.conversation_id });
    this.refreshInbox().catch(() => {});
  }

  // ---- read marker

  async markRead(id, seq) {
    const c = this.convs.get(id);
    if (!c || seq <= c.readSeq) return;
    await this.api.read(id, seq);
    await this.onRead(id, seq);
  }

  // ---- names

  name(id) {
    return this.names.get(id);
  }

  loadName(id) {
    if (this.names.has(id) || this.nameLoads.has(id)) return;
    const p = this.api
      .user(id)
      .then((u) => {
        this.names.set(id, u.name);
        this.emit("names");
      })
      .catch(() => {})
      .finally(() => this.nameLoads.delete(id));
    this.nameLoads.set(id, p);
  }

  async loadMembers(id) {
    const r = await this.api.members(id);
    for (const u of r.members) this.names.set(u.id, u.name);
    this.emit("names");
    return r.members;
  }

  // ---- sending
  //
  // One send of a conversation is in flight at a time, the next once it is
  // acknowledged: sends on one socket may commit in any order, and the
  // conversation should read in the order they were written.

  send(cid, body) {
    const cmid = randomId();
    const p = { cmid, cid, body, state: "sending", error: null, timer: null };
    this.outbox.set(cmid, p);
    this.emit("outbox", p);
    this.pump(cid);
    return p;
  }

  // The conversation's oldest message waiting to be sent.
  head(cid) {
    for (const p of this.outbox.values()) if (p.cid === cid && p.state === "sending") return p;
    return null;
  }

  pump(cid) {
    const p = this.head(cid);
    if (p) this.transmit(p);
  }

  transmit(p) {
    clearTimeout(p.timer);
    const frame = { type: "send", conversation_id: p.cid, body: p.body, client_msg_id: p.cmid };
    if (this.stream && this.stream.send(frame)) {
      // no ack in time: the same client_msg_id again, which chatd stores once
      p.timer = setTimeout(() => {
        if (this.outbox.get(p.cmid) === p) this.transmit(p);
      }, RESEND_MS);
    }
    // offline: flushOutbox() sends it once the stream is resumed
  }

  // Retry of a message that failed: back in the queue.
  retry(p) {
    p.state = "sending";
    p.error = null;
    this.emit("outbox", p);
    this.pump(p.cid);
  }

  flushOutbox() {
    for (const cid of new Set([...this.outbox.values()].map((p) => p.cid))) this.pump(cid);
  }

  acked(cmid, message) {
    const p = this.outbox.get(cmid);
    if (!p) return;
    clearTimeout(p.timer);
    this.outbox.delete(cmid);
    this.emit("outbox-done", { p, message });
    this.pump(p.cid);
  }

  sendFailed(cmid, error) {
    const p = this.outbox.get(cmid);
    if (!p) return;
    clearTimeout(p.timer);
    if (error && (error.code === "rate_limited" || error.code === "unavailable")) {
      p.timer = setTimeout(() => this.transmit(p), 2000);
      return;
    }
    p.state = "failed";
    p.error = (error && error.message) || "not sent";
    this.emit("outbox", p);
    this.pump(p.cid);
  }

  discard(cmid) {
    const p = this.outbox.get(cmid);
    if (!p) return;
    clearTimeout(p.timer);
    this.outbox.delete(cmid);
    this.emit("outbox-done", { p, message: null });
    this.pump(p.cid);
  }

  typing(cid) {
    const now = Date.now();
    this.lastTyping = this.lastTyping || new Map();
    if (now - (this.lastTyping.get(cid) || 0) < 3000) return;
    if (this.stream && this.stream.send({ type: "typing", conversation_id: cid }))
      this.lastTyping.set(cid, now);
  }
}
