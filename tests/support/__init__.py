"""What the tests (and ``benchmarks``) share: processes and servers, real kernels, a
loopback-only network guard, request counting, throwaway certificates and the shared
IPython shell.  Fixtures stay in ``tests/conftest.py``."""
