"""Reading a pool file of any known format, detected from its content."""

from __future__ import annotations

import stat
from pathlib import Path

from optscale_jax.io._common import PoolFormatError
from optscale_jax.io.official import read_official
from optscale_jax.io.parquet import read_parquet
from optscale_jax.io.search_and_learn import read_search_and_learn
from optscale_jax.pool import Pool

__all__ = ["POOL_FORMATS", "detect_format", "read_pool"]

#: Pool file formats :func:`read_pool` reads.
POOL_FORMATS: tuple[str, ...] = ("parquet", "search_and_learn", "official")


def _check_pool_file(path: Path) -> None:
    """A readable, non-empty regular file (not a directory, FIFO, device or symlink loop)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PoolFormatError(path, None, None, "no such file") from None
    except OSError as exc:  # symlink loop, permission denied, name too long ...
        raise PoolFormatError(path, None, None, f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise PoolFormatError(path, None, None, "is a directory; expected a pool file (Parquet, JSON Lines or JSON)")
    if not stat.S_ISREG(st.st_mode):
        raise PoolFormatError(path, None, None, "is not a regular file (a FIFO, socket or device); expected a pool file")
    if st.st_size == 0:
        raise PoolFormatError(path, None, None, "is empty; expected a pool file (Parquet, JSON Lines or JSON)")


def detect_format(path: str | Path) -> str:
    """Guess a pool file's format: ``"parquet"``, ``"search_and_learn"`` or ``"official"``.

    Parquet by its magic bytes; otherwise JSON Lines when the first non-blank character
    is ``{`` and JSON (the official list format) when it is ``[``.

    Args:
        path: the file.

    Returns:
        The format name.
    """
    path = Path(path)
    _check_pool_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise PoolFormatError(path, None, None, f"cannot read it ({exc.strerror or exc})") from None
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        raise PoolFormatError(path, None, None, "is gzip-compressed; decompress it first (gunzip)")
    if head[:4] == b"PK\x03\x04":
        raise PoolFormatError(path, None, None, "is a zip archive; extract the pool file first")
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 byte-order mark is skipped
    if stripped.startswith(b"{"):
        return "search_and_learn"
    if stripped.startswith(b"["):
        return "official"
    raise PoolFormatError(path, None, None, "unknown pool format (not Parquet, JSON Lines or a JSON list)")


def read_pool(
    path: str | Path,
    *,
    format: str = "auto",
    prompts: str | Path | None = None,
    dataset: str | None = None,
    aggregate: str = "mean",
) -> Pool:
    """Read a pool in any known format, detected from the file's content.

    Args:
        path: the pool file.
        format: ``"auto"``, ``"parquet"``, ``"search_and_learn"`` or ``"official"``.
        prompts: prompts file with gold answers (official format only).
        dataset: dataset name override (JSON formats).
        aggregate: step-score aggregation for the JSON formats, one of :data:`optscale_jax.scores.AGGREGATIONS`.

    Returns:
        The pool, with at least one question.

    Raises:
        PoolFormatError: naming the file (and record, field) for a missing, empty,
            compressed or malformed file, a pool without questions, non-UTF-8 text, or
            ``prompts`` given with a format that does not read them.
    """
    path = Path(path)
    if format == "auto":
        fmt = detect_format(path)
    else:
        _check_pool_file(path)
        fmt = format
    if fmt not in POOL_FORMATS:
        raise ValueError(f"unknown pool format {fmt!r}: use auto, parquet, search_and_learn or official")
    if prompts is not None and fmt != "official":
        raise PoolFormatError(
            prompts, None, None,
            f"a prompts file is only read with the authors' JSON pool format; {path} is {fmt} "
            "(its gold answers come from the pool itself)",
        )
    try:
        if fmt == "parquet":
            pool = read_parquet(path)
            if dataset is not None:
                pool = pool.replace(dataset=str(dataset))
        elif fmt == "search_and_learn":
            pool = read_search_and_learn(path, dataset=dataset, aggregate=aggregate)
        else:
            pool = read_official(path, prompts, dataset=dataset, aggregate=aggregate)
    except UnicodeDecodeError as exc:
        raise PoolFormatError(path, None, None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError as exc:
        raise PoolFormatError(exc.filename or path, None, None, "is a directory; expected a file") from None
    except FileNotFoundError as exc:
        raise PoolFormatError(exc.filename or path, None, None, "no such file") from None
    if pool.n_questions == 0:
        raise PoolFormatError(path, None, None, "has no questions")
    return pool

