// The open conversation: its history (older pages loaded when scrolled to
// the top, with before_id), live messages, edits and tombstones, the
// messages still being sent, the typing line, the composer, and the read
// marker, moved when the newest message is on screen.

import { $, h, show, shortTime, announce } from "./dom.js";
import { newerMessage } from "./store.js";

const PAGE = 50;
const TYPING_SHOWN_MS = 5000;

function sameState(a, b) {
  return a.deleted === b.deleted && a.edited_at === b.edited_at && a.body === b.body;
}

export class ConversationView {
  constructor(store) {
    this.store = store;
    this.cid = null;
    this.msgs = new Map(); // id -> message
    this.els = new Map(); // id -> li
    this.pendingEls = new Map(); // client_msg_id -> li
    this.oldestId = null;
    this.atStart = false;
    this.loadingOlder = false;
    this.typers = new Map(); // user id -> timer
    this.gen = 0; // bumped on each open: answers for an earlier one are dropped

    this.list = $("message-list");
    this.box = $("messages");
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    $("composer-text").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    $("composer-text").addEventListener("input", () => {
      if (this.cid && $("composer-text").value.trim()) this.store.typing(this.cid);
    });
    $("older").addEventListener("click", () => this.loadOlder(true));
    this.stuck = true; // scrolled to the newest: stays there when the box resizes
    this.box.addEventListener("scroll", () => {
      this.stuck = this.nearBottom();
      if (this.box.scrollTop < 80) this.loadOlder(false);
      this.checkRead();
    });
    new ResizeObserver(() => {
      if (this.stuck) this.box.scrollTop = this.box.scrollHeight;
      this.checkRead();
    }).observe(this.box);
    $("member-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.addMember();
    });
    document.addEventListener("visibilitychange", () => this.checkRead());

    store.addEventListener("message", (e) => {
      const d = e.detail;
      if (d.cid !== this.cid) return;
      const fresh = !this.msgs.has(d.message.id);
      this.merge(d.message);
      if (fresh && d.type === "message" && d.message.sender_id !== store.me.id) {
        this.stopTyping(d.message.sender_id);
        announce(`${this.nameOf(d.message.sender_id)}: ${d.message.body}`);
      }
    });
    store.addEventListener("outbox", (e) => {
      if (e.detail.cid === this.cid) this.renderPending(e.detail);
    });
    store.addEventListener("outbox-done", (e) => {
      const { p, message } = e.detail;
      if (p.cid !== this.cid) return;
      if (message) this.merge(message);
      const li = this.pendingEls.get(p.cmid);
      if (li) li.remove();
      this.pendingEls.delete(p.cmid);
    });
    store.addEventListener("typing", (e) => {
      if (e.detail.conversation_id === this.cid) this.startTyping(e.detail.user_id);
    });
    store.addEventListener("names", () => this.renderNames());
    store.addEventListener("inbox", () => this.renderHead());
    store.addEventListener("reset", (e) => {
      if (e.detail.cid === this.cid) this.open(this.cid, false);
    });
  }

  nameOf(id) {
    const n = this.store.name(id);
    if (n === undefined) this.store.loadName(id);
    return n === undefined ? `user ${id}` : n;
  }

  // ---- opening

  async open(cid, focus = true) {
    const gen = ++this.gen;
    this.cid = cid;
    this.msgs.clear();
    this.els.clear();
    this.pendingEls.clear();
    this.oldestId = null;
    this.atStart = false;
    this.loadingOlder = false;
    for (const t of this.typers.values()) clearTimeout(t);
    this.typers.clear();
    this.list.replaceChildren();
    $("typing").textContent = "";
    $("member-status").textContent = "";
    show($("older"), false);
    show($("history-start"), false);
    this.renderHead();
    for (const p of this.store.outbox.values()) if (p.cid === cid) this.renderPending(p);
    if (focus) $("composer-text").focus();
    this.store.loadMembers(cid).catch(() => {});
    try {
      const page = await this.store.api.history(cid, 0, PAGE);
      if (gen !== this.gen) return;
      this.addPage(page.messages);
    } catch (e) {
      if (gen !== this.gen) return;
      $("member-status").textContent = `History could not be loaded: ${e.message}`;
      return;
    }
    this.box.scrollTop = this.box.scrollHeight;
    this.checkRead();
  }

  close() {
    this.cid = null;
    this.gen++;
  }

  renderHead() {
    if (!this.cid) return;
    const c = this.store.convs.get(this.cid);
    if (!c) return;
    $("conv-title").textContent = c.conv.title;
    const n = c.conv.member_count;
    $("conv-meta").textContent = `#${c.id} · ${n} member${n === 1 ? "" : "s"}`;
  }

  // A page of history, newest first.
  addPage(messages) {
    for (const m of messages) this.merge(m, false);
    if (messages.length) {
      const oldest = messages[messages.length - 1].id;
      this.oldestId = this.oldestId === null ? oldest : Math.min(this.oldestId, oldest);
    }
    if (messages.length < PAGE) this.atStart = true;
    show($("older"), !this.atStart);
    show($("history-start"), this.atStart);
  }

  async loadOlder(byButton) {
    if (this.loadingOlder || this.atStart || this.oldestId === null || !this.cid) return;
    this.loadingOlder = true;
    const gen = this.gen;
    const before = this.box.scrollHeight - this.box.scrollTop;
    try {
      const page = await this.store.api.history(this.cid, this.oldestId, PAGE);
      if (gen !== this.gen) return;
      this.addPage(page.messages);
      // keep the messages on screen where they were
      this.box.scrollTop = this.box.scrollHeight - before;
      if (byButton && !this.atStart) $("older").focus();
    } catch {
      /* the button stays; scrolling tries again */
    } finally {
      if (gen === this.gen) this.loadingOlder = false;
    }
  }

  // ---- messages

  nearBottom() {
    return this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 80;
  }

  merge(m, live = true) {
    const stick = live && this.nearBottom();
    const cur = this.msgs.get(m.id);
    const next = newerMessage(cur, m);
    if (cur && (next === cur || sameState(cur, next))) return;
    this.msgs.set(m.id, next);
    const li = this.renderMessage(next);
    const old = this.els.get(m.id);
    this.els.set(m.id, li);
    if (old) {
      const hadFocus = old.contains(document.activeElement);
      old.replaceWith(li);
      if (hadFocus) (li.querySelector("button") || this.box).focus();
    } else {
      this.insert(li, next.seq);
    }
    if (next.client_msg_id && this.pendingEls.has(next.client_msg_id)) {
      this.pendingEls.get(next.client_msg_id).remove();
      this.pendingEls.delete(next.client_msg_id);
    }
    if (stick) this.box.scrollTop = this.box.scrollHeight;
    this.checkRead();
  }

  // In seq order, before the messages still being sent.
  insert(li, seq) {
    let at = null;
    for (let n = this.list.lastElementChild; n; n = n.previousElementSibling) {
      if (n.dataset.pending !== undefined) {
        at = n;
        continue;
      }
      if (Number(n.dataset.seq) < seq) break;
      at = n;
    }
    this.list.insertBefore(li, at);
  }

  renderMessage(m) {
    const mine = m.sender_id === this.store.me.id;
    const who = h("span", { class: "who", "data-user": m.sender_id }, mine ? "You" : this.nameOf(m.sender_id));
    const when = h("time", { datetime: m.created_at }, shortTime(m.created_at));
    const cls = ["msg", mine ? "mine" : "theirs", m.deleted ? "deleted" : ""].join(" ").trim();
    const li = h("li", { class: cls, id: `m-${m.id}`, "data-id": m.id, "data-seq": m.seq });
    const head = h("div", { class: "meta" }, who, " ", when);
    if (m.edited_at && !m.deleted) head.append(" ", h("span", { class: "edited" }, "(edited)"));
    li.append(head);
    if (m.deleted) {
      li.append(h("p", { class: "body tombstone" }, "This message was deleted."));
      return li;
    }
    li.append(h("p", { class: "body" }, m.body));
    if (mine) {
      const edit = h("button", { type: "button", class: "link", onclick: () => this.startEdit(m.id) }, "Edit");
      const del = h("button", { type: "button", class: "link danger" }, "Delete");
      del.addEventListener("click", () => this.deleteClicked(m.id, del));
      li.append(h("div", { class: "actions" }, edit, " ", del));
    }
    return li;
  }

  renderNames() {
    for (const el of this.list.querySelectorAll(".who[data-user]")) {
      const id = Number(el.dataset.user);
      if (id !== this.store.me.id) el.textContent = this.nameOf(id);
    }
  }

  // ---- edit and delete

  startEdit(id) {
    const m = this.msgs.get(id);
    const li = this.els.get(id);
    if (!m || !li || m.deleted) return;
    const ta = h("textarea", { id: `edit-${id}`, rows: 2, maxlength: 4000, required: true });
    ta.value = m.body;
    const done = () => {
      const cur = this.msgs.get(id);
      const fresh = this.renderMessage(cur);
      this.els.get(id).replaceWith(fresh);
      this.els.set(id, fresh);
      const b = fresh.querySelector("button");
      if (b) b.focus();
    };
    const form = h(
      "form",
      { class: "edit" },
      h("label", { for: `edit-${id}`, class: "sr" }, "Edit message"),
      ta,
      h("button", { type: "submit" }, "Save"),
      " ",
      h("button", { type: "button", onclick: done }, "Cancel"),
    );
    const save = async () => {
      const body = ta.value;
      if (!body.trim() || body === m.body) return done();
      try {
        const updated = await this.store.api.edit(this.cid, id, body);
        this.msgs.set(id, newerMessage(this.msgs.get(id), updated));
        done();
      } catch (e) {
        ta.setCustomValidity(e.message);
        ta.reportValidity();
      }
    };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      save();
    });
    ta.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        done();
      } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        save();
      }
    });
    ta.addEventListener("input", () => ta.setCustomValidity(""));
    li.querySelector(".body").replaceWith(form);
    const actions = li.querySelector(".actions");
    if (actions) actions.remove();
    ta.focus();
  }

  // The first press asks, the second deletes.
  async deleteClicked(id, btn) {
    if (!btn.classList.contains("confirm")) {
      btn.classList.add("confirm");
      btn.textContent = "Confirm delete";
      setTimeout(() => {
        if (btn.isConnected) {
          btn.classList.remove("confirm");
          btn.textContent = "Delete";
        }
      }, 5000);
      return;
    }
    btn.disabled = true;
    try {
      await this.store.api.remove(this.cid, id);
      const m = this.msgs.get(id);
      if (m && !m.deleted)
        this.merge({ ...m, deleted: true, body: "", edited_at: new Date().toISOString() }, false);
      // its buttons are gone: the focus goes to the list it was in
      if (!document.activeElement || document.activeElement === document.body) this.box.focus();
    } catch (e) {
      btn.disabled = false;
      btn.textContent = `Delete failed: ${e.message}`;
    }
  }

  // ---- sending

  submit() {
    const ta = $("composer-text");
    const body = ta.value;
    if (!body.trim() || !this.cid) return;
    ta.value = "";
    this.store.send(this.cid, body);
    this.box.scrollTop = this.box.scrollHeight;
  }

  renderPending(p) {
    const li = h(
      "li",
      { class: `msg mine pending ${p.state}`, "data-pending": p.cmid },
      h("div", { class: "meta" }, h("span", { class: "who" }, "You"), " ",
        h("span", { class: "state" }, p.state === "failed" ? `Not sent: ${p.error}` : "Sending…")),
      h("p", { class: "body" }, p.body),
    );
    if (p.state === "failed") {
      li.append(
        h("div", { class: "actions" },
          h("button", { type: "button", class: "link", onclick: () => this.store.retry(p) }, "Retry"),
          " ",
          h("button", { type: "button", class: "link", onclick: () => this.store.discard(p.cmid) }, "Discard")),
      );
    }
    const old = this.pendingEls.get(p.cmid);
    if (old) old.replaceWith(li);
    else this.list.append(li);
    this.pendingEls.set(p.cmid, li);
    this.box.scrollTop = this.box.scrollHeight;
  }

  // ---- typing

  startTyping(uid) {
    clearTimeout(this.typers.get(uid));
    this.typers.set(uid, setTimeout(() => this.stopTyping(uid), TYPING_SHOWN_MS));
    this.renderTyping();
  }

  stopTyping(uid) {
    clearTimeout(this.typers.get(uid));
    this.typers.delete(uid);
    this.renderTyping();
  }

  renderTyping() {
    const names = [...this.typers.keys()].map((u) => this.nameOf(u));
    $("typing").textContent =
      names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }

  // ---- read marker

  // Moves the marker once the newest message is on screen and the page is seen.
  checkRead() {
    if (!this.cid || document.visibilityState !== "visible") return;
    let newest = null;
    for (const m of this.msgs.values()) if (!newest || m.seq > newest.seq) newest = m;
    if (!newest) return;
    const c = this.store.convs.get(this.cid);
    if (!c || newest.seq <= c.readSeq) return;
    const li = this.els.get(newest.id);
    if (!li) return;
    const r = li.getBoundingClientRect();
    const b = this.box.getBoundingClientRect();
    if (b.height === 0 || r.top >= b.bottom || r.bottom <= b.top) return;
    clearTimeout(this.readTimer);
    const cid = this.cid;
    this.readTimer = setTimeout(() => {
      this.store.markRead(cid, newest.seq).catch(() => {});
    }, 150);
  }

  // ---- members

  async addMember() {
    const input = $("member-id");
    const id = Number(input.value);
    const status = $("member-status");
    if (!Number.isSafeInteger(id) || id < 1) {
      status.textContent = "A user id is a positive number.";
      return;
    }
    try {
      await this.store.api.addMember(this.cid, id);
      input.value = "";
      const members = await this.store.loadMembers(this.cid);
      const u = members.find((x) => x.id === id);
      status.textContent = `${u ? u.name : `User ${id}`} is a member now.`;
      this.store.refreshInbox().catch(() => {});
    } catch (e) {
      status.textContent =
        e.code === "invalid_field" ? `There is no user ${id}.` : `Not added: ${e.message}`;
    }
  }
}
