"""Hostile clients against the connection bounds (docs/operations.md, "Limits
and abuse"): pipelining clients that never read, sockets that never read,
blank lines that would hold a slot, a body sent one byte at a time. Each test
reproduces an attack and asserts on what chatd spends — its resident memory,
its sockets' kernel send queues, its open connections — not on wall time.
Loopback only; every loop is bounded in count and time."""

import json
import os
import re
import socket
import subprocess
import time

import pytest

from chatlib import Api, connect, http_get, http_req, parse_responses, read_until

MB = 1024 * 1024
ROUTE = "/api/v1/conversations/{id}/messages"


def rss(inst):
    """chatd's resident set size in bytes."""
    with open(f"/proc/{inst.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sanitized(inst):
    """True for a chatd built with AddressSanitizer, whose quarantine keeps freed memory resident."""
    with open(f"/proc/{inst.proc.pid}/maps") as f:
        return "libasan" in f.read()


def open_conns(inst):
    """chatd's open HTTP connections, less the one asking."""
    return inst.metric("chatd_connections_open", {"kind": "http"}) - 1


def answered(inst, route=ROUTE):
    return inst.metric("chatd_http_requests_total", {"route": route})


def wait_quiet(read, limit_s, still_s=1.0):
    """Polls read() until its value has not changed for still_s (or limit_s passed); returns it."""
    deadline = time.monotonic() + limit_s
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        v = read()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= still_s:
            break
    return last


def wait_for_value(pred, limit_s):
    """Polls pred() until true or limit_s passed; returns its last value."""
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def non_reader(inst, rcvbuf=4096):
    """A socket that will never read: a tiny receive buffer, set before connecting."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect((inst.host, inst.port))
    return s


def make_big_page(chatd_factory, env=None):
    """A chatd and a conversation whose newest 100 messages are 4,000 U+0001 each:
    the page is ~2.4 MB of JSON (6 bytes per character). Returns the chatd and
    the raw request for that page."""
    inst = chatd_factory(env={"CHATD_RATE_SEND": "0", "CHATD_RATE_REQUEST": "0", **(env or {})})
    api = Api(inst.base_url)
    try:
        a = api.signup()
        conv = api.create_conversation(a["token"])
        body = "\u0001" * 4000
        for _ in range(100):
            api.send(a["token"], conv["id"], body)
        page = api.history(a["token"], conv["id"], limit=100)
        assert len(page["messages"]) == 100
    finally:
        api.close()
    req = http_req("GET", f"/api/v1/conversations/{conv['id']}/messages?limit=100", token=a["token"])
    return inst, req


@pytest.fixture
def big_page(chatd_factory):
    return make_big_page(chatd_factory)


# ---- 1. answers in flight -------------------------------------------------------------


def test_pipelining_non_readers_hold_bounded_memory(big_page):
    """4 sockets each pipeline 64 requests for the 2.4 MB page and never read.
    Before the bound, every request parsed from one read was answered and held
    (32 per socket, ~75 MB each); now a connection gets no further request while
    its unsent answers pass CHATD_MAX_PENDING_OUTPUT_KB."""
    inst, req = big_page
    base_conns = open_conns(inst)
    before_rss = rss(inst)
    before_answers = answered(inst)
    socks = [non_reader(inst) for _ in range(4)]
    try:
        for s in socks:
            s.sendall(req * 64)  # ~11 KB: a few reads' worth, answered without limit before
        # Wait until chatd stops answering them (quiet for 1 s), then measure.
        n = wait_quiet(lambda: answered(inst) - before_answers, 30) or 0
        peak = rss(inst)
        growth = peak - before_rss
        print(f"\n4 pipelining non-readers: {n:.0f} answers built, RSS {before_rss / MB:.1f} -> "
              f"{peak / MB:.1f} MB (+{growth / MB:.1f} MB)")
        assert n >= 4, "the requests were never answered"
        assert n <= 4 * 6, f"{n:.0f} answers built for 4 sockets that read nothing"
        if not sanitized(inst):  # ASan's quarantine holds every freed answer as well
            assert growth < 64 * MB, f"chatd grew {growth / MB:.1f} MB for 4 non-readers"
    finally:
        for s in socks:
            s.close()
    # Their connections end, and the server is still fine for everyone else.
    assert wait_for_value(lambda: open_conns(inst) <= base_conns, 10)
    s = connect(inst.host, inst.port)
    s.sendall(http_get("/healthz"))
    buf, _ = read_until(s, responses=1, timeout=5)
    s.close()
    assert parse_responses(buf)[0][0].status == 200


def test_pipelined_big_answers_all_arrive_to_a_reader(big_page):
    """The bound holds answers back, never drops them: a client that reads gets
    all 12 pipelined 2.4 MB pages, whole, in order."""
    inst, req = big_page
    s = connect(inst.host, inst.port, timeout=60)
    try:
        s.sendall(req * 12 + http_get("/healthz"))
        buf, _ = read_until(s, responses=13, timeout=60)
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert len(rs) == 13
    for r in rs[:12]:
        assert r.status == 200 and len(r.json()["messages"]) == 100
    assert rs[12].json() == {"status": "ok"}


def chatd_send_queues(inst):
    """Bytes queued in the kernel (skmem wmem_queued) on each of chatd's client sockets."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{inst.port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    return [int(m) for m in re.findall(r"\bw(\d+),", out)]


def test_non_readers_kernel_and_process_memory_bounded(chatd_factory):
    """200 sockets ask for the 2.4 MB page and never read. Without
    TCP_NOTSENT_LOWAT the kernel let each socket's send buffer grow to
    tcp_wmem's maximum (4 MiB); with it (CHATD_TCP_NOTSENT_LOWAT_KB, 128) each
    holds about the low-water mark, and chatd keeps the rest of the answers
    itself — within CHATD_MAX_PENDING_OUTPUT_TOTAL_MB (64 here): past it, a
    connection whose answer the socket does not take is closed."""
    inst, req = make_big_page(chatd_factory, {"CHATD_MAX_PENDING_OUTPUT_TOTAL_MB": "64"})
    before_rss = rss(inst)
    before = answered(inst)
    socks = []
    try:
        for _ in range(200):
            s = non_reader(inst)
            s.sendall(req)
            socks.append(s)
        # Until every request is answered and nothing moves for a second.
        assert wait_for_value(lambda: answered(inst) - before >= 200, 30)
        queues = wait_quiet(lambda: sum(chatd_send_queues(inst)), 30)
        per = chatd_send_queues(inst) or [0]
        held = open_conns(inst)
        growth = rss(inst) - before_rss
        print(f"\n200 non-readers: kernel send queues {queues / MB:.1f} MB in all, largest "
              f"{max(per) / 1024:.0f} KiB; chatd RSS +{growth / MB:.0f} MB; {held:.0f} connections "
              f"kept, {200 - held:.0f} closed over the budget")
        assert max(per) <= 512 * 1024, f"one socket holds {max(per)} bytes in the kernel"
        assert queues <= 200 * 512 * 1024
        assert held <= 64 // 2 + 4, f"{held:.0f} non-readers kept with a 64 MiB budget"
        if not sanitized(inst):
            # The kept answers (27 x 2.4 MB); without the bounds it was 646 MB of kernel
            # queues (3.3 MB a socket), or 480 MB of RSS with the kernel's share bounded only.
            assert growth + queues < 128 * MB, \
                f"chatd grew {growth / MB:.0f} MB and its kernel queues hold {queues / MB:.0f} MB"
    finally:
        for s in socks:
            s.close()
    assert wait_for_value(lambda: open_conns(inst) == 0, 10)


# ---- 2. slots held by bytes that start no request --------------------------------------


def test_crlf_idlers_release_their_slots(chatd_factory):
    """With CHATD_MAX_CONNECTIONS=300, 300 sockets each make one request, then
    send a blank line every 200 ms. Before, every byte reset the idle timer and
    they kept every other client out for ever; now they are closed when the idle
    timeout (2 s) runs out, and a normal client gets in."""
    inst = chatd_factory(env={"CHATD_MAX_CONNECTIONS": "300", "CHATD_IDLE_TIMEOUT_MS": "2000",
                              "CHATD_HEADER_TIMEOUT_MS": "2000"})
    socks = []
    try:
        # Every request sent before any answer is read: their idle timers start
        # within one burst, so that none has run out before the newcomer below
        # (one request after another took over 2 s under ASan on a loaded machine).
        for _ in range(300):
            s = connect(inst.host, inst.port)
            s.sendall(http_get("/healthz"))
            socks.append(s)
        for s in socks:
            buf, eof = read_until(s, responses=1, timeout=5)
            assert not eof and parse_responses(buf)[0][0].status == 200
        # Full: a newcomer is turned away.
        t = connect(inst.host, inst.port)
        t.sendall(http_get("/healthz"))
        buf, eof = read_until(t, responses=1, timeout=5)
        t.close()
        assert eof and not parse_responses(buf)[0], "the cap did not hold"
        # Blank lines every 200 ms, for at most 10 idle timeouts (20 s).
        open_ = {s.fileno(): s for s in socks}
        rounds = 0
        while open_ and rounds < 100:
            rounds += 1
            for fd, s in list(open_.items()):
                try:
                    s.setblocking(False)
                    if s.recv(4096) == b"":
                        del open_[fd]
                        continue
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    del open_[fd]
                    continue
                try:
                    s.send(b"\r\n")
                except (ConnectionResetError, BrokenPipeError):
                    del open_[fd]
            time.sleep(0.2)
        print(f"\n300 CRLF idlers: {300 - len(open_)} closed by chatd after {rounds} rounds "
              f"of blank lines")
        assert not open_, f"{len(open_)} of 300 CRLF idlers still hold a slot after 20 s"
        assert rounds <= 20, f"closed only after {rounds * 0.2:.1f} s with a 2 s idle timeout"
    finally:
        for s in socks:
            s.close()
    # The slots are free: a normal client is served.
    assert wait_for_value(lambda: open_conns(inst) == 0, 10)
    s = connect(inst.host, inst.port)
    s.sendall(http_get("/healthz"))
    buf, _ = read_until(s, responses=1, timeout=5)
    s.close()
    assert parse_responses(buf)[0][0].status == 200


def test_slow_body_is_timed_out(chatd_factory):
    """A sign-up whose 200-byte body comes at a byte every 100 ms: before, each
    byte restarted the idle timer and the body took its 20 s; now the body
    timeout (1 s) cuts it with a 408 and the slot is freed."""
    inst = chatd_factory(env={"CHATD_BODY_TIMEOUT_MS": "1000", "CHATD_IDLE_TIMEOUT_MS": "2000"})
    body = json.dumps({"name": "x" * 60}).ljust(200).encode()
    s = connect(inst.host, inst.port, timeout=5)
    try:
        s.sendall(b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        sent = 0
        buf = b""
        s.setblocking(False)
        while sent < len(body) and not buf:
            try:
                s.send(body[sent:sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            try:
                buf = s.recv(65536)
            except BlockingIOError:
                pass
        s.setblocking(True)
        rest, _ = read_until(s, responses=1, timeout=5)
        rs, _ = parse_responses(buf + rest)
        print(f"\nslow body: {sent} of {len(body)} bytes sent before the answer")
        assert sent < len(body), "the whole slow body was taken"
        assert rs and rs[0].status == 408, rs
        assert rs[0].json()["error"]["code"] == "request_timeout"
    finally:
        s.close()
    assert wait_for_value(lambda: open_conns(inst) == 0, 10)


@pytest.mark.skipif(os.environ.get("CHATD_TEST_DB_PATH") == "direct",
                    reason="the head deadline is the HTTP layer's; once is enough")
def test_head_deadline_runs_from_its_first_byte(chatd_factory):
    """After a request, a second head that trickles in (a byte every 100 ms) is
    cut by the header timeout (1 s) from its first byte, blank lines before it
    counting for nothing."""
    inst = chatd_factory(env={"CHATD_HEADER_TIMEOUT_MS": "1000", "CHATD_IDLE_TIMEOUT_MS": "3000"})
    s = connect(inst.host, inst.port)
    try:
        s.sendall(http_get("/healthz"))
        read_until(s, responses=1, timeout=5)
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n"
        sent, closed = 0, False
        s.setblocking(False)
        while sent < len(head) and not closed:
            try:
                s.send(head[sent:sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            try:
                data = s.recv(65536)
                closed = data == b"" or data.startswith(b"HTTP/1.1 408")
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
        assert sent < len(head), "a trickling head was never timed out"
        assert sent <= 40, f"{sent} bytes at 100 ms each with a 1 s header timeout"
    finally:
        s.close()
