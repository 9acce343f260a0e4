"""Lossless Parquet pools: one row per question, pool metadata in the schema metadata."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optscale_jax.io._common import PoolFormatError
from optscale_jax.pool import Pool

__all__ = [
    "PARQUET_FORMAT_VERSION",
    "PARQUET_METADATA_KEY",
    "PARQUET_ROW_GROUP_SIZE",
    "iter_parquet_chunks",
    "read_parquet",
    "write_parquet",
]

#: Schema-metadata key of the pool's own fields (kept from the files' first home,
#: ``optscale_jax.pool``, so existing files stay readable).
PARQUET_METADATA_KEY = b"optscale_jax.pool"
#: Version of the layout :func:`write_parquet` writes.
PARQUET_FORMAT_VERSION = 1
#: Questions per row group that :func:`write_parquet` writes by default, so that
#: :func:`iter_parquet_chunks` can stream a large pool a few thousand questions at a time.
PARQUET_ROW_GROUP_SIZE = 4096


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("question_id", pa.string()),
            ("prompt", pa.string()),
            ("gold", pa.string()),
            ("scores", pa.list_(pa.float64())),
            ("tokens", pa.list_(pa.int64())),
            ("answers", pa.list_(pa.string())),
            ("answer_ids", pa.list_(pa.int32())),
            ("correct", pa.list_(pa.bool_())),
            ("empty", pa.list_(pa.bool_())),
            ("step_scores", pa.list_(pa.list_(pa.float64()))),
        ]
    )


def write_parquet(pool: Pool, path: str | Path, *, row_group_size: int = PARQUET_ROW_GROUP_SIZE) -> Path:
    """Write a pool to Parquet (one row per question), losslessly.

    Per-question lists hold only the real samples; the padded width, dataset name,
    ``synthetic`` flag, metadata and which optional fields are present go in the
    schema metadata under ``optscale_jax.pool``. Scores are stored as float64.

    Args:
        pool: the pool.
        path: output file (parent directories are created).
        row_group_size: questions per Parquet row group (the unit
            :func:`iter_parquet_chunks` reads).

    Returns:
        The path written.

    Examples:
        >>> import tempfile, os
        >>> pool = Pool.from_arrays([[0.25, 0.5], [1.0]], answers=[["1", None], ["x"]])
        >>> f = os.path.join(tempfile.mkdtemp(), "p.parquet")
        >>> read_parquet(write_parquet(pool, f)).equals(pool)
        True
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(row_group_size, bool) or not isinstance(row_group_size, (int, np.integer)) or row_group_size < 1:
        raise ValueError(f"row_group_size must be a whole number >= 1, got {row_group_size!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        meta_json = json.dumps(
            {
                "format_version": PARQUET_FORMAT_VERSION,
                "dataset": pool.dataset,
                "synthetic": pool.synthetic,
                "n_max": pool.n_max,
                "has_prompts": pool.prompts is not None,
                "has_gold": pool.gold is not None,
                "has_step_scores": pool.step_scores is not None,
                "metadata": pool.metadata,
            }
        )
    except TypeError as exc:
        raise ValueError(f"write_parquet: Pool.metadata is not JSON-serialisable: {exc}") from None
    counts = pool.n_samples
    cut = lambda a: [a[i, : counts[i]].tolist() for i in range(pool.n_questions)]  # noqa: E731
    q = pool.n_questions
    columns = {
        "question_id": pool.question_ids,
        "prompt": pool.prompts if pool.prompts is not None else [None] * q,
        "gold": pool.gold if pool.gold is not None else [None] * q,
        "scores": cut(pool.scores),
        "tokens": cut(pool.tokens),
        "answers": cut(pool.answers),
        "answer_ids": cut(pool.answer_ids),
        "correct": cut(pool.correct),
        "empty": cut(pool.empty),
        "step_scores": pool.step_scores if pool.step_scores is not None else [None] * q,
    }
    schema = _parquet_schema().with_metadata({PARQUET_METADATA_KEY: meta_json.encode()})
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, row_group_size=int(row_group_size))
    return path


def read_parquet(path: str | Path) -> Pool:
    """Read a pool written by :func:`write_parquet`.

    Args:
        path: the Parquet file.

    Returns:
        The pool, equal (:meth:`Pool.equals`) to the one written.

    Raises:
        PoolFormatError: when the file is not a pool written by this package, or a
            row's fields disagree (naming the row and field).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise PoolFormatError(path, None, None, f"not a readable Parquet file: {exc}") from None
    return _pool_from_table(path, table)


def iter_parquet_chunks(path: str | Path, questions_per_chunk: int = PARQUET_ROW_GROUP_SIZE) -> Iterator[Pool]:
    """Read a pool written by :func:`write_parquet` a few questions at a time.

    The file is read by row group (``pyarrow.parquet.ParquetFile.iter_batches``), so
    memory is bounded by ``questions_per_chunk`` (and the file's row-group size), not by
    the pool. Every chunk is checked as :func:`read_parquet` checks the whole file (row
    numbers in errors count from the start of the file), and question ids must be unique
    across chunks.

    Args:
        path: the Parquet file.
        questions_per_chunk: questions per yielded pool (the last one may hold fewer).

    Yields:
        Pools whose concatenation, in order, is the pool :func:`read_parquet` returns.

    Raises:
        ValueError: ``questions_per_chunk`` < 1.
        PoolFormatError: as :func:`read_parquet`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(questions_per_chunk, bool) or not isinstance(questions_per_chunk, (int, np.integer)) \
            or questions_per_chunk < 1:
        raise ValueError(f"questions_per_chunk must be a whole number >= 1, got {questions_per_chunk!r}")
    path = Path(path)
    try:
        reader = pq.ParquetFile(path)
        schema = reader.schema_arrow
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise PoolFormatError(path, None, None, f"not a readable Parquet file: {exc}") from None
    row0 = 0
    seen: dict[str, int] = {}
    # a chunk larger than the file is the whole file (pyarrow takes a C long)
    batches = reader.iter_batches(batch_size=int(min(questions_per_chunk, max(reader.metadata.num_rows, 1))))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a corrupt row group
            raise PoolFormatError(path, f"row {row0}", None, f"not a readable Parquet row group: {exc}") from None
        table = pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata)
        chunk = _pool_from_table(path, table, row0)
        for i, qid in enumerate(chunk.question_ids):
            if qid in seen:
                raise PoolFormatError(path, f"row {row0 + i}", "question_id",
                                      f"duplicate id {qid!r} (also row {seen[qid]})")
            seen[qid] = row0 + i
        row0 += table.num_rows
        yield chunk


def _pool_from_table(path: Path, table: Any, row0: int = 0) -> Pool:
    """A pool from a table of :func:`write_parquet`'s layout (rows ``row0``, ... of the file)."""
    raw = (table.schema.metadata or {}).get(PARQUET_METADATA_KEY)
    if raw is None:
        raise PoolFormatError(path, None, None, "no optscale_jax.pool schema metadata (not written by write_parquet)")
    where = "schema metadata"
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoolFormatError(path, where, PARQUET_METADATA_KEY.decode(), f"invalid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PoolFormatError(path, where, PARQUET_METADATA_KEY.decode(), f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != PARQUET_FORMAT_VERSION:
        raise PoolFormatError(path, where, "format_version", f"unsupported version {meta.get('format_version')!r}")
    kinds = {"dataset": (str,), "n_max": (int,), "synthetic": (bool,), "has_prompts": (bool,),
             "has_gold": (bool,), "has_step_scores": (bool,)}
    for key, types in kinds.items():
        if key not in meta:
            raise PoolFormatError(path, where, key, "missing")
        if not isinstance(meta[key], types) or (key == "n_max" and (isinstance(meta[key], bool) or meta[key] < 0)):
            want = {"dataset": "a string", "n_max": "a whole number >= 0"}.get(key, "true or false")
            raise PoolFormatError(path, where, key, f"expected {want}, got {meta[key]!r}")
    if not isinstance(meta.get("metadata", {}), dict):
        raise PoolFormatError(path, where, "metadata", f"expected a JSON object, got {meta['metadata']!r}")
    expected = _parquet_schema()
    for name in expected.names:
        if name not in table.column_names:
            raise PoolFormatError(path, None, name, "missing column")
    _check_parquet_types(path, table, expected, meta, row0)
    cols = {name: table.column(name).to_pylist() for name in expected.names}
    q = table.num_rows
    lengths = [len(r) if r is not None else 0 for r in cols["scores"]]
    # Padding beyond the longest row carries no data. It is kept (round trips are exact)
    # unless it would dwarf the data: then the width is bounded by the longest row, so a
    # corrupt or hostile n_max (say 10^9) cannot allocate gigabytes of padding.
    n = int(meta["n_max"])
    longest = max(lengths, default=0)
    if n > longest and q * n > max(16 * sum(lengths), 1 << 20):
        n = longest
    seen: dict[str, int] = {}
    for i, qid in enumerate(cols["question_id"]):
        if qid is None or not qid.strip():
            what = "is null" if qid is None else f"is {qid!r}"
            raise PoolFormatError(path, f"row {row0 + i}", "question_id", f"{what}; expected a non-empty string id")
        if qid in seen:
            raise PoolFormatError(path, f"row {row0 + i}", "question_id", f"duplicate id {qid!r} (also row {row0 + seen[qid]})")
        seen[qid] = i
    for i in range(q):
        for name in ("scores", "tokens", "answers", "answer_ids", "correct", "empty"):
            row = cols[name][i]
            if row is None or len(row) != lengths[i]:
                raise PoolFormatError(
                    path, f"row {row0 + i} (question {cols['question_id'][i]!r})", name,
                    f"has {0 if row is None else len(row)} entries, 'scores' has {lengths[i]}",
                )
        if lengths[i] > n:
            raise PoolFormatError(path, f"row {row0 + i}", "scores", f"{lengths[i]} samples exceed n_max {meta['n_max']}")

    def pad(name: str, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full((q, n), fill, dtype=dtype)
        for i, row in enumerate(cols[name]):
            out[i, : len(row)] = row if dtype is not object else np.array(row + [None], dtype=object)[:-1]
        return out

    mask = np.zeros((q, n), dtype=bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    if meta["has_step_scores"]:
        for i, row in enumerate(cols["step_scores"]):
            if row is None or len(row) != lengths[i]:
                raise PoolFormatError(
                    path, f"row {row0 + i} (question {cols['question_id'][i]!r})", "step_scores",
                    f"has {'null' if row is None else len(row)} entries, 'scores' has {lengths[i]} "
                    "(the schema metadata says the pool has step scores)",
                )
    try:
        return _pool_from_parquet_columns(cols, meta, mask, pad)
    except ValueError as exc:  # Pool's own checks (a score outside [0, 1] ...): name the file
        raise PoolFormatError(path, None, None, str(exc)) from None


def _check_parquet_types(path: Path, table: Any, expected: Any, meta: dict, row0: int = 0) -> None:
    """Every column of the kind write_parquet writes, without nulls inside the lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {"float": (pa.types.is_floating, pa.types.is_integer), "int": (pa.types.is_integer,),
             "string": (pa.types.is_string, pa.types.is_large_string), "bool": (pa.types.is_boolean,)}

    def kind(t: Any) -> str:
        return "float" if pa.types.is_floating(t) else "int" if pa.types.is_integer(t) else \
            "string" if pa.types.is_string(t) else "bool" if pa.types.is_boolean(t) else str(t)

    for name in expected.names:
        want, got = expected.field(name).type, table.schema.field(name).type
        depth_w, depth_g = 0, got
        w = want
        ok = True
        while pa.types.is_list(w):
            if not (pa.types.is_list(depth_g) or pa.types.is_large_list(depth_g)):
                ok = False
                break
            w, depth_g, depth_w = w.value_type, depth_g.value_type, depth_w + 1
        if ok:
            ok = any(f(depth_g) for f in kinds[kind(w)])
        if not ok:
            raise PoolFormatError(path, None, name, f"column has type {got}; expected {want}")
        if depth_w == 0 or pa.types.is_string(w):  # answers: null = no extracted answer
            continue
        col = table.column(name)
        flat = col
        for _ in range(depth_w):
            flat = pc.list_flatten(flat)
        if flat.null_count:
            for i, row in enumerate(col.to_pylist()):
                vals = row or []
                for _ in range(depth_w - 1):
                    vals = [v for sub in vals if sub is not None for v in sub]
                if any(v is None for v in vals):
                    raise PoolFormatError(path, f"row {row0 + i}", name, "holds a null inside its list; expected a value for every sample")
        if pa.types.is_floating(w) and pa.types.is_integer(depth_g):
            continue
        if pa.types.is_integer(w) and pa.types.is_integer(depth_g) and (
            depth_g.bit_width > w.bit_width or pa.types.is_unsigned_integer(depth_g)
        ):
            lo, hi = np.iinfo(np.dtype(w.to_pandas_dtype())).min, np.iinfo(np.dtype(w.to_pandas_dtype())).max
            mm = pc.min_max(flat)
            if mm["min"].as_py() is not None and (mm["min"].as_py() < lo or mm["max"].as_py() > hi):
                raise PoolFormatError(path, None, name, f"values outside the range of {w}")


def _pool_from_parquet_columns(cols: dict, meta: dict, mask: np.ndarray, pad: Any) -> Pool:
    return Pool(
        scores=pad("scores", 0.0, np.float64),
        mask=mask,
        tokens=pad("tokens", 0, np.int64),
        answers=pad("answers", None, object),
        answer_ids=pad("answer_ids", -1, np.int32),
        correct=pad("correct", False, bool),
        question_ids=cols["question_id"],
        dataset=meta["dataset"],
        prompts=cols["prompt"] if meta["has_prompts"] else None,
        gold=cols["gold"] if meta["has_gold"] else None,
        step_scores=cols["step_scores"] if meta["has_step_scores"] else None,
        synthetic=bool(meta["synthetic"]),
        empty=pad("empty", False, bool),
        metadata=meta.get("metadata", {}),
    )

