"""Errors a user can fix (missing data, a wrong checkpoint, bad sizes): one line, no traceback."""
import sys

DIVERGED_EXIT = 3  # a stage whose loss became NaN: a result (run_all.py goes on), not a crash (1) or user error (2)


class UserError(RuntimeError):
    """Bad input from the user (missing data, wrong checkpoint, bad sizes): reported without a traceback."""


class DataError(UserError):
    """The dataset is missing or unreadable; the message says what to do."""



class CheckpointError(UserError):
    """A checkpoint that cannot be used for what was asked; the message says why."""


class DiskFullError(UserError):
    """No room to write a file (disk full, quota, file-size limit): the user frees space and reruns; the old file is kept."""



class DivergedError(RuntimeError):
    """The training loss became NaN or infinite (epoch: 1-based): a result, reported in one line with its own
    exit code (DIVERGED_EXIT), neither a user error nor a crash."""

    def __init__(self, message, epoch):
        super().__init__(message)
        self.epoch = epoch



def die(message, code=2):
    """Clean exit for a user error: one clear message, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
