"""Paths, the platform seam for where things live. A service's state follows each platform's
conventions through the service files in packaging/ (docs/PLATFORMS.md), which pass --db."""
import os


def home_of_current_user():
    """The home folder of the user this process runs as (the password database where there is
    one, not $HOME, which sudo may have kept), or /nonexistent (as nobody's is)."""
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_dir or "/nonexistent"
    except (ImportError, AttributeError):           # Windows: no password database
        return os.path.expanduser("~")
    except KeyError:
        return "/nonexistent"

