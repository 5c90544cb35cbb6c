"""``python -m ipyrpyc server …`` runs a classic server; ``proxy`` shows the wire between a client and
a server; ``lab`` opens the teaching notebooks in JupyterLab; ``demo`` shows ipyrpyc at work in a
terminal."""

from __future__ import annotations

import sys
from typing import List, Optional

USAGE = "usage: python -m ipyrpyc {server,proxy,lab,demo} [options]  (try: python -m ipyrpyc server --help)"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "server":
        from .server import main as server_main

        return server_main(rest, prog="python -m ipyrpyc server")
    if command == "proxy":
        from .proxy import main as proxy_main

        return proxy_main(rest, prog="python -m ipyrpyc proxy")
    if command == "lab":
        from .demo import lab

        return lab(rest)
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
