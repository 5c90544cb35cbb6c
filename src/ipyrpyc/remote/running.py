"""Server side: code sent by the client, run so that tracebacks show its lines.

A stock server compiles ``conn.execute`` code as ``<string>``, with no source anywhere;
here each piece of code gets a name and its lines go to ``linecache`` until the
connection closes.  Runs on Python 3.8 and newer, with the standard library only.
"""

import ast
import linecache


class Runner:
    """Runs one connection's code and forgets its source lines when told to."""

    def __init__(self):
        self.files = []

    def _remember(self, source, filename):
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        self.files.append(filename)

    def execute(self, source, filename, namespace):
        """``exec`` of ``source`` in ``namespace``."""
        self._remember(source, filename)
        exec(compile(source, filename, "exec"), namespace)

    def run_cell(self, source, filename, namespace):
        """Run a cell like IPython: ``(True, value of the last expression)`` or ``(False, None)``."""
        self._remember(source, filename)
        tree = ast.parse(source, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), namespace)
        if last is None:
            return False, None
        return True, eval(compile(last, filename, "eval"), namespace)

    def call(self, source, filename, name, namespace, args, kwargs, items):
        """Call the function ``name`` (a dotted name in ``namespace``), first defined there from
        ``source`` when given:
        ``f(*args, **kwargs)``, or with ``items`` the tuple ``(f(item, *args, **kwargs), ...)``."""
        if source is not None:
            self.execute(source, filename, namespace)
        function = namespace[name] if name in namespace else eval(name, namespace)  # a builtin, a.b
        if items is None:
            return function(*args, **kwargs)
        return tuple(function(item, *args, **kwargs) for item in items)

    def forget(self):
        for filename in self.files:
            linecache.cache.pop(filename, None)
        del self.files[:]
