"""ipyrpyc: remote Python objects as first-class citizens of Jupyter.

Load with ``%load_ext ipyrpyc``, then ``%rpyc_connect [HOST[:PORT]]``.
"""

from __future__ import annotations

from typing import Any, Dict

__version__ = "0.1.0"

_loaded: Dict[int, Any] = {}


def load_ipython_extension(ip: Any) -> None:
    """Register the magics and hooks; loading twice is harmless."""
    from .extension import Extension

    if id(ip) in _loaded:
        return
    ext = _loaded[id(ip)] = Extension(ip)
    ext.install()


def unload_ipython_extension(ip: Any) -> None:
    """Close our connections and take back every name, magic and hook we installed."""
    ext = _loaded.pop(id(ip), None)
    if ext is not None:
        ext.uninstall()
