"""How the command-line entry points end: a user's mistake is a line or two, not a traceback.

``python -m experiments.train`` and ``experiments.evaluate`` run their ``main`` through
:func:`clean_errors`: an error a user can fix (a bad value, another run in the workdir, a full
disk) prints ``error: <what was expected, what arrived, what to do>`` and exits with status 1;
``--verbose`` (or ``JAXEBM_VERBOSE=1``) shows the traceback as well.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from absl import flags

__all__ = ["USER_ERRORS", "clean_errors", "define_flags", "is_verbose"]

# What a user can cause and fix: bad values and shapes (ValueError, TypeError), files and disks
# (OSError), a run that cannot go on (RuntimeError: divergence, a busy workdir).
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_bool("verbose", False, "Show the traceback of an error (also: JAXEBM_VERBOSE=1).")


def is_verbose() -> bool:
    from_flag = "verbose" in FLAGS and FLAGS.is_parsed() and FLAGS.verbose
    return bool(from_flag) or os.environ.get("JAXEBM_VERBOSE", "") not in ("", "0")


def clean_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """``main`` that ends a :data:`USER_ERRORS` with a short message and status 1."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except USER_ERRORS as error:
            if is_verbose():
                raise
            print(f"error: {error}", file=sys.stderr)
            print("(--verbose or JAXEBM_VERBOSE=1 shows the traceback)", file=sys.stderr)
            sys.exit(1)

    return wrapped
