#!/usr/bin/env python3
"""deploy/haproxy/haproxy.cfg, run for real against two fake gateways on loopback.

`haproxy -c` only says the file parses. This runs HAProxy with the same file (only the bind
addresses, certificate and socket paths moved to temporary ones, and the privilege drop
removed) in front of two small fake gateways that answer like the real one on their public
port (HTTP, and a 101 upgrade for /xmpp-websocket that then echoes bytes) and admin port
(/readyz), and checks the behaviour the comments in haproxy.cfg promise:

- plain HTTP is redirected to https;
- the backend sees X-Forwarded-Proto https and a X-Forwarded-For the client cannot forge, and
  no Forwarded header of the client's;
- BOSH requests are spread one by one over the nodes (round robin, the gateways forward among
  themselves), with no cookie and no stickiness, whatever cookie a browser still sends;
- a WebSocket tunnel is established through the TLS frontend;
- drain: when a node closes its listener and /readyz turns 503, BOSH requests still succeed on
  the other node (retry + redispatch) at once, HAProxy marks it down in both backends, and the
  live WebSocket tunnel to it is NOT cut (no shutdown-sessions).

Usage: haproxy_drain_test.py DEPLOY_HAPROXY_CFG CERT_PEM. Prints PASS/FAIL lines; exit 1 on
any failure. Everything listens on 127.0.0.1 and stops by itself (about 15 s).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

failures = 0


def check(name: str, ok: bool, why: str = "") -> bool:
    global failures
    print(f"PASS haproxy live: {name}" if ok else f"FAIL haproxy live: {name}: {why}")
    failures += 0 if ok else 1
    return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_request(conn: socket.socket, buf: bytes) -> tuple[str, dict, bytes, bytes] | None:
    """One HTTP/1.1 request from conn: (request line, headers, body, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    length = int(headers.get("content-length", ["0"])[0])
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return lines[0], headers, rest[:length], rest[length:]


class FakeGateway:
    """Public listener (HTTP + upgrade-then-echo) and admin listener (/readyz) of one node."""

    def __init__(self, name: str):
        self.name = name
        self.ready = True
        self.public_port = free_port()
        self.listener: socket.socket | None = None
        self.open_public()
        node = self

        class Admin(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                ok = self.path == "/readyz" and node.ready
                body = b"ready\n" if ok else b"draining\n"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # health checks that hang up early

        self.admin = Quiet(("127.0.0.1", 0), Admin)
        self.admin_port = self.admin.server_address[1]
        threading.Thread(target=self.admin.serve_forever, daemon=True).start()

    def open_public(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.public_port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self.accept_loop, args=(s,), daemon=True).start()

    def close_public(self) -> None:
        """What the gateway does on SIGTERM: no new connections, live ones go on."""
        # shutdown() first: a bare close() does not stop a socket that another thread is
        # blocked in accept() on, and it would take one more connection.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        try:
            self.serve_requests(conn)
        except OSError:
            pass  # HAProxy closing a pooled connection, or the test tearing down
        finally:
            conn.close()

    def serve_requests(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            req = read_request(conn, buf)
            if req is None:
                return
            line, headers, body, buf = req
            if "websocket" in ",".join(headers.get("upgrade", [])).lower():
                # RFC 6455 §4.2.2: HAProxy checks the accept key of a 101.
                key = headers.get("sec-websocket-key", [""])[0]
                accept = base64.b64encode(hashlib.sha1(
                    (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                             b"\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
                while True:  # the tunnel: echo, tagged with the node name
                    data = buf or conn.recv(65536)
                    buf = b""
                    if not data:
                        return
                    conn.sendall(self.name.encode() + b":" + data)
            seen = {
                "node": self.name,
                "path": line.split()[1],
                "xff": headers.get("x-forwarded-for", []),
                "forwarded": headers.get("forwarded", []),
                "xfp": headers.get("x-forwarded-proto", []),
                "cookie": headers.get("cookie", []),
            }
            out = json.dumps(seen).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(out), out))


def test_config(src: str, cert: str, tmp: Path, http_port: int, https_port: int) -> str:
    text = src
    text = re.sub(r"^\s*bind \[::\]:\d+.*\n", "", text, flags=re.M)
    text = re.sub(r"^(\s*bind) :80\b", rf"\1 127.0.0.1:{http_port}", text, flags=re.M)
    text = re.sub(r"^(\s*bind) :443\b", rf"\1 127.0.0.1:{https_port}", text, flags=re.M)
    text = text.replace("/etc/haproxy/certs/xmpp.pem", cert)
    text = text.replace("/var/lib/haproxy/admin.sock", str(tmp / "admin.sock"))
    # A small maxconn: the test machine's descriptor limit may be far below 2 x 100000.
    text = re.sub(r"^(\s*maxconn) \d+", r"\1 1000", text, flags=re.M)
    # Not testing the privilege drop; lets the test run as any user.
    text = re.sub(r"^\s*(user|group) haproxy\n", "", text, flags=re.M)
    return text


class Client:
    def __init__(self, https_port: int):
        self.port = https_port
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def bosh(self, cookie: str | None = None, xff: str | None = None):
        """One BOSH-like POST on a fresh connection: (seen by the node, Set-Cookie value)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if cookie:
            headers["Cookie"] = cookie
        if xff:
            headers["X-Forwarded-For"] = xff
            headers["Forwarded"] = f"for={xff}"
        conn.request("POST", "/http-bind", body=b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'/>",
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if resp.status != 200:
            return {"status": resp.status, "node": None}, None
        return json.loads(data), resp.getheader("Set-Cookie")

    def websocket(self) -> tuple[ssl.SSLSocket, bytes]:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s = self.ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        return s, head


def echo(s: ssl.SSLSocket, text: bytes) -> bytes:
    try:
        s.sendall(text)
        return s.recv(4096)
    except OSError as e:
        return repr(e).encode()


def server_status(sock_path: Path, backend: str = "gateways") -> dict[str, str]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    cols = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(cols, line.split(",")))
        if row.get("pxname") == backend and row.get("svname") in ("gw1", "gw2"):
            out[row["svname"]] = row["status"]
    return out


def wait_for(pred, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    cfg_path, cert = sys.argv[1], sys.argv[2]
    nodes = {"gw1": FakeGateway("gw1"), "gw2": FakeGateway("gw2")}
    http_port, https_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(test_config(Path(cfg_path).read_text(), cert, tmp, http_port, https_port))
        env = dict(os.environ)
        for i, name in ((1, "gw1"), (2, "gw2")):
            env[f"GW{i}_ADDR"] = f"127.0.0.1:{nodes[name].public_port}"
            env[f"GW{i}_ADMIN_PORT"] = str(nodes[name].admin_port)
        log = open(tmp / "haproxy.log", "wb")
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            run(nodes, tmp, http_port, https_port)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            if failures:
                print("haproxy log:\n" + (tmp / "haproxy.log").read_text(errors="replace")[-3000:])
    return 1 if failures else 0


def run(nodes: dict, tmp: Path, http_port: int, https_port: int) -> None:
    sock = tmp / "admin.sock"
    up = wait_for(lambda: sock.exists() and server_status(sock) == {"gw1": "UP", "gw2": "UP"}, 10)
    if not check("starts with both nodes UP", up, str(server_status(sock) if sock.exists() else "no socket")):
        return
    client = Client(https_port)

    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
    conn.request("GET", "/http-bind")
    resp = conn.getresponse()
    resp.read()
    check("plain HTTP is redirected to https", resp.status == 301
          and resp.getheader("Location", "").startswith("https://"), f"{resp.status}")

    seen, set_cookie = client.bosh(xff="203.0.113.66")
    first = seen.get("node")
    check("BOSH request reaches a node", first in nodes, str(seen))
    check("X-Forwarded-Proto is https", seen.get("xfp") == ["https"], str(seen.get("xfp")))
    check("X-Forwarded-For is the real peer, a forged one is dropped",
          seen.get("xff") == ["127.0.0.1"], str(seen.get("xff")))
    check("a Forwarded header from the browser is dropped (the gateway reads it first)",
          seen.get("forwarded") == [], str(seen.get("forwarded")))
    check("no stickiness cookie is set", set_cookie is None, str(set_cookie))
    spread = [client.bosh()[0]["node"] for _ in range(6)]
    check("BOSH requests from one client alternate between the nodes (round robin)",
          all(spread[i] != spread[i + 1] for i in range(len(spread) - 1)), str(spread))
    with_old_cookie = [client.bosh(cookie=f"GWNODE={first}")[0]["node"] for _ in range(4)]
    check("an old GWNODE cookie pins nothing", set(with_old_cookie) == set(nodes),
          str(with_old_cookie))

    ws, head = client.websocket()
    check("WebSocket upgrade through TLS answers 101", head.startswith(b"HTTP/1.1 101"),
          head[:80].decode("latin-1"))
    reply = echo(ws, b"<open/>")
    ws_node = reply.split(b":", 1)[0].decode("latin-1")
    check("WebSocket tunnel carries data", ws_node in nodes, reply[:80].decode("latin-1"))
    if ws_node not in nodes:
        return
    survivor = "gw2" if ws_node == "gw1" else "gw1"

    # Drain ws_node the way the gateway does: listener closed, /readyz 503.
    nodes[ws_node].close_public()
    nodes[ws_node].ready = False
    during = [client.bosh() for _ in range(4)]
    check("BOSH requests during a node's drain succeed on the other one at once",
          all(s["node"] == survivor for s, _ in during), str([s for s, _ in during]))
    down = wait_for(lambda: server_status(sock).get(ws_node, "").startswith("DOWN"), 10)
    check("the draining node is marked DOWN by /readyz", down, str(server_status(sock)))
    check("and DOWN for BOSH too (tracked)",
          server_status(sock, "bosh").get(ws_node, "").startswith("DOWN"),
          str(server_status(sock, "bosh")))
    reply = echo(ws, b"<iq/>")
    check("the live WebSocket tunnel to the DOWN node is not cut",
          reply == f"{ws_node}:<iq/>".encode(), reply[:80].decode("latin-1"))
    ws2, head2 = client.websocket()
    reply2 = echo(ws2, b"<open/>") if head2.startswith(b"HTTP/1.1 101") else head2
    check("new WebSocket sessions go to the remaining node",
          reply2.startswith(survivor.encode() + b":"), reply2[:80].decode("latin-1"))
    ws.close()
    ws2.close()

    nodes[ws_node].open_public()
    nodes[ws_node].ready = True
    check("the node comes back UP when /readyz recovers",
          wait_for(lambda: server_status(sock).get(ws_node) == "UP", 10), str(server_status(sock)))


if __name__ == "__main__":
    sys.exit(main())
