"""Server side: live output.  Writes made by the threads that serve a connection go to
that client; every other write goes where it went before.

One :class:`Router` per stream is installed while any route exists and taken out
when the last route goes, unless something else has replaced the stream since.
Runs on Python 3.8 and newer, with the standard library only.
"""

import sys
import threading

STREAMS = ("stdout", "stderr")


class Router(object):
    """Sends writes of routed threads to their client; all others to the original stream."""

    def __init__(self, original, name, routes):
        self.original = original
        self.name = name
        self.routes = routes

    def write(self, text):
        tid = threading.get_ident()
        send = self.routes.get(tid)
        if send is not None:
            try:
                send(self.name, text)
                return len(text)
            except Exception:
                self.routes.pop(tid, None)
        return self.original.write(text)

    def flush(self):
        return self.original.flush()

    def __getattr__(self, name):
        return getattr(self.original, name)


def route(state, served, send):
    """Send the calling thread's output to ``send(name, text)`` (an async netref); None stops."""
    tid = threading.get_ident()
    with state.lock:
        if send is None:
            state.routes.pop(tid, None)
            served.route_threads.discard(tid)
        else:
            state.routes[tid] = send
            served.route_threads.add(tid)
        alive = set(t.ident for t in threading.enumerate())
        for gone in [t for t in state.routes if t not in alive]:
            del state.routes[gone]  # the thread of a connection that closed while busy
        _update_streams(state)
        return len(state.routes)


def unroute(state, served):
    """Drop every route of ``served`` (its connection closes)."""
    with state.lock:
        for tid in served.route_threads:
            state.routes.pop(tid, None)
        served.route_threads.clear()
        _update_streams(state)


def _update_streams(state):
    for name in STREAMS:
        stream = getattr(sys, name)
        if state.routes and stream is not state.routers.get(name):
            if name not in state.routers:
                state.routers[name] = Router(stream, name, state.routes)
                setattr(sys, name, state.routers[name])
        elif not state.routes and name in state.routers:
            router = state.routers.pop(name)
            if stream is router:
                setattr(sys, name, router.original)
