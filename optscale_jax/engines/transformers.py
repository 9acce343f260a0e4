"""A CPU engine on Hugging Face transformers: sampling and PRM scoring.

:class:`TransformersEngine` samples with ``model.generate(do_sample=True,
num_return_sequences=n)`` under the model's chat template;
:class:`TransformersPRM` runs a process reward model forward pass (any model
whose output has 2-label logits per token, e.g. ``*ForTokenClassification`` with
``num_labels=2`` or Qwen2.5-Math-PRM-7B through ``trust_remote_code``) and
reads the positive-class probability at the step-token positions.

:func:`make_tiny_models` writes a tiny *random* Qwen2 generator and PRM with a
byte-level tokenizer, so the whole live loop runs on a laptop CPU without
downloads (its text is gibberish; it exercises the machinery, not maths).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Completion,
    EngineError,
    ModelNotFoundError,
    SampleRequest,
    check_model_ref,
    check_requests,
    model_identity,
)
from .prm import PRM_SYSTEM_PROMPT, STEP_TOKEN, prm_messages, split_steps, step_probabilities

__all__ = ["TransformersEngine", "TransformersPRM", "make_tiny_models"]

_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a declared extra
        raise EngineError(
            "the transformers engine needs torch and transformers: pip install 'optscale-jax[predictor]'"
        ) from e
    return torch


def _loading(what: str, ref: Any, fn, *args, **kwargs):
    """Call a ``from_pretrained``; a missing or unreadable checkpoint is a one-line error."""
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(f"cannot load {what} {str(ref)!r}: {first}") from e


def _load_tokenizer(name_or_path: Any, trust_remote_code: bool):
    from transformers import AutoTokenizer

    if not isinstance(name_or_path, str | Path):
        return name_or_path
    return _loading("tokenizer", name_or_path, AutoTokenizer.from_pretrained, str(name_or_path),
                    trust_remote_code=trust_remote_code)


def _render(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    # No template: plain concatenation, so models without one still run.
    text = "\n\n".join(m["content"] for m in messages)
    return text + ("\n\n" if add_generation_prompt else "")


class TransformersEngine:
    """Sample completions with a transformers causal LM (CPU or one GPU).

    Each request is one ``generate`` call with ``num_return_sequences=n`` under
    its own seed, so a request's completions depend only on (prompt, n, seed):
    a resumed run redraws exactly what the interrupted one would have drawn.

    Args:
        model: A model id/path, or an already loaded ``PreTrainedModel``.
        tokenizer: Tokenizer id/path or object; defaults to ``model`` when that is a path.
        temperature: Sampling temperature (paper: 0.7).
        top_p: Nucleus sampling mass (paper: 0.95).
        max_tokens: Maximum completion tokens.
        system_prompt: System turn of the chat; None (default) for none, the
            instruction then belongs in the user prompt.
        device: Torch device.
        dtype: Torch dtype name for loading (e.g. ``"float32"``, ``"bfloat16"``).
        trust_remote_code: Passed to ``from_pretrained``.
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 1024,
        system_prompt: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ) -> None:
        torch = _torch()
        from transformers import AutoModelForCausalLM

        if temperature <= 0 or not 0 < top_p <= 1 or max_tokens < 1:
            raise ValueError(
                f"need temperature > 0, 0 < top_p <= 1, max_tokens >= 1; got "
                f"{temperature}, {top_p}, {max_tokens}"
            )
        if tokenizer is None:
            if not isinstance(model, str | Path):
                raise ValueError("pass a tokenizer when model is an already loaded object")
            tokenizer = model
        check_model_ref(model, "model")
        self._identity = model_identity(model)
        self.dtype = str(dtype)
        if isinstance(model, str | Path):
            model = _loading(
                "model", model, AutoModelForCausalLM.from_pretrained,
                str(model), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            )
            self._identity["revision"] = getattr(model.config, "_commit_hash", None)
        self.model = model.to(device).eval()
        self.tokenizer = _load_tokenizer(tokenizer, trust_remote_code)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.system_prompt = system_prompt
        self.device = device
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the model has no eos_token_id in its generation config or tokenizer")
        self._eos = {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])}
        pad = self.tokenizer.pad_token_id
        self._pad = int(pad) if pad is not None else min(self._eos)

    def describe(self) -> dict[str, Any]:
        """What decides this engine's samples, for the run header (no credentials)."""
        return {"backend": self.name, **self._identity, "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens,
                "system_prompt": self.system_prompt, "dtype": self.dtype}

    def chat_prompt(self, prompt: str) -> str:
        """Render one user prompt with the chat template and generation prompt."""
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return _render(self.tokenizer, messages, add_generation_prompt=True)

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Completion]]:
        """Sample ``r.n`` completions for every request (see :class:`~.base.Engine`)."""
        check_requests(requests)
        torch = _torch()
        out: list[list[Completion]] = []
        for r in requests:
            ids = self.tokenizer(
                self.chat_prompt(r.prompt), return_tensors="pt", add_special_tokens=False
            )["input_ids"].to(self.device)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                if r.seed is not None:
                    torch.manual_seed(int(r.seed))
                try:
                    gen = self.model.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        do_sample=True,
                        temperature=self.temperature,
                        top_p=self.top_p,
                        top_k=0,
                        max_new_tokens=self.max_tokens,
                        num_return_sequences=int(r.n),
                        pad_token_id=self._pad,
                        eos_token_id=sorted(self._eos),
                    )
                except Exception as e:
                    raise EngineError(f"transformers generate failed: {e}") from e
            out.append([self._completion(row) for row in gen[:, ids.shape[1] :].tolist()])
        return out

    def _completion(self, new_ids: list[int]) -> Completion:
        stop = next((i for i, t in enumerate(new_ids) if t in self._eos), None)
        kept = new_ids if stop is None else new_ids[: stop + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text=text, tokens=len(kept), finish_reason="length" if stop is None else "stop")


class TransformersPRM:
    """Score completions step by step with a transformers process reward model.

    The model must return 2-label logits per token (``outputs.logits`` or
    ``outputs[0]`` of shape (batch, tokens, 2)): a ``*ForTokenClassification``
    with ``num_labels=2``, or Qwen2.5-Math-PRM-7B loaded with
    ``trust_remote_code=True``.

    Args:
        model: Model id/path or loaded model.
        tokenizer: Tokenizer id/path or object; defaults to ``model`` when that is a path.
        step_token: The step separator token (must be one token of the vocabulary).
        system_prompt: System turn of the PRM conversation.
        batch_size: Completions per forward pass.
        device: Torch device.
        dtype: Torch dtype name for loading.
        trust_remote_code: Passed to ``from_pretrained`` (Qwen2.5-Math-PRM needs it).
    """

    name = "transformers-prm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        step_token: str = STEP_TOKEN,
        system_prompt: str = PRM_SYSTEM_PROMPT,
        batch_size: int = 8,
        device: str = "cpu",
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ) -> None:
        torch = _torch()
        if tokenizer is None:
            if not isinstance(model, str | Path):
                raise ValueError("pass a tokenizer when model is an already loaded object")
            tokenizer = model
        check_model_ref(model, "PRM")
        self._identity = model_identity(model)
        self.dtype = str(dtype)
        if isinstance(model, str | Path):
            model = _loading("PRM", model, _load_prm, str(model), getattr(torch, dtype), trust_remote_code)
            self._identity["revision"] = getattr(model.config, "_commit_hash", None)
        self.model = model.to(device).eval()
        self.tokenizer = _load_tokenizer(tokenizer, trust_remote_code)
        ids = self.tokenizer.encode(step_token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"step token {step_token!r} is not a single token of the PRM tokenizer: {ids}")
        self.step_token = step_token
        self.step_token_id = int(ids[0])
        self.system_prompt = system_prompt
        self.batch_size = int(batch_size)
        self.device = device
        pad = self.tokenizer.pad_token_id
        self._pad = int(pad) if pad is not None else 0

    def describe(self) -> dict[str, Any]:
        """What decides this PRM's scores, for the run header."""
        return {"backend": self.name, **self._identity, "step_token": self.step_token,
                "system_prompt": self.system_prompt, "dtype": self.dtype}

    def render(self, question: str, completion: str) -> tuple[str, int]:
        """The PRM input text for one completion and its number of steps."""
        steps = split_steps(completion)
        messages = prm_messages(question, steps, system_prompt=self.system_prompt, step_token=self.step_token)
        return _render(self.tokenizer, messages, add_generation_prompt=False), len(steps)

    def score(self, questions: Sequence[str], completions: Sequence[str]) -> list[list[float]]:
        """Per-step probabilities (see :class:`~.base.Scorer`)."""
        torch = _torch()
        if len(questions) != len(completions):
            raise ValueError(f"{len(questions)} questions but {len(completions)} completions")
        rendered = [self.render(q, c) for q, c in zip(questions, completions, strict=True)]
        out: list[list[float]] = [[] for _ in rendered]
        todo = [i for i, (_, k) in enumerate(rendered) if k > 0]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            enc = [
                self.tokenizer.encode(rendered[i][0], add_special_tokens=False) for i in chunk
            ]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), self._pad, dtype=torch.long)
            mask = torch.zeros((len(enc), width), dtype=torch.long)
            for row, e in enumerate(enc):  # right padding: positions of real tokens unchanged
                ids[row, : len(e)] = torch.tensor(e)
                mask[row, : len(e)] = 1
            with torch.no_grad():
                try:
                    res = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                except Exception as e:
                    raise EngineError(f"PRM forward pass failed: {e}") from e
            logits = getattr(res, "logits", None)
            if logits is None:
                logits = res[0]
            logits = logits.float().cpu().numpy()
            if logits.ndim != 3 or logits.shape[-1] != 2:
                raise EngineError(f"PRM output has shape {logits.shape}, expected (batch, tokens, 2)")
            for row, (i, e) in enumerate(zip(chunk, enc, strict=True)):
                pos = np.flatnonzero(np.asarray(e) == self.step_token_id)
                if len(pos) != rendered[i][1]:
                    raise EngineError(
                        f"completion {i}: {rendered[i][1]} steps but {len(pos)} step tokens after "
                        "tokenization (does the completion contain the step token itself?)"
                    )
                out[i] = step_probabilities(logits[row, pos]).tolist()
        return out


def _load_prm(path: str, dtype, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForTokenClassification") for a in archs):
        return AutoModelForTokenClassification.from_pretrained(path, dtype=dtype)
    # e.g. Qwen2ForProcessRewardModel, whose code ships with the checkpoint.
    return AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)


def make_tiny_models(directory: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny random Qwen2 generator and PRM (with tokenizers) to disk.

    The tokenizer is byte level (one token per UTF-8 byte, no merges) plus ChatML
    special tokens and the PRM step token ``<extra_0>``; the models have 2 layers of
    width 32 and random weights (seeded), so they load in milliseconds and
    generate gibberish. Nothing is downloaded.

    Args:
        directory: Where to write ``generator/`` and ``prm/``.
        seed: Torch seed for the random weights.

    Returns:
        (generator path, PRM path), each loadable with ``from_pretrained``.
    """
    torch = _torch()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen2ForTokenClassification,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", STEP_TOKEN]
    # Byte-level BPE without merges (one token per byte), the format of Qwen2's own
    # tokenizer, so AutoTokenizer (which picks Qwen2Tokenizer for model_type "qwen2")
    # round-trips every text, whitespace included.
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(specials + byte_symbols)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", STEP_TOKEN],
    )
    tok.chat_template = _CHATML
    common = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    directory = Path(directory)
    gen_dir, prm_dir = directory / "generator", directory / "prm"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = Qwen2ForCausalLM(Qwen2Config(**common))
        # A wider initialisation than the default 0.02 so step scores spread over [0, 1].
        prm = Qwen2ForTokenClassification(Qwen2Config(num_labels=2, initializer_range=0.5, **common))
    with contextlib.ExitStack():
        gen.generation_config.eos_token_id = vocab["<|im_end|>"]
        gen.generation_config.pad_token_id = vocab["<|endoftext|>"]
        gen.save_pretrained(gen_dir)
        prm.save_pretrained(prm_dir)
        tok.save_pretrained(gen_dir)
        tok.save_pretrained(prm_dir)
    return gen_dir, prm_dir
