"""Session names for pytest node ids.

A node id such as ``tests/test_api.py::TestUsers::test_get[admin-1]`` becomes
``tests/test_api/TestUsers/test_get[admin-1]``: the ``::`` parts and the
file's folders are folders of the recording dir, the module loses ``.py``.
Characters outside ``A-Z a-z 0-9 . _ - [ ] = + , @`` become ``_``; when any
was replaced, or the name is longer than :data:`NAME_BYTES_MAX`, the name
ends in ``-`` and the first 10 hex digits of the node id's SHA-256, so that
two node ids never share a session (the long name is cut first). The result
is always a name ouli accepts (see ouli's ``src/session_name.rs``).
"""

from __future__ import annotations

import hashlib
import re

#: Longest session name this derives, in bytes (ouli accepts 255; its last
#: segment 242): room for a folder prefix the user may add.
NAME_BYTES_MAX = 200
#: Hex digits of the node id's SHA-256 that end a changed or cut name.
HASH_HEX_DIGITS = 10

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]=+,@]")
#: Suffixes a folder must not end in (they are other sessions' files).
_FOLDER_SUFFIXES = (".ouli", ".ouli.partial", ".json", ".websocket.log")


def session_name_for(nodeid: str) -> str:
    """The session name of the test ``nodeid``: stable across runs."""
    path, _, rest = nodeid.partition("::")
    folders = [part for part in path.replace("\\", "/").split("/") if part]
    if folders and folders[-1].endswith(".py"):
        folders[-1] = folders[-1][: -len(".py")]
    segments = folders + [part for part in rest.split("::") if part]
    changed = False
    clean = []
    for segment in segments or ["test"]:
        safe = _UNSAFE.sub("_", segment)
        # `.`, `..` and names starting with `.ouli` are refused by ouli.
        if safe.strip(".") == "" or safe.startswith(".ouli"):
            safe = "_" + safe
        changed = changed or safe != segment
        clean.append(safe)
    for i in range(len(clean) - 1):
        if clean[i].endswith(_FOLDER_SUFFIXES):
            clean[i] += "_"
            changed = True
    name = "/".join(clean)
    if not changed and len(name) <= NAME_BYTES_MAX:
        return name
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:HASH_HEX_DIGITS]
    room = NAME_BYTES_MAX - len(digest) - 1
    if len(name) > room:
        # Cut from the end of the name, then never leave an empty, dotted
        # or folder-only last segment.
        name = name[:room].rstrip("/.")
        if not name or name.endswith("/"):
            name = name + "t"
    return f"{name}-{digest}"
