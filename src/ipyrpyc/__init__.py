"""ipyrpyc: remote Python objects as first-class citizens of Jupyter.

In IPython: ``%load_ext ipyrpyc``, then ``%rpyc_connect [HOST[:PORT]]``.
In a script: ``conn = ipyrpyc.connect("HOST[:PORT]")``.
"""

from __future__ import annotations

from typing import Any, Dict

from .errors import (
    BusyError,
    ConnectError,
    ConnectionLostError,
    IpyrpycError,
    RemoteTimeoutError,
    SessionError,
    StaleNetrefError,
    TransferError,
)

__version__ = "0.1.0"
__all__ = [
    "BusyError", "ConnectError", "ConnectionLostError", "IpyrpycError", "RemoteTimeoutError", "SessionError",
    "StaleNetrefError", "TransferError", "connect", "get", "load_ipython_extension", "pull", "push", "put",
    "unload_ipython_extension",
]
_LAZY = {"connect": ("api", "connect"), "pull": ("transfer", "pull"), "push": ("transfer", "push"),
         "get": ("transfer", "get_file"), "put": ("transfer", "put_file")}

_loaded: Dict[int, Any] = {}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # imported on first use: ``python -m ipyrpyc server`` stays light
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
