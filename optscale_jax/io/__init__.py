"""Files in and out: pool formats, prompts and benchmark files, priors files, the data dir.

* :func:`read_pool` reads a pool in any known format (:data:`POOL_FORMATS`), detected
  from the file's content by :func:`detect_format`:

  * :func:`read_official` — the OptScale authors' JSON (:mod:`optscale_jax.io.official`);
  * :func:`read_search_and_learn` — HuggingFace search-and-learn JSON Lines
    (:mod:`optscale_jax.io.search_and_learn`);
  * :func:`read_parquet` / :func:`write_parquet` — this package's lossless Parquet
    (:mod:`optscale_jax.io.parquet`).

* :func:`read_prompts` reads a benchmark/prompts file with gold answers and
  :func:`benchmark_path` finds a benchmark by name (:mod:`optscale_jax.io.prompts`).
* :func:`read_priors`, :func:`load_prior`, :func:`write_priors` — priors files for
  OptScaleᵗ (:mod:`optscale_jax.io.priors`).
* :func:`shared_data_dir` — where the shared real data lives (:mod:`optscale_jax.io.datadir`).

Every malformed pool or prompts file raises :class:`PoolFormatError` (a ``ValueError``)
naming the file, record and field; a malformed priors file raises
:class:`PriorsFileError`. The readers validate what they read; the pools they return
are :class:`optscale_jax.pool.Pool`.
"""

from __future__ import annotations

from optscale_jax.io._common import PoolFormatError
from optscale_jax.io.auto import POOL_FORMATS, detect_format, read_pool
from optscale_jax.io.datadir import shared_data_dir
from optscale_jax.io.official import read_official
from optscale_jax.io.parquet import (
    PARQUET_FORMAT_VERSION,
    PARQUET_METADATA_KEY,
    iter_parquet_chunks,
    read_parquet,
    write_parquet,
)
from optscale_jax.io.priors import PriorsFileError, load_prior, read_priors, write_priors
from optscale_jax.io.prompts import benchmark_path, read_prompts
from optscale_jax.io.search_and_learn import read_search_and_learn

__all__ = [
    "PARQUET_FORMAT_VERSION",
    "PARQUET_METADATA_KEY",
    "POOL_FORMATS",
    "PoolFormatError",
    "PriorsFileError",
    "benchmark_path",
    "detect_format",
    "load_prior",
    "read_official",
    "iter_parquet_chunks",
    "read_parquet",
    "read_pool",
    "read_priors",
    "read_prompts",
    "read_search_and_learn",
    "shared_data_dir",
    "write_parquet",
    "write_priors",
]
