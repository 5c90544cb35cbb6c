"""Values copied without pickle, the same code on both sides.

``rpyc.classic.obtain`` unpickles what the server sends, which lets the server run
code in the kernel.  Here a value becomes a tree of brine values instead: plain data
(None, bool, numbers, str, bytes, bytearray, memoryview, lists, tuples, sets, dicts of
those), numpy arrays and scalars of numeric dtypes, and pandas DataFrames, Series and
Indexes (numeric columns as raw buffers, index and dtypes kept, string and object
columns as plain data).  :class:`Exporter` refuses everything else with ``TypeError``;
a pickled node is made only when asked for, and rebuilt only when allowed.

Large raw buffers can travel outside the tree: ``Exporter(out_of_band=True)`` puts
an ``int`` (the buffer's index in ``exporter.buffers``) where the bytes would be, and
the receiver fills the objects :func:`allocate` made for them (the final numpy arrays
themselves, so that nothing is copied twice) before :func:`rebuild`.
Runs on every Python rpyc supports (3.8 and newer), with the standard library only
(numpy and pandas when the data is theirs).
"""

import itertools
import pickle
import sys

_SCALARS = (bool, int, float, complex, str)
_SEQUENCES = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
_KIND_OF = {t: kind for kind, t in _SEQUENCES.items()}
MAX_DEPTH = 100
INLINE_LIMIT = 1 << 16  # buffers below this size travel in the tree ...
INLINE_BUDGET = 1 << 20  # ... as long as the tree's inline bytes stay below this
_MISSING_NONE, _MISSING_NAN, _MISSING_NA = 1, 2, 3  # marks of missing values in a string column


def full_type_name(t):
    return "%s.%s" % (getattr(t, "__module__", "?"), getattr(t, "__qualname__", t.__name__))


def _plain_dtype(dtype):
    if dtype.kind in "OV":
        raise TypeError("numpy arrays of dtype %s are not plain data" % dtype)
    return dtype


def _numpy(load=False):
    """numpy if it is loaded (``load``: imported if need be; None when it is not installed)."""
    np = sys.modules.get("numpy")
    if np is None and load:
        try:
            import numpy as np
        except ImportError:
            return None
    return np


def _pandas(load=False):
    pd = sys.modules.get("pandas")
    if pd is None and load:
        try:
            import pandas as pd
        except ImportError:
            return None
    return pd


def byte_view(obj):
    """A flat uint8 memoryview of the memory of a contiguous numpy array or bytes-like object,
    in memory order (writable where the object is)."""
    np = _numpy()
    if np is not None and isinstance(obj, np.ndarray):
        if not obj.flags.c_contiguous:
            obj = obj.T  # F-contiguous: its transpose is C-contiguous, same memory
        return memoryview(obj.reshape(-1).view(np.uint8))
    view = memoryview(obj)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class Exporter(object):
    """Turns values into brine trees, collecting large buffers in :attr:`buffers`."""

    def __init__(self, out_of_band=False, allow_pickle=False):
        self.out_of_band = out_of_band
        self.allow_pickle = allow_pickle
        self.buffers = []  # flat uint8 memoryviews, referenced from the tree by index
        self.inline_left = INLINE_BUDGET

    @property
    def sizes(self):
        return tuple(b.nbytes for b in self.buffers)

    def value(self, obj):
        """The tree of one value; with ``allow_pickle``, a pickled node for what is not plain
        data (``TypeError`` names the type otherwise)."""
        mark = len(self.buffers)
        try:
            return self.tree(obj)
        except TypeError:
            del self.buffers[mark:]
            if not self.allow_pickle:
                raise
            try:
                data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise TypeError("%s cannot be pickled: %s" % (full_type_name(type(obj)), exc)) from None
            return ("pickle", self.data(memoryview(data)))

    def data(self, view):
        """``bytes`` in the tree, or the index of an out-of-band buffer."""
        n = view.nbytes
        if not self.out_of_band or (n < INLINE_LIMIT and n <= self.inline_left):
            self.inline_left -= n
            return view.tobytes()
        self.buffers.append(view)
        return len(self.buffers) - 1

    def tree(self, obj, depth=0):
        """A value -> brine tree; ``TypeError`` for what is not plain data."""
        t = type(obj)
        if depth > MAX_DEPTH:
            raise ValueError("nested more than %d levels deep" % MAX_DEPTH)
        if obj is None or t in _SCALARS:
            return ("value", obj)
        if t is bytes:
            if len(obj) < INLINE_LIMIT:
                return ("value", obj)
            return ("bytes", self.data(memoryview(obj)))
        if t is bytearray:
            return ("bytearray", self.data(memoryview(obj)))
        if t is memoryview:
            flat = byte_view(obj) if obj.c_contiguous else memoryview(obj.tobytes())
            return ("memoryview", obj.format, tuple(obj.shape), self.data(flat))
        if t in _KIND_OF:
            return (_KIND_OF[t], tuple(self.tree(x, depth + 1) for x in obj))
        if t is dict:
            return ("dict", tuple((self.tree(k, depth + 1), self.tree(v, depth + 1)) for k, v in obj.items()))
        name = full_type_name(t)
        if name == "numpy.ndarray":
            return self.ndarray(obj)
        np = _numpy()
        if np is not None and isinstance(obj, np.generic) and not isinstance(obj, (np.object_, np.void)):
            dtype = _plain_dtype(obj.dtype)
            return ("npscalar", dtype.str, np.asarray(obj).tobytes())
        if name.startswith("pandas."):
            return self.pandas(obj, name, depth)
        raise TypeError("%s is not plain data" % name)

    def ndarray(self, a):
        np = _numpy()
        dtype = _plain_dtype(a.dtype)
        if a.flags.c_contiguous:
            order = "C"
        elif a.flags.f_contiguous:
            order = "F"
        else:
            a, order = np.ascontiguousarray(a), "C"  # the one copy a strided view needs
        return ("ndarray", dtype.str, tuple(a.shape), order, self.data(byte_view(a)))

    # -- pandas ------------------------------------------------------------------------------
    def pandas(self, obj, name, depth):
        pd = _pandas()
        if isinstance(obj, pd.DataFrame):
            columns = tuple(self.values(obj.iloc[:, j], depth) for j in range(obj.shape[1]))
            return ("dataframe", self.index(obj.columns, depth), self.index(obj.index, depth), columns)
        if isinstance(obj, pd.Series):
            return ("series", self.values(obj, depth), self.index(obj.index, depth), self.tree(obj.name, depth + 1))
        if isinstance(obj, pd.Index):
            return self.index(obj, depth)
        raise TypeError("%s is not plain data" % name)

    def index(self, index, depth):
        pd = _pandas()
        name = self.tree(index.name, depth + 1) if not isinstance(index, pd.MultiIndex) else None
        if type(index) is pd.RangeIndex:
            return ("rangeindex", index.start, index.stop, index.step, name)
        if isinstance(index, pd.MultiIndex):
            return ("multiindex", tuple(self.index(level, depth) for level in index.levels),
                    tuple(self.ndarray(_numpy().asarray(codes)) for codes in index.codes),
                    self.tree(list(index.names), depth + 1))
        freq = getattr(index, "freqstr", None) if isinstance(index, (pd.DatetimeIndex, pd.TimedeltaIndex)) else None
        return ("index", self.values(index, depth), name, freq)

    def values(self, values, depth):
        """The values of a Series or an Index, by dtype."""
        np, pd = _numpy(), _pandas()
        dtype = values.dtype
        what = "%s of dtype %s" % (type(values).__name__, dtype)
        if isinstance(dtype, np.dtype):
            if dtype.kind != "O":
                return self.ndarray(values.to_numpy(copy=False))
            return self.objects(values.to_numpy(copy=False), None, what, depth)
        array = values.array
        if isinstance(dtype, pd.CategoricalDtype):
            return ("category", self.ndarray(np.asarray(array.codes)), self.index(dtype.categories, depth),
                    bool(dtype.ordered))
        if isinstance(dtype, pd.DatetimeTZDtype):
            return ("datetimetz", str(dtype), self.ndarray(np.asarray(array.asi8)))
        if isinstance(dtype, pd.StringDtype):
            return self.objects(array.to_numpy(dtype=object), str(dtype), what, depth)
        masked = tuple(getattr(pd.arrays, n) for n in ("IntegerArray", "FloatingArray", "BooleanArray")
                       if hasattr(pd.arrays, n))
        if isinstance(array, masked):
            mask = np.asarray(array.isna())
            data = array.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
            return ("masked", str(dtype), self.ndarray(data), self.ndarray(mask))
        raise TypeError("pandas %s is not plain data" % what)

    def objects(self, array, dtype_name, what, depth):
        """An object array: strings (and missing values) as one text and lengths, else plain data."""
        np, pd = _numpy(), _pandas()
        array = np.asarray(array, dtype=object).reshape(-1)
        missing = np.asarray(pd.isna(array), dtype=bool).reshape(-1) if array.size else np.zeros(0, bool)
        marks = None
        if missing.any():
            marks = np.zeros(len(array), np.uint8)
            for i in np.flatnonzero(missing).tolist():
                marks[i] = _missing_mark(array[i]) or 0
            if not marks[missing].all():  # a missing value of another kind (NaT …)
                marks = None
            else:
                array = array.copy()
                array[missing] = ""
        items = array.tolist()
        if (marks is None and missing.any()) or not all(type(x) is str for x in items):
            try:  # not a string column: element by element
                return ("objects", dtype_name, tuple(self.tree(x, depth + 1) for x in array.tolist()))
            except TypeError as e:
                raise TypeError("pandas %s holds %s" % (what, e)) from None
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        text = "".join(items).encode("utf-8", "surrogatepass")
        return ("strings", dtype_name, self.data(memoryview(text)), self.ndarray(lengths),
                None if marks is None else self.ndarray(marks))


def _missing_mark(x):
    """How a missing value in a string column is written (None: not a missing value)."""
    if x is None:
        return _MISSING_NONE
    if type(x) is float and x != x:
        return _MISSING_NAN
    pd = _pandas()
    if pd is not None and x is getattr(pd, "NA", None):
        return _MISSING_NA
    return None


def export(obj):
    """A value -> brine tree with every buffer inline; ``TypeError`` for what is not plain data."""
    return Exporter().value(obj)


# -- the receiving side ----------------------------------------------------------------------------
def _walk_buffers(tree, found, depth=0):
    """(index, ndarray node or None) of every out-of-band buffer the tree refers to."""
    if depth > 2 * MAX_DEPTH + 10 or type(tree) is not tuple or not tree:
        return
    kind = tree[0]
    if type(kind) is not str:  # a tuple of nodes
        for item in tree:
            _walk_buffers(item, found, depth + 1)
        return
    if kind == "ndarray":
        if type(tree[4]) is int:
            found.append((tree[4], tree))
        return
    if kind in ("bytes", "bytearray", "pickle") and type(tree[1]) is int:
        found.append((tree[1], None))
        return
    if kind == "memoryview" and type(tree[3]) is int:
        found.append((tree[3], None))
        return
    if kind == "strings" and type(tree[2]) is int:
        found.append((tree[2], None))
    for item in tree[1:]:
        if type(item) is tuple:
            _walk_buffers(item, found, depth + 1)


def _ndarray_dtype(node):
    np = _numpy(load=True)
    if np is None:
        raise TypeError("numpy is not installed here: cannot rebuild a numpy array")
    return _plain_dtype(np.dtype(node[1]))


def allocate(tree, sizes):
    """The objects that will receive the out-of-band buffers of ``tree``: the final numpy
    arrays for array data, bytearrays for the rest.  ``sizes`` as the sender states them;
    a tree that disagrees with them raises ``TypeError``."""
    found = []
    _walk_buffers(tree, found)
    out = [None] * len(sizes)
    for index, node in found:
        if not 0 <= index < len(sizes) or out[index] is not None:
            raise TypeError("malformed tree: buffer %r" % (index,))
        if node is None:
            out[index] = bytearray(sizes[index])
            continue
        np = _numpy(load=True)
        shape = tuple(int(n) for n in node[2])
        a = np.empty(shape, _ndarray_dtype(node), order="F" if node[3] == "F" else "C")
        if a.nbytes != sizes[index]:
            raise TypeError("malformed tree: array of %d bytes sent as %d" % (a.nbytes, sizes[index]))
        out[index] = a
    if any(x is None for x in out):
        raise TypeError("malformed tree: a buffer belongs to nothing")
    return out


class Rebuilder(object):
    """Brine tree (+ received buffers) -> value; only the kinds :class:`Exporter` makes, pickled
    nodes only with ``allow_pickle``."""

    def __init__(self, buffers=(), allow_pickle=False):
        self.buffers = buffers
        self.allow_pickle = allow_pickle

    def raw(self, data):
        if type(data) is int:
            return self.buffers[data]
        if type(data) is not bytes:
            raise TypeError("malformed tree: %s where bytes belong" % type(data).__name__)
        return data

    def value(self, tree, depth=0):
        if depth > 2 * MAX_DEPTH + 10:
            raise ValueError("nested too deep")
        kind = tree[0]
        if kind == "value":
            return tree[1]
        if kind in _SEQUENCES:
            return _SEQUENCES[kind](self.value(x, depth + 1) for x in tree[1])
        if kind == "dict":
            return dict((self.value(k, depth + 1), self.value(v, depth + 1)) for k, v in tree[1])
        if kind == "bytes":
            return bytes(self.raw(tree[1]))
        if kind == "bytearray":
            data = self.raw(tree[1])
            return data if type(data) is bytearray else bytearray(data)
        if kind == "memoryview":
            data = self.raw(tree[3])
            view = memoryview(data if type(data) is bytearray else bytearray(data))
            try:
                return view.cast(tree[1], tree[2]) if tree[2] else view.cast(tree[1])
            except (TypeError, ValueError):
                return view  # a format this side's memoryview cannot take: the bytes
        if kind == "ndarray":
            return self.ndarray(tree)
        if kind == "npscalar":
            np = _numpy(load=True)
            dtype = _ndarray_dtype(tree)
            return np.frombuffer(tree[2], dtype=dtype, count=1)[0]
        if kind == "pickle":
            if not self.allow_pickle:
                raise TypeError("the sender sent pickled data, which is only unpickled on a --trust connection")
            return pickle.loads(self.raw(tree[1]))
        if kind in ("dataframe", "series", "rangeindex", "multiindex", "index"):
            return self.pandas(tree, depth)
        raise TypeError("unknown kind %r" % (kind,))

    def ndarray(self, tree):
        np = _numpy(load=True)
        dtype = _ndarray_dtype(tree)
        shape = tuple(int(n) for n in tree[2])
        order = "F" if tree[3] == "F" else "C"
        data = self.raw(tree[4])
        if isinstance(data, np.ndarray):  # allocated by allocate(): already the array
            if data.shape != shape or data.dtype != dtype:
                raise TypeError("malformed tree: array buffer of another shape")
            return data
        count = 1
        for n in shape:
            count *= n
        flat = np.frombuffer(data, dtype=dtype, count=count) if count else np.empty(0, dtype)
        return flat.reshape(shape[::-1]).T.copy(order="F") if order == "F" else flat.reshape(shape).copy()

    # -- pandas ------------------------------------------------------------------------------
    def pandas(self, tree, depth):
        pd = _pandas(load=True)
        if pd is None:
            raise TypeError("pandas is not installed here: cannot rebuild a pandas %s" % tree[0])
        kind = tree[0]
        if kind == "dataframe":
            columns = self.index(tree[1], depth)
            index = self.index(tree[2], depth)
            data = dict((j, _series(pd, self.values(v, depth), index)) for j, v in enumerate(tree[3]))
            frame = pd.DataFrame(data, copy=False) if data else pd.DataFrame(index=index)
            frame.columns = columns
            return frame
        if kind == "series":
            series = _series(pd, self.values(tree[1], depth), self.index(tree[2], depth))
            series.name = self.value(tree[3], depth + 1)
            return series
        return self.index(tree, depth)

    def index(self, tree, depth):
        pd = _pandas()
        kind = tree[0]
        if kind == "rangeindex":
            return pd.RangeIndex(int(tree[1]), int(tree[2]), int(tree[3]), name=self.value(tree[4], depth + 1))
        if kind == "multiindex":
            return pd.MultiIndex(levels=[self.index(level, depth) for level in tree[1]],
                                 codes=[self.ndarray(codes) for codes in tree[2]],
                                 names=self.value(tree[3], depth + 1))
        if kind != "index":
            raise TypeError("malformed tree: %r is not an index" % (kind,))
        values = self.values(tree[1], depth)
        name = self.value(tree[2], depth + 1)
        np = _numpy(load=True)
        if isinstance(values, np.ndarray) and values.dtype.kind == "O":
            return pd.Index(values, name=name, dtype=object)
        index = pd.Index(values, name=name, copy=False)
        if tree[3] is not None:
            index = type(index)(index, freq=str(tree[3]))
        return index

    def values(self, tree, depth):
        np, pd = _numpy(load=True), _pandas(load=True)
        kind = tree[0]
        if kind == "ndarray":
            return self.ndarray(tree)
        if kind == "category":
            codes = self.ndarray(tree[1])
            return pd.Categorical.from_codes(codes, categories=self.index(tree[2], depth), ordered=bool(tree[3]))
        if kind == "datetimetz":
            dtype = _pandas_dtype(tree[1], pd.DatetimeTZDtype)
            naive = self.ndarray(tree[2]).view("M8[%s]" % dtype.unit)
            return pd.DatetimeIndex(naive).tz_localize("UTC").tz_convert(dtype.tz).array
        if kind == "masked":
            dtype = _pandas_dtype(tree[1], pd.api.extensions.ExtensionDtype)
            data, mask = self.ndarray(tree[2]), self.ndarray(tree[3]).astype(bool, copy=False)
            cls = {"b": pd.arrays.BooleanArray, "f": pd.arrays.FloatingArray}.get(data.dtype.kind,
                                                                                pd.arrays.IntegerArray)
            array = cls(data, mask)
            if array.dtype != dtype:
                raise TypeError("malformed tree: masked array of dtype %s" % dtype)
            return array
        if kind in ("strings", "objects"):
            if kind == "objects":
                out = _object_array([self.value(x, depth + 1) for x in tree[2]])
            else:
                items = self.strings(tree)
                out = np.empty(len(items), dtype=object)
                out[:] = items
            if tree[1] is None:
                return out
            dtype = _pandas_dtype(tree[1], pd.StringDtype)
            return pd.array(out, dtype=dtype)
        raise TypeError("malformed tree: %r are not values" % (kind,))

    def strings(self, tree):
        text = bytes(self.raw(tree[2])).decode("utf-8", "surrogatepass")
        ends = list(itertools.accumulate(self.ndarray(tree[3]).tolist()))
        items = [text[a:b] for a, b in zip([0] + ends, ends)]
        if tree[4] is not None:
            marks = self.ndarray(tree[4])
            if len(marks) != len(items):
                raise TypeError("malformed tree: string column of two lengths")
            missing = {_MISSING_NONE: None, _MISSING_NAN: float("nan"), _MISSING_NA: getattr(_pandas(), "NA", None)}
            for i in _numpy(load=True).flatnonzero(marks).tolist():
                items[i] = missing.get(int(marks[i]))
        return items


def _series(pd, values, index):
    """A Series of exactly these values (an object array stays object: pandas 3 would make strings str)."""
    np = _numpy(load=True)
    dtype = object if isinstance(values, np.ndarray) and values.dtype.kind == "O" else None
    return pd.Series(values, index=index, dtype=dtype, copy=False)


def _object_array(items):
    """A list that numpy stores element by element (no broadcasting of nested sequences)."""
    np = _numpy(load=True)
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def _pandas_dtype(name, expected):
    pd = _pandas()
    dtype = pd.api.types.pandas_dtype(str(name))
    if not isinstance(dtype, expected):
        raise TypeError("malformed tree: dtype %s" % (name,))
    return dtype


def rebuild(tree, buffers=(), allow_pickle=False):
    """Brine tree -> value; only the kinds :class:`Exporter` makes."""
    return Rebuilder(buffers, allow_pickle).value(tree)
