"""Server side: what display, completion and inspection need from a remote object.

Every function returns only brine values (nested tuples of str, bytes, int, float,
bool and None), so that each use costs the client exactly one round trip.
Runs on every Python rpyc supports (3.8 and newer), with the standard library only.
"""

import base64
import inspect
import io
import sys
import types

RICH = (
    ("text/html", "_repr_html_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("image/svg+xml", "_repr_svg_"),
    ("text/markdown", "_repr_markdown_"),
    ("text/latex", "_repr_latex_"),
)
_DESCRIPTORS = (property, types.GetSetDescriptorType, types.MemberDescriptorType)


def type_name(obj):
    """``module.QualName`` of the type of ``obj``."""
    t = type(obj)
    module = getattr(t, "__module__", None) or "builtins"
    return "%s.%s" % (module, getattr(t, "__qualname__", t.__name__))


def failure(exc):
    """``Type: message`` on one line, at most 200 characters of message."""
    text = str(exc).replace("\n", " ")
    return "%s: %s" % (type(exc).__name__, text[:200])


def cut(text, limit):
    """``(text[:limit], true length)``; ``(None, 0)`` for what is not text."""
    if not isinstance(text, (str, bytes)):
        return None, 0
    return text[:limit], len(text)


def real_method(obj, name):
    """Like IPython's ``get_real_method``: nothing for objects that answer every attribute."""
    try:
        if getattr(obj, "_ipython_canary_method_should_not_exist_", None) is not None:
            return None
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) and not isinstance(method, type) else None


def _rich_item(mime, data, data_limit):
    if isinstance(data, tuple) and data:
        data = data[0]  # (data, metadata)
    if data is None:
        return None
    if mime.startswith("image/") and mime != "image/svg+xml" and isinstance(data, str):
        data = base64.b64decode(data)
    data, size = cut(data, data_limit + 1)
    return (mime, data if size <= data_limit else None, size, None)


def display(obj, text_limit, data_limit, rich):
    """``(remote type, ((mime, data or None, true size, error or None), ...))``."""
    out = []
    try:
        text, size = cut(repr(obj), text_limit)
        out.append(("text/plain", text, size, None))
    except Exception as exc:
        out.append(("text/plain", None, 0, failure(exc)))
    if rich:
        for mime, name in RICH:
            method = real_method(obj, name)
            if method is None:
                continue
            try:
                item = _rich_item(mime, method(), data_limit)
            except Exception as exc:
                item = (mime, None, 0, failure(exc))
            if item is not None:
                out.append(item)
        if type_name(obj) == "matplotlib.figure.Figure":
            try:
                buf = io.BytesIO()
                obj.savefig(buf, format="png", bbox_inches="tight")
                out.append(_rich_item("image/png", buf.getvalue(), data_limit))
            except Exception as exc:
                out.append(("image/png", None, 0, failure(exc)))
    return type_name(obj), tuple(out)


def resolve_static(obj, chain):
    """``(obj.<chain>, True)`` without running properties or ``__getattr__``; ``(None, False)``."""
    for name in chain:
        try:
            value = inspect.getattr_static(obj, name)
        except AttributeError:
            return None, False
        if isinstance(value, _DESCRIPTORS):
            return None, False
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        obj = value
    return obj, True


def complete(obj, chain, limit):
    """``(remote type, attribute names, string keys)`` of ``obj.<chain>``, without side effects."""
    obj, ok = resolve_static(obj, chain)
    if not ok:
        return None, (), ()
    try:
        names = tuple(str(n) for n in dir(obj))[:limit]
    except Exception:
        names = ()
    keys = ()
    try:
        if type(obj) is dict:
            keys = tuple(k for k in list(obj)[:limit] if isinstance(k, str))
        elif isinstance(obj, getattr(sys.modules.get("pandas"), "DataFrame", ())):
            keys = tuple(c for c in list(obj.columns)[:limit] if isinstance(c, str))
    except Exception:
        keys = ()
    return type_name(obj), names, keys


def describe(obj, detail, text_limit):
    """What ``obj?`` (detail 0) and ``obj??`` (detail 1) show, as ``((field, text), ...)``."""
    fields = [("type", type_name(obj))]
    try:
        fields.append(("repr", cut(repr(obj), text_limit)[0]))
    except Exception as exc:
        fields.append(("repr", "<repr raised %s>" % failure(exc)))
    if not inspect.ismodule(obj) and not inspect.isclass(obj) and not callable(obj):
        try:
            fields.append(("length", str(len(obj))))
        except Exception:
            pass
    if callable(obj):
        try:
            fields.append(("signature", str(inspect.signature(obj))))
        except Exception:
            pass
    try:
        fields.append(("file", inspect.getsourcefile(obj) or inspect.getfile(obj)))
    except Exception:
        pass
    try:
        doc = inspect.getdoc(obj)
        if doc:
            fields.append(("docstring", cut(doc, text_limit)[0]))
    except Exception:
        pass
    if detail:
        try:
            fields.append(("source", cut(inspect.getsource(obj), text_limit * 10)[0]))
        except Exception:
            pass
    return tuple(fields)


def lookup(obj, chain, text_limit):
    """``obj.<chain>?`` in one round trip: ``(found, the object, its description with source)``.

    Attributes are read as IPython's ``_ofind`` reads them: ``getattr`` on the way, and
    the last one as the class has it when that is a property (which is not run).
    """
    for i, name in enumerate(chain):
        if i == len(chain) - 1 and not isinstance(obj, type):
            try:
                static = inspect.getattr_static(type(obj), name)
            except AttributeError:
                static = None
            if isinstance(static, property):
                obj = static
                break
        try:
            obj = getattr(obj, name)
        except Exception:
            return False, None, ()
    return True, obj, describe(obj, 1, text_limit)


_SCALARS = (int, float, complex, bool, type(None))
_SIZED = (str, bytes, bytearray)
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _size(n):
    """``1.5 MB``: a byte count for people."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return ("%d %s" % (n, unit)) if unit == "bytes" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def _short(text, limit):
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "\u2026"


def summary(obj, text_limit):
    """A short description of ``obj`` from facts that cost next to nothing to find: no repr of
    anything but small numbers and the start of a string, no code of the object's own class."""
    t = type(obj)
    name = type_name(obj)
    try:
        if t in _SCALARS:
            return _short(repr(obj), text_limit)
        if t in _SIZED:
            head = "len {:,}, {}: ".format(len(obj), _size(sys.getsizeof(obj)))
            return _short(head + repr(obj[:text_limit]), text_limit)
        if t in _CONTAINERS:
            return "len {:,}".format(len(obj))
        if t is types.ModuleType:
            return _short(str(getattr(obj, "__name__", "")), text_limit)
        if t in (types.FunctionType, types.BuiltinFunctionType, types.MethodType) or issubclass(t, type):
            return _short(str(getattr(obj, "__qualname__", "") or ""), text_limit)
        if name == "numpy.ndarray":
            return _short("shape %s, %s, %s" % (obj.shape, obj.dtype, _size(obj.nbytes)), text_limit)
        if name in ("pandas.DataFrame", "pandas.core.frame.DataFrame"):
            size = int(obj.memory_usage(index=True, deep=False).sum())
            return _short("shape %s, %s" % (obj.shape, _size(size)), text_limit)
        if name in ("pandas.Series", "pandas.core.series.Series"):
            size = int(obj.memory_usage(index=True, deep=False))
            return _short("len {:,}, {}, {}".format(len(obj), obj.dtype, _size(size)), text_limit)
    except Exception as exc:
        return _short("<%s>" % failure(exc), text_limit)
    return ""


def who(namespace, pattern, limit, text_limit):
    """``%whos`` of a namespace: ``(names, matching, ((name, type, summary), ...))``.

    ``names``: visible names (not starting with ``_``, unless ``pattern`` does);
    ``matching``: those matching the glob ``pattern`` (all for None); the rows are the
    first ``limit`` matching names in order, every text cut at ``text_limit``.
    """
    import fnmatch

    hidden = not (pattern or "").startswith("_")
    names = sorted(k for k in list(namespace) if isinstance(k, str) and not (hidden and k.startswith("_")))
    matching = names if pattern is None else [k for k in names if fnmatch.fnmatchcase(k, pattern)]
    rows = []
    for key in matching[:limit]:
        try:
            obj = namespace[key]
        except Exception as exc:
            rows.append((_short(key, text_limit), "?", _short("<%s>" % failure(exc), text_limit)))
            continue
        rows.append((_short(key, text_limit), _short(type_name(obj), text_limit), summary(obj, text_limit)))
    return len(names), len(matching), tuple(rows)
