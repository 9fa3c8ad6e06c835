"""The Python API without pytest in the middle: where the binary is, the
ready line, session names."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

import ouli
import pytest


def test_the_binary_is_the_wheels_and_on_the_venv_path():
    binary = ouli.find_ouli_bin()
    assert Path(binary) == Path(sysconfig.get_path("scripts")) / "ouli"
    # Installed, not run from the source tree.
    assert "site-packages" in ouli.__file__
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("ouli ")


def test_ouli_bin_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("OULI_BIN", str(tmp_path / "missing"))
    with pytest.raises(ouli.OuliError, match="OULI_BIN"):
        ouli.find_ouli_bin()


def test_ready_lines():
    plain = ouli.parse_ready_line("ouli listening endpoint=0 addr=127.0.0.1:41000 mode=replay\n")
    assert (plain.index, plain.url, plain.mode, plain.ca_file) == (0, "http://127.0.0.1:41000", "replay", None)
    tls = ouli.parse_ready_line("ouli listening endpoint=3 addr=[::1]:443 mode=record tls=on ca=/tmp/my ca.pem")
    assert (tls.index, tls.url, tls.ca_file) == (3, "https://[::1]:443", "/tmp/my ca.pem")
    assert ouli.parse_ready_line("2026-01-01 INFO listening") is None


@pytest.mark.parametrize(
    "nodeid, name",
    [
        ("tests/test_api.py::TestUsers::test_get[admin-1]", "tests/test_api/TestUsers/test_get[admin-1]"),
        ("test_x.py::test_y", "test_x/test_y"),
    ],
)
def test_session_names_keep_plain_node_ids(nodeid, name):
    assert ouli.session_name_for(nodeid) == name


def test_session_names_are_valid_and_distinct(tmp_path):
    nodeids = [
        "t.py::test[a b]",
        "t.py::test[a_b]",
        "t.py::test[a/b]",
        "../up.py::test",
        "x.json/t.py::test",
        "t.py::.ouli",
        "t.py::test[" + "\u00e9" * 300 + "]",
        "t.py::" + "x" * 400,
    ]
    names = [ouli.session_name_for(n) for n in nodeids]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name.encode()) <= 200 and name.isascii()
    assert names[1] == "t/test[a_b]"
    assert names[0].startswith("t/test[a_b]-")
    # ouli itself accepts every one as a session name.
    with _server(tmp_path) as server:
        for name in names:
            assert server.set_session(name)["name"] == name


def _server(tmp_path, endpoints=1):
    config = tmp_path / "ouli.yaml"
    config.write_text(
        "endpoints:\n"
        + "".join(
            f"  - {{target_host: 127.0.0.1, target_port: {9 + i}, target_type: http, source_type: http, source_port: 0}}\n"
            for i in range(endpoints)
        )
    )
    (tmp_path / "rec").mkdir()
    return ouli.start("replay", config=str(config), recording_dir=str(tmp_path / "rec"))


def test_start_and_stop_without_pytest(tmp_path):
    with _server(tmp_path, endpoints=2) as server:
        assert [e.index for e in server.endpoints] == [0, 1]
        assert len(set(server.urls)) == 2
        assert server.control("GET", "health") == {"status": "ok"}
    assert server.returncode == 0
