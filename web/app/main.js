// chatd's web client: signs in (a new user, or a token pasted with its user
// id, kept in localStorage), then wires the store, the stream and the two
// views. The address says which conversation is open (#c=7), so the
// browser's back button goes back to the inbox.

import { Api, ApiError, signup } from "./api.js";
import { $, show } from "./dom.js";
import { Store } from "./store.js";
import { Stream } from "./stream.js";
import { InboxView } from "./inbox.js";
import { ConversationView } from "./conversation.js";

const KEY = "chatd.session";
const NOTICE = "chatd.notice";

let session = null; // {id, name, token}
let store = null;
let stream = null;
let inbox = null;
let view = null;
let offlineTimer = null;

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY));
    if (s && Number.isSafeInteger(s.id) && typeof s.token === "string") return s;
  } catch {
    /* none */
  }
  return null;
}

function showSignIn(message) {
  show($("signin"), true);
  show($("chat"), false);
  show($("whoami"), false);
  show($("signout"), false);
  show($("offline"), false);
  $("signin-error").textContent = message || "";
  $("signup-name").focus();
}

// Forgets the session and starts the page afresh, the message kept for it.
function signOut(message) {
  localStorage.removeItem(KEY);
  if (stream) stream.stop();
  stream = null;
  if (message) sessionStorage.setItem(NOTICE, message);
  location.replace(location.pathname);
}

function setOffline(state, info) {
  clearInterval(offlineTimer);
  const banner = $("offline");
  if (state === "online") {
    show(banner, false);
    document.body.classList.remove("is-offline");
    return;
  }
  if (state === "connecting") {
    // the banner stays as it is: up while reconnecting after a loss, down at the start
    if (!banner.hidden) $("offline-text").textContent = "Offline: reconnecting…";
    return;
  }
  document.body.classList.add("is-offline");
  show(banner, true);
  // A handshake refused for its token looks like any failure: after a few, ask over REST,
  // whose 401 signs out (a network error there changes nothing).
  if (info.attempt === 3 && store) store.api.user(session.id).catch(() => {});
  const tick = () => {
    const s = Math.max(0, Math.ceil((info.at - Date.now()) / 1000));
    $("offline-text").textContent =
      s > 0 ? `Offline: reconnecting in ${s} s.` : "Offline: reconnecting…";
  };
  tick();
  offlineTimer = setInterval(tick, 1000);
}

function route() {
  if (!store) return;
  const m = /^#c=([1-9][0-9]*)$/.exec(location.hash);
  const cid = m ? Number(m[1]) : null;
  if (cid && store.convs.has(cid)) {
    // shown first: a hidden composer cannot take the focus
    show($("conv"), true);
    show($("conv-none"), false);
    document.body.classList.add("in-conv");
    if (view.cid !== cid) view.open(cid);
    inbox.setCurrent(cid);
  } else {
    const was = view.cid;
    const lost = !document.activeElement || document.activeElement === document.body ||
      $("conv").contains(document.activeElement);
    view.close();
    show($("conv"), false);
    show($("conv-none"), true);
    document.body.classList.remove("in-conv");
    inbox.setCurrent(null);
    // back from a conversation: the focus goes to its entry in the inbox
    if (was && lost) {
      const b = document.querySelector(`button[data-conv="${was}"]`);
      if (b) b.focus();
    }
  }
}

function openConversation(cid) {
  if (location.hash === `#c=${cid}`) route();
  else location.hash = `c=${cid}`;
}

async function start(s) {
  session = s;
  const api = new Api(s.token);
  api.onUnauthorized = () => signOut("chatd refused the token: sign in again.");
  store = new Store(api, { id: s.id, name: s.name });
  // one session per page: signing out reloads it
  inbox = new InboxView(store, openConversation);
  view = new ConversationView(store);
  show($("signin"), false);
  show($("chat"), true);
  $("whoami").textContent = `Signed in as ${s.name} (user id ${s.id})`;
  $("conv-none-id").textContent = `Others add you with your user id: ${s.id}.`;
  show($("whoami"), true);
  show($("signout"), true);
  try {
    await store.refreshInbox();
  } catch (e) {
    if (!(e instanceof ApiError) || e.status === 401) return;
    setOffline("offline", { at: Date.now() });
  }
  store.addEventListener("removed", (e) => {
    if (view.cid === e.detail.conversation_id) location.hash = "";
  });
  store.addEventListener("inbox", () => {
    // a link to a conversation that arrived after the page: open it now
    if (location.hash && view.cid === null) route();
  });
  stream = new Stream(s.token, {
    positions: () => store.positions(),
    frame: (f) => store.frame(f),
    state: setOffline,
  });
  store.stream = stream;
  stream.start();
  route();
  if (!location.hash) $("create-title").focus();
}

function wireSignIn() {
  $("signup-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("signup-name").value.trim();
    if (!name) return;
    $("signin-error").textContent = "";
    try {
      const u = await signup(name);
      const s = { id: u.id, name: u.name, token: u.token };
      localStorage.setItem(KEY, JSON.stringify(s));
      start(s);
    } catch (err) {
      $("signin-error").textContent =
        err.code === "conflict" ? `The name ${name} is taken.` : `Sign-up failed: ${err.message}`;
    }
  });
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = Number($("token-id").value);
    const token = $("token-value").value.trim();
    $("signin-error").textContent = "";
    const api = new Api(token);
    try {
      const u = await api.user(id);
      // The API has no "who am I": the id is checked against the members of a conversation.
      const page = await api.inbox(null, 1);
      if (page.conversations.length) {
        const members = await api.members(page.conversations[0].conversation.id);
        if (!members.members.some((m) => m.id === id)) throw new Error("this token is not user " + id + "'s");
      }
      const s = { id: u.id, name: u.name, token };
      localStorage.setItem(KEY, JSON.stringify(s));
      $("token-value").value = "";
      start(s);
    } catch (err) {
      $("signin-error").textContent =
        err.status === 401
          ? "chatd does not know this token."
          : err.status === 404
            ? `There is no user ${id}.`
            : `Sign-in failed: ${err.message}`;
    }
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("reconnect-now").addEventListener("click", () => {
    if (stream) stream.reconnectNow();
  });
  $("conv-back").addEventListener("click", () => {
    location.hash = "";
  });
  // the skip link moves the focus without touching the address (#c=ID)
  $("skip").addEventListener("click", (e) => {
    e.preventDefault();
    $("main").focus();
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("storage", (e) => {
    // signed out (or in as someone else) in another tab
    if (e.key === KEY && session && (!e.newValue || JSON.parse(e.newValue).token !== session.token))
      location.reload();
  });
}

wireSignIn();
const saved = loadSession();
const notice = sessionStorage.getItem(NOTICE);
sessionStorage.removeItem(NOTICE);
if (saved) start(saved);
else showSignIn(notice);
