"""The search box of the hosts, processes and flows pages (`q`): what a text matches, as SQL
conditions the read modules add to their queries. Case-insensitive (SQLite's LIKE, ASCII),
every `%`, `_` and `\\` of the text taken literally; the text is the user's, bounded by the caller
(web/params.py), and only ever a bound parameter."""
from storage.reads import source

ESCAPE = "ESCAPE '\\'"


def _escaped(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(text):
    return f"%{_escaped(text)}%"


def prefix(text):
    return f"{_escaped(text)}%"


def _names_like(column):
    return f"{column} IN (SELECT ip FROM host_names WHERE name LIKE ? {ESCAPE})"


def host_match(con, q, family_tier, lo, hi):
    """(condition on `ip`, args): the address starts with `q`; or its name (DNS, mDNS, DHCP),
    an application or service it used in [lo, hi) (the host_app tier `family_tier`), or the
    server name (TLS SNI, HTTP Host) of a flow it served contains `q`."""
    c = contains(q)
    apps, args = source(con, "host_app", family_tier, lo, hi, "ip", f"AND (app LIKE ? {ESCAPE} OR service LIKE ? {ESCAPE})",
                        [c, c])
    sql = (f"(ip LIKE ? {ESCAPE} OR {_names_like('ip')} OR ip IN (SELECT ip FROM ({apps})) "
           f"OR ip IN (SELECT f.resp_h FROM flows f JOIN flow_names n ON n.flow_id = f.id "
           f"WHERE n.server_name LIKE ? {ESCAPE}))")
    return sql, [prefix(q), c, *args, c]


def process_match(con, q, family_tier, lo, hi, column="p"):
    """(condition on the processes row `column`, args): its name or command line contains `q`,
    `q` is its pid, or it used an application or service containing `q` in [lo, hi)."""
    c = contains(q)
    apps, args = source(con, "process_app", family_tier, lo, hi, "process_id",
                        f"AND (app LIKE ? {ESCAPE} OR service LIKE ? {ESCAPE})", [c, c])
    sql = (f"({column}.name LIKE ? {ESCAPE} OR {column}.cmdline LIKE ? {ESCAPE} "
           f"OR {column}.id IN (SELECT process_id FROM ({apps}))")
    out = [c, c, *args]
    if q.isascii() and q.isdigit() and len(q) <= 10:
        sql += f" OR {column}.pid = ?"
        out.append(int(q))
    return sql + ")", out


def flow_match(q):
    """(condition on flows joined to flow_names `n`, args): either address starts with `q`; or
    either side's name or process, the application, service or server name contains it."""
    c = contains(q)
    sql = (f"(orig_h LIKE ? {ESCAPE} OR resp_h LIKE ? {ESCAPE} OR n.app LIKE ? {ESCAPE} OR n.service LIKE ? {ESCAPE} "
           f"OR n.server_name LIKE ? {ESCAPE} OR orig_process LIKE ? {ESCAPE} OR resp_process LIKE ? {ESCAPE} "
           f"OR {_names_like('orig_h')} OR {_names_like('resp_h')})")
    return sql, [prefix(q), prefix(q), c, c, c, c, c, c, c]
