"""The compiled parts: capture/_tcp_health.c (TCP health's per-segment analysis) and
capture/_steady.c (the flow table's path for frames of flows it holds). Everything else about the
package is in pyproject.toml. Optional: without a compiler the build goes on and the Python code
they were written from (capture/tcp_health.py, capture/flows.py) does the same work, slower."""
from setuptools import Extension, setup

setup(ext_modules=[Extension(name, [source], optional=True, extra_compile_args=["-O2"])
                   for name, source in (("capture._tcp_health", "capture/_tcp_health.c"),
                                        ("capture._steady", "capture/_steady.c"))])
