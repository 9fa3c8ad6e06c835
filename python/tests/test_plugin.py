"""The pytest plugin end to end: inner suites (pytester, in a subprocess)
run against the installed wheel's ouli and a real upstream."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

RECORD = ["--ouli-mode", "record", "--ouli-config", "ouli.yaml", "--ouli-recordings", "rec"]
REPLAY = ["--ouli-mode", "replay", "--ouli-config", "ouli.yaml", "--ouli-recordings", "rec"]

CLIENT = """
import json, urllib.error, urllib.request

def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return json.load(answer)
"""


def test_record_then_replay_offline(project, upstream):
    project.makepyfile(
        test_inner=CLIENT
        + """
def test_get(ouli):
    assert get(ouli.url, "/v1/items?q=1")["path"] == "/v1/items?q=1"

def test_post(ouli):
    request = urllib.request.Request(ouli.url + "/v1/items", data=b'{"a": 1}', method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer)["body"] == '{"a": 1}'
"""
    )
    project.runpytest_subprocess(*RECORD).assert_outcomes(passed=2)
    assert upstream.hits == ["GET /v1/items?q=1", "POST /v1/items"]
    # One recording per test, named after its node id.
    assert (project.path / "rec/test_inner/test_get.ouli").is_file()
    assert (project.path / "rec/test_inner/test_post.ouli").is_file()

    upstream.stop()
    project.runpytest_subprocess(*REPLAY).assert_outcomes(passed=2)
    assert len(upstream.hits) == 2


def test_a_miss_fails_the_test_with_what_differs(project, upstream):
    project.makepyfile(test_inner=CLIENT + "\ndef test_q(ouli):\n    get(ouli.url, '/v1/items?q=1')\n")
    project.runpytest_subprocess(*RECORD).assert_outcomes(passed=1)
    upstream.stop()
    # The test swallows the 404: the plugin still fails it.
    project.makepyfile(
        test_inner=CLIENT
        + """
def test_q(ouli):
    try:
        get(ouli.url, "/v1/items?q=2")
    except urllib.error.HTTPError as error:
        assert error.code == 404
"""
    )
    result = project.runpytest_subprocess(*REPLAY)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ouli: 1 request(s) of session 'test_inner/test_q' not in the recording:*",
            "*GET /v1/items?q=2: replay-miss*",
            '*query q: expected "1", got "2"*',
            "*record it: *record-missing*",
        ]
    )


def test_a_test_failing_on_its_miss_also_shows_the_report(project, upstream):
    project.makepyfile(test_inner=CLIENT + "\ndef test_q(ouli):\n    get(ouli.url, '/v1/items?q=1')\n")
    project.runpytest_subprocess(*RECORD).assert_outcomes(passed=1)
    project.makepyfile(test_inner=CLIENT + "\ndef test_q(ouli):\n    get(ouli.url, '/v1/items?q=3')\n")
    result = project.runpytest_subprocess(*REPLAY)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*HTTPError*404*", "*requests not in the recording*", '*query q: expected "1", got "3"*'])


def test_marker_names_the_session(project, upstream):
    project.makepyfile(
        test_inner=CLIENT
        + """
import pytest

@pytest.mark.ouli(session="shared/login")
def test_one(ouli):
    get(ouli.url, "/v1/login")
"""
    )
    project.runpytest_subprocess(*RECORD).assert_outcomes(passed=1)
    assert (project.path / "rec/shared/login.ouli").is_file()
    assert not (project.path / "rec/test_inner").exists()


def test_unexhausted_chain_passes_and_is_reported_unused(project, upstream):
    project.makepyfile(
        test_inner=CLIENT + "\ndef test_poll(ouli):\n    assert [get(ouli.url, '/v1/job')['n'] for _ in range(2)] == [1, 2]\n"
    )
    project.runpytest_subprocess(*RECORD).assert_outcomes(passed=1)
    upstream.stop()
    # Replayed in the recorded order, and asking less than recorded is fine.
    project.makepyfile(test_inner=CLIENT + "\ndef test_poll(ouli):\n    assert get(ouli.url, '/v1/job')['n'] == 1\n")
    result = project.runpytest_subprocess(*REPLAY)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*ouli: recorded interactions no test asked for*",
            "test_inner/test_poll (endpoint 0): 1 of 2 unused in */rec/test_inner/test_poll.ouli",
            "  #2 GET /v1/job -> 200",
        ]
    )


def test_xdist_workers_each_run_their_own_ouli(pytester, upstream):
    from conftest import write_config

    # A fixed port in the config: two workers could not both bind it; each
    # gets a copy with port 0.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        fixed = probe.getsockname()[1]
    write_config(pytester, upstream, source_port=fixed)
    tests = "".join(
        f"""
def test_{i}(ouli, worker_id):
    assert get(ouli.url, "/v1/item/{i}")["path"] == "/v1/item/{i}"
    with open("urls-{i}.txt", "w") as out:
        out.write(worker_id + " " + ouli.url)
"""
        for i in range(6)
    )
    pytester.makepyfile(test_inner=CLIENT + tests)
    pytester.runpytest_subprocess("-n", "2", *RECORD).assert_outcomes(passed=6)
    upstream.stop()
    result = pytester.runpytest_subprocess("-n", "2", *REPLAY)
    result.assert_outcomes(passed=6)
    seen = dict(Path(pytester.path, f"urls-{i}.txt").read_text().split() for i in range(6))
    assert sorted(seen) == ["gw0", "gw1"], seen
    assert len(set(seen.values())) == 2, seen
    assert f":{fixed}" not in "".join(seen.values())
    # The copies with free ports are gone.
    assert not list(pytester.path.glob(".ouli-*"))


def test_off_mode_starts_nothing(project, upstream):
    project.makepyfile(
        test_inner=f"""
def test_direct(ouli):
    assert ouli.url is None and ouli.mode == "off"
"""
    )
    project.runpytest_subprocess("--ouli-mode", "off").assert_outcomes(passed=1)


def test_a_suite_without_the_fixture_starts_no_ouli(pytester):
    # No config and no recording dir: starting ouli would fail.
    pytester.makepyfile(test_plain="def test_nothing():\n    assert 1 + 1 == 2\n")
    pytester.runpytest_subprocess("--ouli-recordings", "does-not-exist").assert_outcomes(passed=1)


def test_a_start_failure_names_the_cause(pytester):
    pytester.makepyfile(test_inner="def test_x(ouli):\n    pass\n")
    result = pytester.runpytest_subprocess("--ouli-recordings", "does-not-exist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ouli exited (code *) before it was ready*"])


def test_tls_endpoint_exposes_the_ca_file(project, upstream):
    from conftest import write_config

    write_config(project, upstream, source_type="https")
    project.makepyfile(
        test_inner="""
import json, ssl, urllib.request

def test_https(ouli):
    assert ouli.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=ouli.ca_file)
    with urllib.request.urlopen(ouli.url + "/v1/tls", context=context, timeout=10) as answer:
        assert json.load(answer)["path"] == "/v1/tls"
"""
    )
    project.runpytest_subprocess(*RECORD).assert_outcomes(passed=1)
    assert upstream.hits == ["GET /v1/tls"]
