"""A fake ``vllm`` mirroring vLLM 0.32.0's offline API, backed by a toy model.

Toy model: a request's completions are a deterministic function of (prompt,
seed, completion index): a few "steps" separated by blank lines ending in
``\\boxed{k}``; token ids are one per character (ChatML specials and
``<extra_0>`` = 151651 as in Qwen2.5) plus a final end-of-sequence token. The
toy PRM returns 2-label logits per prompt token; at a step token the logit
difference is a hash of the preceding step text, so scores differ per step.

``FAIL_AFTER`` (module attribute) makes ``generate`` raise after that many calls.
``CALLS`` records every call's arguments for the tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .outputs import CompletionOutput, PoolingOutput, PoolingRequestOutput, RequestOutput

__version__ = "0.32.0"
__all__ = ["LLM", "PoolingParams", "SamplingParams", "RequestOutput", "PoolingRequestOutput"]

FAIL_AFTER: int | None = None
CALLS: list[tuple[str, tuple, dict]] = []

PoolingTask = Literal["embed", "classify", "token_embed", "token_classify", "plugin", "embed&token_classify"]

SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<extra_0>": 151651}
EOS = SPECIAL["<|im_end|>"]


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    watermarking: bool | None = None
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None


@dataclass
class PoolingParams:
    use_activation: bool | None = None
    dimensions: int | None = None
    step_tag_id: int | None = None
    returned_token_ids: list[int] | None = None
    task: PoolingTask | None = None
    requires_token_ids: bool = False
    skip_reading_prefix_cache: bool | None = None
    late_interaction_params: Any | None = None
    extra_kwargs: dict[str, Any] | None = None
    output_kind: Any = field(default=None)


class FakeTokenizer:
    """ChatML template; one token per character, Qwen2.5 special-token ids."""

    _split = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL) + ")")

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kw):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text) if tokenize else text

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = []
        for piece in self._split.split(text):
            if piece in SPECIAL:
                ids.append(SPECIAL[piece])
            else:
                ids.extend(ord(c) for c in piece)
        return ids


def _unit(*parts: Any) -> float:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def toy_completion(prompt: str, seed: int | None, index: int) -> str:
    """The toy model's completion for (prompt, seed, index)."""
    k = 1 + int(4 * _unit("steps", prompt, seed, index))
    steps = [f"step {j}: {int(100 * _unit('x', prompt, seed, index, j))}" for j in range(k)]
    answer = int(3 * _unit("answer", prompt, seed, index))
    return "\n\n".join(steps + [f"The answer is \\boxed{{{answer}}}."])


def toy_step_logit(step_text: str) -> float:
    """Logit difference (correct - incorrect) the toy PRM assigns to a step."""
    return 6.0 * _unit("prm", step_text) - 2.0


class LLM:
    def __init__(
        self,
        model: str,
        *,
        runner: Literal["auto", "generate", "pooling", "draft"] = "auto",
        convert: Literal["auto", "none", "embed", "classify"] = "auto",
        tokenizer: str | None = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        **kwargs: Any,
    ) -> None:
        named = dict(locals())
        for k in ("self", "model", "kwargs", "__class__"):
            named.pop(k, None)
        CALLS.append(("LLM", (model,), {**named, **kwargs}))
        self.model = model
        self.runner = "pooling" if runner == "auto" and "PRM" in model else runner
        self._tokenizer = FakeTokenizer()
        self.n_generate = 0

    def get_tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        priority: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        CALLS.append(("generate", (prompts, sampling_params), dict(use_tqdm=use_tqdm)))
        if self.runner == "pooling":
            raise ValueError("LLM.generate() is only supported for generative models.")
        if FAIL_AFTER is not None and self.n_generate >= FAIL_AFTER:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        self.n_generate += 1
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = [sampling_params] * len(prompts) if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, params, strict=False)):
            comps = []
            for j in range(sp.n):
                text = toy_completion(p, sp.seed, j)
                ids = self._tokenizer.encode(text) + [EOS]
                reason = "stop"
                if sp.max_tokens is not None and len(ids) > sp.max_tokens:
                    ids, reason = ids[: sp.max_tokens], "length"
                    text = "".join(chr(t) for t in ids)
                comps.append(CompletionOutput(j, text, ids, None, None, finish_reason=reason))
            outs.append(RequestOutput(str(i), p, self._tokenizer.encode(p), None, comps, True))
        return outs

    def encode(
        self,
        prompts: Any,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        pooling_task: PoolingTask | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[PoolingRequestOutput]:
        CALLS.append(("encode", (prompts, pooling_params), dict(use_tqdm=use_tqdm, pooling_task=pooling_task)))
        if self.runner != "pooling":
            raise ValueError("LLM.encode() is only supported for pooling models.")
        if pooling_task != "token_classify":
            raise ValueError(f"Unsupported task: {pooling_task!r}")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        params = pooling_params if isinstance(pooling_params, PoolingParams) else PoolingParams()
        outs = []
        for i, p in enumerate(prompts):
            ids = self._tokenizer.encode(p)
            logits = torch.zeros((len(ids), 2), dtype=torch.float32)
            # a step's text is what precedes its step token after the previous one
            assistant = p.split("<|im_start|>assistant\n", 1)[-1]
            steps = assistant.split("<extra_0>")[:-1]
            pos = [t for t, tok in enumerate(ids) if tok == SPECIAL["<extra_0>"]]
            for t, s in zip(pos, steps, strict=False):
                logits[t, 1] = toy_step_logit(s)
            data = logits if not (params.use_activation is None or params.use_activation) else logits.softmax(-1)
            outs.append(PoolingRequestOutput(str(i), PoolingOutput(data), ids, 0, True))
        return outs
