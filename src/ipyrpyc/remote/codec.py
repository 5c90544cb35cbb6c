"""Values copied without pickle, the same code on both sides.

``rpyc.classic.obtain`` unpickles what the server sends, which lets the server run
code in the kernel.  Here a value becomes a tree of brine values instead: plain data
(None, bool, numbers, str, bytes, lists, tuples, sets, dicts of those) and numpy
arrays of numeric dtypes.  :func:`export` refuses everything else with ``TypeError``.
Runs on every Python rpyc supports (3.8 and newer), with the standard library only.
"""

_SCALARS = (bool, int, float, complex, str, bytes)
_SEQUENCES = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
_KIND_OF = {t: kind for kind, t in _SEQUENCES.items()}
MAX_DEPTH = 100


def full_type_name(t):
    return "%s.%s" % (getattr(t, "__module__", "?"), getattr(t, "__qualname__", t.__name__))


def _plain_dtype(dtype):
    if dtype.kind in "OV":
        raise TypeError("numpy arrays of dtype %s are not plain data" % dtype)
    return dtype


def export(obj, depth=0):
    """A value -> brine tree; ``TypeError`` for what is not plain data."""
    t = type(obj)
    if depth > MAX_DEPTH:
        raise ValueError("nested more than %d levels deep" % MAX_DEPTH)
    if obj is None or t in _SCALARS:
        return ("value", obj)
    if t in _KIND_OF:
        return (_KIND_OF[t], tuple(export(x, depth + 1) for x in obj))
    if t is dict:
        return ("dict", tuple((export(k, depth + 1), export(v, depth + 1)) for k, v in obj.items()))
    if full_type_name(t) == "numpy.ndarray":
        return ("ndarray", _plain_dtype(obj.dtype).str, tuple(obj.shape), obj.tobytes())
    raise TypeError("%s is not plain data" % full_type_name(t))


def rebuild(tree):
    """Brine tree -> value; only the kinds :func:`export` makes."""
    kind = tree[0]
    if kind == "value":
        return tree[1]
    if kind in _SEQUENCES:
        return _SEQUENCES[kind](rebuild(x) for x in tree[1])
    if kind == "dict":
        return dict((rebuild(k), rebuild(v)) for k, v in tree[1])
    if kind == "ndarray":
        import numpy

        dtype = _plain_dtype(numpy.dtype(tree[1]))
        return numpy.frombuffer(tree[3], dtype=dtype).reshape(tree[2]).copy()
    raise TypeError("unknown kind %r" % (kind,))
