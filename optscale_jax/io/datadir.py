"""Where the shared real data (benchmarks, pools, priors) lives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data_dir"]


def shared_data_dir() -> Path | None:
    """Location of the shared real data, if present.

    ``$OPTSCALE_DATA`` when set, else ``../shared/data`` next to the repository or the
    current directory.

    Returns:
        The directory, or ``None`` when it cannot be found.
    """
    env = os.environ.get("OPTSCALE_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None

