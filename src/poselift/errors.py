"""The one exception type for bad user input.

Every reader raises :class:`InputError` with the offending file and a short statement of the
problem; the CLI prints it as one line and exits non-zero.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input: ``"<path>: <problem>"`` on one line."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")
