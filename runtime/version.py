"""NetTally's version, said by `run.py --version` and the agents page; pyproject.toml carries the
same string (tests/test_cli_core.py checks that they agree)."""
VERSION = "0.9.0"
