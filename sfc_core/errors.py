"""The one exception the kit raises for bad input: what is wrong, where, and how to fix it."""
from __future__ import annotations

from pathlib import Path


class SfcError(Exception):
    """A user-facing error, printed by the CLI as ``error: PROBLEM`` / ``  file: PATH`` /
    ``  fix:  FIX`` without a traceback (exit status 2). Re-raised by torch from a DataLoader
    worker, it is unwrapped here into the worker's problem, path and fix (its traceback kept in
    ``worker_traceback``, printed with SFC_DEBUG=1)."""

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None):
        self.worker_traceback: str | None = None
        if path is None and fix is None and problem.startswith(_WORKER_PREFIX):
            self.worker_traceback = problem
            problem, path, fix = _parse(problem[problem.rindex(_TRACEBACK_LINE) + len(_TRACEBACK_LINE):])
        self.problem, self.path, self.fix = problem, path, fix
        lines = [problem]
        if path is not None:
            lines.append(f"{_PATH_LINE}{path}")
        if fix:
            lines.append(f"{_FIX_LINE}{fix}")
        super().__init__("\n".join(lines))

    def __reduce__(self):
        """Pickled whole (path and fix too), e.g. from a side-by-side worker process."""
        return _rebuild, (self.problem, self.path, self.fix)


_PATH_LINE, _FIX_LINE = "  file: ", "  fix:  "
_WORKER_PREFIX = f"Caught {SfcError.__name__} in DataLoader worker"
_TRACEBACK_LINE = f"\n{SfcError.__module__}.{SfcError.__qualname__}: "


def _rebuild(problem: str, path: str | Path | None, fix: str | None) -> SfcError:
    return SfcError(problem, path=path, fix=fix)


def _parse(message: str) -> tuple[str, str | None, str | None]:
    """(problem, path, fix) of a message formatted by ``SfcError.__init__``."""
    problem, path, fix = [], None, None
    for line in message.rstrip("\n").split("\n"):
        if line.startswith(_PATH_LINE):
            path = line[len(_PATH_LINE):]
        elif line.startswith(_FIX_LINE):
            fix = line[len(_FIX_LINE):]
        else:
            problem.append(line)
    return "\n".join(problem), path, fix
