"""Where the memory of an idle WebSocket connection goes in hub: ``python -m bench.memprofile``.

A hub server (as ``python -m bench`` runs it, ``servers/hub_server.py``) runs in a child
process; this process opens N WebSocket clients to it by hand (upgrade, Engine.IO open,
Socket.IO CONNECT to ``/``, which joins the bench room), and the child reports, per connection:

- the RSS growth (VmRSS after minus before, over N), as ``python -m bench connect`` measures;
- with tracemalloc (the default; ``--no-trace`` for RSS alone, tracemalloc costs memory
  itself): the bytes still allocated, grouped by the line that allocated them, by the file,
  and by the innermost line of hub that led to the allocation (so trio's and the libraries'
  objects are charged to the hub code that made them);
- the objects that remain per connection, by type (``gc`` tracked objects only).

With ``--hold S`` it then measures the heartbeat instead: the clients answer every ping for S
seconds (pings every ``--ping-interval`` seconds) and it reports the server's CPU time per ping
and pong (tracemalloc off); ``--py-spy`` also samples the server meanwhile and prints where that
time goes. Server and clients are pinned to different cores when there are two.

``--jwt`` measures hub's application instead of the bare server (as ``bench connect`` does in its
JWT rows): each client sends a token of its own user at connect.

Usage::

    python -m bench.memprofile [--clients 2000] [--top 25] [--no-trace] [--browser-headers] [--jwt]
    python -m bench.memprofile --hold 20 [--ping-interval 1] [--py-spy]
"""

from __future__ import annotations

import argparse
import base64
import collections
import gc
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

__all__ = ["main"]

CHECKOUT = Path(__file__).resolve().parents[1]
_FRAMES = 16
_TRACEBACKS = int(os.environ.get("MEMPROFILE_TRACEBACKS", "0"))  # print the N largest stacks

# What the benchmark's load sends (``load/worker.mjs``), and what a browser adds to it.
_LOAD_HEADERS = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
_BROWSER_HEADERS = (
    "Pragma: no-cache\r\nCache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36\r\nOrigin: http://localhost:8080\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-GB,en;q=0.9\r\n"
    "Cookie: session=0123456789abcdef0123456789abcdef\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
)


# -- the server side (child process) -------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _types() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def _hub_frame(trace: tracemalloc.Traceback) -> str:
    """The innermost frame of hub's own code in ``trace`` (else its innermost frame)."""
    hub = str(CHECKOUT / "hub")
    for frame in reversed(trace):  # most recent call last
        if frame.filename.startswith(hub):
            return f"{os.path.relpath(frame.filename, CHECKOUT)}:{frame.lineno}"
    frame = trace[-1]
    return f"{_short(frame.filename)}:{frame.lineno}"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        index = filename.find(marker)
        if index != -1:
            return filename[index + len(marker) :].lstrip("/.0123456789")
    return os.path.relpath(filename, CHECKOUT) if filename.startswith(str(CHECKOUT)) else filename


def _report(
    before: tracemalloc.Snapshot | None,
    after: tracemalloc.Snapshot | None,
    types_before: collections.Counter[str],
    rss_before: int,
    clients: int,
    top: int,
) -> None:
    rss = (_rss_kb() - rss_before) / clients
    print(f"RSS: {rss:.2f} KiB per connection ({clients} connections)")
    if before is not None and after is not None:
        diff = after.compare_to(before, "traceback")
        total = sum(d.size_diff for d in diff)
        print(f"tracemalloc: {total / clients / 1024:.2f} KiB per connection still allocated\n")
        by_line: collections.Counter[str] = collections.Counter()
        by_file: collections.Counter[str] = collections.Counter()
        by_hub: collections.Counter[str] = collections.Counter()
        for stat in diff:
            frame = stat.traceback[-1]
            by_line[f"{_short(frame.filename)}:{frame.lineno}"] += stat.size_diff
            by_file[_short(frame.filename)] += stat.size_diff
            by_hub[_hub_frame(stat.traceback)] += stat.size_diff
        for title, counter in (
            ("by the hub line that led to it", by_hub),
            ("by allocating line", by_line),
            ("by allocating file", by_file),
        ):
            print(f"bytes per connection, {title}:")
            for where, size in counter.most_common(top):
                if size / clients < 8:
                    break
                print(f"  {size / clients:8.0f}  {where}")
            print()
        if _TRACEBACKS:
            print(
                f"the {_TRACEBACKS} largest allocation sites, with their stacks (innermost last):"
            )
            for stat in sorted(diff, key=lambda d: -d.size_diff)[:_TRACEBACKS]:
                print(f"  {stat.size_diff / clients:.0f} bytes per connection:")
                for frame in stat.traceback[-8:]:
                    print(f"      {_short(frame.filename)}:{frame.lineno}")
            print()
    counts = _types() - types_before
    print("gc-tracked objects per connection, by type:")
    for name, count in counts.most_common(top):
        if count / clients < 0.5:
            break
        print(f"  {count / clients:6.2f}  {name}")
    sys.stdout.flush()


class _Options(argparse.Namespace):
    """The application server's options: those given, None for the others (no Redis...)."""

    def __getattr__(self, name: str) -> None:
        return None


def _serve(port: int, trace: bool, top: int, ping_interval: float, jwt_users: int) -> None:
    import tempfile

    import trio

    from bench.servers.common import EMIT_TOKEN, JWT_SECRET
    from bench.servers.hub_server import build, build_app

    serve = build(ping_interval, ping_interval).serve
    if jwt_users:
        app = build_app(
            _Options(
                host="127.0.0.1",
                port=port,
                database=os.path.join(tempfile.mkdtemp(), "access.db"),
                jwt_secret=JWT_SECRET,
                emit_token=EMIT_TOKEN,
                ping_interval=ping_interval,
                ping_timeout=ping_interval,
                users=jwt_users,
            )
        )

        async def serve_app(
            host: str, port: int, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
        ) -> None:
            await app.serve(task_status=task_status)

        serve = serve_app  # type: ignore[assignment]

    async def commands() -> None:
        before = after = None
        types_before: collections.Counter[str] = collections.Counter()
        rss_before = 0
        stdin = trio.lowlevel.FdStream(os.dup(0))  # no thread: py-spy would see it busy
        pending = b""
        while True:
            while b"\n" not in pending:
                data = await stdin.receive_some()
                if not data:
                    raise SystemExit(0)
                pending += data
            line, _, pending = pending.partition(b"\n")
            command, *args = line.decode().split()
            gc.collect()
            if command == "base":
                rss_before = _rss_kb()
                types_before = _types()
                before = tracemalloc.take_snapshot() if trace else None
            elif command == "measure":
                after = tracemalloc.take_snapshot() if trace else None
                _report(before, after, types_before, rss_before, int(args[0]), top)
            print("ok", flush=True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, "127.0.0.1", port)
            if trace:
                tracemalloc.start(_FRAMES)
            print("ready", flush=True)
            nursery.start_soon(commands)

    trio.run(main)


# -- the clients (this process) -------------------------------------------------------------


def _frame(text: bytes) -> bytes:
    """A masked client text frame (RFC 6455 5.3: a client masks every frame)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    if len(text) < 126:
        return bytes((0x81, 0x80 | len(text))) + mask + masked
    return bytes((0x81, 0x80 | 126)) + len(text).to_bytes(2, "big") + mask + masked


def _read_until(sock: socket.socket, buffer: bytearray, marker: bytes) -> None:
    while marker not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        buffer += data


def _token(user: int) -> str:
    """A token of the bench's application mode (``load/worker.mjs`` mints them alike)."""
    import jwt

    from bench.servers.common import JWT_SECRET, user_id

    now = int(time.time())
    claims = {"sub": user_id(user), "iat": now, "exp": now + 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _connect(port: int, headers: str, user: int | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n" + headers.replace("dGhlIHNhbXBsZSBub25jZQ==", key) + "\r\n"
    )
    sock.sendall(request.encode())
    buffer = bytearray()
    _read_until(sock, buffer, b'0{"sid"')
    connect = b"40" if user is None else b'40{"token":"%s"}' % _token(user).encode()
    sock.sendall(_frame(connect))
    _read_until(sock, buffer, b'40{"sid"')
    return sock


_PING = b"\x81\x012"  # the server's ping: an unmasked text frame "2"


class _Pinger:
    """Answers the server's pings on every client it holds."""

    def __init__(self) -> None:
        import selectors

        self._selector = selectors.DefaultSelector()
        self._pong = _frame(b"3")
        self.answered = 0

    def add(self, client: socket.socket) -> None:
        import selectors

        client.setblocking(False)
        self._selector.register(client, selectors.EVENT_READ)

    def poll(self, seconds: float) -> None:
        """Answer every ping for ``seconds`` (0: those that have arrived)."""
        deadline = time.monotonic() + seconds
        while True:
            for key, _ in self._selector.select(max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                pings = sock.recv(65536).count(_PING)
                if pings:
                    sock.sendall(self._pong * pings)
                    self.answered += pings
            if time.monotonic() >= deadline:
                return


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _py_spy_summary(raw: Path, top: int) -> None:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [
            _short(f.split(" (", 1)[0] + " (" + f.split(" (", 1)[-1]) for f in stack.split(";")
        ]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"py-spy, {title} share of {total} samples:")
        for where, samples in counter.most_common(top):
            print(f"  {100 * samples / total:5.1f} %  {where}")
        print()


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _measure_hold(pid: int, pinger: _Pinger, seconds: float, spy: bool, top: int) -> None:
    pinger.poll(2.0)  # every client has had its first ping
    spying = None
    raw = Path(f"/tmp/hub-memprofile-{pid}.txt")
    if spy:
        spying = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"),
                *("--rate", "250", "-o", str(raw), "-p", str(pid), "-d", str(int(seconds))),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    user, system = _cpu_seconds(pid)
    answered = pinger.answered
    pinger.poll(seconds)
    user_after, system_after = _cpu_seconds(pid)
    user, system = user_after - user, system_after - system
    pings = max(1, pinger.answered - answered)
    print(
        f"held the clients {seconds:.0f} s: {pings} pings answered, server CPU "
        f"{100 * (user + system) / seconds:.1f} %, {(user + system) / pings * 1e6:.1f} µs per "
        f"ping and pong ({user / pings * 1e6:.1f} user, {system / pings * 1e6:.1f} system)"
    )
    if spying is not None:
        spying.wait()
        _py_spy_summary(raw, top)
        raw.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memprofile", description=__doc__)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--no-trace", action="store_true", help="RSS only, no tracemalloc")
    parser.add_argument("--browser-headers", action="store_true", help="send a browser's headers")
    parser.add_argument("--hold", type=float, help="answer pings for this many seconds")
    parser.add_argument(
        "--ping-interval",
        type=float,
        help="seconds, interval and timeout (1 with --hold, else 600)",
    )
    parser.add_argument("--py-spy", action="store_true", help="with --hold: sample the server")
    parser.add_argument(
        "--jwt", action="store_true", help="hub's application (JWT check, user rooms, expiry)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold is not None:
        args.no_trace = True
    if args.ping_interval is None:
        # Idle clients that answer no ping must outlive a slow (traced) measurement.
        args.ping_interval = 1.0 if args.hold is not None else 600.0
    if args.serve is not None:
        _serve(args.serve, not args.no_trace, args.top, args.ping_interval, args.users)
        return 0
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = _port()
    command = [sys.executable, "-m", "bench.memprofile", "--serve", str(port)]
    command += ["--top", str(args.top), "--ping-interval", str(args.ping_interval)]
    command += ["--no-trace"] if args.no_trace else []
    users = args.clients + 20 if args.jwt else 0
    command += ["--users", str(users)]
    headers = _LOAD_HEADERS + (_BROWSER_HEADERS if args.browser_headers else "")
    cores = sorted(os.sched_getaffinity(0))
    with subprocess.Popen(
        command,
        cwd=CHECKOUT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores[:1])) if len(cores) > 1 else None,
    ) as child:
        if len(cores) > 1:
            os.sched_setaffinity(0, cores[1:])
        assert child.stdin is not None
        assert child.stdout is not None

        def ask(line: str) -> None:
            assert child.stdin is not None
            assert child.stdout is not None
            child.stdin.write(line + "\n")
            child.stdin.flush()
            while (answer := child.stdout.readline()) and answer != "ok\n":
                print(answer, end="")

        try:
            if child.stdout.readline() != "ready\n":
                print("the server did not start", file=sys.stderr)
                return 1
            user = iter(range(users)) if args.jwt else None

            def connect() -> socket.socket:
                return _connect(port, headers, None if user is None else next(user))

            clients = [connect() for _ in range(20)]  # warm the server up
            time.sleep(0.5)
            if args.hold is not None:
                pinger = _Pinger()
                for client in clients:
                    pinger.add(client)
                for number in range(args.clients):
                    clients.append(connect())
                    pinger.add(clients[-1])
                    if number % 50 == 0:
                        pinger.poll(0)
                _measure_hold(child.pid, pinger, args.hold, args.py_spy, args.top)
                return 0
            ask("base")
            started = time.monotonic()
            clients += [connect() for _ in range(args.clients)]
            print(f"{args.clients} clients connected in {time.monotonic() - started:.1f} s")
            time.sleep(1.0)
            ask(f"measure {args.clients}")
            for client in clients:
                client.close()
        finally:
            child.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
