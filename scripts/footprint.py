#!/usr/bin/env python3
"""Start-up time and memory per connection, for scripts/bench-replay.

  footprint.py startup --runs N --port P --path /x [--header 'K: V'] -- CMD...
      Spawns CMD N times; each time measures from just before the spawn to the
      first complete 200 answer on 127.0.0.1:P (polling connect every 0.2 ms),
      then stops CMD (SIGTERM). Prints "startup_ms median=… min=… max=…".

      --evict PATH (file or directory, repeatable) drops PATH's pages from the
      page cache before each spawn (posix_fadvise DONTNEED): a cold start.

  footprint.py evict PATH...
      Drops the files' pages from the page cache; prints how many pages of
      them were resident before and after (mincore through mmap).

  footprint.py drive --port P --count N --path TEMPLATE [--header 'K: V']
      Sends N requests in order on one keep-alive connection, exactly as wrk
      would (GET, Host, the given headers); `{i}` in TEMPLATE and headers is
      the request's index (0-based). For recording through `ouli record`.

  footprint.py connections --pid PID --port P --path /x --count N
      RSS of PID after one request, then with N idle keep-alive connections
      open (each has made one request). Prints
      "connections rss_before_kib=… rss_after_kib=… per_connection_bytes=…".

Standard library only: it must run on a fresh machine.
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time


def request_bytes(port, path, headers):
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += headers
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock):
    """Reads one HTTP/1.1 response with a content-length; returns the status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(max(65536, length - len(body)))
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return status


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def files_under(paths):
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                for name in names:
                    yield os.path.join(root, name)
        else:
            yield path


def resident_pages(path):
    """Pages of `path` in the page cache: mincore(2) on a private mapping."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path} failed")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(address, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path} failed")
            return sum(v & 1 for v in vec)
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)


def evict(paths):
    """Drops the files' clean pages from the page cache (pages another process
    has mapped stay: stop the server first)."""
    for path in files_under(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def startup(args):
    request = request_bytes(args.port, args.path, args.header)
    samples = []
    for _ in range(args.runs):
        if args.evict:
            evict(args.evict)
        start = time.perf_counter()
        proc = subprocess.Popen(args.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = start + args.timeout
            status = None
            while time.perf_counter() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{args.cmd[0]} exited with {proc.returncode} before answering")
                sock = socket.socket()
                try:
                    sock.connect(("127.0.0.1", args.port))
                except (ConnectionRefusedError, OSError):
                    sock.close()
                    time.sleep(0.0002)
                    continue
                try:
                    sock.sendall(request)
                    status = read_response(sock)
                except (ConnectionError, OSError):
                    status = None
                finally:
                    sock.close()
                if status == 200:
                    break
                if status is not None:
                    raise RuntimeError(f"first answer was {status}, not 200")
                time.sleep(0.0002)
            if status != 200:
                raise RuntimeError(f"no 200 within {args.timeout}s")
            samples.append((time.perf_counter() - start) * 1000.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(
        "startup_ms median=%.2f min=%.2f max=%.2f runs=%d"
        % (statistics.median(samples), min(samples), max(samples), len(samples))
    )


def drive(args):
    sock = socket.create_connection(("127.0.0.1", args.port))
    try:
        for i in range(args.count):
            path = args.path.replace("{i}", str(i)).replace("{i1}", str(i + 1))
            headers = [h.replace("{i}", str(i)).replace("{i1}", str(i + 1)) for h in args.header]
            sock.sendall(request_bytes(args.port, path, headers))
            status = read_response(sock)
            if status != 200:
                raise RuntimeError(f"request {i} ({path}) was answered with {status}")
    finally:
        sock.close()
    print("drive requests=%d" % args.count)


def connections(args):
    request = request_bytes(args.port, args.path, args.header)
    warm = socket.create_connection(("127.0.0.1", args.port))
    for _ in range(100):
        warm.sendall(request)
        if read_response(warm) != 200:
            raise RuntimeError("warm-up request was not answered with 200")
    warm.close()
    time.sleep(0.5)
    before = rss_kib(args.pid)
    socks = []
    try:
        for _ in range(args.count):
            sock = socket.create_connection(("127.0.0.1", args.port))
            sock.sendall(request)
            if read_response(sock) != 200:
                raise RuntimeError("request on a held connection was not answered with 200")
            socks.append(sock)
        time.sleep(1.0)
        after = rss_kib(args.pid)
    finally:
        for sock in socks:
            sock.close()
    per_connection = (after - before) * 1024 / args.count
    print(
        "connections rss_before_kib=%d rss_after_kib=%d per_connection_bytes=%.0f count=%d"
        % (before, after, per_connection, args.count)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("startup")
    s.add_argument("--runs", type=int, default=15)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--path", required=True)
    s.add_argument("--header", action="append", default=[])
    s.add_argument("--timeout", type=float, default=10.0)
    s.add_argument("--evict", action="append", default=[])
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    e = sub.add_parser("evict")
    e.add_argument("paths", nargs="+")
    d = sub.add_parser("drive")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--path", required=True)
    d.add_argument("--header", action="append", default=[])
    c = sub.add_parser("connections")
    c.add_argument("--pid", type=int, required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--path", required=True)
    c.add_argument("--header", action="append", default=[])
    c.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    if args.what == "startup":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd:
            parser.error("startup needs a command after --")
        startup(args)
    elif args.what == "drive":
        drive(args)
    elif args.what == "evict":
        files = list(files_under(args.paths))
        before = sum(resident_pages(f) for f in files)
        evict(files)
        after = sum(resident_pages(f) for f in files)
        print("evict files=%d resident_pages_before=%d resident_pages_after=%d" % (len(files), before, after))
    else:
        connections(args)


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError) as err:
        print(f"footprint.py: {err}", file=sys.stderr)
        sys.exit(1)
