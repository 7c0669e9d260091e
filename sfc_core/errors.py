"""The one exception the kit raises for bad input: what is wrong, where, and how to fix it."""
from __future__ import annotations

from pathlib import Path


class SfcError(Exception):
    """A user-facing error. The CLI prints it without a traceback and exits with status 2.

    ``SfcError("image list names 3 missing images", path="data/x/ImageSets/...",
    fix="regenerate the list or add the images")`` prints as::

        error: image list names 3 missing images
          file: data/x/ImageSets/...
          fix:  regenerate the list or add the images
    """

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None):
        self.problem, self.path, self.fix = problem, path, fix
        lines = [problem]
        if path is not None:
            lines.append(f"  file: {path}")
        if fix:
            lines.append(f"  fix:  {fix}")
        super().__init__("\n".join(lines))
