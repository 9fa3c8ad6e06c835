"""ouli for Python: the ``ouli`` binary (installed beside this package by
the wheel), a small API to run it, and a pytest plugin (``ouli.pytest_plugin``,
loaded by pytest through the ``pytest11`` entry point).

    import ouli
    with ouli.start("replay", config="ouli.yaml", recording_dir="recordings") as server:
        server.set_session("my-test")
        urllib.request.urlopen(server.url + "/v1/models")
"""

from ._names import session_name_for
from ._server import (
    MODES,
    Endpoint,
    Ouli,
    OuliError,
    find_ouli_bin,
    parse_ready_line,
    start,
)

__all__ = [
    "MODES",
    "Endpoint",
    "Ouli",
    "OuliError",
    "find_ouli_bin",
    "parse_ready_line",
    "session_name_for",
    "start",
]
