#!/usr/bin/env python3
"""Run a real nats-server with the chart's rendered authorization config and check, over the
NATS wire protocol, that every service user can do exactly its own JetStream flows.

Usage: nats_auth_probe.py --nats-server BIN --auth-conf FILE --values CHART/values.yaml

The matrix (streams + services.<name>.events) is read from the values file, so the checks follow
the same single source as the rendered permissions. For every service it checks that the user:
  * creates/inspects the streams it touches and publishes its own context's events and its
    dead letters (PubAck from JetStream),
  * is denied publishing any other context's subject (e.g. payment -> order.confirmed.x),
  * creates its durable consumer (named after itself, with its filter subjects) on every stream it
    reads, pulls a message through it and acks it,
  * is denied a consumer named after another service, deleting a stream, and subscribing to
    stream subjects directly.
Stdlib plus PyYAML; the server runs on 127.0.0.1 on a free port with a temporary store and is stopped
at the end. Exit status 0 = all checks passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:  # pragma: no cover - the k8s venv has PyYAML (checkov depends on it)
    sys.exit("nats_auth_probe: PyYAML is required (run scripts/bootstrap.sh --k8s)")

TIMEOUT = 5.0


class Denied(Exception):
    pass


class Conn:
    """Minimal NATS client: CONNECT/PUB/SUB/UNSUB/PING, MSG and HMSG parsing."""

    def __init__(self, port: int, user: str | None, password: str | None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        # Small request/response round trips: without this, Nagle + delayed ACK add 40 ms each.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sid = 0
        self.errors: list[str] = []
        self.msgs: list[dict] = []
        line = self._line()
        if not line.startswith("INFO "):
            raise RuntimeError(f"unexpected greeting {line!r}")
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "name": f"probe-{user}", "lang": "python", "version": "0"}
        if user is not None:
            opts.update(user=user, **{"pass": password})
        self._send(f"CONNECT {json.dumps(opts)}\r\n")
        try:
            self.flush()
        except ConnectionError:
            # The server sends -ERR 'Authorization Violation' and closes the connection.
            if any("Authorization Violation" in e for e in self.errors):
                raise Denied("authorization violation") from None
            raise

    def _send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _line(self) -> str:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def _bytes(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read_one(self) -> str:
        """Read one protocol op; returns its verb."""
        line = self._line()
        verb = line.split(" ", 1)[0]
        if verb == "MSG":
            parts = line.split()
            subject, sid, size = parts[1], parts[2], int(parts[-1])
            reply = parts[3] if len(parts) == 5 else None
            self.msgs.append({"subject": subject, "sid": sid, "reply": reply,
                              "headers": "", "data": self._bytes(size)})
        elif verb == "HMSG":
            parts = line.split()
            subject, sid = parts[1], parts[2]
            hlen, total = int(parts[-2]), int(parts[-1])
            reply = parts[3] if len(parts) == 6 else None
            raw = self._bytes(total)
            self.msgs.append({"subject": subject, "sid": sid, "reply": reply,
                              "headers": raw[:hlen].decode(errors="replace"), "data": raw[hlen:]})
        elif verb == "PING":
            self._send("PONG\r\n")
        elif verb == "-ERR":
            self.errors.append(line)
        return verb

    def flush(self) -> None:
        """Round trip: every op sent before is processed (errors collected) when PONG arrives."""
        self._send("PING\r\n")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self._read_one() == "PONG":
                return
        raise TimeoutError("no PONG")

    def _violation(self, kind: str, subject: str) -> bool:
        needle = f'Permissions Violation for {kind} to "{subject}"'
        hit = [e for e in self.errors if needle in e]
        for e in hit:
            self.errors.remove(e)
        return bool(hit)

    def publish(self, subject: str, payload: bytes = b"", reply: str | None = None) -> None:
        head = f"PUB {subject} {reply} {len(payload)}" if reply else f"PUB {subject} {len(payload)}"
        self._send(head.encode() + b"\r\n" + payload + b"\r\n")

    def subscribe(self, subject: str) -> str:
        self.sid += 1
        self._send(f"SUB {subject} {self.sid}\r\n")
        return str(self.sid)

    def try_subscribe(self, subject: str) -> bool:
        sid = self.subscribe(subject)
        self.flush()
        allowed = not self._violation("Subscription", subject)
        self._send(f"UNSUB {sid}\r\n")
        return allowed

    def try_publish(self, subject: str, payload: bytes = b"") -> bool:
        self.publish(subject, payload)
        self.flush()
        return not self._violation("Publish", subject)

    def request(self, subject: str, payload: bytes = b"", timeout: float = TIMEOUT) -> dict:
        """Request/reply through an _INBOX subscription. Raises Denied on a publish violation."""
        inbox = f"_INBOX.{secrets.token_hex(8)}"
        sid = self.subscribe(inbox)
        self.publish(subject, payload, reply=inbox)
        self.flush()
        if self._violation("Publish", subject):
            self._send(f"UNSUB {sid}\r\n")
            raise Denied(f"publish to {subject} denied")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.msgs:
                if m["sid"] == sid:
                    self.msgs.remove(m)
                    self._send(f"UNSUB {sid}\r\n")
                    return m
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self._read_one()
            except socket.timeout:
                break
            finally:
                self.sock.settimeout(TIMEOUT)
        raise TimeoutError(f"no reply to {subject}")

    def close(self) -> None:
        self.sock.close()


def js(conn: Conn, subject: str, body: dict | None = None) -> dict:
    reply = conn.request(subject, json.dumps(body or {}).encode())
    if "503" in reply["headers"].split("\r\n", 1)[0]:
        raise RuntimeError(f"{subject}: no responders (JetStream not enabled?)")
    data = json.loads(reply["data"] or b"{}")
    if "error" in data:
        raise RuntimeError(f"{subject}: {data['error']}")
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_subject(filter_subject: str) -> str:
    return filter_subject.replace("*", "probe").replace(">", "probe.x")


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"FAIL {what}", file=sys.stderr)

    def expect_denied(self, fn, what: str) -> None:
        try:
            fn()
        except Denied:
            self.check(True, what)
        else:
            self.check(False, what)

    def expect_ok(self, fn, what: str):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - any failure is a failed check, reported by name
            self.check(False, f"{what}: {e}")
            return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nats-server", required=True)
    ap.add_argument("--auth-conf", required=True)
    ap.add_argument("--values", required=True)
    ap.add_argument("--password-env-prefix", default="NATS_PASSWORD_")
    ap.add_argument("--admin-user", default="admin")
    args = ap.parse_args()

    values = yaml.safe_load(open(args.values))
    streams: dict = values["streams"]
    services: dict = values["services"]
    users = sorted(services) + [args.admin_user]
    passwords = {u: secrets.token_hex(16) for u in users}
    env = dict(os.environ)
    for u, pw in passwords.items():
        env[args.password_env_prefix + u.upper().replace("-", "_")] = pw

    port = free_port()
    store = tempfile.mkdtemp(prefix="nats-auth-probe-")
    server = subprocess.Popen(
        [args.nats_server, "-c", args.auth_conf, "-a", "127.0.0.1", "-p", str(port),
         "-js", "-sd", store],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    c = Checks()
    conns: dict[str, Conn] = {}
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conns["admin"] = Conn(port, args.admin_user, passwords[args.admin_user])
                break
            except (ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    err = server.stderr.read().decode() if server.stderr else ""
                    raise SystemExit(f"nats-server did not start: {err}")
                time.sleep(0.1)
        # JetStream ready (meta layer) before the first stream create.
        while True:
            try:
                js(conns["admin"], "$JS.API.INFO")
                break
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

        # Authentication itself.
        c.expect_denied(lambda: Conn(port, "order", "wrong-password"), "wrong password is rejected")
        c.expect_denied(lambda: Conn(port, None, None), "anonymous connection is rejected")

        for name in sorted(services):
            conns[name] = Conn(port, name, passwords[name])

        def own_stream(name: str) -> str:
            return services[name]["events"].get("publishes") or ""

        def create_stream(conn: Conn, stream: str) -> dict:
            return js(conn, f"$JS.API.STREAM.CREATE.{stream}", {
                "name": stream, "subjects": streams[stream]["subjects"], "storage": "memory",
                "num_replicas": 1, "duplicate_window": 120_000_000_000})

        # 1. Each service creates (or finds) its own stream; one creates DEADLETTER.
        for name in sorted(services):
            s = own_stream(name)
            if s:
                c.expect_ok(lambda n=name, s=s: create_stream(conns[n], s), f"{name} creates stream {s}")
                c.expect_ok(lambda n=name, s=s: js(conns[n], f"$JS.API.STREAM.INFO.{s}"), f"{name} reads stream info {s}")
        first = sorted(services)[0]
        c.expect_ok(lambda: create_stream(conns[first], "DEADLETTER"), f"{first} creates stream DEADLETTER")
        for name in sorted(services):
            c.expect_ok(lambda n=name: js(conns[n], "$JS.API.STREAM.INFO.DEADLETTER"), f"{name} reads DEADLETTER info")

        # 2. Publishing: own context and own dead letters yes, any other context no.
        for name in sorted(services):
            s = own_stream(name)
            if s:
                prefix = streams[s]["subjects"][0].rstrip(">").rstrip(".")
                ack = c.expect_ok(lambda n=name, p=prefix: js(conns[n], f"{p}.probe.{n}"), f"{name} publishes {prefix}.probe.{name}")
                c.check(bool(ack) and ack.get("stream") == s, f"{name}'s publish is stored in {s}")
            dl = c.expect_ok(lambda n=name: js(conns[n], f"deadletter.{n}.order.placed.x"), f"{name} publishes its dead letter")
            c.check(bool(dl) and dl.get("stream") == "DEADLETTER", f"{name}'s dead letter is stored in DEADLETTER")
            other = sorted(o for o in services if o != name)[0]
            c.check(not conns[name].try_publish(f"deadletter.{other}.x"), f"{name} cannot publish deadletter.{other}.x")
            for other_stream, spec in sorted(streams.items()):
                if other_stream in (s, "DEADLETTER"):
                    continue
                subj = spec["subjects"][0].replace(">", "confirmed.x")
                c.check(not conns[name].try_publish(subj), f"{name} cannot publish {subj}")
        # The example from the brief, spelled out.
        c.check(not conns["payment"].try_publish("order.confirmed.x"), "payment cannot publish order.confirmed.x")

        # 3. Messages for every consumer filter, published by the stream's owner.
        owner = {own_stream(n): n for n in services if own_stream(n)}
        for name in sorted(services):
            for stream, filters in sorted(services[name]["events"].get("consumes", {}).items()):
                for f in filters:
                    c.expect_ok(lambda o=owner[stream], subj=sample_subject(f): js(conns[o], subj),
                                f"{owner[stream]} publishes {sample_subject(f)}")

        # 4. Consumers: own durable on every consumed stream, pull + ack; nothing else.
        for name in sorted(services):
            conn = conns[name]
            for stream, filters in sorted(services[name]["events"].get("consumes", {}).items()):
                cfg = {"durable_name": name, "ack_policy": "explicit", "deliver_policy": "all"}
                if len(filters) == 1:
                    cfg["filter_subject"] = filters[0]
                    subject = f"$JS.API.CONSUMER.CREATE.{stream}.{name}.{filters[0]}"
                else:
                    cfg["filter_subjects"] = filters
                    subject = f"$JS.API.CONSUMER.CREATE.{stream}.{name}"
                c.expect_ok(lambda s=subject, st=stream, cf=cfg: js(conn, s, {"stream_name": st, "config": cf, "action": "create"}),
                            f"{name} creates its consumer on {stream}")
                c.expect_ok(lambda st=stream: js(conn, f"$JS.API.CONSUMER.INFO.{st}.{name}"), f"{name} reads its consumer info on {stream}")
                try:
                    msg = conn.request(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
                                       json.dumps({"batch": 1, "expires": 2_000_000_000}).encode())
                except Exception as e:  # noqa: BLE001
                    c.check(False, f"{name} pulls from {stream}: {e}")
                    continue
                reply = msg["reply"] or ""
                c.check(reply.startswith(f"$JS.ACK.{stream}.{name}."), f"{name} got a message from {stream} with an ack subject ({reply or msg['headers'].splitlines()[0]})")
                if reply:
                    c.check(conn.try_publish(reply, b"+ACK"), f"{name} acks on {stream}")
                other = next(o for o in sorted(services) if o != name)
                c.expect_denied(lambda st=stream, o=other: js(conn, f"$JS.API.CONSUMER.CREATE.{st}.{o}", {"stream_name": st, "config": {"durable_name": o}}),
                                f"{name} cannot create consumer {other} on {stream}")
                c.expect_denied(lambda st=stream: js(conn, f"$JS.API.CONSUMER.DELETE.{st}.{name}"), f"{name} cannot delete consumers on {stream}")
                c.expect_denied(lambda st=stream: js(conn, f"$JS.API.STREAM.DELETE.{st}"), f"{name} cannot delete stream {stream}")
                c.expect_denied(lambda st=stream: js(conn, f"$JS.API.STREAM.PURGE.{st}"), f"{name} cannot purge stream {stream}")
                c.check(not conn.try_subscribe(streams[stream]["subjects"][0]), f"{name} cannot subscribe to {streams[stream]['subjects'][0]}")
            untouched = sorted(set(streams) - set(services[name]["events"].get("consumes", {})) - {own_stream(name), "DEADLETTER"})
            for st in untouched:
                c.expect_denied(lambda st=st: js(conn, f"$JS.API.STREAM.INFO.{st}"), f"{name} cannot touch stream {st}")
            c.check(conn.try_subscribe("_INBOX.probe"), f"{name} may subscribe _INBOX.>")
        for conn in conns.values():
            c.check(not [e for e in conn.errors if "Permissions" in e], "no unexpected permission errors")
    finally:
        for conn in conns.values():
            try:
                conn.close()
            except OSError:
                pass
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    total = c.passed + len(c.failed)
    print(f"nats-auth: {c.passed} passed, {len(c.failed)} failed ({total} checks against nats-server with the rendered config)")
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main())
