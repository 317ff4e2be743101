"""`run.py export`: flows, hosts, processes or alerts over a time range, as CSV or JSON."""
import sys

from names.label import add_vendors
from names.vendors import Vendors
from runtime.exits import EXIT_OK, UsageError
from storage import agents
from storage.alert_log import ALERT_FIELDS, alert_rows_for_export
from storage.db import DatabaseError, connect
from storage.export import flow_row, render
from storage.flows import flows_between
from storage.hosts import top_hosts
from storage.processes import process_totals
from storage.timerange import parse_time


def run_export(settings, args):
    """`run.py export TABLE`: one table of the database as CSV or JSON. Returns the exit status."""
    try:
        since, until = parse_time(args["since"]), parse_time(args["until"])
        con = connect(settings.db, readonly=True)
    except (ValueError, DatabaseError) as e:
        raise UsageError(str(e)) from None
    table = args["table"]
    fields = None
    with agents.only(args.get("agent")):      # --agent: that collector's counts; else every one's, added up
        if table == "flows":
            rows = [flow_row(r) for r in flows_between(con, since, until)]
        elif table == "hosts":
            rows = add_vendors(top_hosts(con, since, until), Vendors.load())
        elif table == "processes":
            rows = process_totals(con, since, until)
        else:
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
