#!/usr/bin/env python3
"""NetTally command line.

  sudo python run.py [-i IFACE ...] [-f BPF] [--db PATH] [--host ADDR] [--port N]   capture + dashboard
  python run.py import FILE [FILE ...] [--db PATH]
  python run.py serve [--db PATH] [--host ADDR] [--port N]
  python run.py export {flows,hosts,processes,alerts} [--db PATH] [--since T] [--until T]
                       [--format csv|json] [-o FILE]
  python run.py forecast {all,iface:NAME,host:ADDRESS,class:NAME} [--horizon 24h|7d] [--db PATH]
                       [--format text|json]

Exit status: 0 done; 2 bad usage or unreadable input (one line on stderr); 3 a capture file was
damaged part-way (everything before the damage was imported).
"""
import argparse
import os
import sys

import settings as settings_mod

from runtime.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from runtime.version import VERSION

COMMANDS = ("import", "serve", "export", "forecast")
_COMMANDS_HELP = """commands (run.py COMMAND --help for each):
  (none)    capture on this host's interfaces and serve the dashboard (root): the options above
  import    count pcap / pcapng / gzip'd capture files into the database (no root needed)
  serve     serve the dashboard and API over an existing database
  export    write flows, hosts, processes or alerts as CSV or JSON
  forecast  the next 24 hours or 7 days of a subject's traffic, with 80% and 95% bands

settings: every option is also a config file key (--config FILE, TOML) and an environment
variable NETTALLY_<NAME>; the README lists them all."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):        # one line, exit 2, no usage dump
        raise UsageError(message)


def _common(p, with_web=False, agent=None):
    p.add_argument("--db", help=settings_mod.help_of("db"))
    if agent:
        p.add_argument("--agent", metavar="NAME", help=agent)
    p.add_argument("--config", help=settings_mod.help_of("config"))
    if with_web:
        p.add_argument("--host", help=settings_mod.help_of("host"))
        p.add_argument("--port", type=int, help=settings_mod.help_of("port"))


def parser_for(command):
    if command == "import":
        p = _Parser(prog="run.py import", description="Import pcap / pcapng / gzip'd capture files (no root needed).")
        p.add_argument("files", nargs="+", metavar="FILE")
        p.add_argument("--force", action="store_true",
                       help="import a file even if the same content was imported before (its counts add up again)")
        _common(p, agent=settings_mod.help_of("agent"))
        return p
    if command == "serve":
        p = _Parser(prog="run.py serve", description="Serve the dashboard and API over an existing database.")
        _common(p, with_web=True)
        return p
    if command == "export":
        p = _Parser(prog="run.py export", description="Export counts as CSV or JSON.")
        p.add_argument("table", choices=("flows", "hosts", "processes", "alerts"))
        _common(p, agent="only what this agent counted (default: every agent's counts, added up)")
        p.add_argument("--since", help="start time: epoch seconds, ISO 8601, or relative like 1h, 30m, 7d (ago)")
        p.add_argument("--until", help="end time, same forms (exclusive)")
        p.add_argument("--format", choices=("csv", "json"), default="csv")
        p.add_argument("-o", "--output", help="file to write (default: standard output)")
        return p
    if command == "forecast":
        from foresight.horizons import HORIZONS
        p = _Parser(prog="run.py forecast", description="Forecast a subject's traffic from the stored hours (pandas).")
        p.add_argument("subject", help="all, iface:NAME, host:ADDRESS or class:NAME")
        p.add_argument("--horizon", choices=tuple(HORIZONS), default="24h", help="the next 24 hours (hourly) or 7 days (daily)")
        p.add_argument("--format", choices=("text", "json"), default="text")
        _common(p, agent="only what this agent counted (default: every agent's counts, added up)")
        return p
    p = _Parser(prog="run.py", description="Capture on this host's interfaces and serve the dashboard (root).",
                epilog=_COMMANDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"NetTally {VERSION}")
    p.add_argument("-i", "--interface", action="append", dest="interfaces", metavar="IFACE",
                   help=settings_mod.help_of("interfaces"))
    p.add_argument("-f", "--filter", dest="bpf", metavar="BPF", help=settings_mod.help_of("bpf"))
    p.add_argument("-c", "--count", type=int, help=settings_mod.help_of("count"))
    p.add_argument("--duration", type=float, help=settings_mod.help_of("duration"))
    p.add_argument("--no-web", action="store_true", help="capture only, no dashboard")
    p.add_argument("--flush-interval", type=float, dest="flush_interval", help=settings_mod.help_of("flush_interval"))
    p.add_argument("--max-flows", type=int, dest="max_flows", help=settings_mod.help_of("max_flows"))
    p.add_argument("--capture-backend", dest="capture_backend", choices=("auto", "ring", "pcap"),
                   help=settings_mod.help_of("capture_backend"))
    _common(p, with_web=True, agent=settings_mod.help_of("agent"))
    return p


def _share_db(settings):
    """The db_group setting on the database (created now if missing) before any pipeline opens it."""
    from storage.db import DatabaseError, share_with_group
    if settings.db_group or os.path.exists(settings.db):
        try:
            share_with_group(settings.db, settings.db_group)
        except DatabaseError as e:
            raise UsageError(str(e)) from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else "capture"
    args_in = argv[1:] if command != "capture" else argv
    try:
        args = vars(parser_for(command).parse_args(args_in))
        try:
            settings = settings_mod.build(args)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if command in ("import", "capture"):
            _share_db(settings)
        # each pipeline loads only what it needs: `export` never loads scapy, `--no-web` never Flask
        if command == "import":
            from collector.importer import run_import
            return run_import(settings, args["files"], force=args["force"])
        if command == "export":
            from collector.exporter import run_export
            return run_export(settings, args)
        if command == "forecast":
            from collector.forecaster import run_forecast
            return run_forecast(settings, args)
        if command == "serve":
            from collector.web_process import serve
            return serve(settings)
        from collector.live import run_service
        return run_service(settings, web=not args.get("no_web"))
    except UsageError as e:
        print(f"run.py{'' if command == 'capture' else ' ' + command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:         # `run.py export ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:      # a bug: one line, the traceback only on request
        if os.environ.get("NETTALLY_DEBUG"):
            raise
        print(f"run.py: unexpected error: {type(e).__name__}: {e} (NETTALLY_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
