"""Exit statuses of every NetTally command (the command-line contract in README.md)."""
EXIT_OK = 0
EXIT_FAILED = 1          # the job ran and failed (the database went away, a process vanished)
EXIT_USAGE = 2           # bad usage or unreadable input: one line on stderr, no traceback
EXIT_DAMAGED = 3         # a capture file damaged part-way: everything before the damage was imported
EXIT_INTERRUPTED = 130   # SIGINT / SIGTERM during an import: nothing of the file at hand is stored


class UsageError(Exception):
    """Bad usage or unreadable input, said in one line; the command exits EXIT_USAGE."""
