"""``python -m ouli ARGS``: runs the installed binary with ARGS."""

import os
import sys

from ._server import find_ouli_bin


def main() -> None:
    binary = find_ouli_bin()
    if sys.platform == "win32":
        import subprocess

        sys.exit(subprocess.call([binary, *sys.argv[1:]]))
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
