"""Request counting in tests: the product's :class:`ipyrpyc.wire.RequestCounter`, here and in kernels."""

from __future__ import annotations

from ipyrpyc.wire import RequestCounter

__all__ = ["KERNEL_IMPORT", "RequestCounter"]

# Code for a kernel cell that binds RequestCounter (any kernel of this environment: plain ones too).
KERNEL_IMPORT = "from ipyrpyc.wire import RequestCounter\n"
