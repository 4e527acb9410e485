"""The two failures a user sees: bad input (exit 2) and a failed check (exit 1).

Both carry a one-line message that names the file or value and the fix; the CLI prints it without
a traceback.
"""


class UserError(Exception):
    """Bad usage or bad input: the CLI prints the message and exits 2."""

    exit_code = 2


class CheckFailed(Exception):
    """A check the user asked for did not hold (parity, accuracy gate): exit 1."""

    exit_code = 1
