"""pytest plugin: one ouli per test run (per xdist worker), one session per
test, misses as test failures, unused recordings in the summary.

Loaded by pytest through the ``pytest11`` entry point of the ``ouli``
wheel; nothing goes in a conftest. It is idle in a suite that never asks
for the ``ouli`` fixture (nor marks a test ``@pytest.mark.ouli``).

* ``--ouli-mode replay|record|record-missing|passthrough|off`` (default
  replay), ``--ouli-config FILE``, ``--ouli-recordings DIR``.
* The session fixture ``ouli`` (an :class:`ouli.Ouli`): ``ouli.url``,
  ``ouli.urls[i]``, ``ouli.ca_file``. With ``off`` nothing is started and
  ``ouli.url`` is None (the suite talks to the real API itself).
* Each test that uses it gets its own session, made active for it (``PUT
  /__ouli/session``), so its HTTP client sends no header: the name is
  :func:`ouli.session_name_for` of its node id, or
  ``@pytest.mark.ouli(session="name")``.
* After the test, its misses (``GET /__ouli/misses``) fail it with the
  miss report: what differs from the closest recorded request.
* ouli is started with ``--unused-report`` (replay); the recorded
  interactions no test asked for are listed in the terminal summary.
* Under pytest-xdist each worker runs its own ouli on free ports
  (``source_port`` 0) over the same recording dir.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from ._names import session_name_for
from ._server import MODES, Ouli, OuliError, start

#: Misses of one test quoted in its failure at most (the rest are counted).
MISSES_SHOWN_MAX = 5
#: Differences quoted per miss at most.
DIFFERENCES_SHOWN_MAX = 10
#: Unused interactions listed per session in the summary at most.
UNUSED_SHOWN_MAX = 10

_SESSION_KEY = pytest.StashKey[Any]()
_UNUSED_KEY = pytest.StashKey[List[Dict[str, Any]]]()
#: `source_port: 8080` (YAML), `"source_port": 8080` (flow), `source_port = 8080` (TOML).
_SOURCE_PORT = re.compile(r'(?m)((?:^|[\s{,])"?source_port"?\s*[:=]\s*)\d+')


class Disabled:
    """The fixture's value with ``--ouli-mode off``: nothing runs."""

    mode = "off"
    url = None
    urls: List[str] = []
    ca_file = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ouli", "ouli record/replay proxy")
    group.addoption(
        "--ouli-mode",
        choices=list(MODES) + ["off"],
        default="replay",
        help="how the ouli fixture runs ouli (off: not at all). Default: replay.",
    )
    group.addoption("--ouli-config", metavar="FILE", default=None, help="ouli's config file.")
    group.addoption(
        "--ouli-recordings",
        metavar="DIR",
        default=None,
        help="ouli's recording dir (default: ouli's, ./recordings).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ouli(session=NAME): run the test in ouli session NAME instead of the one named after it",
    )
    config.stash[_UNUSED_KEY] = []


@pytest.fixture(scope="session")
def ouli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """ouli, started for the test run and stopped (SIGTERM) at its end."""
    options = request.config.option
    if options.ouli_mode == "off":
        yield Disabled()
        return
    workdir = tmp_path_factory.mktemp("ouli")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    config = _absolute(request.config, options.ouli_config)
    free_ports = _free_ports_copy(config, worker) if worker and config else None
    # Per run: parallel runs must not share (and overwrite) one CA file.
    args = ["--tls-ca-out", str(workdir / "ca.pem")]
    unused = workdir / "unused.json"
    if options.ouli_mode == "replay":
        args += ["--unused-report", str(unused)]
    try:
        server = start(
            options.ouli_mode,
            config=str(free_ports or config) if config else None,
            recording_dir=_absolute(request.config, options.ouli_recordings),
            args=args,
            log_path=str(workdir / "ouli.log"),
        )
    except BaseException:
        if free_ports:
            free_ports.unlink()
        raise
    try:
        yield server
    finally:
        try:
            code = server.stop()
        finally:
            if free_ports:
                free_ports.unlink()
        _keep_unused(request.config, unused)
        if code != 0:
            raise OuliError(f"ouli exited with code {code}; its log: {server.log_path}")


@pytest.fixture(autouse=True)
def _ouli_session(request: pytest.FixtureRequest) -> Iterator[None]:
    """The test's own session, active while it runs."""
    marker = request.node.get_closest_marker("ouli")
    if "ouli" not in request.fixturenames and marker is None:
        yield
        return
    server = request.getfixturevalue("ouli")
    if not isinstance(server, Ouli):
        yield
        return
    name = (marker.kwargs.get("session") if marker else None) or session_name_for(request.node.nodeid)
    server.set_session(name)
    request.node.stash[_SESSION_KEY] = (server, name, len(server.misses(name)))
    try:
        yield
        if server.mode in ("record", "record-missing"):
            server.end_session(name)
    finally:
        server.set_session(None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if call.when != "call" or _SESSION_KEY not in item.stash:
        return
    server, name, before = item.stash[_SESSION_KEY]
    report = outcome.get_result()
    try:
        misses = server.misses(name)[before:]
    except OuliError as error:
        misses, text = [], f"ouli: the misses of session {name!r} could not be read: {error}"
        report.sections.append(("ouli", text))
    if not misses:
        return
    text = format_misses(name, misses)
    if report.passed:
        report.outcome = "failed"
        report.longrepr = text
    else:
        report.sections.append(("ouli: requests not in the recording", text))


def format_misses(name: str, misses: List[Dict[str, Any]]) -> str:
    """A test's misses, readable: per request, what differs from the
    closest recorded one."""
    lines = [f"ouli: {len(misses)} request(s) of session {name!r} not in the recording:"]
    for miss in misses[:MISSES_SHOWN_MAX]:
        what = miss.get("method", "")
        target = miss.get("target", "")
        lines.append(f"  {what} {target}: {miss.get('error')}: {miss.get('message')}")
        differences = miss.get("differences")
        if isinstance(differences, str):
            lines.append(f"    {differences}")
        elif differences:
            recorded = miss.get("closest_recorded")
            closest = recorded[0] if isinstance(recorded, list) and recorded else {}
            lines.append(f"    closest recorded: {closest.get('method')} {closest.get('path')}")
            for difference in differences[:DIFFERENCES_SHOWN_MAX]:
                lines.append(
                    f"    {difference.get('field')}: expected {json.dumps(difference.get('expected'))},"
                    f" got {json.dumps(difference.get('got'))}"
                )
            if len(differences) > DIFFERENCES_SHOWN_MAX:
                lines.append(f"    ... {len(differences) - DIFFERENCES_SHOWN_MAX} more")
        if miss.get("record_command"):
            lines.append(f"    record it: {miss['record_command']}")
    if len(misses) > MISSES_SHOWN_MAX:
        lines.append(f"  ... {len(misses) - MISSES_SHOWN_MAX} more")
    return "\n".join(lines)


def _absolute(config: pytest.Config, path: Optional[str]) -> Optional[str]:
    """`path` against the folder pytest was started in."""
    if path is None:
        return None
    return str(Path(config.invocation_params.dir, path).resolve())


def _free_ports_copy(config: str, worker: str) -> Optional[Path]:
    """A copy of `config` with every `source_port` 0 (the kernel picks a free
    one; the ready line names it), beside the original so that its relative
    paths still resolve; None when every port is 0 already."""
    text = Path(config).read_text()
    free = _SOURCE_PORT.sub(lambda m: m.group(1) + "0", text)
    if free == text:
        return None
    original = Path(config)
    copy = original.with_name(f".ouli-{worker}-{os.getpid()}-{original.name}")
    copy.write_text(free)
    return copy


def _keep_unused(config: pytest.Config, report_path: Path) -> None:
    """The unused-recording report, for the summary (sent to the controller
    by an xdist worker)."""
    try:
        sessions = json.loads(report_path.read_text()).get("sessions", [])
    except (OSError, ValueError):
        return
    # Sessions without unused ones too: under xdist, what one worker served
    # another reports unused (`_merge`).
    config.stash[_UNUSED_KEY].extend(sessions)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["ouli_unused"] = json.dumps(sessions)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: a worker's unused-recording report."""
    sent = getattr(node, "workeroutput", {}).get("ouli_unused")
    if sent:
        node.config.stash[_UNUSED_KEY].extend(json.loads(sent))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    sessions = _merge(config.stash.get(_UNUSED_KEY, []))
    if not sessions:
        return
    terminalreporter.section("ouli: recorded interactions no test asked for")
    for session in sessions:
        unused = session["unused"]
        terminalreporter.write_line(
            f"{session.get('name')} (endpoint {session.get('endpoint', 0)}): "
            f"{len(unused)} of {session.get('interactions')} unused"
            + (f" in {session['file']}" if session.get("file") else "")
        )
        for interaction in unused[:UNUSED_SHOWN_MAX]:
            terminalreporter.write_line(
                f"  #{interaction.get('ordinal')} {interaction.get('method')} "
                f"{interaction.get('path')} -> {interaction.get('status')}"
            )
        if len(unused) > UNUSED_SHOWN_MAX:
            terminalreporter.write_line(f"  ... {len(unused) - UNUSED_SHOWN_MAX} more")


def _merge(sessions: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per (endpoint, session): with xdist, an interaction is
    unused only when no worker served it."""
    merged: Dict[Any, Dict[str, Any]] = {}
    for session in sessions:
        key = (session.get("endpoint", 0), session.get("name"))
        ordinals = {u.get("ordinal") for u in session.get("unused", [])}
        if key not in merged:
            merged[key] = dict(session)
            merged[key]["_ordinals"] = ordinals
        else:
            merged[key]["_ordinals"] &= ordinals
    out = []
    for entry in merged.values():
        keep = entry.pop("_ordinals")
        entry["unused"] = [u for u in entry["unused"] if u.get("ordinal") in keep]
        if entry["unused"]:
            out.append(entry)
    return sorted(out, key=lambda s: (s.get("endpoint", 0), str(s.get("name"))))
