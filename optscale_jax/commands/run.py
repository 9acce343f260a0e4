"""``optscale run``: the live adaptive loop over an inference engine and a PRM."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer

from optscale_jax.policies.registry import POLICY_NAMES, lookup, make

__all__ = ["ENGINES", "POLICIES", "engine_spec", "make_engines", "make_policy", "register"]

ENGINES = ("vllm", "openai", "transformers")
#: Policy names ``--policy`` accepts (case-insensitive; the registry's every method).
POLICIES = POLICY_NAMES

_HELP = """Sample live: ask the engine for more completions only for the questions whose
policy has not stopped, score them with the PRM, and write OUT/samples.jsonl (append-only,
resumable: run the same command again after a crash), OUT/pool.parquet (for `optscale
replay`) and OUT/summary.json (accuracy, tokens, samples per question, tokens saved
against Best-of-n_max). One run per OUT at a time (OUT/run.lock); a rerun resumes only
with the same settings (model, PRM, sampling, policy, prior, questions, aggregation,
seed) and names every option that differs; --no-resume moves an old run aside to
OUT/previous-<k>/ and starts afresh."""


def make_policy(
    name: str,
    n_max: int,
    *,
    s_min: float = 0.95,
    quantile: float = 0.05,
    mode: str = "oneshot",
    prior: Any = None,
    n_questions: int = 1,
    **options: Any,
) -> Any:
    """Build a policy from its CLI name (:func:`optscale_jax.policies.registry.make`).

    Args:
        name: One of :data:`POLICIES` (case-insensitive).
        n_max: Sample budget per question (rounds for MR-Thinking).
        s_min: OptScale target score.
        quantile: OptScale ``1 - alpha``.
        mode: OptScale ``oneshot`` or ``sequential``.
        prior: OptScaleᵗ prior (default: the replay evaluator's population prior).
        n_questions: Number of questions (for the default prior).
        **options: Method options (the budget policies' ``token_budget``, ``wave_size``).

    Returns:
        The policy.

    Raises:
        ValueError: For an unknown name.
    """
    return make(name, n_max=n_max, s_min=s_min, alpha=1.0 - quantile, mode=mode, prior=prior,
                n_questions=n_questions, **options)


def make_engines(
    engine: str,
    model: str,
    prm: str,
    *,
    base_url: str | Sequence[str] = "http://localhost:8000",
    prm_base_url: str | Sequence[str] | None = None,
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_tokens: int = 32768,
    system_prompt: str | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.6,
    prm_gpu_memory_utilization: float = 0.3,
    dtype: str = "auto",
    api_key: str | None = None,
    concurrency: int = 32,
    timeout: float = 600.0,
    max_retries: int = 5,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Build the (sampler, PRM) pair of a backend.

    Args:
        engine: ``vllm``, ``openai`` or ``transformers``.
        model: Generator id/path (served name for ``openai``).
        prm: PRM id/path (served name for ``openai``).
        base_url: Generator server (``openai``); several as a list or comma-separated,
            shared by least outstanding work with a circuit breaker each.
        prm_base_url: PRM server(s) (``openai``; default ``base_url``).
        temperature: Sampling temperature.
        top_p: Nucleus mass.
        max_tokens: Maximum completion tokens.
        system_prompt: Generator system turn (None: none).
        tensor_parallel_size: GPUs per model (``vllm``).
        gpu_memory_utilization: GPU memory share of the generator (``vllm``; both models
            share the GPUs, so the two shares must fit together).
        prm_gpu_memory_utilization: GPU memory share of the PRM (``vllm``).
        dtype: Weights dtype (``vllm``: auto/bfloat16/...; ``transformers``: auto means float32).
        api_key: Bearer token for the servers (``openai``).
        concurrency: Requests in flight (``openai``).
        timeout: Seconds per request (``openai``).
        max_retries: Retries of transient failures (``openai``).
        trust_remote_code: Allow model code from the checkpoint (Qwen2.5-Math-PRM needs it
            for ``transformers``).

    Returns:
        (engine, scorer).
    """
    sampling = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens, system_prompt=system_prompt)
    if engine == "vllm":
        from optscale_jax.engines.vllm import VLLMPRM, VLLMEngine

        kw = dict(tensor_parallel_size=tensor_parallel_size, dtype=dtype)
        return (
            VLLMEngine(model, **sampling, gpu_memory_utilization=gpu_memory_utilization, **kw),
            VLLMPRM(prm, gpu_memory_utilization=prm_gpu_memory_utilization, **kw),
        )
    if engine == "openai":
        from optscale_jax.engines.openai import OpenAIEngine, OpenAIPRM

        http = dict(concurrency=concurrency, timeout=timeout, max_retries=max_retries, api_key=api_key)
        return (
            OpenAIEngine(base_url, model, **sampling, **http),
            OpenAIPRM(prm_base_url if prm_base_url and _flat(prm_base_url) else base_url, prm, **http),
        )
    if engine == "transformers":
        from optscale_jax.engines.transformers import TransformersEngine, TransformersPRM

        dt = "float32" if dtype == "auto" else dtype
        return (
            TransformersEngine(model, **sampling, dtype=dt, trust_remote_code=trust_remote_code),
            TransformersPRM(prm, dtype=dt, trust_remote_code=trust_remote_code),
        )
    raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


def engine_spec(
    engine: str,
    model: str,
    prm: str,
    *,
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_tokens: int = 32768,
    system_prompt: str | None = None,
    dtype: str = "auto",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header fields of the (sampler, PRM) that :func:`make_engines` would build, without loading.

    A subset of what the engines' ``describe()`` returns once loaded (the hub
    revision is known only then), so a resume with other settings can be refused
    before any model is loaded.
    """
    from optscale_jax.engines.base import model_identity

    def ident(ref: str) -> dict[str, Any]:
        return {"model": model_identity(ref)["model"]} if engine != "openai" else {"model": ref}

    sampling = {"temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens),
                "system_prompt": system_prompt}
    if engine == "transformers":
        dt = "float32" if dtype == "auto" else dtype
        return ({"backend": "transformers", **ident(model), **sampling, "dtype": dt},
                {"backend": "transformers-prm", **ident(prm), "dtype": dt})
    if engine == "vllm":
        return ({"backend": "vllm", **ident(model), **sampling, "dtype": dtype},
                {"backend": "vllm-prm", **ident(prm), "dtype": dtype})
    return ({"backend": "openai", **ident(model), "chat": True, **sampling},
            {"backend": "openai-prm", **ident(prm)})


def run_command(
    engine: str = typer.Option(..., "--engine", "-e", help="Backend: vllm (in process), openai (a vLLM server over HTTP), transformers (CPU)."),
    model: str = typer.Option(..., "--model", "-m", help="Generator model id or path (served model name for --engine openai)."),
    prm: str = typer.Option("Qwen/Qwen2.5-Math-PRM-7B", "--prm", help="Process reward model id or path (served name for openai)."),
    dataset: str = typer.Option("math500", "--dataset", "-d", help="math500, gsm8k, aime24, aime25, amc23, or a path to a benchmark JSON."),
    policy: str = typer.Option("OptScale0", "--policy", "-p", help=f"One of: {', '.join(POLICIES)}."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumed if it holds this run)."),
    n_max: int = typer.Option(16, "--n-max", min=1, help="Sample budget per question (rounds for MR-Thinking)."),
    s_min: float = typer.Option(0.95, "--s-min", help="OptScale target score."),
    quantile: float = typer.Option(0.05, "--quantile", help="OptScale 1 - alpha."),
    mode: str = typer.Option("oneshot", "--mode", help="OptScale mode: oneshot or sequential."),
    prior: Path | None = typer.Option(None, "--prior", help="OptScaleT prior file (the authors' *_train_mu_sigma.json or an optscale-priors JSON)."),
    prior_std: float = typer.Option(0.1, "--prior-std", help="Prior std for [mu, sigma] list priors."),
    family: str = typer.Option("truncnorm", "--family", help="OptScale0/OptScaleT score family: truncnorm (the paper's), beta, logitnormal, mixture (MLE only), or any registered one."),
    batch: int | None = typer.Option(None, "--batch", "-b", min=1, help="At most this many new samples per question per wave (default: what the policy wants)."),
    token_budget: int | None = typer.Option(None, "--token-budget", min=1, help="Stop starting waves after this many completion tokens; with --policy OptScaleBudget or UniformEliminate, the budget they spread across questions (at most one wave over)."),
    wave_size: int | None = typer.Option(None, "--wave-size", min=1, help="OptScaleBudget / UniformEliminate: most new samples per wave, all questions together (default: the number of questions)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first LIMIT questions."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Shared data directory (default $OPTSCALE_DATA or ../shared/data)."),
    aggregate: str = typer.Option("mean", "--aggregate", help="Step-score aggregation: mean, last, min, product."),
    seed: int = typer.Option(0, "--seed", help="Run seed (request seeds derive from it)."),
    temperature: float = typer.Option(0.7, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    max_tokens: int = typer.Option(32768, "--max-tokens", min=1),
    base_url: list[str] = typer.Option(["http://localhost:8000"], "--base-url", help="Generator server (--engine openai); repeat it or separate with commas for several servers, which share the requests by least outstanding work."),
    prm_base_url: list[str] | None = typer.Option(None, "--prm-base-url", help="PRM server(s), like --base-url (default: --base-url)."),
    concurrency: int = typer.Option(32, "--concurrency", min=1, help="HTTP requests in flight (--engine openai)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds per HTTP request."),
    max_retries: int = typer.Option(5, "--max-retries", min=0, help="Retries of transient HTTP failures."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", min=1, help="GPUs per model (--engine vllm)."),
    gpu_memory_utilization: float = typer.Option(0.6, "--gpu-memory-utilization", help="GPU memory share of the generator (--engine vllm)."),
    prm_gpu_memory_utilization: float = typer.Option(0.3, "--prm-gpu-memory-utilization", help="GPU memory share of the PRM (--engine vllm)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPTSCALE_API_KEY", help="Bearer token for the servers (--engine openai)."),
    dtype: str = typer.Option("auto", "--dtype", help="Weights dtype."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow checkpoint code (transformers PRM)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue the run found in OUT (it must have the same settings); --no-resume moves it to OUT/previous-<k>/ and starts afresh."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Run a scaling policy live (see the command help)."""
    from rich.console import Console
    from rich.markup import escape

    from optscale_jax.engines.base import EngineError, check_model_ref
    from optscale_jax.journal import check_run_dir, lock_run_dir, run_header
    from optscale_jax.online import load_benchmark, run
    from optscale_jax.scores import AGGREGATIONS

    console = Console()
    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}", param_hint="--engine")
    if mode not in ("oneshot", "sequential"):
        raise typer.BadParameter(f"unknown mode {mode!r}; choose oneshot or sequential", param_hint="--mode")
    if not 0.0 < quantile < 1.0:
        raise typer.BadParameter(f"--quantile must be in (0, 1), got {quantile}", param_hint="--quantile")
    for value, flag, ok, expected in (
            (temperature, "--temperature", temperature >= 0.0, "a finite number >= 0"),
            (top_p, "--top-p", 0.0 < top_p <= 1.0, "a number in (0, 1]"),
            (timeout, "--timeout", timeout > 0.0, "a finite number of seconds > 0"),
            (prior_std, "--prior-std", prior_std > 0.0, "a finite number > 0")):
        if not (ok and math.isfinite(value)):
            raise typer.BadParameter(f"{float(value)}; expected {expected}", param_hint=flag)
    if wave_size is not None and lookup(policy) is not None and lookup(policy).family != "budget":
        raise typer.BadParameter(f"policy {policy!r} has no waves of a shared budget (only OptScaleBudget "
                                 "and UniformEliminate do); drop --wave-size or choose one of them",
                                 param_hint="--wave-size")
    try:
        name, questions = load_benchmark(dataset, data_dir=data_dir, limit=limit)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--dataset") from None
    prior_obj = None
    if prior is not None and not getattr(lookup(policy), "uses_prior", False):
        typer.echo(f"error: --prior {prior}: policy {policy!r} does not read a prior (only OptScaleT, "
                   "the MAP variant, and OptScaleBudget do)", err=True)
        raise typer.Exit(code=2)
    if prior is not None:
        from optscale_jax.commands.options import load_prior_file

        # the authors' [mu, sigma] list follows the benchmark's order: --limit takes its first rows
        prior_obj = load_prior_file(prior, [q.id for q in questions], prior_std,
                                    positions=None if limit is None else range(len(questions)))
    if family != "truncnorm":
        from optscale_jax.families import get as get_family
        from optscale_jax.sweep import takes_prior

        try:
            get_family(family)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--family") from None
        chosen = getattr(lookup(policy), "name", policy)
        if chosen not in ("OptScale0", "OptScaleT"):
            raise typer.BadParameter(f"policy {policy!r} has no score family (only OptScale0 and OptScaleT "
                                     "do)", param_hint="--family")
        if chosen == "OptScaleT" and not takes_prior(family, "gaussian"):
            raise typer.BadParameter(f"family {family!r} takes no (mean, std) prior, so OptScaleT cannot "
                                     "run under it; use --policy OptScale0", param_hint="--family")
    try:
        pol = make_policy(policy, n_max, s_min=s_min, quantile=quantile, mode=mode, prior=prior_obj,
                          n_questions=len(questions), token_budget=token_budget,
                          wave_size=wave_size, **({} if family == "truncnorm" else {"family": family}))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--policy") from None
    expected = getattr(pol, "default_tokens", None)  # budget policies plan with it before any sample
    if token_budget is not None and expected is not None and token_budget < expected:
        raise typer.BadParameter(f"{token_budget} is less than the {float(expected):g} tokens {policy} expects "
                                 "of one sample before any is drawn, so it would draw nothing",
                                 param_hint="--token-budget")
    if aggregate not in AGGREGATIONS:
        raise typer.BadParameter(f"unknown aggregation {aggregate!r}; choose from {', '.join(AGGREGATIONS)}",
                                 param_hint="--aggregate")
    # What decides the samples beyond the options: the prior file's bytes.
    provenance = None if prior is None else {
        "prior_file": {"sha256": hashlib.sha256(Path(prior).read_bytes()).hexdigest()}}
    if engine == "openai":  # a malformed server URL is an error before OUT is touched
        from optscale_jax.engines.balancer import parse_urls

        for urls, flag in ((base_url, "--base-url"), (prm_base_url, "--prm-base-url")):
            try:
                if urls:
                    parse_urls(urls, flag)
            except ValueError as e:
                _fail(console, str(e))
    if engine in ("transformers", "vllm"):  # a missing local model is an error before anything loads
        for ref, flag in ((model, "--model"), (prm, "--prm")):
            try:
                check_model_ref(ref, flag)
            except ValueError as e:
                _fail(console, str(e))
    spec_engine, spec_prm = engine_spec(engine, model, prm, temperature=temperature, top_p=top_p,
                                        max_tokens=max_tokens, dtype=dtype)
    try:
        with lock_run_dir(out):
            # refuse a bad log or other settings before loading any model
            check_run_dir(out, run_header(questions, pol, engine=spec_engine, prm=spec_prm, aggregate=aggregate,
                                          seed=seed, batch=batch, dataset=name, provenance=provenance),
                          resume=resume)
            eng, scorer = make_engines(
                engine, model, prm, base_url=base_url, prm_base_url=prm_base_url, temperature=temperature,
                top_p=top_p, max_tokens=max_tokens, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                prm_gpu_memory_utilization=prm_gpu_memory_utilization, api_key=api_key,
                concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                trust_remote_code=trust_remote_code,
            )
            result = run(questions, eng, scorer, pol, out=out, batch=batch, token_budget=token_budget,
                         aggregate=aggregate, seed=seed, dataset=name, resume=resume, progress=progress,
                         provenance=provenance)
    except EngineError as e:
        console.print(f"[bold red]engine error:[/] {escape(str(e))}", soft_wrap=True)
        console.print(f"Everything scored so far is in {out}/samples.jsonl; run the same command to resume.",
                      soft_wrap=True)
        raise typer.Exit(code=3) from None
    except ValueError as e:
        _fail(console, str(e))
    if result.summary.get("moved_aside"):
        console.print(f"the previous run in {out} was moved to {result.summary['moved_aside']}", soft_wrap=True)
    s = result.summary
    acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
    console.print(
        f"{pol.name} on {name} ({s['questions']} questions, n_max={s['n_max']}): accuracy {acc}, "
        f"{s['mean_samples']:.2f} samples/question, {s['mean_tokens']:.0f} tokens/question, "
        f"{100 * s['tokens_saved_vs_bon_n_max']:.1f}% tokens saved vs Best-of-{s['n_max']} (estimated), "
        f"{s['waves']} waves."
    )
    console.print(f"pool: {out}/pool.parquet (optscale replay {out}/pool.parquet), summary: {out}/summary.json")


def _fail(console: Any, message: str, code: int = 2) -> NoReturn:
    """One-line error (markup-safe, never wrapped), then exit with ``code``."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=code)


def _flat(urls: str | Sequence[str]) -> list[str]:
    """The non-empty comma-separated items of one URL option."""
    items = [urls] if isinstance(urls, str) else list(urls)
    return [u for item in items for u in str(item).split(",") if u.strip()]


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to an ``optscale`` Typer app.

    Args:
        app: The CLI application.
    """
    app.command("run", help=_HELP)(run_command)
