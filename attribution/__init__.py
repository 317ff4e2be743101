"""Per-process attribution: every byte of this host's own traffic charged to the process that sent
or received it, and what could not be, by reason (docs/ATTRIBUTION.md).

    service.py   the Attributor the collector calls: observe / tick / attribute
    cache.py     who owns which socket: table reads, kernel events, memory; pid + start time
    join.py      pure: flow sides -> processes, per-process deltas, coverage by reason
    table.py     pure: the plain socket table and its keys
    sockets.py   the psutil adapter (the only module importing psutil): table, processes, addresses
    linux.py     Linux fast path: netlink sock_diag + inode map; other network namespaces
    events.py    Linux kernel socket events (tracefs): owners of sockets that lived between reads
    cgroup.py    systemd unit or container of a process
"""
