#!/usr/bin/env python3
"""NetTally command line.

  sudo python run.py [-i IFACE ...] [-f BPF] [--db PATH] [--host ADDR] [--port N]   capture + dashboard
  python run.py import FILE [FILE ...] [--db PATH]
  python run.py serve [--db PATH] [--host ADDR] [--port N]
  python run.py export {flows,hosts,processes,alerts} [--db PATH] [--since T] [--until T]
                       [--format csv|json] [-o FILE]

Exit status: 0 done; 2 bad usage or unreadable input (one line on stderr); 3 a capture file was
damaged part-way (everything before the damage was imported).
"""
import argparse
import os
import signal
import sys

import settings as settings_mod

EXIT_OK, EXIT_USAGE, EXIT_DAMAGED, EXIT_INTERRUPTED = 0, 2, 3, 130
COMMANDS = ("import", "serve", "export")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):        # one line, exit 2, no usage dump
        raise UsageError(message)


def _common(p, with_web=False):
    p.add_argument("--db", help=settings_mod.help_of("db"))
    p.add_argument("--config", help=settings_mod.help_of("config"))
    if with_web:
        p.add_argument("--host", help=settings_mod.help_of("host"))
        p.add_argument("--port", type=int, help=settings_mod.help_of("port"))


def parser_for(command):
    if command == "import":
        p = _Parser(prog="run.py import", description="Import pcap / pcapng / gzip'd capture files (no root needed).")
        p.add_argument("files", nargs="+", metavar="FILE")
        _common(p)
        return p
    if command == "serve":
        p = _Parser(prog="run.py serve", description="Serve the dashboard and API over an existing database.")
        _common(p, with_web=True)
        return p
    if command == "export":
        p = _Parser(prog="run.py export", description="Export counts as CSV or JSON.")
        p.add_argument("table", choices=("flows", "hosts", "processes", "alerts"))
        _common(p)
        p.add_argument("--since", help="start time: epoch seconds, ISO 8601, or relative like 1h, 30m, 7d (ago)")
        p.add_argument("--until", help="end time, same forms (exclusive)")
        p.add_argument("--format", choices=("csv", "json"), default="csv")
        p.add_argument("-o", "--output", help="file to write (default: standard output)")
        return p
    p = _Parser(prog="run.py", description="Capture on this host's interfaces and serve the dashboard (root).")
    p.add_argument("-i", "--interface", action="append", dest="interfaces", metavar="IFACE",
                   help=settings_mod.help_of("interfaces"))
    p.add_argument("-f", "--filter", dest="bpf", metavar="BPF", help=settings_mod.help_of("bpf"))
    p.add_argument("-c", "--count", type=int, help=settings_mod.help_of("count"))
    p.add_argument("--duration", type=float, help=settings_mod.help_of("duration"))
    p.add_argument("--no-web", action="store_true", help="capture only, no dashboard")
    p.add_argument("--flush-interval", type=float, dest="flush_interval", help=settings_mod.help_of("flush_interval"))
    p.add_argument("--max-flows", type=int, dest="max_flows", help=settings_mod.help_of("max_flows"))
    _common(p, with_web=True)
    return p


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
        if command == "import":
            return cmd_import(settings, args["files"])
        if command == "export":
            return cmd_export(settings, args)
        if command == "serve":
            from web.serve import serve
            return serve(settings)
        from capture.service import run_service
        return run_service(settings, web=not args.get("no_web"))
    except UsageError as e:
        print(f"run.py{'' if command == 'capture' else ' ' + command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:         # `run.py export ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:      # a bug: one line, the traceback only on request
        if os.environ.get("NETTALLY_DEBUG"):
            raise
        print(f"run.py: unexpected error: {type(e).__name__}: {e} (NETTALLY_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


def cmd_import(settings, files):
    from alerts.config import load_rules
    from storage.db import DatabaseError, connect
    from storage.writer import RollupStore

    try:
        load_rules(settings)                 # a bad rules file: one line, before any work
        store = RollupStore(connect(settings.db))
    except (DatabaseError, ValueError) as e:
        raise UsageError(str(e)) from None
    stop_asked = []                 # Ctrl-C or SIGTERM: the import ends after the batch at hand
    before = {signum: signal.signal(signum, lambda signum, frame: stop_asked.append(signum))
              for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _import_files(settings, files, store, stop_asked)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _import_files(settings, files, store, stop_asked):
    from capture.capfile import CaptureError
    from capture.flows import FlowTable
    from capture.offline import import_file
    from storage.db import DatabaseError
    from storage.import_writer import ImportWriter
    from alerts.service import evaluate_import
    from storage.tiers import build_pending

    status = EXIT_OK
    for path in files:
        table = FlowTable(idle_timeout=settings.idle_timeout, active_timeout=settings.active_timeout,
                          max_flows=settings.max_flows)
        source = store.begin_source("file", path)
        writer = ImportWriter(settings.db)   # SQLite on the other core
        tally = _ImportTally(writer.submit)
        try:
            try:
                result = import_file(path, tally, table, stop=lambda: bool(stop_asked))
            finally:
                writer.close()
        except DatabaseError as e:
            raise UsageError(str(e)) from None
        except CaptureError as e:
            store.end_source(source, 0, damage=str(e))
            print(f"run.py import: {e}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
        if writer.span:
            spans = [writer.span] + ([store.span] if store.span else [])
            store.span = (min(s[0] for s in spans), max(s[1] for s in spans))
        if result.interrupted:
            store.end_source(source, result.frames, result.clamped, damage="interrupted")
            print(f"{path}: interrupted after {result.frames} frames ({tally.summary()}); what was counted is stored")
            status = EXIT_INTERRUPTED
            break
        store.end_source(source, result.frames, result.clamped, result.damage)
        line = f"{path}: {result.frames} frames ({tally.summary()})"
        if result.clamped:
            line += f", {result.clamped} wire lengths clamped to 262144"
        if result.bad_times:
            line += f", {result.bad_times} timestamps outside 1970-9999 clamped"
        if result.damage:
            line += f"; stopped early: {result.damage}"
            status = max(status, EXIT_DAMAGED)
        print(line)
    if store.span:                           # the alert rules, on the capture's own timeline
        for line in evaluate_import(settings, store.con, *store.span):
            print(line)
    build_pending(store.con)                 # hour and day tiers of what was imported
    return status


class _ImportTally:
    """A rollup sink that passes rollups on and keeps the figures for the import's summary line."""

    def __init__(self, sink):
        self.sink = sink
        self.ip = self.non_ip = self.undecodable = 0
        self.reasons = {}

    def __call__(self, rollups):
        for rollup in rollups:
            for c in rollup.interfaces.values():
                self.ip += c[2]
                self.non_ip += c[4]
                self.undecodable += c[6]
            for (_, reason), c in rollup.undecodable.items():
                self.reasons[reason] = self.reasons.get(reason, 0) + c[0]
        self.sink(rollups)

    def summary(self):
        text = f"{self.ip} IP, {self.non_ip} non-IP, {self.undecodable} undecodable"
        if self.reasons:
            text += ": " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.reasons.items()))
        return text


def cmd_export(settings, args):
    from storage import queries
    from storage.db import DatabaseError, connect
    from storage.export import flow_row, render
    from storage.timerange import parse_time

    try:
        since, until = parse_time(args["since"]), parse_time(args["until"])
        con = connect(settings.db, readonly=True)
    except (ValueError, DatabaseError) as e:
        raise UsageError(str(e)) from None
    table = args["table"]
    fields = None
    if table == "flows":
        rows = [flow_row(r) for r in queries.flows_between(con, since, until)]
    elif table == "hosts":
        rows = queries.top_hosts(con, since, until)
    elif table == "processes":
        from storage.processes import process_totals
        rows = process_totals(con, since, until)
    else:
        from storage.alerts import ALERT_FIELDS, alert_rows_for_export
        rows, fields = alert_rows_for_export(con, since, until), ALERT_FIELDS
    text = render(table, rows, args["format"], fields)
    if args["output"]:
        try:
            with open(args["output"], "w", newline="") as f:
                f.write(text)
        except OSError as e:
            raise UsageError(f"cannot write {args['output']}: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
