"""Server side: the entry point, called once per connection by the client's bootstrap.

:func:`start` prepares the connection it is called on and returns, in the same
round trip, the server's facts, the remote modules the client asked for and the
functions the client will call (each call: one round trip, brine values only).
Runs on Python 3.8 and newer, with the standard library only.
"""

import os
import socket
import sys


def _module(name):
    try:
        return __import__(name, None, None, ("*",))
    except BaseException as exc:  # an import may raise anything, SystemExit included
        return "%s: %s" % (type(exc).__name__, str(exc)[:200])


def _netref_class(module):
    """``(id_pack, methods)``: what rpyc's inspect request would answer for ``module``."""
    from rpyc.core.netref import LOCAL_ATTRS
    from rpyc.lib import get_id_pack, get_methods

    return get_id_pack(module), tuple(get_methods(LOCAL_ATTRS, module))


def prepare(modules, module_names):
    """The first of two requests that start the program with modules and live output:
    ``(netref classes of the imported modules, begin)``; ``begin(sink)`` is :func:`start`.

    With the classes the client builds the modules' netrefs without an inspect request each.
    """
    imported = tuple((name, _module(name)) for name in module_names)
    classes = tuple(_netref_class(m) for _, m in imported if not isinstance(m, str))

    def begin(sink):
        return start(modules, sink, module_names, imported)

    return classes, begin


def start(modules, sink, module_names, imported=None):
    """``(facts, ((module name, module or error text), ...), ((function name, function), ...))``.

    ``modules``: this program's modules by short name.  ``sink``: the client's
    ``write(name, text)`` for live output, or None.  ``module_names``: modules to import
    (``imported``: already imported, as :func:`prepare` did).
    """
    import rpyc

    serving, output, objects = modules["serving"], modules["output"], modules["objects"]
    codec, runner = modules["codec"], modules["running"].Runner()
    connection = serving.serving_connection()
    served = serving.attach(connection) if connection is not None else serving.Served(None)
    served.on_detach.append(runner.forget)
    state = serving.shared_state(create=False)

    def route(send):
        """Live output of this connection to ``send(name, text)``; None stops it."""
        if state is None:
            return 0  # not served by an rpyc connection we could find: nothing to route
        return output.route(state, served, None if send is None else rpyc.async_(send))

    if state is not None:
        served.on_detach.append(lambda: output.unroute(state, served))
        if sink is not None:
            route(sink)

    transfers = modules["bulk"].Transfers(codec, connection)
    served.on_detach.append(transfers.close_all)

    def call(source, filename, name, namespace, args, kwargs, items):
        rebuilt = codec.rebuild(items) if items is not None else None
        return runner.call(source, filename, name, namespace, codec.rebuild(args), codec.rebuild(kwargs), rebuilt)

    functions = (
        ("display", objects.display),
        ("complete", objects.complete),
        ("describe", objects.describe),
        ("lookup", objects.lookup),
        ("who", objects.who),
        ("execute", runner.execute),
        ("run_cell", runner.run_cell),
        ("pull", transfers.pull),
        ("read", transfers.read),
        ("push", transfers.push),
        ("call", call),
        ("write", transfers.write),
        ("finish", transfers.finish),
        ("close", transfers.close),
        ("stat", transfers.stat),
        ("walk", transfers.walk),
        ("fopen", transfers.fopen),
        ("fread", transfers.fread),
        ("fclose", transfers.fclose),
        ("mkdir", transfers.mkdir),
        ("fcreate", transfers.fcreate),
        ("fwrite", transfers.fwrite),
        ("fcommit", transfers.fcommit),
        ("set_times", transfers.set_times),
        ("route", route),
        ("interrupt", serving.interrupt),
        ("debug", lambda readline, write: serving.debug(served, readline, write)),
    )
    facts = (sys.version.split()[0], os.getpid(), socket.gethostname(), served.key)
    if imported is None:
        imported = tuple((name, _module(name)) for name in module_names)
    return facts, imported, functions
