"""Code that runs on the server, sent once per connection.

The server needs nothing of ours installed: :data:`BOOTSTRAP` is evaluated with the
classic ``conn.eval`` in the connection's own namespace and returns, in one round
trip, the server's facts and netrefs to the helper functions.  Every helper returns
only brine values (nested tuples of str, bytes, int, float, bool, None), so each use
costs exactly one round trip.  Keep it compatible with every Python rpyc supports.
"""

SOURCE = r'''
def __ipyrpyc_build__():
    import inspect, io, linecache, os, socket, sys, types

    def type_name(obj):
        t = type(obj)
        module = getattr(t, "__module__", None) or "builtins"
        return "%s.%s" % (module, getattr(t, "__qualname__", t.__name__))

    def failure(exc):
        text = str(exc).replace("\n", " ")
        return "%s: %s" % (type(exc).__name__, text[:200])

    def cut(text, limit):
        if not isinstance(text, (str, bytes)):
            return None, 0
        return text[:limit], len(text)

    def real_method(obj, name):
        # like IPython's get_real_method: ignore objects that answer every attribute
        try:
            if getattr(obj, "_ipython_canary_method_should_not_exist_", None) is not None:
                return None
            method = getattr(obj, name, None)
        except Exception:
            return None
        return method if callable(method) and not isinstance(method, type) else None

    RICH = (
        ("text/html", "_repr_html_"),
        ("image/png", "_repr_png_"),
        ("image/jpeg", "_repr_jpeg_"),
        ("image/svg+xml", "_repr_svg_"),
        ("text/markdown", "_repr_markdown_"),
        ("text/latex", "_repr_latex_"),
    )

    def display(obj, text_limit, data_limit, rich):
        """(remote type, ((mime, data or None, true size, error), ...))"""
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
                    data = method()
                except Exception as exc:
                    out.append((mime, None, 0, failure(exc)))
                    continue
                if isinstance(data, tuple) and data:
                    data = data[0]
                if data is None:
                    continue
                if mime.startswith("image/") and mime != "image/svg+xml" and isinstance(data, str):
                    import base64
                    data = base64.b64decode(data)
                data, size = cut(data, data_limit + 1)
                out.append((mime, data if size <= data_limit else None, size, None))
            if type_name(obj) == "matplotlib.figure.Figure":
                try:
                    buf = io.BytesIO()
                    obj.savefig(buf, format="png", bbox_inches="tight")
                    data, size = cut(buf.getvalue(), data_limit + 1)
                    out.append(("image/png", data if size <= data_limit else None, size, None))
                except Exception as exc:
                    out.append(("image/png", None, 0, failure(exc)))
        return type_name(obj), tuple(out)

    def resolve(obj, chain):
        """Follow attribute names without running properties or __getattr__."""
        for name in chain:
            try:
                value = inspect.getattr_static(obj, name)
            except AttributeError:
                return None, False
            if isinstance(value, (property, types.GetSetDescriptorType, types.MemberDescriptorType)):
                return None, False
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            obj = value
        return obj, True

    def complete(obj, chain, limit):
        """(remote type, attribute names, string keys) of obj.<chain>, without side effects."""
        obj, ok = resolve(obj, chain)
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
            elif type_name(obj) == "pandas.core.frame.DataFrame":
                keys = tuple(str(c) for c in list(obj.columns)[:limit])
        except Exception:
            keys = ()
        return type_name(obj), names, keys

    def describe(obj, detail, text_limit):
        """What obj? (detail 0) and obj?? (detail 1) show, as ((field, text), ...)."""
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

    def execute(source, filename, namespace):
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), namespace)

    info = (sys.version.split()[0], os.getpid(), socket.gethostname())
    return info, display, complete, describe, execute
'''

BOOTSTRAP = (
    "(exec(compile(%r, '<ipyrpyc-helper>', 'exec'), globals()), __ipyrpyc_build__())[1]" % SOURCE
)
