"""The compiled part: capture/_tcp_health.c (TCP health's per-segment analysis). Everything else
about the package is in pyproject.toml. Optional: without a compiler the build goes on and
capture/tcp_health.py's Python analysis does the same work, slower."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("capture._tcp_health", ["capture/_tcp_health.c"], optional=True,
                             extra_compile_args=["-O2"])])
