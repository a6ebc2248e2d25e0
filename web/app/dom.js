// Small DOM helpers. The client never parses HTML: every node is built from
// elements and text (the page's Trusted Types policy forbids HTML sinks).

export const $ = (id) => document.getElementById(id);

// h("li", {class: "x", "data-id": 3, onclick: fn}, child, "text", ...)
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function show(el, on = true) {
  el.hidden = !on;
}

// "14:03" today, "3 Dec 14:03" before.
export function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return hm;
  return `${d.toLocaleDateString([], { day: "numeric", month: "short" })} ${hm}`;
}

// A client_msg_id: 32 hex digits from the platform's random source
// (crypto.randomUUID needs a secure context; getRandomValues does not).
export function randomId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// Tells screen readers something without moving focus.
export function announce(text) {
  const a = $("announcer");
  a.textContent = "";
  // a change of text is what a live region announces
  setTimeout(() => {
    a.textContent = text;
  }, 50);
}
