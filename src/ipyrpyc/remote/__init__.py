"""The program ipyrpyc runs on the server, and how it gets there.

The modules of this package other than this one run on the server (they are also
importable here, for tests and for the codec both sides share).  Nothing needs to
be installed on the server: :func:`bootstrap` reads their source from the package
and builds one expression that a classic server evaluates with ``conn.eval`` (one
round trip).  There
they become module objects that are never put in ``sys.modules``, and
``agent.start`` is called on the connection being served.

Rules for those modules: standard library only (numpy and pandas only where the
data is theirs), valid on Python 3.8, no imports of each other (``agent.start``
receives them all by name), no state of their own at import time.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Sequence, Tuple

# Order matters only for readability: the modules do not import each other.
MODULES: Tuple[str, ...] = ("codec", "bulk", "objects", "running", "output", "serving", "agent")
FILENAME = "<ipyrpyc-remote>"

_LOADER = '''
def load(sources, module_names, staged):
    import types
    modules = {}
    for name, source in sources:
        module = types.ModuleType("ipyrpyc.remote." + name)
        exec(compile(source, "<ipyrpyc-remote/%s.py>" % name, "exec"), module.__dict__)
        modules[name] = module
    if staged:
        return modules["agent"].prepare(modules, module_names)
    return modules["agent"].start(modules, None, module_names)
'''


@functools.lru_cache(maxsize=None)
def sources() -> Tuple[Tuple[str, str], ...]:
    """``((name, source), ...)`` of the server-side modules, read from the package."""
    package = resources.files(__name__)
    return tuple((name, package.joinpath(f"{name}.py").read_text(encoding="utf-8")) for name in MODULES)


def bootstrap(module_names: Sequence[str] = (), staged: bool = False) -> str:
    """An expression for ``conn.eval`` that builds the program from :func:`sources` and
    starts it on the connection (``agent.start``, its result is the expression's value),
    importing ``module_names`` on the way.  It defines no name on the server.

    ``staged``: the value is ``agent.prepare``'s instead (what the client needs to build the
    modules' netref classes without asking, and the function that starts the program)."""
    call = "d['load'](%r, %r, %r)" % (sources(), tuple(module_names), bool(staged))
    return "(lambda d: (exec(compile(%r, %r, 'exec'), d), %s)[1])({})" % (_LOADER, FILENAME, call)
