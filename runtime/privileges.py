"""Giving up root in the web process (it needs no privilege: see web/pool.py for how it still
reads a database root made)."""
import ctypes
import os
import pwd
import signal

FALLBACK_USER = "nobody"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(Exception):
    pass


def drop_root(user):
    """As root: become `user` (or nobody when empty, unknown or root itself) for good, with no
    supplementary groups and no way back. Not root: nothing to do. Returns the user name in use."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name if _known(os.geteuid()) else str(os.geteuid())
    entry = _entry(user) or _entry(FALLBACK_USER)
    if entry is None:
        raise PrivilegeError(f"no user {user or FALLBACK_USER!r} to run the web server as")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)          # as root this sets the real, effective and saved uid
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError("could not give up root")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    return entry.pw_name


def die_with_parent():
    """Ask the kernel to end this process when its parent (the collector) dies. Set after the
    uid change: changing credentials clears it."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _entry(user):
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return None if entry.pw_uid == 0 else entry


def _known(uid):
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def _prctl(option, value):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):      # not Linux: the drop itself still happened
        pass


def home_of_current_user():
    """The home folder of the user this process runs as, or /nonexistent (as nobody's is)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir or "/nonexistent"
    except KeyError:
        return "/nonexistent"
