"""Start an ``ouli`` child process, wait for its ready lines, talk to its
control endpoints (``/__ouli/...``) and stop it with SIGTERM.

``start()`` returns an :class:`Ouli`: the running process, one base URL per
endpoint (read from the ready lines ``ouli listening endpoint=<i>
addr=<ip:port> mode=<mode>[ tls=on[ ca=<file>]]``, so ports 0 work) and the
CA file of generated TLS certificates. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

#: Seconds ``start()`` waits for the ready line of endpoint 0.
READY_TIMEOUT_S = 30.0
#: Seconds ``stop()`` waits after SIGTERM before it kills the process.
STOP_TIMEOUT_S = 30.0
#: Seconds one control request (``/__ouli/...``) may take.
CONTROL_TIMEOUT_S = 10.0
#: Bytes of stdout read before the ready lines at most: ouli prints nothing
#: else there, so more means something else is on the other end.
READY_OUTPUT_BYTES_MAX = 64 * 1024
#: Bytes of ouli's log (stderr) quoted in a start failure at most.
LOG_TAIL_BYTES_MAX = 4096
#: Bytes of a control answer read at most (a miss list is at most about
#: 100 reports of 64 KiB).
CONTROL_ANSWER_BYTES_MAX = 16 * 1024 * 1024

#: Subcommand of each mode.
MODES = ("replay", "record", "record-missing", "passthrough")

_READY = re.compile(
    r"^ouli listening endpoint=(?P<index>\d+) addr=(?P<addr>\S+) mode=(?P<mode>\S+)"
    r"(?P<tls> tls=on)?(?: ca=(?P<ca>.+))?$"
)


class OuliError(Exception):
    """ouli could not be found, started, asked or stopped; the message says
    why (and quotes ouli's log when it exited)."""


def find_ouli_bin() -> str:
    """The ``ouli`` binary this package was installed with.

    ``OULI_BIN`` wins when set. Otherwise the scripts folder of this Python
    (where the wheel put it: the venv's ``bin/``), then the folder of the
    interpreter, then the user scheme's scripts folder. Never a bare PATH
    lookup: another ``ouli`` (or test-server) earlier on PATH must not be
    the one a test suite runs.
    """
    override = os.environ.get("OULI_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise OuliError(f"OULI_BIN={override} is not an executable file")
        return override
    exe = "ouli.exe" if sys.platform == "win32" else "ouli"
    candidates = [Path(sysconfig.get_path("scripts")) / exe, Path(sys.executable).parent / exe]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        candidates.append(Path(sysconfig.get_path("scripts", scheme=user_scheme)) / exe)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    looked = ", ".join(str(c) for c in candidates)
    raise OuliError(f"the ouli binary is not installed with this package (looked in {looked}); set OULI_BIN")


class Endpoint:
    """One listener, as its ready line named it."""

    def __init__(self, index: int, addr: str, mode: str, tls: bool, ca_file: Optional[str]):
        self.index = index
        self.addr = addr
        self.mode = mode
        self.tls = tls
        self.ca_file = ca_file
        self.url = f"{'https' if tls else 'http'}://{addr}"


def parse_ready_line(line: str) -> Optional[Endpoint]:
    """The endpoint a ready line announces, or None for any other line."""
    match = _READY.match(line.rstrip("\r\n"))
    if not match:
        return None
    return Endpoint(
        int(match["index"]),
        match["addr"],
        match["mode"],
        match["tls"] is not None,
        match["ca"],
    )


class Ouli:
    """A running ouli: its endpoints' URLs, its CA file, its control API."""

    def __init__(self, process: subprocess.Popen, endpoints: List[Endpoint], mode: str, log_path: str):
        self.process = process
        self.endpoints = endpoints
        self.mode = mode
        self.log_path = log_path
        #: Exit code once stopped.
        self.returncode: Optional[int] = None
        tls_ca = [e.ca_file for e in endpoints if e.ca_file]
        self.ca_file: Optional[str] = tls_ca[0] if tls_ca else None
        self._ssl = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        if self._ssl is None and endpoints and endpoints[0].tls:
            # A certificate of the user's whose CA we were not told: the
            # control requests go to our own child on loopback.
            self._ssl = ssl._create_unverified_context()

    @property
    def urls(self) -> List[str]:
        """Base URL of each endpoint, by index."""
        return [e.url for e in self.endpoints]

    @property
    def url(self) -> str:
        """Base URL of endpoint 0."""
        return self.endpoints[0].url

    # -- control endpoints ------------------------------------------------

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """``method /__ouli/<path>`` on endpoint 0; the JSON answer.
        Raises :class:`OuliError` on an error answer."""
        status, answer = self.control_status(method, path, body)
        if status >= 400:
            raise OuliError(f"{method} /__ouli/{path} answered {status}: {answer}")
        return answer

    def control_status(self, method: str, path: str, body: Any = None) -> "tuple[int, Any]":
        """``(status, JSON answer)`` of ``method /__ouli/<path>``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/__ouli/{path}", data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=CONTROL_TIMEOUT_S, context=self._ssl) as answer:
                return answer.status, _json(answer.read(CONTROL_ANSWER_BYTES_MAX))
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read(CONTROL_ANSWER_BYTES_MAX))
        except (urllib.error.URLError, OSError) as error:
            raise OuliError(f"{method} /__ouli/{path}: ouli did not answer: {error}") from error

    def set_session(self, name: Optional[str]) -> Any:
        """Makes ``name`` the session of requests that name none (None:
        back to the default session)."""
        if name is None:
            return self.control("DELETE", "session")
        return self.control("PUT", "session", {"name": name})

    def end_session(self, name: str) -> Any:
        """Record modes: the session's recording is complete now."""
        return self.control("POST", f"sessions/{urllib.parse.quote(name, safe='')}/end")

    def misses(self, session: Optional[str] = None) -> List[Dict[str, Any]]:
        """The last misses (oldest first), of ``session`` only when given."""
        misses = self.control("GET", "misses").get("misses", [])
        return [m for m in misses if session is None or m.get("session") == session]

    def sessions(self) -> List[Dict[str, Any]]:
        """Every session known, with its served and unused counts."""
        return self.control("GET", "sessions").get("sessions", [])

    # -- lifetime ---------------------------------------------------------

    def log(self) -> str:
        """What ouli logged so far (stderr)."""
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then the exit code once the recordings are closed
        (SIGKILL after :data:`STOP_TIMEOUT_S`, and an error)."""
        if self.returncode is not None:
            return self.returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait()
            raise OuliError(f"ouli did not stop within {STOP_TIMEOUT_S}s of SIGTERM; killed") from None
        return self.returncode

    def __enter__(self) -> "Ouli":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def start(
    mode: str = "replay",
    config: Optional[str] = None,
    recording_dir: Optional[str] = None,
    args: Sequence[str] = (),
    env: Optional[Dict[str, str]] = None,
    log_path: Optional[str] = None,
    binary: Optional[str] = None,
) -> Ouli:
    """Starts ``ouli <mode>`` and returns once every endpoint listens.

    ``config`` and ``recording_dir`` default as ouli's own do (a config in
    the current folder, ``recordings``). ``args`` are passed on as they are
    (``--unused-report FILE``, ``--tls-ca-out FILE``). stderr (the log) goes
    to ``log_path`` (a temporary file by default).
    """
    if mode not in MODES:
        raise OuliError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    command = [binary or find_ouli_bin(), mode]
    if config is not None:
        command += ["--config", os.path.abspath(config)]
    if recording_dir is not None:
        command += ["--recording-dir", os.path.abspath(recording_dir)]
    command += list(args)
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="ouli-", suffix=".log")
        os.close(fd)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=None if env is None else {**os.environ, **env},
        )
    try:
        endpoints = _wait_ready(process, log_path)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    return Ouli(process, endpoints, mode, log_path)


def _wait_ready(process: subprocess.Popen, log_path: str) -> List[Endpoint]:
    """Reads ready lines until endpoint 0's, then, once endpoint 0 answers
    (ouli prints every ready line before it accepts), the others already in
    the pipe. Afterwards a thread keeps draining stdout."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + READY_TIMEOUT_S
    buffer = b""
    endpoints: Dict[int, Endpoint] = {}

    def take_lines() -> None:
        nonlocal buffer
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            endpoint = parse_ready_line(line.decode(errors="replace"))
            if endpoint is not None:
                endpoints[endpoint.index] = endpoint

    while 0 not in endpoints:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OuliError(f"ouli printed no ready line within {READY_TIMEOUT_S}s{_log_tail(log_path)}")
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            code = process.wait()
            raise OuliError(f"ouli exited (code {code}) before it was ready{_log_tail(log_path)}")
        buffer += chunk
        if len(buffer) > READY_OUTPUT_BYTES_MAX:
            raise OuliError(f"ouli printed over {READY_OUTPUT_BYTES_MAX} bytes without a ready line")
        take_lines()
    first = Ouli(process, [endpoints[0]], endpoints[0].mode, log_path)
    first.control_status("GET", "health")
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
        take_lines()
    threading.Thread(target=_drain, args=(fd,), daemon=True).start()
    return [endpoints[i] for i in sorted(endpoints)]


def _drain(fd: int) -> None:
    """Reads stdout to its end, so that ouli never blocks on a full pipe."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def _log_tail(log_path: str) -> str:
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - LOG_TAIL_BYTES_MAX))
            tail = log.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return f"; its log ends:\n{tail}" if tail else ""
