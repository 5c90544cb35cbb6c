"""The benchmark: plain rpyc against ipyrpyc in real kernels (``python -m benchmarks.run``)."""
