"""The plain model of a remote traceback: ``tracebacks.parse`` and its helpers, no processes.

The texts below are shaped exactly like what rpyc 6 puts into ``exc._remote_tb``
(captured from a stock ``rpyc_classic`` server); the kernel tests in
``test_tracebacks.py`` check the same behaviour end to end.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ipyrpyc.text import inert
from ipyrpyc.tracebacks import (
    CHAIN_MESSAGES,
    RemoteTraceback,
    parse,
    split_exception_line,
)

SP = "/srv/venv/lib/python3.11/site-packages"
PLUMBING_HEAD = f'''\
  File "{SP}/rpyc/core/protocol.py", line 369, in _dispatch_request
    res = self._HANDLERS[handler](self, *args)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{SP}/rpyc/core/protocol.py", line 863, in _handle_call
    return obj(*args, **dict(kwargs))
           ^^^^^^^^^^^^^^^^^^^^^^^^^^
'''
PLUMBING_CALLBACK = f'''\
  File "{SP}/rpyc/core/netref.py", line 239, in __call__
    return syncreq(_self, consts.HANDLE_CALL, args, kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{SP}/rpyc/core/protocol.py", line 744, in sync_request
    return _async_res.value
           ^^^^^^^^^^^^^^^^
  File "{SP}/rpyc/core/async_.py", line 111, in value
    raise self._obj
'''

SIMPLE = (
    "Traceback (most recent call last):\n"
    + PLUMBING_HEAD
    + '  File "/opt/lab/labtools/errors.py", line 5, in calibrate\n'
    "    step()\n"
    '  File "/opt/lab/labtools/errors.py", line 8, in step\n'
    '    raise CalibrationError("laser drift 3.2 nm")\n'
    "    ~~~~~^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "labtools.errors.CalibrationError: laser drift 3.2 nm\n"
)

CHAINED = (
    "Traceback (most recent call last):\n"
    '  File "<string>", line 3, in chain\n'
    "IndexError: list index out of range\n"
    "\n"
    f"{CHAIN_MESSAGES[0]}\n"
    "\n"
    "Traceback (most recent call last):\n"
    + PLUMBING_HEAD
    + '  File "<string>", line 5, in chain\n'
    "ValueError: outer\n"
)

CALLBACK = (
    "Traceback (most recent call last):\n"
    + PLUMBING_HEAD
    + '  File "<string>", line 7, in g\n'
    + PLUMBING_CALLBACK
    + "_get_exception_class.<locals>.Derived: division by zero\n"
    "\n"
    "========= Remote Traceback (1) =========\n"
    "Traceback (most recent call last):\n"
    + PLUMBING_HEAD
    + '  File "/tmp/ipykernel_1/3098380162.py", line 3, in cb\n'
    "    return 1/0\n"
    "           ~^~\n"
    "ZeroDivisionError: division by zero\n"
)

GROUP = (
    "  + Exception Group Traceback (most recent call last):\n"
    f'  |   File "{SP}/rpyc/core/protocol.py", line 863, in _handle_call\n'
    "  |     return obj(*args, **dict(kwargs))\n"
    "  |            ^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  |   File "<string>", line 2, in grp\n'
    '  |     raise ExceptionGroup("grp", [ValueError("a"), TypeError("b")])\n'
    "  | ExceptionGroup: grp (2 sub-exceptions)\n"
    "  +-+---------------- 1 ----------------\n"
    "    | ValueError: a\n"
    "    +---------------- 2 ----------------\n"
    "    | TypeError: b\n"
    "    +------------------------------------\n"
)


def frames(block):
    return [(f.filename, f.lineno, f.name, f.line) for f in block.frames]


def all_text(model: RemoteTraceback) -> str:
    """Every string the model holds, for "nothing leaks" checks."""
    out = list(model.notes)
    for b in model.blocks:
        out += [b.exception, b.raw or "", b.chain or ""]
        out += [f"{f.filename} {f.name} {f.line}" for f in b.frames]
    if model.callback is not None:
        out.append(all_text(model.callback))
    return "\n".join(out)


def test_plumbing_frames_dropped_user_frames_kept_with_source():
    model = parse(SIMPLE)
    assert len(model.blocks) == 1 and model.callback is None
    block = model.blocks[0]
    assert frames(block) == [
        ("/opt/lab/labtools/errors.py", 5, "calibrate", "step()"),
        ("/opt/lab/labtools/errors.py", 8, "step", 'raise CalibrationError("laser drift 3.2 nm")'),
    ]
    assert block.exception == "labtools.errors.CalibrationError: laser drift 3.2 nm"
    assert "rpyc" not in all_text(model)


def test_frame_in_a_user_file_named_like_rpyc_is_not_plumbing():
    text = (
        "Traceback (most recent call last):\n"
        '  File "/home/me/rpyc_tools/core/helpers.py", line 2, in helper\n'
        "    fail()\n"
        "KeyError: 'x'\n"
    )
    assert frames(parse(text).blocks[0]) == [("/home/me/rpyc_tools/core/helpers.py", 2, "helper", "fail()")]


def test_frame_without_source_line_has_empty_line():
    text = 'Traceback (most recent call last):\n  File "/gone/mod.py", line 4, in f\nOSError: x\n'
    assert frames(parse(text).blocks[0]) == [("/gone/mod.py", 4, "f", "")]


def test_chained_blocks_in_order_with_their_link():
    model = parse(CHAINED)
    assert [b.exception for b in model.blocks] == ["IndexError: list index out of range", "ValueError: outer"]
    assert model.blocks[0].chain == CHAIN_MESSAGES[0]
    assert model.blocks[1].chain is None
    assert frames(model.blocks[0]) == [("<string>", 3, "chain", "")]
    assert frames(model.blocks[1]) == [("<string>", 5, "chain", "")]


def test_during_handling_link():
    text = CHAINED.replace(CHAIN_MESSAGES[0], CHAIN_MESSAGES[1])
    model = parse(text)
    assert [b.chain for b in model.blocks] == [CHAIN_MESSAGES[1], None]


def test_local_callback_traceback_is_nested():
    model = parse(CALLBACK)
    assert len(model.blocks) == 1
    assert frames(model.blocks[0]) == [("<string>", 7, "g", "")]
    assert model.callback is not None
    assert frames(model.callback.blocks[0]) == [("/tmp/ipykernel_1/3098380162.py", 3, "cb", "return 1/0")]
    assert model.callback.blocks[0].exception == "ZeroDivisionError: division by zero"
    assert "rpyc/core" not in all_text(model)


def test_version_warning_becomes_a_note():
    warning = "WARNING: Remote is on RPyC 5.3.1 and local is on RPyC 6.0.2."
    model = parse(warning + "\n" + SIMPLE)
    assert model.notes == [warning]
    assert len(model.blocks) == 1 and len(model.blocks[0].frames) == 2


def test_exception_group_kept_verbatim_without_plumbing():
    model = parse(GROUP)
    (block,) = model.blocks
    assert block.raw is not None
    assert "ValueError: a" in block.raw and "TypeError: b" in block.raw
    assert "ExceptionGroup: grp (2 sub-exceptions)" in block.raw
    assert 'File "<string>", line 2, in grp' in block.raw
    assert "rpyc/core" not in block.raw and "_handle_call" not in block.raw and "^^^" not in block.raw


def test_control_characters_from_the_server_become_visible_text():
    esc = "\x1b"
    text = (
        "Traceback (most recent call last):\n"
        f'  File "/x/{esc}]8;;http://evil{esc}\\a.py", line 1, in f{esc}[2J\n'
        f"    raise ValueError('{esc}[31m')\n"
        f"ValueError: <script>alert(1)</script> {esc}[2J {esc}]8;;http://x{esc}\\link{esc}]8;;{esc}\\ \x9b31m \x07\r\n"
    )
    model = parse(text)
    everything = all_text(model)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", everything)
    assert "\\x1b[2J" in model.blocks[0].exception
    assert "\\x9b31m" in model.blocks[0].exception and "\\x07" in model.blocks[0].exception
    assert "<script>alert(1)</script>" in model.blocks[0].exception  # data, left for frontends to escape
    (f,) = model.blocks[0].frames
    assert f.filename == "/x/\\x1b]8;;http://evil\\x1b\\a.py" and f.name == "f\\x1b[2J"


def test_inert():
    assert inert("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert inert("tab\tnl\n") == "tab\tnl\n"
    assert inert("\x00\x7f\x85\x9b") == "\\x00\\x7f\\x85\\x9b"
    assert inert("ünïcode ✓") == "ünïcode ✓"


def test_split_exception_line():
    assert split_exception_line("ValueError: x") == ("ValueError", "x")
    assert split_exception_line("builtins.CalibrationError: laser drift") == (
        "builtins.CalibrationError", "laser drift")
    assert split_exception_line("KeyboardInterrupt") == ("KeyboardInterrupt", "")
    assert split_exception_line("ValueError: a\nsecond line") == ("ValueError", "a\nsecond line")
    assert split_exception_line("not an exception line at all") == ("Exception", "not an exception line at all")


def test_deeply_nested_callbacks_do_not_exhaust_the_stack():
    level = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: a\n\n'
        "========= Remote Traceback (1) =========\n"
    )
    model = parse(level * 3000)
    assert isinstance(model, RemoteTraceback)
    assert model.blocks[0].exception == "ValueError: a"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "Traceback (most recent call last):\n", '  File "/a/b.py", line 3, in f\n', '  File "', "    x = 1\n",
    "    ^^^^\n", "ValueError: boom\n", CHAIN_MESSAGES[0] + "\n", CHAIN_MESSAGES[1] + "\n",
    "========= Remote Traceback (2) =========\n", "  + Exception Group Traceback\n", "  | x\n",
    "WARNING: Remote is on RPyC 1\n", "\x00", "\x1b[2J", "\r\n", "\n", "",
    f'  File "{SP}/rpyc/core/x.py", line 1, in y\n',
]), max_size=40), st.text(max_size=50))
def test_parse_never_raises_and_never_leaks_control_characters(pieces, noise):
    model = parse("".join(pieces) + noise)
    assert isinstance(model, RemoteTraceback)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", all_text(model))
