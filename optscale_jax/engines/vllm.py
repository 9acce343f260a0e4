"""vLLM in process: sampling with ``LLM.generate``, PRM scoring with ``LLM.encode``.

Checked against vLLM 0.32.0 (the current API): ``LLM(model, runner="generate" |
"pooling", ...)``, ``LLM.generate(prompts, sampling_params, use_tqdm=...)``,
``LLM.encode(prompts, pooling_params, use_tqdm=..., pooling_task="token_classify")``,
``SamplingParams(n, temperature, top_p, max_tokens, seed)``,
``PoolingParams(use_activation=...)``; outputs ``RequestOutput.outputs`` of
``CompletionOutput(index, text, token_ids, ..., finish_reason)`` and
``PoolingRequestOutput(request_id, outputs=PoolingOutput(data), prompt_token_ids, ...)``.
Older APIs (``task="reward"``, ``LLM.reward``, ``encode`` without
``pooling_task``) are refused with an error naming what is missing.

The PRM (Qwen2.5-Math-PRM-7B, ``Qwen2ForProcessRewardModel`` in vLLM's
registry, STEP pooling over 2 labels) is asked for raw logits
(``use_activation=False``) at every token; the step positions are found in
``prompt_token_ids`` and the softmax is ours, so the result does not depend on
the server-side pooler defaults (``step_tag_id``, activation) that changed
between versions.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Completion, EngineError, SampleRequest, check_model_ref, check_requests
from .prm import PRM_SYSTEM_PROMPT, STEP_TOKEN, prm_messages, split_steps, step_probabilities

__all__ = ["VLLMEngine", "VLLMPRM", "import_vllm", "step_scores_from_pooling"]

_NEEDED = (
    "optscale-jax needs vLLM's current offline API (checked with vLLM 0.32.0): "
    "LLM(model, runner=...), LLM.encode(..., pooling_task='token_classify') and "
    "PoolingParams(use_activation=...). Install it with: pip install 'optscale-jax[vllm]'"
)


def import_vllm() -> Any:
    """Import vLLM and check that it has the API this module uses.

    Returns:
        The ``vllm`` module.

    Raises:
        EngineError: When vLLM is missing or too old, naming what is needed.
    """
    try:
        import vllm
    except ImportError as e:
        raise EngineError(f"vLLM is not installed. {_NEEDED}") from e
    version = getattr(vllm, "__version__", "unknown")
    missing = []
    for name in ("LLM", "SamplingParams", "PoolingParams"):
        if not hasattr(vllm, name):
            missing.append(f"vllm.{name}")
    if not missing:
        if "runner" not in inspect.signature(vllm.LLM.__init__).parameters:
            missing.append("LLM(runner=...)")
        if "pooling_task" not in inspect.signature(vllm.LLM.encode).parameters:
            missing.append("LLM.encode(pooling_task=...)")
        if "use_activation" not in inspect.signature(vllm.PoolingParams).parameters:
            missing.append("PoolingParams(use_activation=...)")
    if missing:
        raise EngineError(f"installed vLLM {version} lacks {', '.join(missing)}. {_NEEDED}")
    return vllm


class VLLMEngine:
    """Sample completions with an in-process ``vllm.LLM``.

    All requests of a call go to vLLM in one ``generate`` call (continuous
    batching across questions); each request has its own ``SamplingParams``
    with its ``n`` and seed, so its completions do not depend on the batch.

    Args:
        model: Model id or path, or an existing ``vllm.LLM`` (runner "generate").
        temperature: Sampling temperature (paper: 0.7).
        top_p: Nucleus mass (paper: 0.95).
        max_tokens: Maximum completion tokens.
        system_prompt: System turn; None for none (DeepSeek-R1 distills recommend none
            and the instruction in the user prompt).
        **llm_kwargs: Passed to ``vllm.LLM`` (e.g. ``tensor_parallel_size``, ``dtype``,
            ``max_model_len``, ``gpu_memory_utilization``).
    """

    name = "vllm"

    def __init__(
        self,
        model: Any,
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 32768,
        system_prompt: str | None = None,
        **llm_kwargs: Any,
    ) -> None:
        if temperature < 0 or not 0 < top_p <= 1 or max_tokens < 1:
            raise ValueError(
                f"need temperature >= 0, 0 < top_p <= 1, max_tokens >= 1; got "
                f"{temperature}, {top_p}, {max_tokens}"
            )
        check_model_ref(model, "model")
        self._identity = _identity(model, llm_kwargs)
        self._vllm = import_vllm()
        if isinstance(model, str):
            model = self._vllm.LLM(model=model, runner="generate", **llm_kwargs)
        self.llm = model
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.system_prompt = system_prompt

    def describe(self) -> dict[str, Any]:
        """What decides this engine's samples, for the run header."""
        return {"backend": self.name, **self._identity, "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens, "system_prompt": self.system_prompt}

    def chat_prompt(self, prompt: str) -> str:
        """Render one user prompt with the model's chat template and generation prompt."""
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.llm.get_tokenizer().apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Completion]]:
        """Sample ``r.n`` completions for every request (see :class:`~.base.Engine`)."""
        check_requests(requests)
        if not requests:
            return []
        prompts = [self.chat_prompt(r.prompt) for r in requests]
        params = [
            self._vllm.SamplingParams(
                n=int(r.n),
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_tokens,
                seed=r.seed,
            )
            for r in requests
        ]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as e:
            raise EngineError(f"vLLM generate failed: {type(e).__name__}: {e}") from e
        if len(outputs) != len(requests):
            raise EngineError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
        result = []
        for i, (r, out) in enumerate(zip(requests, outputs, strict=True)):
            comps = sorted(out.outputs, key=lambda c: c.index)
            if len(comps) != r.n:
                raise EngineError(f"request {i}: vLLM returned {len(comps)} completions, asked for {r.n}")
            result.append(
                [Completion(text=c.text, tokens=len(c.token_ids), finish_reason=c.finish_reason) for c in comps]
            )
        return result


def step_scores_from_pooling(data: Any, prompt_token_ids: Sequence[int], step_token_id: int, n_steps: int) -> list[float]:
    """Step probabilities from one token-classification pooling output.

    Args:
        data: The pooled 2-label logits: (tokens, 2) for every prompt token, or
            (steps, 2) when the server-side pooler already kept the step tokens.
        prompt_token_ids: The PRM input's token ids.
        step_token_id: Id of the step token.
        n_steps: Number of steps of the completion.

    Returns:
        softmax(logits)[:, 1] at the step-token positions.

    Raises:
        EngineError: When the shapes do not match the input.
    """
    arr = np.asarray(data.float().cpu().numpy() if hasattr(data, "cpu") else data, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise EngineError(f"PRM pooling output has shape {arr.shape}, expected (tokens, 2)")
    ids = np.asarray(prompt_token_ids)
    pos = np.flatnonzero(ids == step_token_id)
    if len(pos) != n_steps:
        raise EngineError(
            f"{n_steps} steps but {len(pos)} step tokens in the PRM input "
            "(does the completion contain the step token itself?)"
        )
    if arr.shape[0] == len(ids):
        arr = arr[pos]
    elif arr.shape[0] != n_steps:
        raise EngineError(
            f"PRM pooling output has {arr.shape[0]} rows for {len(ids)} tokens and {n_steps} steps"
        )
    return step_probabilities(arr).tolist()


class VLLMPRM:
    """Score completions with a process reward model through vLLM's pooling runner.

    Args:
        model: PRM id or path (default use: ``"Qwen/Qwen2.5-Math-PRM-7B"``), or an
            existing ``vllm.LLM`` created with ``runner="pooling"``.
        step_token: Step separator token (``"<extra_0>"`` for Qwen2.5-Math-PRM).
        system_prompt: System turn of the PRM conversation.
        **llm_kwargs: Passed to ``vllm.LLM``.
    """

    name = "vllm-prm"

    def __init__(
        self,
        model: Any,
        *,
        step_token: str = STEP_TOKEN,
        system_prompt: str = PRM_SYSTEM_PROMPT,
        **llm_kwargs: Any,
    ) -> None:
        check_model_ref(model, "PRM")
        self._identity = _identity(model, llm_kwargs)
        self._vllm = import_vllm()
        if isinstance(model, str):
            # vLLM implements Qwen2ForProcessRewardModel natively: no remote code needed.
            model = self._vllm.LLM(model=model, runner="pooling", **llm_kwargs)
        self.llm = model
        self.step_token = step_token
        self.system_prompt = system_prompt
        self._identity_prm = {"backend": self.name, **self._identity, "step_token": step_token,
                              "system_prompt": system_prompt}
        tok = self.llm.get_tokenizer()
        ids = tok.encode(step_token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"step token {step_token!r} is not a single token of the PRM tokenizer: {ids}")
        self.step_token_id = int(ids[0])

    def describe(self) -> dict[str, Any]:
        """What decides this PRM's scores, for the run header."""
        return dict(self._identity_prm)

    def render(self, question: str, completion: str) -> tuple[str, int]:
        """The PRM input text for one completion and its number of steps."""
        steps = split_steps(completion)
        messages = prm_messages(question, steps, system_prompt=self.system_prompt, step_token=self.step_token)
        text = self.llm.get_tokenizer().apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return text, len(steps)

    def score(self, questions: Sequence[str], completions: Sequence[str]) -> list[list[float]]:
        """Per-step probabilities (see :class:`~.base.Scorer`)."""
        if len(questions) != len(completions):
            raise ValueError(f"{len(questions)} questions but {len(completions)} completions")
        rendered = [self.render(q, c) for q, c in zip(questions, completions, strict=True)]
        todo = [i for i, (_, k) in enumerate(rendered) if k > 0]
        out: list[list[float]] = [[] for _ in rendered]
        if not todo:
            return out
        params = self._vllm.PoolingParams(use_activation=False)
        try:
            results = self.llm.encode(
                [rendered[i][0] for i in todo],
                params,
                use_tqdm=False,
                pooling_task="token_classify",
            )
        except Exception as e:
            raise EngineError(f"vLLM encode (token_classify) failed: {type(e).__name__}: {e}") from e
        if len(results) != len(todo):
            raise EngineError(f"vLLM returned {len(results)} pooling outputs for {len(todo)} inputs")
        for i, res in zip(todo, results, strict=True):
            try:
                out[i] = step_scores_from_pooling(
                    res.outputs.data, res.prompt_token_ids, self.step_token_id, rendered[i][1]
                )
            except EngineError as e:
                raise EngineError(f"completion {i}: {e}") from e
        return out


def _identity(model: Any, llm_kwargs: dict[str, Any]) -> dict[str, Any]:
    from .base import model_identity

    if isinstance(model, str):
        ident = model_identity(model)
        ident["revision"] = llm_kwargs.get("revision")
    else:  # an existing vllm.LLM
        cfg = getattr(getattr(model, "llm_engine", None), "model_config", None)
        ident = {"model": str(getattr(cfg, "model", type(model).__name__)),
                 "revision": getattr(cfg, "revision", None)}
    ident["dtype"] = str(llm_kwargs.get("dtype", "auto"))
    return ident
