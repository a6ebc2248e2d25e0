// The inbox: the user's conversations, most recently active first, each with
// its last message and unread badge, kept live by the store; and the form
// that creates a conversation.

import { $, h, show, shortTime } from "./dom.js";

export class InboxView {
  constructor(store, onOpen) {
    this.store = store;
    this.onOpen = onOpen;
    this.current = null;
    this.items = new Map(); // id -> li
    store.addEventListener("inbox", () => this.render());
    store.addEventListener("names", () => this.render());
    $("inbox-more").addEventListener("click", async () => {
      await store.loadMore().catch(() => {});
    });
    $("create-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.create();
    });
  }

  setCurrent(id) {
    this.current = id;
    this.render();
  }

  preview(c) {
    const m = c.last;
    if (!m) return "No messages yet";
    const who = m.sender_id === this.store.me.id ? "You" : this.name(m.sender_id);
    return m.deleted ? `${who}: message deleted` : `${who}: ${m.body}`;
  }

  name(id) {
    const n = this.store.name(id);
    if (n === undefined) {
      this.store.loadName(id);
      return `user ${id}`;
    }
    return n;
  }

  render() {
    const list = $("inbox-list");
    const focusedId =
      document.activeElement && document.activeElement.dataset
        ? document.activeElement.dataset.conv
        : undefined;
    const rows = this.store.sorted().map((c) => {
      const unread = c.unread > 0 && c.id !== this.current;
      const btn = h(
        "button",
        {
          type: "button",
          class: "conv-item",
          "data-conv": c.id,
          "aria-current": c.id === this.current ? "true" : null,
          onclick: () => this.onOpen(c.id),
        },
        h(
          "span",
          { class: "line" },
          h("span", { class: "title" }, c.conv.title),
          h("time", { class: "when" }, shortTime(c.conv.last_message_at || c.conv.created_at)),
        ),
        h(
          "span",
          { class: "line" },
          h("span", { class: "preview" }, this.preview(c)),
          unread
            ? h("span", { class: "badge" }, String(c.unread), h("span", { class: "sr" }, " unread"))
            : null,
        ),
      );
      return h("li", { "data-id": c.id }, btn);
    });
    list.replaceChildren(...rows);
    if (focusedId !== undefined) {
      const b = list.querySelector(`button[data-conv="${CSS.escape(focusedId)}"]`);
      if (b) b.focus();
    }
    show($("inbox-empty"), rows.length === 0);
    show($("inbox-more"), !!this.store.cursor);
  }

  async create() {
    const title = $("create-title").value.trim();
    const raw = $("create-members").value.trim();
    const err = $("create-error");
    err.textContent = "";
    const ids = raw ? raw.split(/[\s,]+/).filter(Boolean).map(Number) : [];
    if (ids.some((x) => !Number.isSafeInteger(x) || x < 1)) {
      err.textContent = "Member ids are positive numbers, separated by commas.";
      return;
    }
    if (!title) {
      err.textContent = "A conversation needs a title.";
      return;
    }
    try {
      const conv = await this.store.api.createConversation(title, ids);
      $("create-title").value = "";
      $("create-members").value = "";
      if (!this.store.convs.has(conv.id))
        this.store.addEntry({
          conversation: conv,
          last_message: null,
          unread_count: 0,
          last_read_seq: 0,
          rev: 0,
        });
      this.render();
      this.onOpen(conv.id);
    } catch (e) {
      err.textContent = `Not created: ${e.message}`;
    }
  }
}
