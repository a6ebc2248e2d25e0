"""A small, strict WebSocket client over a raw socket for chatd's stream tests.

It speaks RFC 6455 by hand so tests can also send what a library would refuse
(unmasked frames, bad UTF-8, oversized messages), and it checks every server
frame: unmasked, no reserved bits. Handshake answers and every text message
read with recv_json() are checked against docs/openapi.yaml (openapi_check).
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time
import urllib.parse

import openapi_check

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_of(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class Closed(Exception):
    """The server closed the TCP connection."""


class Handshake:
    def __init__(self, status, headers, body, sock, rest):
        self.status = status
        self.headers = headers  # lowercased names
        self.body = body
        self.sock = sock
        self.rest = rest

    def json(self):
        return json.loads(self.body)


def handshake(host, port, token=None, query_token=None, key=None, version="13",
              extra_headers=(), after=b"", path="/api/v1/stream", timeout=10):
    """Sends an opening handshake; returns a Handshake with the answer (body read for non-101)."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    target = path
    if query_token is not None:
        target += "?token=" + urllib.parse.quote(query_token, safe="")
    lines = [f"GET {target} HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.extend(extra_headers)
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + after)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise Closed("closed during the handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if status != 101:
        n = int(headers.get("content-length", "0"))
        body = rest
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        rest = b""
    else:
        assert headers.get("sec-websocket-accept") == accept_of(key), headers
        assert headers.get("upgrade", "").lower() == "websocket", headers
        assert "upgrade" in headers.get("connection", "").lower(), headers
    openapi_check.check_http("GET", target, status, headers, body)
    return Handshake(status, headers, body, s, rest)


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


class WS:
    """An open WebSocket; frames are read with a deadline, never a sleep."""

    def __init__(self, hs):
        assert hs.status == 101, (hs.status, hs.body)
        self.sock = hs.sock
        self.buf = bytearray(hs.rest)

    @classmethod
    def open(cls, host, port, token, **kw):
        return cls(handshake(host, port, token=token, **kw))

    def close_socket(self):
        self.sock.close()

    def send(self, opcode, payload=b"", **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def send_json(self, obj):
        self.send(1, json.dumps(obj))

    def _fill(self, need, deadline):
        while len(self.buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame in time") from None
            except ConnectionResetError:
                raise Closed("reset") from None
            if not chunk:
                raise Closed("eof")
            self.buf += chunk

    def recv_frame(self, timeout=10):
        """(fin, opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert b0 & 0x70 == 0, "server frame with reserved bits"
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        self._fill(pos + n, deadline)
        payload = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_json(self, timeout=10):
        """The next text message as JSON; pings are answered on the way."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == 9:
                self.send(10, payload)
                continue
            assert op == 1 and fin, f"expected a text frame, got opcode {op}"
            openapi_check.check_frame_text(payload)
            return json.loads(payload.decode("utf-8"))

    def recv_close(self, timeout=10):
        """Reads frames until a close frame; returns its code (None when it had none)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def wait_eof(self, timeout=10):
        """True when the server closes the TCP connection within timeout (data is discarded)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
