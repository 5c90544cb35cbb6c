"""Values copied between the kernel and the server without pickle.

``rpyc.classic.obtain`` unpickles what the server sends, which lets the server run
code in the kernel; by default ``%%rpyc --push/--pull`` copy plain data (None,
bool, numbers, str, bytes, lists, tuples, sets, dicts of those) and numpy arrays
(numeric dtypes) as a tree of brine values instead.  Trusted connections may fall
back to pickle for everything else.
"""

from __future__ import annotations

from typing import Any, Tuple

Tree = Tuple[Any, ...]

_SCALARS = (bool, int, float, complex, str, bytes)


def export(obj: Any, depth: int = 0) -> Tree:
    """Local value -> brine tree; TypeError for what is not plain data."""
    t = type(obj)
    if depth > 100:
        raise ValueError("nested more than 100 levels deep")
    if obj is None or t in _SCALARS:
        return ("value", obj)
    if t in (list, tuple, set, frozenset):
        return (t.__name__, tuple(export(x, depth + 1) for x in obj))
    if t is dict:
        return ("dict", tuple((export(k, depth + 1), export(v, depth + 1)) for k, v in obj.items()))
    if f"{t.__module__}.{t.__qualname__}" == "numpy.ndarray" and obj.dtype.kind not in "OV":
        return ("ndarray", obj.dtype.str, tuple(obj.shape), obj.tobytes())
    raise TypeError(f"{t.__module__}.{t.__qualname__} is not plain data")


def rebuild(tree: Tree) -> Any:
    """Brine tree -> local value; only the kinds :func:`export` makes."""
    kind = tree[0]
    if kind == "value":
        return tree[1]
    if kind in ("list", "tuple", "set", "frozenset"):
        items = [rebuild(x) for x in tree[1]]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
    if kind == "dict":
        return {rebuild(k): rebuild(v) for k, v in tree[1]}
    if kind == "ndarray":
        import numpy

        dtype = numpy.dtype(tree[1])
        if dtype.kind in "OV":
            raise TypeError("object arrays are not plain data")
        return numpy.frombuffer(tree[3], dtype=dtype).reshape(tree[2]).copy()
    raise TypeError(f"unknown kind {kind!r}")
