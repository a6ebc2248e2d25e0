"""The web client served by chatd (GET / and /app/*, web/ in the repo).

Plain HTTP: the headers of the compiled-in files (Content-Security-Policy,
nosniff, ETag and 304, Cache-Control, HEAD, 404 in the contract's format),
the bytes served equal to the files of web/, and /api/openapi.json equal to
docs/openapi.yaml.

In a browser: two headless Chromium sessions (Debian's chromium and
chromium-driver through python3-selenium), alice straight to chatd, bob
through a TCP proxy the test can cut. They sign up, talk, read, edit and
delete; bob's connection is cut while alice sends five messages, and after
his reconnect he holds each of them exactly once. No console error and no
CSP violation is allowed in either page, outside the connection errors of
bob's cut. Screenshots go to CHATD_WEB_SCREENSHOTS (default: the test's tmp
dir); docs/img/ holds three of them.
"""

import concurrent.futures
import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from chatlib import TcpProxy, wait_for
from conftest import REPO, free_port

WEB = REPO / "web"
ASSETS = {"/": WEB / "index.html", "/favicon.ico": WEB / "app" / "favicon.svg"}
ASSETS.update({f"/app/{p.name}": p for p in sorted((WEB / "app").iterdir()) if p.is_file()})
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def etag_of(data):
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def csp_directives(resp):
    csp = resp.headers.get("Content-Security-Policy", "")
    out = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def assert_page_headers(r):
    d = csp_directives(r)
    assert d.get("default-src") == ["'self'"], d
    assert d.get("script-src") == ["'self'"], d
    assert d.get("style-src") == ["'self'"], d
    assert d.get("connect-src") == ["'self'"], d
    assert d.get("frame-ancestors") == ["'none'"], d
    assert d.get("object-src") == ["'none'"], d
    assert d.get("base-uri") == ["'none'"], d
    assert d.get("require-trusted-types-for") == ["'script'"], d
    text = r.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in text and "unsafe-eval" not in text and "*" not in text
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert r.headers.get("X-Frame-Options") == "DENY"
    assert r.headers.get("Referrer-Policy") == "no-referrer"


# ---------------------------------------------------------------------------
# plain HTTP


def test_every_file_is_served_with_its_bytes_type_and_etag(chatd):
    s = requests.Session()
    for path, file in ASSETS.items():
        data = file.read_bytes()
        r = s.get(chatd.url(path), timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.content == data, path
        assert r.headers["Content-Type"] == TYPES[file.suffix], path
        assert r.headers["ETag"] == etag_of(data), path  # strong: no W/
        assert_page_headers(r)
        want = "no-store" if path == "/" else "no-cache"
        assert r.headers.get("Cache-Control") == want, path


def test_index_references_only_its_own_files(chatd):
    html = requests.get(chatd.url("/"), timeout=10).text
    # no inline script, no inline style, nothing from another origin
    for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
        assert 'src="/app/' in m.group(1) and m.group(2).strip() == "", m.group(0)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert ref.startswith("/") and not ref.startswith("//") or ref.startswith("#"), ref
        if ref.startswith("/"):
            assert ref in ASSETS, f"{ref} is not compiled in"
    for f in (WEB / "app").glob("*.js"):
        text = f.read_text()
        # the page's Trusted Types forbid HTML sinks; the client builds nodes
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{f.name} uses {sink}"
        for imp in re.findall(r'from "([^"]+)"', text):
            assert imp.startswith("./") and (WEB / "app" / imp[2:]).is_file(), (f.name, imp)


def test_if_none_match_gives_304(chatd):
    s = requests.Session()
    for path in ("/", "/app/main.js", "/app/app.css", "/api/openapi.json"):
        r = s.get(chatd.url(path), timeout=10)
        tag = r.headers["ETag"]
        for inm in (tag, "W/" + tag, f'"0000", {tag}', "*"):
            r2 = s.get(chatd.url(path), headers={"If-None-Match": inm}, timeout=10)
            assert r2.status_code == 304, (path, inm)
            assert r2.content == b""
            assert r2.headers["ETag"] == tag
            assert r2.headers.get("Cache-Control") == r.headers["Cache-Control"]
            assert "Content-Security-Policy" in r2.headers
        for inm in ('"0000"', tag[:-2] + '"', "W/"):
            r3 = s.get(chatd.url(path), headers={"If-None-Match": inm}, timeout=10)
            assert r3.status_code == 200 and r3.content == r.content, (path, inm)


def test_head_answers_the_headers_of_get(chatd):
    s = requests.Session()
    for path in ("/", "/app/app.css", "/favicon.ico", "/api/openapi.json"):
        g = s.get(chatd.url(path), timeout=10)
        h = s.head(chatd.url(path), timeout=10)
        assert h.status_code == 200 and h.content == b""
        assert int(h.headers["Content-Length"]) == len(g.content)
        for k in ("Content-Type", "ETag", "Cache-Control", "Content-Security-Policy"):
            assert h.headers[k] == g.headers[k], k


def test_unknown_files_are_404_in_the_contract_format(chatd):
    s = requests.Session()
    for path in ("/app/nope.js", "/app/", "/app/x/main.js", "/app/main.js/", "/index.html",
                 "/app/..%2fmain.js", "/app/MAIN.JS"):
        r = s.get(chatd.url(path), timeout=10)
        assert r.status_code == 404, path
        assert r.headers["Content-Type"] == "application/json"
        assert r.json()["error"]["code"] == "not_found"
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}
    r = s.post(chatd.url("/"), data=b"{}", timeout=10)
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"
    assert r.json()["error"]["code"] == "method_not_allowed"
    # a query string does not change the file
    r = s.get(chatd.url("/app/main.js?v=1"), timeout=10)
    assert r.status_code == 200 and r.content == (WEB / "app" / "main.js").read_bytes()


def test_openapi_json_is_the_yaml_document(chatd):
    r = requests.get(chatd.url("/api/openapi.json"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    # through JSON: YAML's unquoted status codes (200:) are integer keys, JSON's are strings
    want = json.loads(json.dumps(yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())))
    assert doc == want
    assert doc["openapi"].startswith("3.1")


# ---------------------------------------------------------------------------
# in Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Collects CSP violations from the first script of every document on.
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber);
});
"""

MESSAGES_JS = """
return Array.from(document.querySelectorAll('#message-list > li')).map((li) => ({
  id: li.dataset.id ? Number(li.dataset.id) : null,
  seq: li.dataset.seq ? Number(li.dataset.seq) : null,
  pending: li.dataset.pending !== undefined,
  deleted: li.classList.contains('deleted'),
  mine: li.classList.contains('mine'),
  edited: !!li.querySelector('.edited'),
  body: (li.querySelector('.body') || {textContent: ''}).textContent,
}));
"""

INBOX_JS = """
return Array.from(document.querySelectorAll('#inbox-list button.conv-item')).map((b) => ({
  id: Number(b.dataset.conv),
  title: b.querySelector('.title').textContent,
  preview: b.querySelector('.preview').textContent,
  badge: b.querySelector('.badge') ? parseInt(b.querySelector('.badge').textContent, 10) : 0,
}));
"""

# Every form control has a label, every button a name, every image an alt.
A11Y_JS = """
const bad = [];
for (const el of document.querySelectorAll('input, textarea, select')) {
  if (!el.labels.length && !el.getAttribute('aria-label')) bad.push('unlabelled ' + el.id);
}
for (const b of document.querySelectorAll('button')) {
  if (!b.textContent.trim() && !b.getAttribute('aria-label')) bad.push('nameless button ' + b.id);
}
for (const i of document.querySelectorAll('img')) if (!i.hasAttribute('alt')) bad.push('img ' + i.src);
return bad;
"""

# What bob's page may log while the proxy is down: his connections failing.
CUT_NOISE = re.compile(r"ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|"
                       r"ERR_CONNECTION_CLOSED|WebSocket connection to .* failed")


def _selenium():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing: scripts/deps.sh installs them")
    from selenium import webdriver  # python3-selenium
    return webdriver


class Browser:
    """One headless Chromium with its own profile; keeps every console entry it logged."""

    def __init__(self, name, tmp, width=1200, height=850):
        webdriver = _selenium()
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        self.name = name
        opts = Options()
        opts.binary_location = CHROMIUM
        profile = tmp / f"profile-{name}"
        profile.mkdir()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  f"--user-data-dir={profile}", f"--window-size={width},{height}",
                  "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-features=Translate,MediaRouter",
                  "--password-store=basic", "--lang=en-US"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, port=free_port(), log_path=str(tmp / f"chromedriver-{name}.log"))
        self.d = webdriver.Chrome(service=service, options=opts)
        self.d.set_page_load_timeout(20)
        self.d.set_script_timeout(10)
        self.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_PROBE})
        self.log = []

    def quit(self):
        try:
            self.d.quit()
        except Exception:  # noqa: BLE001 - already gone
            pass

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def read_log(self):
        """The console entries since the last call (also kept in self.log)."""
        new = [e for e in self.d.get_log("browser")]
        self.log += new
        return new

    def severe(self, entries):
        return [e["message"] for e in entries if e["level"] == "SEVERE"]

    def csp_violations(self):
        return self.js("return window.__csp || []")

    def el(self, css):
        from selenium.webdriver.common.by import By
        return self.d.find_element(By.CSS_SELECTOR, css)

    def visible(self, css):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;", css)

    def click(self, css, timeout=10):
        """Clicks css once it is there (the inbox re-renders its buttons; retried then)."""
        from selenium.common.exceptions import (ElementClickInterceptedException,
                                                NoSuchElementException,
                                                StaleElementReferenceException)

        def attempt():
            try:
                self.el(css).click()
                return True
            except (NoSuchElementException, StaleElementReferenceException,
                    ElementClickInterceptedException):
                return False
        wait_for(attempt, timeout, interval=0.05, what=f"{self.name}: click {css}")

    def type(self, css, text):
        e = self.el(css)
        e.clear()
        e.send_keys(text)

    def text(self, css):
        """textContent of css, "" when it is not there (read in the page: never stale)."""
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.textContent : '';", css)

    def messages(self):
        return self.js(MESSAGES_JS)

    def inbox(self):
        return self.js(INBOX_JS)

    def session(self):
        return json.loads(self.js("return localStorage.getItem('chatd.session')") or "null")

    def shot(self, out_dir, name):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.d.save_screenshot(str(out_dir / name))


T0 = [time.monotonic()]


def until(b, cond, what, timeout=15):
    v = wait_for(cond, timeout, interval=0.05, what=f"{b.name}: {what}")
    print(f"{time.monotonic() - T0[0]:6.2f} s  {b.name}: {what}")
    return v


def send_ui(b, text):
    from selenium.webdriver.common.keys import Keys
    ta = b.el("#composer-text")
    ta.send_keys(text)
    ta.send_keys(Keys.ENTER)


def sent_and_acked(b, bodies):
    """Every body in b's list once, none pending."""
    ms = b.messages()
    return (not any(m["pending"] for m in ms)
            and all(sum(1 for m in ms if m["body"] == t) == 1 for t in bodies))


@pytest.fixture
def browsers(tmp_path):
    started = []

    def make(name, **kw):
        b = Browser(name, tmp_path, **kw)
        started.append(b)
        return b
    yield make
    for b in started:
        b.quit()


@pytest.fixture
def shots(tmp_path):
    d = os.environ.get("CHATD_WEB_SCREENSHOTS")
    return Path(d) if d else tmp_path / "screenshots"


def sign_up(b, base_url):
    b.d.get(base_url + "/")
    until(b, lambda: b.visible("#signup-name"), "the sign-in screen")
    name = f"{b.name}-{uuid.uuid4().hex[:6]}"
    b.type("#signup-name", name)
    b.click("#signup-form button[type=submit]")
    until(b, lambda: b.visible("#whoami"), "signed in")
    s = b.session()
    assert s["name"] == name and s["token"] and s["id"] > 0
    assert str(s["id"]) in b.el("#whoami").text
    return s


class Line:
    """Bob's line to chatd: a TCP proxy on a fixed port, cut and restored by the test."""

    def __init__(self, chatd):
        self.chatd = chatd
        self.port = free_port()
        self.proxy = TcpProxy(chatd.host, chatd.port, port=self.port)

    def cut(self):
        self.proxy.stop()
        self.proxy = None

    def restore(self):
        self.proxy = TcpProxy(self.chatd.host, self.chatd.port, port=self.port)

    def close(self):
        if self.proxy:
            self.proxy.stop()


@pytest.fixture
def line(chatd):
    ln = Line(chatd)
    yield ln
    ln.close()


def test_two_people_chat_in_chromium(chatd, api, browsers, shots, line):
    T0[0] = time.monotonic()
    # the two start side by side (a Chromium takes seconds to start on a busy machine)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        alice, bob = ex.map(browsers, ("alice", "bob"))
    bob_url = f"http://127.0.0.1:{line.port}"

    # --- sign up: alice straight to chatd, bob through the proxy
    alice.d.get(chatd.base_url + "/")
    until(alice, lambda: alice.visible("#signup-name"), "the sign-in screen")
    assert alice.js(A11Y_JS) == []
    alice.shot(shots, "signin.png")
    a = sign_up(alice, chatd.base_url)
    b = sign_up(bob, bob_url)

    # --- alice creates a conversation with bob; it appears in bob's inbox live
    alice.type("#create-title", "Lunch plans")
    alice.type("#create-members", str(b["id"]))
    alice.click("#create-form button[type=submit]")
    until(alice, lambda: alice.visible("#composer-text"), "the new conversation open")
    cid = int(re.search(r"#c=(\d+)", alice.d.current_url).group(1))
    assert alice.el("#conv-title").text == "Lunch plans"
    until(bob, lambda: any(c["id"] == cid for c in bob.inbox()), "the conversation in the inbox")

    # --- alice sends three; bob's badge counts them, live
    first = ["Hi Bob!", "Lunch at noon?", "The usual place."]
    for t in first:
        send_ui(alice, t)
    until(alice, lambda: sent_and_acked(alice, first), "her three messages acknowledged")

    def bob_entry():
        return next((c for c in bob.inbox() if c["id"] == cid), None)
    until(bob, lambda: bob_entry()["badge"] == 3, "an unread badge of 3")
    assert bob_entry()["preview"].endswith("The usual place.")
    assert api.req("GET", "/api/v1/conversations", token=b["token"]).json()[
        "conversations"][0]["unread_count"] == 3
    bob.shot(shots, "inbox.png")

    # --- bob opens it: history shown, badge gone, read marker moved on the server
    bob.click(f'#inbox-list button[data-conv="{cid}"]')
    until(bob, lambda: [m["body"] for m in bob.messages()] == first, "the history")
    until(bob, lambda: bob_entry() is not None and bob_entry()["badge"] == 0, "the badge cleared")

    def bob_unread():
        e = api.req("GET", "/api/v1/conversations", token=b["token"]).json()["conversations"][0]
        return e["unread_count"] == 0 and e["last_read_seq"] == 3
    wait_for(bob_unread, 10, what="bob's read marker at seq 3 on the server")

    # keyboard only: opening a conversation puts the focus in the composer
    from selenium.webdriver.common.keys import Keys
    active = bob.d.switch_to.active_element
    assert active.get_attribute("id") == "composer-text"
    active.send_keys("Noon works.")
    # typing reaches alice before the message does
    until(alice, lambda: "is typing" in alice.text("#typing"), "bob typing")
    assert b["name"] in alice.text("#typing")
    active.send_keys(Keys.ENTER)
    until(alice, lambda: any(m["body"] == "Noon works." and not m["mine"]
                             for m in alice.messages()), "bob's reply, live")
    until(alice, lambda: alice.text("#typing") == "", "the typing line cleared")

    # --- alice edits her first message and deletes her second; bob sees both
    ms = alice.messages()
    first_id = next(m["id"] for m in ms if m["body"] == "Hi Bob!")
    second_id = next(m["id"] for m in ms if m["body"] == "Lunch at noon?")
    alice.click(f"#m-{first_id} .actions button")  # Edit
    until(alice, lambda: alice.visible(f"#edit-{first_id}"), "the edit box")
    ed = alice.el(f"#edit-{first_id}")
    assert alice.d.switch_to.active_element == ed
    ed.clear()
    ed.send_keys("Hi Bob, how are you?", Keys.ENTER)
    alice.click(f"#m-{second_id} .actions button.danger")
    until(alice, lambda: alice.text(f"#m-{second_id} .actions button.danger") == "Confirm delete",
          "the delete confirmation")
    alice.click(f"#m-{second_id} .actions button.danger")

    def bob_saw_edit_and_delete():
        by_id = {m["id"]: m for m in bob.messages()}
        e, d = by_id.get(first_id), by_id.get(second_id)
        return (e and e["body"] == "Hi Bob, how are you?" and e["edited"]
                and d and d["deleted"] and "deleted" in d["body"])
    until(bob, bob_saw_edit_and_delete, "the edit and the tombstone")
    bob.shot(shots, "conversation.png")
    on_server = {m["id"]: m for m in api.history(b["token"], cid)["messages"]}
    assert on_server[second_id]["deleted"] and on_server[first_id]["edited_at"]

    # --- bob's connection is cut; alice sends five; bob comes back with each once
    before = [(m["id"], m["body"]) for m in bob.messages()]
    for br in (alice, bob):
        assert br.severe(br.read_log()) == [], br.name
    line.cut()
    until(bob, lambda: bob.visible("#offline"), "the offline banner", timeout=10)
    assert "Offline" in bob.el("#offline").text
    later = [f"While you were away {i}" for i in range(1, 6)]
    for t in later:
        send_ui(alice, t)
    until(alice, lambda: sent_and_acked(alice, later), "her five messages acknowledged")
    # bob writes while offline: pending until the line is back, then sent once
    offline_text = "Written while offline"
    send_ui(bob, offline_text)
    until(bob, lambda: any(m["pending"] and m["body"] == offline_text for m in bob.messages()),
          "his message pending")
    cut_log = bob.read_log()
    line.restore()
    until(bob, lambda: not bob.visible("#offline"), "the reconnect", timeout=30)

    def bob_has_the_five():
        return all(any(m["body"] == t for m in bob.messages()) for t in later)
    until(bob, bob_has_the_five, "the five messages after the reconnect")
    until(bob, lambda: sent_and_acked(bob, [offline_text]), "his offline message acknowledged")
    until(alice, lambda: sent_and_acked(alice, later + [offline_text]), "his offline message")
    ms = bob.messages()
    for t in later:
        assert sum(1 for m in ms if m["body"] == t) == 1, t
    assert [(m["id"], m["body"]) for m in ms[: len(before)]] == before
    assert [m["body"] for m in ms[len(before):]] == later + [offline_text]
    assert len({m["id"] for m in ms}) == len(ms)
    assert [m["seq"] for m in ms] == sorted(m["seq"] for m in ms)
    server = api.history(b["token"], cid, limit=100)["messages"]
    assert [m["id"] for m in reversed(server)] == [m["id"] for m in ms]
    # the newest is on screen: the marker follows
    wait_for(lambda: api.req("GET", "/api/v1/conversations", token=b["token"]).json()[
        "conversations"][0]["unread_count"] == 0, 10, what="bob's marker after the reconnect")
    cut_log += bob.read_log()
    unexpected = [m for m in bob.severe(cut_log) if not CUT_NOISE.search(m)]
    assert unexpected == [], unexpected

    # --- a long history: 50 messages first, older pages as bob scrolls up (before_id)
    h = api.create_conversation(a["token"], "Long history", [b["id"]])
    long_bodies = [f"History {i:03d}" for i in range(1, 121)]
    for t in long_bodies:
        api.send(a["token"], h["id"], t)
    bob.click(f'#inbox-list button[data-conv="{h["id"]}"]')
    until(bob, lambda: [m["body"] for m in bob.messages()] == long_bodies[-50:], "the newest page")
    assert not bob.visible("#history-start") and bob.visible("#older")
    for want in (100, 120):
        bob.js("document.getElementById('messages').scrollTop = 0")
        until(bob, lambda: len(bob.messages()) == want, f"{want} messages after scrolling up")
    assert [m["body"] for m in bob.messages()] == long_bodies
    assert bob.visible("#history-start") and not bob.visible("#older")
    bob.click(f'#inbox-list button[data-conv="{cid}"]')
    until(bob, lambda: [m["body"] for m in bob.messages()] == [m["body"] for m in ms], "back in lunch")

    # --- at a phone's width (390 px): one pane at a time, nothing wider than the screen
    bob.d.set_window_size(390, 844)
    until(bob, lambda: bob.js("return window.innerWidth") <= 400, "the narrow window")
    assert bob.js("return document.documentElement.scrollWidth <= window.innerWidth")
    assert bob.visible("#composer-text") and not bob.visible("#inbox-list")
    bob.shot(shots, "phone-conversation.png")
    bob.click("#conv-back")
    until(bob, lambda: bob.visible("#inbox-list") and not bob.visible("#composer-text"),
          "the inbox alone")
    assert bob_entry()["badge"] == 0 and bob_entry()["preview"].endswith(offline_text)
    assert bob.js("return document.documentElement.scrollWidth <= window.innerWidth")
    bob.shot(shots, "phone-inbox.png")

    # --- nothing from another origin, no console error, no CSP violation
    for br in (alice, bob):
        origins = br.js("return performance.getEntriesByType('resource')"
                        ".map((e) => new URL(e.name).origin)")
        assert all(o == br.js("return location.origin") for o in origins), origins
        assert br.js(A11Y_JS) == [], br.name
        assert br.csp_violations() == [], br.name
        assert br.severe(br.read_log()) == [], br.name
    assert alice.severe(alice.log) == []

    # --- sign out: back to the sign-in screen, the token forgotten
    alice.click("#signout")
    until(alice, lambda: alice.visible("#signup-name"), "signed out")
    assert alice.session() is None

    # --- sign in with the token: another's id is refused (checked against the members of
    # her newest conversation: the contract has no "who am I"), hers taken
    carol = api.signup(f"carol-{uuid.uuid4().hex[:6]}")
    alice.type("#token-id", str(carol["id"]))
    alice.type("#token-value", a["token"])
    alice.click("#token-form button[type=submit]")
    until(alice, lambda: "not user" in alice.text("#signin-error"), "the wrong id refused")
    assert alice.session() is None
    alice.type("#token-id", str(a["id"]))
    alice.type("#token-value", a["token"])
    alice.click("#token-form button[type=submit]")
    until(alice, lambda: alice.visible("#whoami") and {c["id"] for c in alice.inbox()} == {cid, h["id"]},
          "signed in again with her inbox")
    assert alice.session() == a
    assert alice.severe(alice.read_log()) == [] and alice.csp_violations() == []
