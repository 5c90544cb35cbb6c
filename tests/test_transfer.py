"""Copies of values (``ipyrpyc.pull``/``push``, ``%%rpyc --pull/--push``) and of files
(``%rpyc_get``/``%rpyc_put``).

Values go through a real rpyc connection to ``SlaveService`` (what ``rpyc_classic``
serves) on a thread of this process, both ways, and must come back equal with their
dtypes, shapes and layouts.  Files go through the magics in a terminal shell against a
stock ``rpyc_classic`` server: contents (sha256), sizes, modification times, ``--force``,
``-r``, every bad input as one line, a full disk (a 1 MB tmpfs mounted by the test), and a
stalled link whose timeout names the setting.  Interrupts and progress bars in a real
kernel are in ``test_transfer_kernel.py``.
"""

from __future__ import annotations

import decimal  # noqa: F401 (the values of the no-pickle test are made with eval)
import fractions
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rpyc
from IPython.core.error import UsageError

import ipyrpyc
from ipyrpyc import transfer
from ipyrpyc.magics_transfer import split_remote
from ipyrpyc.proxy import DelayProxy
from ipyrpyc.remote import codec
from ipyrpyc.remote.bulk import TEMP_MARK, safe_parts
from ipyrpyc.wire import RequestCounter
from tests.support.processes import StockServer, wait_until


def assert_same(a, b):
    """Equal values of the same type; arrays with the same dtype, shape and memory order."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert list(a.dtypes) == list(b.dtypes)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True, check_freq=True)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        fortran = a.flags.f_contiguous and not a.flags.c_contiguous
        assert (b.flags.f_contiguous if fortran else b.flags.c_contiguous) and b.flags.writeable
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and (a == b or (a != a and b != b))
    elif isinstance(a, memoryview):
        assert (a.format, a.shape, a.tobytes()) == (b.format, b.shape, b.tobytes())
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    else:
        assert a == b


N = 300_000  # rows: several chunks per column
rng = np.random.default_rng(7)
big = rng.random(3_000_000)  # 24 MB: 23 chunks


def frame() -> pd.DataFrame:
    df = pd.DataFrame({
        "f": rng.random(N), "i8": rng.integers(-100, 100, N).astype("i1"), "u": rng.integers(0, 2**63, N, "u8"),
        "b": rng.random(N) > 0.5, "c": rng.random(N) + 1j * rng.random(N), "h": rng.random(N).astype("f2"),
        "be": rng.random(N).astype(">f8"), "t": pd.date_range("2020", periods=N, freq="s"),
        "td": pd.to_timedelta(rng.integers(0, 10**9, N), unit="ns"),
        "s": [f"row {i} é" for i in range(N)],
    })
    df.loc[5, "s"] = None
    df["o"] = pd.Series(["x", None, float("nan"), "z"] * (N // 4), dtype=object)
    return df


def mixed() -> pd.DataFrame:
    return pd.DataFrame({
        "Int64": pd.array([1, None, 3], dtype="Int64"), "boolean": pd.array([True, None, False], dtype="boolean"),
        "Float64": pd.array([1.5, None, 2.0], dtype="Float64"), "string": pd.array(["a", None, "c"], dtype="string"),
        "cat": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
        "tz": pd.date_range("2024-03-30", periods=3, freq="D", tz="Europe/Paris"),
        "plain": pd.Series([1, "two", [3, (4, None)]], dtype=object),
    }, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2), ("c", 3)], names=["k", "n"]))


VALUES = {
    "none": lambda: None, "bool": lambda: True, "int": lambda: 2**70, "float": lambda: 2.5, "complex": lambda: 1 - 2j,
    "str": lambda: "héllo", "small bytes": lambda: b"\x00abc", "big bytes": lambda: bytes(range(256)) * 1000,
    "bytearray": lambda: bytearray(b"\xff" * 300_000),
    "memoryview 2-d": lambda: memoryview(np.arange(12.0).reshape(3, 4)),
    "memoryview bytes": lambda: memoryview(b"xyz" * 40_000),
    "nested": lambda: [1, (2.5, {"a": {1, 2}, ("t", 1): frozenset({3})}), {"k": [b"z" * 70_000, np.arange(5)]}],
    "float64 24 MB": lambda: big,
    "int8": lambda: np.arange(-100, 100, dtype="i1"), "uint64": lambda: np.array([0, 2**64 - 1], dtype="u8"),
    "bool array": lambda: np.array([True, False]), "float16": lambda: np.linspace(0, 1, 7, dtype="f2"),
    "complex128": lambda: rng.random(1000) * 1j,
    "big-endian 2-d": lambda: big[:200_000].astype(">f8").reshape(400, 500),
    "datetime64": lambda: np.arange(10).astype("M8[ns]"), "timedelta64": lambda: np.arange(5).astype("m8[s]"),
    "strided": lambda: big[:600_000].reshape(1000, 600)[::2, ::3],
    "fortran": lambda: np.asfortranarray(big[:600].reshape(20, 30)),
    "0-d": lambda: np.array(3.25), "empty": lambda: np.empty((0, 4), dtype="i4"),
    "unicode": lambda: np.array(["ab", "cdé"]),
    "nan": lambda: np.array([np.nan, 1.0]), "numpy scalar": lambda: np.float32(1.5),
    "datetime scalar": lambda: np.datetime64("2024-01-02T03:04:05", "s"),
    "dataframe": frame, "mixed dtypes": mixed,
    "series": lambda: pd.Series(rng.random(50), index=pd.date_range("2021", periods=50, freq="h"), name=("a", 1)),
    "object index": lambda: pd.Index(["a", "b"], dtype=object, name="q"),
    "range index": lambda: pd.RangeIndex(3, 30, 3, name="r"),
    "empty frame": lambda: pd.DataFrame(index=pd.Index([], dtype="i8")),
}


@pytest.mark.parametrize("kind", list(VALUES))
def test_every_copied_type_round_trips_both_ways(pair, kind):
    """push to the server (checked there), pull back: equal, same type, dtypes, shape and layout."""
    value = VALUES[kind]()
    ipyrpyc.push(pair, "v", value, progress=False)
    here = f"{type(value).__module__}.{type(value).__qualname__}"
    assert pair.eval("type(v).__module__ + '.' + type(v).__qualname__") == here
    if isinstance(value, (np.ndarray, pd.Series)):
        assert pair.eval("str(v.dtype)") == str(value.dtype)
    if isinstance(value, pd.DataFrame):
        assert pair.eval("tuple(str(d) for d in v.dtypes)") == tuple(str(d) for d in value.dtypes)
    assert_same(value, ipyrpyc.pull(pair, "v", progress=False))
    remote = pair.namespace["v"]
    if isinstance(remote, rpyc.BaseNetref):  # what pull(conn, netref) takes
        assert_same(value, ipyrpyc.pull(pair, remote, progress=False))


def test_buffers_are_pulled_in_pipelined_chunks_and_small_values_in_one_round_trip(pair):
    ipyrpyc.push(pair, "warm", 1)  # installs the server program (one round trip, not counted)
    pair.execute("import numpy as np; A = np.arange(3 * 2**20 // 8, dtype=float); small = {'a': [1, 2.5], 'b': b'x'}")
    with RequestCounter(pair) as rc:
        assert ipyrpyc.pull(pair, "small") == {"a": [1, 2.5], "b": b"x"}
    assert rc.count == 1, rc.handlers
    with RequestCounter(pair) as rc:
        ipyrpyc.push(pair, "s2", {"k": np.arange(10)})
    assert rc.count == 1, rc.handlers
    with RequestCounter(pair) as rc:
        a = ipyrpyc.pull(pair, "A", progress=False)
    assert rc.count == 1 + 3, rc.handlers  # the trees, then 3 chunks of 1 MB; the last read ends it
    assert np.array_equal(a, np.arange(3 * 2**20 // 8, dtype=float))
    link = transfer.link_of(pair)
    helper_transfers = link.helper.functions["read"].__self__
    assert len(helper_transfers.states) == 0  # nothing left on the server
    with RequestCounter(pair) as rc:
        ipyrpyc.push(pair, "B", a, progress=False)
    assert rc.count == 1 + 3 + 1, rc.handlers  # start, 3 chunks, finish: sent without waiting
    assert pair.eval("bool((A == B).all())") and len(helper_transfers.states) == 0


@pytest.mark.parametrize("make, named", [
    ("np.array([object()], dtype=object)", "numpy arrays of dtype object"),
    ("fractions.Fraction(1, 3)", "fractions.Fraction"),
    ("[1, {'k': decimal.Decimal(1)}]", "decimal.Decimal"),
    ("pd.Series([pd.Period('2020-01', 'M')])", "dtype period[M]"),
    ("pd.DataFrame({'d': [decimal.Decimal(1)]})", "holds decimal.Decimal"),
])
def test_no_pickle_on_an_untrusted_connection_one_line_naming_the_type_and_trust(pair, make, named):
    pair.execute(f"import fractions, decimal, numpy as np, pandas as pd\nx = {make}")
    local = eval(make)
    for attempt in (lambda: ipyrpyc.pull(pair, "x"), lambda: ipyrpyc.push(pair, "y", local)):
        with pytest.raises(ipyrpyc.TransferError) as info:
            attempt()
        message = str(info.value)
        assert named in message and "--trust" in message and "\n" not in message, message
    assert not pair.eval("'y' in globals()")


def test_bad_inputs_of_the_api_are_one_line(pair):
    with pytest.raises(ipyrpyc.TransferError, match="^nothing_here: not defined on the server$"):
        ipyrpyc.pull(pair, "nothing_here")
    with pytest.raises(TypeError, match="not a local list"):
        ipyrpyc.pull(pair, [1, 2])
    with pytest.raises(ValueError, match="identifier"):
        ipyrpyc.push(pair, "not a name", 1)
    with pytest.raises(TypeError, match="rpyc connection"):
        ipyrpyc.pull("lab", "x")


def test_pickle_only_on_a_trusted_link_and_never_unpickled_otherwise(pair):
    pair.execute("import fractions\nx = [fractions.Fraction(1, 3), 2]")
    trusted = transfer.link_of(pair, trusted=True)
    (got,) = transfer.pull_values(trusted, pair.namespace, ["x"], progress=False)
    assert got.value == [fractions.Fraction(1, 3), 2]
    transfer.push_value(trusted, pair.namespace, "y", fractions.Fraction(2, 3), progress=False)
    assert pair.eval("y == fractions.Fraction(2, 3)")
    forged = ("pickle", b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(TypeError, match="only unpickled on a --trust connection"):
        codec.rebuild(forged)


def test_hostile_trees_and_paths_are_refused():
    with pytest.raises(TypeError):
        codec.allocate(("ndarray", "<f8", (10,), "C", 0), (79,))  # sizes disagree with the shape
    with pytest.raises(TypeError):
        codec.allocate(("bytes", 3), (10,))  # a buffer that does not exist
    with pytest.raises(TypeError, match="not plain data"):
        codec.allocate(("ndarray", "|O", (1,), "C", 0), (8,))
    for parts in [("..", "etc"), ("a/b",), ("a\\b",), ("",), ("C:x",), ("/abs",)]:
        with pytest.raises(ValueError):
            safe_parts(parts)
    assert safe_parts(("a", "b.txt")) == ("a", "b.txt")


def test_split_remote_knows_windows_drives():
    assert split_remote("lab:/data/x.h5") == ("lab", "/data/x.h5")
    assert split_remote("C:\\data\\x.h5") == (None, "C:\\data\\x.h5")
    assert split_remote("lab:C:\\data") == ("lab", "C:\\data")
    assert split_remote("./a:b") == (None, "./a:b")
    assert split_remote("/abs/path") == (None, "/abs/path")
    assert split_remote("lab:") == ("lab", "")


# -- files ------------------------------------------------------------------------------------------
@pytest.fixture
def lab(shell, tmp_path):
    """A stock rpyc_classic server connected as ``lab``; the shell works in ``tmp_path/here``."""
    server = StockServer()
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    cwd = os.getcwd()
    os.chdir(here)
    try:
        shell.run_line_magic("rpyc_connect", f"{server.address} --name lab")
        yield shell, here, there
    finally:
        os.chdir(cwd)
        shell.run_line_magic("rpyc_disconnect", "--all")
        server.stop()


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(2_500_000))  # three chunks
    (root / "sub" / "deeper" / "c.bin").write_bytes(b"")
    os.chmod(root / "a.txt", 0o640)
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i * 1_000_000_007))


def tree_of(root: Path) -> dict:
    """Every file and directory under ``root``: (sha256, size, mtime_ns, mode) / ("dir", mtime)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        key = str(path.relative_to(root))
        if path.is_dir():
            out[key] = ("dir", st.st_mtime_ns)
        else:
            out[key] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns, st.st_mode & 0o777)
    return out


def run(shell, cell: str):
    """Run a line or cell; the printed line and the error (None when it worked)."""
    result = shell.run_cell(cell, store_history=False)
    return result.error_in_exec or result.error_before_exec


def leftovers(*roots: Path) -> list:
    return [str(p) for root in roots for p in root.rglob("*") if TEMP_MARK in p.name]


def test_files_and_directories_both_ways_with_checksums_times_and_modes(lab, capsys):
    shell, here, there = lab
    make_tree(there / "src")
    assert run(shell, f"%rpyc_get lab:{there / 'src' / 'sub' / 'b.bin'}") is None
    assert tree_of(here)["b.bin"] == tree_of(there / "src")["sub/b.bin"]
    assert "Copied lab:" in capsys.readouterr().out
    assert run(shell, f"%rpyc_get -r lab:{there / 'src'}") is None  # scp: into ./src
    assert tree_of(here / "src") == tree_of(there / "src")
    assert run(shell, f"%rpyc_get -r lab:{there / 'src'} copy") is None  # a new name
    assert tree_of(here / "copy") == tree_of(there / "src")
    assert run(shell, f"%rpyc_put -r copy lab:{there}") is None  # into an existing directory: there/copy
    assert tree_of(there / "copy") == tree_of(there / "src")
    assert run(shell, f"%rpyc_put b.bin lab:{there / 'renamed.bin'}") is None
    assert tree_of(there)["renamed.bin"] == tree_of(there / "src")["sub/b.bin"]
    shell.run_cell(f"%%rpyc lab\nimport os\nos.chdir({str(there / 'src')!r})")
    assert run(shell, '%rpyc_put "b.bin" lab:') is None  # into the server's working directory
    assert tree_of(there / "src")["b.bin"] == tree_of(there / "src")["sub/b.bin"]
    assert leftovers(here, there) == []


def test_existing_targets_need_force(lab):
    shell, here, there = lab
    make_tree(there / "src")
    (here / "a.txt").write_text("mine")
    error = run(shell, f"%rpyc_get lab:{there / 'src' / 'a.txt'}")
    assert isinstance(error, UsageError) and "a.txt exists; --force replaces it" in str(error)
    assert (here / "a.txt").read_text() == "mine"
    assert run(shell, f"%rpyc_get --force lab:{there / 'src' / 'a.txt'}") is None
    assert (here / "a.txt").read_text() == "hello\n"
    error = run(shell, f"%rpyc_put a.txt lab:{there / 'src'}")  # there/src/a.txt exists
    assert isinstance(error, UsageError) and "exists; --force replaces it" in str(error)
    (here / "a.txt").write_text("changed")
    assert run(shell, f"%rpyc_put -f a.txt lab:{there / 'src'}") is None
    assert (there / "src" / "a.txt").read_text() == "changed"
    assert run(shell, f"%rpyc_get -r lab:{there / 'src'}") is None
    error = run(shell, f"%rpyc_get -r lab:{there / 'src'}")
    assert isinstance(error, UsageError) and "src exists" in str(error)
    assert run(shell, f"%rpyc_get -r -f lab:{there / 'src'}") is None  # merges, replacing files
    assert leftovers(here, there) == []


def test_each_bad_input_is_one_line_and_leaves_nothing(lab):
    shell, here, there = lab
    make_tree(there / "src")
    (here / "dir").mkdir()
    os.mkfifo(there / "fifo")
    cases = {
        f"%rpyc_get lab:{there / 'missing.h5'}": f"lab:{there / 'missing.h5'}: no such file or directory",
        f"%rpyc_get lab:{there / 'src'}": "is a directory: -r copies it with its contents",
        f"%rpyc_get lab:{there / 'fifo'}": "not a regular file",
        f"%rpyc_get lab:{there / 'src' / 'a.txt'} nodir/x.txt": "no such directory",
        f"%rpyc_get lab:{there / 'src' / 'a.txt'} dir/": None,  # fine: into the directory
        "%rpyc_get nolab:/etc/hostname": "no connection named 'nolab'",
        "%rpyc_get C:\\data\\x.h5": "lab:C:\\data\\x.h5: no such file or directory",  # a drive, not a name
        "%rpyc_get q:/x": "Windows drive",
        "%rpyc_get lab:": "no remote path given",
        f"%rpyc_get lab:{there / 'src' / 'a.txt'} newdir/": "newdir/: no such directory",
        f"%rpyc_put dir/a.txt lab:{there / 'nodir'}/": "no such directory on the server",
        "%rpyc_put missing.txt lab:/tmp": "missing.txt: no such file or directory",
        "%rpyc_put dir lab:/tmp": "dir is a directory: -r copies it with its contents",
        f"%rpyc_put dir/a.txt lab:{there / 'nodir' / 'x.txt'}": "No such file or directory",
        f"%rpyc_put -r dir lab:{there / 'src' / 'a.txt'}": "is a file, cannot copy a directory onto it",
        "%rpyc_get": "the following arguments are required",
    }
    for line, expected in cases.items():
        error = run(shell, line)
        if expected is None:
            assert error is None, (line, error)
            continue
        assert isinstance(error, UsageError), (line, error)
        assert expected in str(error) and "\n" not in str(error), (line, str(error))
    assert sorted(p.name for p in here.rglob("*")) == ["a.txt", "dir"]
    assert leftovers(here, there) == []
    assert shell.ev("rsys.platform") == os.sys.platform  # the connection still answers


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs, mounted for the test (as root) and unmounted after."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"the full-disk test mounts a tmpfs (needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_on_either_side_is_one_line_and_leaves_nothing(lab, small_disk):
    shell, here, there = lab
    (there / "big.bin").write_bytes(os.urandom(3_000_000))
    (here / "big.bin").write_bytes(os.urandom(3_000_000))
    error = run(shell, f"%rpyc_get lab:{there / 'big.bin'} {small_disk}")
    assert isinstance(error, UsageError), error
    assert str(error) == f"cannot write {small_disk / 'big.bin'}: No space left on device", str(error)
    error = run(shell, f"%rpyc_put big.bin lab:{small_disk}")
    assert isinstance(error, UsageError), error
    assert str(error) == f"lab:{small_disk}/big.bin: No space left on device" or \
        str(error).endswith("No space left on device"), str(error)
    assert list(small_disk.iterdir()) == []  # no partial file, no temporary file
    assert shell.ev("rsys.platform") == os.sys.platform
    assert run(shell, f"%rpyc_get lab:{there / 'big.bin'} here.bin") is None  # and it still copies


def test_no_reply_within_the_timeout_names_the_setting(pair):
    """A chunk the server takes too long to answer: TimeoutError naming the setting, no value bound,
    nothing left on the server once the late replies are in."""
    pair.execute("import numpy as np; A = np.zeros(4 * 2**20 // 8)")
    link = transfer.link_of(pair)
    real_read = link.helper.functions["read"]
    pair.execute("import time\ndef slow_read(*args):\n    time.sleep(1.5)\n    return real_read(*args)")
    pair.namespace["real_read"] = real_read
    link.helper.functions["read"] = pair.namespace["slow_read"]
    rpyc_timeout = pair._config["sync_request_timeout"]
    pair._config["sync_request_timeout"] = 0.5
    try:
        with pytest.raises(TimeoutError) as info:
            transfer.pull_values(link, pair.namespace, ["A"], progress=False)
        assert "no data for 0.5 s" in str(info.value) and "RpycMagics.timeout" in str(info.value), info.value
    finally:
        link.helper.functions["read"] = real_read
        pair._config["sync_request_timeout"] = rpyc_timeout
    assert wait_until(lambda: len(real_read.__self__.states) == 0, 15)  # the late replies came, close ran
    assert np.array_equal(ipyrpyc.pull(pair, "A", progress=False), np.zeros(4 * 2**20 // 8))


def test_progress_bar_in_a_terminal_only_for_slow_copies_and_off_by_a_trait(shell, tmp_path, capsys):
    server = StockServer()
    proxy = DelayProxy(("127.0.0.1", server.port), delay=0.3)
    (tmp_path / "data.bin").write_bytes(os.urandom(24 << 20))
    try:
        shell.run_line_magic("rpyc_connect", f"127.0.0.1:{proxy.port} --name slow")
        capsys.readouterr()
        assert run(shell, f"%rpyc_get slow:{tmp_path / 'data.bin'} {tmp_path / 'a.bin'}") is None
        bar = capsys.readouterr().err
        assert "data.bin: 100%" in bar and "24.0M/24.0M" in bar and "B/s]" in bar, bar
        shell.run_line_magic("config", "RpycMagics.progress = False")
        assert run(shell, f"%rpyc_get slow:{tmp_path / 'data.bin'} {tmp_path / 'b.bin'}") is None
        assert "100%" not in capsys.readouterr().err
        shell.run_line_magic("config", "RpycMagics.progress = True")
        proxy.delay = 0.0
        assert run(shell, f"%rpyc_get slow:{tmp_path / 'data.bin'} {tmp_path / 'c.bin'}") is None
        assert "100%" not in capsys.readouterr().err  # quick: no bar
    finally:
        shell.run_line_magic("rpyc_disconnect", "--all")
        proxy.stop()
        server.stop()


def test_pull_and_push_magics_copy_frames_and_arrays(lab):
    shell, here, there = lab
    shell.user_ns["local"] = np.arange(2_000_000, dtype="<i4")[::2]
    assert run(shell, "%%rpyc lab --push local --pull df,arr\n"
                      "import numpy as np, pandas as pd\n"
                      "df = pd.DataFrame({'x': np.arange(3), 's': ['a', 'b', None]},\n"
                      "                  index=pd.Index(list('pqr'), name='k'))\n"
                      "arr = local[::-1].copy()") is None
    assert_same(shell.user_ns["df"], pd.DataFrame({"x": np.arange(3), "s": ["a", "b", None]},
                                                  index=pd.Index(list("pqr"), name="k")))
    assert_same(shell.user_ns["arr"], np.arange(2_000_000, dtype="<i4")[::2][::-1].copy())


def test_ctrl_c_at_any_moment_of_a_pull_leaves_the_connection_in_step(shell):
    """SIGINT lands anywhere: in a reply's frame half-read, between chunks.  Ctrl-C during a copy only
    sets a flag (the copy stops between messages), so every time the next call answers at once;
    raising KeyboardInterrupt wherever it lands broke the connection about half of the time."""
    shell.run_line_magic("rpyc_connect", "--name lab")
    try:
        shell.run_cell("%%rpyc lab\nimport numpy as np\nA = np.zeros(50_000_000)")
        interrupted = 0
        for i in range(12):
            timer = threading.Timer(0.05 + 0.013 * i, lambda: os.kill(os.getpid(), signal.SIGINT))
            timer.start()
            try:
                result = shell.run_cell("%%rpyc lab --pull A\n1", silent=True)
                timer.join()
                time.sleep(0.01)  # a late signal lands here, not in the checks below
            except KeyboardInterrupt:
                continue  # the copy had ended before the signal came
            if isinstance(result.error_in_exec, KeyboardInterrupt):
                interrupted += 1
                assert "A" not in shell.user_ns
            started = time.monotonic()
            assert shell.ev("str(rsys.platform)") == sys.platform
            assert time.monotonic() - started < 0.5
        assert interrupted >= 8, interrupted
    finally:
        shell.run_line_magic("rpyc_disconnect", "--all")


def test_a_checksum_that_differs_refuses_the_copy_on_either_side(pair, tmp_path, monkeypatch):
    """What arrived is hashed where it is written and compared with the sender's sha256: a byte changed
    on the way means an error naming the file, and no file."""
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3_000_000))
    link = transfer.link_of(pair)
    real_write = transfer._LocalFile.write

    def corrupting(self, data):
        data = bytearray(data)
        data[0] ^= 1
        real_write(self, bytes(data))

    monkeypatch.setattr(transfer._LocalFile, "write", corrupting)
    with pytest.raises(ipyrpyc.TransferError, match="sha256 of the data differs"):
        transfer.get(link, str(source), str(tmp_path / "got.bin"), progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.bin"]
    helper, tid = link.helper, "t1"
    helper.functions["fcreate"](tid, str(tmp_path / "put.bin"), (), 4, 0, 0o644, False, False)
    helper.functions["fwrite"](tid, 0, b"data")
    with pytest.raises(ValueError, match="sha256 of what arrived differs"):
        helper.functions["fcommit"](tid, hashlib.sha256(b"other").hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.bin"]
