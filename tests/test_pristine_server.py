"""After ipyrpyc's last connection to a stock server closes, the server is as it was.

A plain rpyc connection, open throughout, looks at the server before, during and
after: its ``sys.stdout``/``sys.stderr`` objects, ``sys.modules`` and ``linecache``;
a fresh plain connection afterwards finds rpyc's own request handlers.  The remote
tracebacks and the server's own log show no frame of ipyrpyc's.
"""

from __future__ import annotations

import rpyc

from tests.support.processes import StockServer, wait_until

LOOK = """(
    id(__import__('sys').stdout), id(__import__('sys').stderr),
    tuple(sorted(m for m in __import__('sys').modules if 'ipyrpyc' in m)),
    tuple(sorted(f for f in __import__('linecache').cache if f.startswith(('<lab.', '<other.')))),
)"""  # tuples of plain values: brine sends them by value

OWN_HANDLERS = """
import sys
def handlers_are_rpycs():
    frame = sys._getframe()
    while frame.f_code.co_name != '_dispatch_request':
        frame = frame.f_back
    handlers = frame.f_locals['self']._HANDLERS.values()
    return all(getattr(h, '__module__', None) == 'rpyc.core.protocol' for h in handlers)
"""


def test_a_stock_server_is_left_as_it_was(shell):
    server = StockServer(keep_log=True)  # rpyc_classic logs every failed request with its traceback
    watcher = rpyc.classic.connect(server.host, server.port)  # a plain client, open throughout
    try:
        before = watcher.eval(LOOK)
        shell.run_line_magic("rpyc_connect", f"{server.address} --name lab")
        shell.run_line_magic("rpyc_connect", f"{server.address} --name other")
        for cell in ("rsys.path", "%%rpyc lab\nprint('hello')\nx = 1", "lab.execute('def f():\\n    return 1/0')",
                     "ros.path.abspath?", "%rpyc_connections"):
            shell.run_cell(cell, store_history=False)
        try:
            shell.user_ns["lab"].namespace["f"]()
        except ZeroDivisionError as e:
            remote_text = e._remote_tb
        assert '"<lab.execute-1>", line 2, in f' in remote_text and "ipyrpyc" not in remote_text, remote_text
        during = watcher.eval(LOOK)
        assert during[2] == ("__ipyrpyc__",) and during[3] and during[:2] != before[:2]  # it did change things
        shell.run_line_magic("rpyc_disconnect", "lab")
        assert watcher.eval(LOOK)[2] == ("__ipyrpyc__",)  # "other" is still open
        shell.run_line_magic("rpyc_disconnect", "other")
        assert wait_until(lambda: watcher.eval(LOOK) == before, 5), (watcher.eval(LOOK), before)
        with rpyc.classic.connect(server.host, server.port) as fresh:
            assert fresh.eval(LOOK) == before
            fresh.execute(OWN_HANDLERS)
            assert fresh.namespace["handlers_are_rpycs"]()
    finally:
        watcher.close()
        server.stop()
    log = server.log_text()
    assert "ZeroDivisionError" in log and "<lab.execute-1>" in log, log[-2000:]
    assert "ipyrpyc" not in log, log[-2000:]
