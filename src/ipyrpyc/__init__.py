"""ipyrpyc: remote Python objects as first-class citizens of Jupyter.

Load with ``%load_ext ipyrpyc``, then ``%rpyc_connect [HOST[:PORT]]``.
"""

from __future__ import annotations

import atexit
from typing import Any

__version__ = "0.1.0"

_MAGICS_CLASS = "RpycMagics"


def load_ipython_extension(ip: Any) -> None:
    """Register the magics; loading twice is harmless."""
    from .magics import RpycMagics

    if _MAGICS_CLASS in ip.magics_manager.registry:
        return
    magics = RpycMagics(shell=ip, config=ip.config)
    ip.register_magics(magics)
    ip.configurables.append(magics)
    atexit.register(magics.registry.close_all)


def unload_ipython_extension(ip: Any) -> None:
    """Close our connections, remove the names they injected and every magic we added."""
    magics = ip.magics_manager.registry.pop(_MAGICS_CLASS, None)
    if magics is None:
        return
    magics.registry.close_all()
    atexit.unregister(magics.registry.close_all)
    for kind, table in magics.magics.items():
        for name in table:
            ip.magics_manager.magics[kind].pop(name, None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)
