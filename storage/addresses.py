"""What is known about an address besides its counts: its MAC (ARP) and its name (DNS answers,
announcements, DHCP), for the hosts, flows and host pages. Conventions as in storage/reads.py."""
import sqlite3


def macs_of(con, ips):
    """ip -> MAC for the addresses whose ARP announcements were seen (IPv4 on Ethernet)."""
    return _by_ip(con, "SELECT ip, mac FROM host_macs", ips)


def names_of(con, ips):
    """ip -> name for the addresses named on the wire (DNS answers, announcements, DHCP)."""
    return _by_ip(con, "SELECT ip, name FROM host_names", ips)


def _by_ip(con, select, ips):
    out = {}
    ips = list(dict.fromkeys(ips))
    try:
        for i in range(0, len(ips), 500):          # SQLite's bound on parameters per statement
            chunk = ips[i:i + 500]
            out.update(con.execute(f"{select} WHERE ip IN ({','.join('?' * len(chunk))})", chunk).fetchall())
    except sqlite3.OperationalError:      # a database older than the table, read but never migrated here
        return {}
    return out
