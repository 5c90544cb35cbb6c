"""ipyrpyc's tests (a package, so that ``tests.support`` is importable by the benchmark too)."""
