"""Service or container of a process, from /proc/PID/cgroup, so traffic can be grouped by it.

`unit_of(text)` is pure (the file's text in, a label out); `read_unit(pid)` reads the file.
Labels: a container as `docker:<id12>`, `podman:<id12>`, `containerd:<id12>`, `cri-o:<id12>`,
`lxc:<name>`; otherwise the innermost systemd unit (`nginx.service`, `session-3.scope`);
"" when the process is in no unit we recognise (the root cgroup, a non-systemd host).
"""
import re

_CONTAINERS = (
    (re.compile(r"(?:^|/)docker[-/]([0-9a-f]{12,64})(?:\.scope)?(?:/|$)"), "docker"),
    (re.compile(r"(?:^|/)libpod-(?:conmon-)?([0-9a-f]{12,64})(?:\.scope)?(?:/|$)"), "podman"),
    (re.compile(r"(?:^|/)cri-containerd-([0-9a-f]{12,64})(?:\.scope)?(?:/|$)"), "containerd"),
    (re.compile(r"(?:^|/)crio-([0-9a-f]{12,64})(?:\.scope)?(?:/|$)"), "cri-o"),
    (re.compile(r"(?:^|/)kubepods[^\n]*/pod[0-9a-f_-]+/([0-9a-f]{12,64})(?:/|$)"), "containerd"),
)
_LXC = re.compile(r"(?:^|/)lxc(?:\.payload\.|/)([^/]+)")
_UNIT = re.compile(r"\.(service|scope)$")


def unit_of(text):
    """Label for the contents of a /proc/PID/cgroup file."""
    paths = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        # the unified (v2) hierarchy and systemd's own v1 hierarchy name units; look there first
        rank = 0 if hierarchy == "0" and controllers == "" else 1 if controllers == "name=systemd" else 2
        paths.append((rank, path.strip()))
    paths.sort(key=lambda p: p[0])
    for _, path in paths:
        for pattern, kind in _CONTAINERS:
            m = pattern.search(path)
            if m:
                return f"{kind}:{m.group(1)[:12]}"
        m = _LXC.search(path)
        if m:
            return f"lxc:{m.group(1)}"
    for rank, path in paths:
        if rank == 2:
            break
        for part in reversed(path.split("/")):
            if _UNIT.search(part):
                return part
    return ""


def read_unit(pid, proc="/proc"):
    """Label of a live process; "" if it is gone or its cgroup file cannot be read."""
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            return unit_of(f.read(65536))
    except (OSError, UnicodeDecodeError):
        return ""
