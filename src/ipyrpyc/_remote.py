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
            elif isinstance(obj, getattr(sys.modules.get("pandas"), "DataFrame", ())):
                keys = tuple(c for c in list(obj.columns)[:limit] if isinstance(c, str))
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

    def run_cell(source, filename, namespace):
        """Run a cell like IPython: (True, value of the last expression) or (False, None)."""
        import ast
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        tree = ast.parse(source, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), namespace)
        if last is None:
            return False, None
        return True, eval(compile(last, filename, "eval"), namespace)

    # -- values by copy, without pickle: plain data and numpy arrays only --------------------
    def export(obj, depth=0):
        t = type(obj)
        if depth > 100:
            raise ValueError("nested more than 100 levels deep")
        if obj is None or t in (bool, int, float, complex, str, bytes):
            return ("value", obj)
        if t in (list, tuple, set, frozenset):
            return (t.__name__, tuple(export(x, depth + 1) for x in obj))
        if t is dict:
            return ("dict", tuple((export(k, depth + 1), export(v, depth + 1)) for k, v in obj.items()))
        if type_name(obj) == "numpy.ndarray" and obj.dtype.kind not in "OV":
            return ("ndarray", obj.dtype.str, tuple(obj.shape), obj.tobytes())
        raise TypeError("%s is not plain data" % type_name(obj))

    def build(tree):
        kind = tree[0]
        if kind == "value":
            return tree[1]
        if kind in ("list", "tuple", "set", "frozenset"):
            items = [build(x) for x in tree[1]]
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
        if kind == "dict":
            return dict((build(k), build(v)) for k, v in tree[1])
        if kind == "ndarray":
            import numpy
            return numpy.frombuffer(tree[3], dtype=numpy.dtype(tree[1])).reshape(tree[2]).copy()
        raise TypeError("unknown kind %r" % (kind,))

    def pull(namespace, name):
        if name not in namespace:
            raise NameError("name %r is not defined on the server" % (name,))
        return export(namespace[name])

    def push(namespace, name, tree):
        namespace[name] = build(tree)

    # -- the connection being served, found without help from the client ------------------
    def serving_connection():
        frame = sys._getframe(1)
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if frame.f_code.co_name == "_dispatch_request" and hasattr(candidate, "_config"):
                return candidate
            frame = frame.f_back
        return None

    def shorten_attributes(exc):
        """rpyc sends repr() of every attribute it cannot send by value: AttributeError.obj of
        a million-item list is megabytes per failed hasattr(). Keep them short."""
        import reprlib
        plain = (type(None), bool, int, float, complex, str, bytes)
        for name in ("obj",):
            value = getattr(exc, name, None)
            if value is not None and not isinstance(value, plain):
                try:
                    setattr(exc, name, reprlib.repr(value))
                except Exception:
                    pass

    def calls_registry():
        """Shared by the server's connections: id -> (weakref, lock, {thread id: [handlers running]})."""
        module = sys.modules.get("__ipyrpyc_calls__")
        if module is None:
            module = types.ModuleType("__ipyrpyc_calls__")
            module.connections = {}
            module = sys.modules.setdefault("__ipyrpyc_calls__", module)
        return module.connections

    def make_interruptible(connection):
        """Mark the threads running a request handler of ``connection``: only those are interrupted,
        and an interrupt that arrives as a handler ends is dropped there, never left pending to hit
        rpyc's serving loop (which would end the connection) or the sending of a reply."""
        import ctypes, threading, weakref
        lock = threading.Lock()
        running = {}

        def interruptible(handler):
            def run(conn, *args):
                tid = threading.get_ident()
                stack = running.setdefault(tid, [])
                mine = len(stack) + 1
                try:
                    stack.append(None)
                    return handler(conn, *args)
                finally:
                    while True:
                        try:
                            with lock:
                                del stack[mine - 1:]
                                if not stack:  # clear an interrupt still pending for this thread
                                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
                            break
                        except KeyboardInterrupt:
                            pass  # it came as the call ended: the call is over, drop it
            return run

        handlers = connection._HANDLERS
        for key in list(handlers):
            handlers[key] = interruptible(handlers[key])
        registry = calls_registry()
        for key, entry in list(registry.items()):
            if entry[0]() is None:
                registry.pop(key, None)
        registry[id(connection)] = (weakref.ref(connection), lock, running)

    connection = serving_connection()
    last_failure = []  # (type, value, traceback) of this connection's last failed request
    if connection is not None:
        # an injected KeyboardInterrupt must come back as an error reply, not end the connection
        connection._config["propagate_KeyboardInterrupt_locally"] = False
        box_exc = connection._box_exc

        def _box_exc(typ, val, tb):
            if typ is not None and not issubclass(typ, (StopIteration, GeneratorExit)):
                last_failure[:] = [(typ, val, tb)]
                shorten_attributes(val)
            return box_exc(typ, val, tb)

        connection._box_exc = _box_exc
        make_interruptible(connection)
    connection_id = id(connection) if connection is not None else 0

    def debug(readline, write):
        """Post-mortem pdb on the last failed request, talking through the client's callbacks."""
        import pdb
        if not last_failure:
            return None
        typ, val, tb = last_failure[0]

        class Out(object):
            def __init__(self):
                self.pending = ""

            def write(self, text):
                head, sep, tail = (self.pending + text).rpartition("\n")
                if sep:
                    write(head + sep)
                self.pending = tail
                return len(text)

            def flush(self):
                pass

        out = Out()

        class In(object):
            def readline(self):
                prompt, out.pending = out.pending, ""
                return readline(prompt)

        debugger = pdb.Pdb(stdin=In(), stdout=out, nosigint=True, readrc=False)
        debugger.reset()
        debugger.interaction(None, tb)
        if out.pending:
            write(out.pending)
        return "%s: %s" % (typ.__name__, val)

    def interrupt(target_id):
        """Raise KeyboardInterrupt in the threads running a request handler of connection target_id."""
        import ctypes
        entry = calls_registry().get(target_id)
        if entry is None or entry[0]() is None:
            return 0
        _, lock, running = entry
        hits = 0
        with lock:
            for tid, stack in list(running.items()):
                if stack:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(tid), ctypes.py_object(KeyboardInterrupt))
                    hits += 1
        return hits

    # -- live output: writes from this connection's serving threads go to the client --------
    def router():
        import threading
        module = sys.modules.get("__ipyrpyc_router__")
        if module is not None:
            return module
        module = types.ModuleType("__ipyrpyc_router__")
        module.routes = {}
        module.lock = threading.Lock()

        class Router(object):
            """Sends writes of registered threads to their client; all others go where they went."""

            def __init__(self, original, name):
                self.original = original
                self.name = name

            def write(self, text):
                send = module.routes.get(threading.get_ident())
                if send is not None:
                    try:
                        send(self.name, text)
                        return len(text)
                    except Exception:
                        module.routes.pop(threading.get_ident(), None)
                return self.original.write(text)

            def flush(self):
                return self.original.flush()

            def __getattr__(self, name):
                return getattr(self.original, name)

        Router.__module__ = "__ipyrpyc_router__"
        module.Router = Router
        sys.modules["__ipyrpyc_router__"] = module
        return module

    def route(sink_write):
        """Send this serving thread's stdout/stderr to the client's sink (None: stop)."""
        import threading
        import rpyc
        module = router()
        tid = threading.get_ident()
        with module.lock:
            if sink_write is None:
                module.routes.pop(tid, None)
            else:
                module.routes[tid] = rpyc.async_(sink_write)
            alive = set(t.ident for t in threading.enumerate())
            for gone in [t for t in module.routes if t not in alive]:
                del module.routes[gone]  # the thread of a connection closed while busy
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if module.routes and not isinstance(stream, module.Router):
                    setattr(sys, name, module.Router(stream, name))
                elif not module.routes and isinstance(stream, module.Router):
                    setattr(sys, name, stream.original)
        return len(module.routes)

    info = (sys.version.split()[0], os.getpid(), socket.gethostname(), connection_id)
    return info, display, complete, describe, execute, run_cell, interrupt, route, pull, push, debug
'''

BOOTSTRAP = (
    "(exec(compile(%r, '<ipyrpyc-helper>', 'exec'), globals()), __ipyrpyc_build__())[1]" % SOURCE
)
