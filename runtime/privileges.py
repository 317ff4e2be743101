"""Privileges, the platform seam: whether this process is the administrator (root on POSIX, an
elevated token on Windows), and giving up root in the web process and the tshark worker, which
need none (see web/pool.py for how the web process still reads a database root made).

Windows has no user to drop to (no setuid): there the dashboard stays on loopback unless the
token is set up, and says which user it runs as."""
import ctypes
import getpass
import os
import signal

FALLBACK_USER = "nobody"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(Exception):
    pass


def is_admin():
    """Root (POSIX) or an elevated administrator (Windows)."""
    if hasattr(os, "geteuid"):
        return os.geteuid() == 0
    try:
        return bool(ctypes.windll.shell32.IsUserAnAdmin())
    except (AttributeError, OSError):
        return False


def can_switch_user():
    return hasattr(os, "setuid") and hasattr(os, "geteuid") and _pwd() is not None


def current_user():
    """The name this process runs as (its uid where no name is known)."""
    pwd = _pwd()
    if pwd is None or not hasattr(os, "geteuid"):
        try:
            return getpass.getuser()
        except (OSError, KeyError, ImportError):
            return "unknown"
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def drop_root(user):
    """As root: become `user` (or nobody when empty, unknown or root itself) for good, with no
    supplementary groups and no way back. Not root, or a platform without users to switch to
    (Windows): nothing to do. Returns the user name in use."""
    if not can_switch_user() or os.geteuid() != 0:
        return current_user()
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
    _prctl(_PR_SET_PDEATHSIG, getattr(signal, "SIGTERM", 15))


def _pwd():
    try:
        import pwd
        return pwd
    except ImportError:             # Windows
        return None


def _entry(user):
    if not user:
        return None
    try:
        entry = _pwd().getpwnam(user)
    except KeyError:
        return None
    return None if entry.pw_uid == 0 else entry


def _prctl(option, value):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError, TypeError):    # not Linux: the drop itself still happened
        pass
