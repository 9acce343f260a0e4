"""A vLLM server through its OpenAI-compatible HTTP API (httpx).

The path for deployments beyond one machine: ``vllm serve`` with tensor /
pipeline parallelism (multi-node through Ray) behind one URL. Sampling uses
``POST /v1/chat/completions`` (the server applies the model's chat template)
or ``POST /v1/completions`` (raw prompts) with ``n`` and ``seed``, and asks for
``return_token_ids`` (a vLLM extension) so every completion's token count is
exact; PRM scoring uses vLLM's ``POST /pooling`` with chat ``messages``,
``task="token_classify"`` and ``use_activation=false`` (raw logits, softmax
here). When the server returns one row per token rather than per step, the
step positions come from ``POST /tokenize`` of the same messages; start the
PRM server with ``--pooler-config '{"step_tag_id": 151651}'`` to skip that call.

Every request has a timeout; connection errors, timeouts, 429 and 5xx are
retried with exponential backoff; other 4xx fail at once with the server's
message. At most ``concurrency`` requests are in flight.

Several servers (``base_url`` a list or comma-separated): each request goes to the
server with the least work in flight, a failed attempt moves to another server with the
same body and seed, and a circuit breaker per server stops sending to a dead one
(:mod:`optscale_jax.engines.balancer`). To scale one endpoint instead, let vLLM spread it
over GPUs itself: ``vllm serve MODEL --data-parallel-size K``.

Checked against the request/response models of vLLM 0.32.0
(``CompletionResponseChoice.token_ids``, ``ChatCompletionResponseChoice``,
``PoolingChatRequest``, ``PoolingResponse``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .balancer import Balancer, display_url
from .base import Completion, EngineError, SampleRequest, check_requests
from .prm import PRM_SYSTEM_PROMPT, STEP_TOKEN, prm_messages, split_steps, step_probabilities

__all__ = ["HTTPClient", "OpenAIEngine", "OpenAIPRM"]

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HTTPClient:
    """JSON POSTs to one or several servers: timeouts, retries with backoff, bounded concurrency.

    With several base URLs, each attempt goes to the server with the least work in
    flight, a failed attempt is retried on another server, and each server has a
    circuit breaker (see :mod:`optscale_jax.engines.balancer`).

    Args:
        base_url: Server root, e.g. ``"http://gpu-node:8000"`` (no ``/v1``); several as a
            list or comma-separated. All must serve the same model.
        api_key: Sent as a bearer token (to every server) when given.
        timeout: Seconds per request (connect, read, write, pool).
        max_retries: Retries of retryable failures per server (each server gets at most
            ``max_retries + 1`` attempts of one request).
        backoff: First backoff in seconds before a retry on a server that already failed
            this request; doubles each retry there. A move to another server does not wait.
        max_backoff: Upper bound of one backoff.
        concurrency: Maximum requests in flight, over all servers together.
        failure_threshold: Consecutive failed attempts that open a server's circuit breaker.
        cooldown: Seconds an open breaker waits before one probe request.
        sleep: Injected for tests.
        clock: Monotonic clock of the breakers (injected for tests).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        concurrency: int = 32,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import httpx

        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError(
                f"need concurrency >= 1, max_retries >= 0, timeout > 0; got {concurrency}, {max_retries}, {timeout}"
            )
        self._httpx = httpx
        self.balancer = Balancer(base_url, failure_threshold=failure_threshold, cooldown=cooldown, clock=clock)
        self.base_urls = list(self.balancer.urls)
        self.base_url = self.base_urls[0]
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.concurrency = int(concurrency)
        self._sleep = sleep
        self._secret = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._clients = [
            httpx.Client(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            )
            for url in self.base_urls
        ]

    def close(self) -> None:
        """Close the connection pools."""
        for c in self._clients:
            c.close()

    def stats(self) -> list[dict[str, Any]]:
        """Per server: URL (no credentials), breaker state, attempts, failures, work done."""
        return self.balancer.stats()

    def post(self, path: str, body: dict[str, Any], *, weight: float = 1.0) -> dict[str, Any]:
        """POST JSON and return the decoded JSON response, retrying transient failures.

        Args:
            path: Endpoint, e.g. ``"/v1/completions"``.
            body: JSON body (resent unchanged on a retry, on any server).
            weight: The request's work for the balancer (samples asked for).

        Raises:
            EngineError: On a non-retryable status, an undecodable body, or when
                the retries are exhausted (naming URL, attempts and last failure);
                :class:`~.balancer.ServersUnavailableError` when every server's
                breaker is open. The API key never appears in the message, even if
                the server echoes it.
        """
        try:
            return self._post(path, body, float(weight))
        except EngineError as e:
            if not (self._secret and self._secret in str(e)):
                raise
            message = str(e).replace(self._secret, "***")
            kind = type(e)
        raise kind(message)  # outside the handler: no link to the unredacted error

    def _post(self, path: str, body: dict[str, Any], weight: float) -> dict[str, Any]:
        httpx = self._httpx
        tried: dict[int, int] = {}
        attempts, last = 0, ""
        while True:
            i = self.balancer.acquire(weight, tried, self.max_retries + 1)
            if i is None:
                break
            url = f"{display_url(self.base_urls[i])}{path}"
            outcome, error = "neutral", ""
            try:
                k = tried.get(i, 0)
                tried[i] = k + 1
                attempts += 1
                if k:
                    self._sleep(min(self.max_backoff, self.backoff * 2 ** (k - 1)))
                try:
                    resp = self._clients[i].post(path, json=body)
                except httpx.TimeoutException as e:
                    outcome, error = "failed", f"timed out ({type(e).__name__})"
                    continue
                except httpx.TransportError as e:
                    outcome, error = "failed", f"{type(e).__name__}: {e}"
                    continue
                if resp.status_code in _RETRY_STATUS:
                    error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                    # 429: alive but busy, retried but not a breaker failure
                    outcome = "neutral" if resp.status_code == 429 else "failed"
                    continue
                if resp.status_code >= 400:
                    raise EngineError(f"POST {url} failed with HTTP {resp.status_code}: {resp.text[:1000]}")
                try:
                    data = resp.json()
                except ValueError as e:
                    raise EngineError(f"POST {url} returned a body that is not JSON: {resp.text[:300]!r}") from e
                outcome = "ok"
                return data
            finally:
                if error and self._secret:  # the balancer logs it
                    error = error.replace(self._secret, "***")
                if error:
                    last = error if len(self.base_urls) == 1 else f"{url}: {error}"
                self.balancer.release(i, weight, outcome, error)
        if len(self.base_urls) == 1:
            where = f"POST {display_url(self.base_url)}{path}"
        else:
            where = f"POST {path} to {len(self.base_urls)} servers"
        raise EngineError(f"{where} failed after {attempts} attempts; last: {last}")

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """Apply ``fn`` to ``items`` with at most ``concurrency`` in flight; results in order."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))


class OpenAIEngine:
    """Sample completions from an OpenAI-compatible (vLLM) server.

    Args:
        base_url: Server root, e.g. ``"http://localhost:8000"``; several (a list or
            comma-separated) share the requests by least outstanding work (see
            :class:`HTTPClient`).
        model: Served model name.
        chat: True: ``/v1/chat/completions`` (server-side chat template);
            False: ``/v1/completions`` with the prompt sent as is.
        temperature: Sampling temperature (paper: 0.7).
        top_p: Nucleus mass (paper: 0.95).
        max_tokens: Maximum completion tokens.
        system_prompt: System turn (chat mode only); None for none.
        **http: Options of :class:`HTTPClient` (timeout, max_retries, backoff,
            concurrency, api_key, ...).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        chat: bool = True,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 32768,
        system_prompt: str | None = None,
        **http: Any,
    ) -> None:
        self.http = HTTPClient(base_url, **http)
        self.model = model
        self.chat = bool(chat)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.system_prompt = system_prompt

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def describe(self) -> dict[str, Any]:
        """What decides this engine's samples, for the run header.

        The served model name and sampling settings; never the API key, nor the
        server URL (it may carry credentials, and a moved server serves the same run).
        """
        return {"backend": self.name, "model": self.model, "revision": None, "chat": self.chat,
                "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "system_prompt": self.system_prompt}

    def _body(self, r: SampleRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": int(r.n),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "return_token_ids": True,
        }
        if r.seed is not None:
            body["seed"] = int(r.seed)
        if not self.chat:
            return "/v1/completions", {**body, "prompt": r.prompt}
        messages = [{"role": "user", "content": r.prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return "/v1/chat/completions", {**body, "messages": messages}

    def _one(self, r: SampleRequest) -> list[Completion]:
        path, body = self._body(r)
        data = self.http.post(path, body, weight=r.n)
        try:
            choices = sorted(data["choices"], key=lambda c: c["index"])
            usage = data.get("usage") or {}
            out = []
            for c in choices:
                text = c["text"] if not self.chat else (c["message"].get("content") or "")
                # a server with a reasoning parser splits the thinking off ("reasoning" in
                # vLLM 0.32, "reasoning_content" before): keep the whole completion
                thinking = self.chat and (c["message"].get("reasoning") or c["message"].get("reasoning_content"))
                if thinking:
                    text = f"{thinking}\n\n{text}"
                if c.get("token_ids") is not None:
                    tokens = len(c["token_ids"])
                elif len(choices) == 1 and "completion_tokens" in usage:
                    tokens = int(usage["completion_tokens"])
                else:
                    raise EngineError(
                        "the server returned no per-choice token_ids (vLLM's return_token_ids); "
                        "per-completion token counts are unknown for n > 1"
                    )
                out.append(Completion(text=text, tokens=tokens, finish_reason=c.get("finish_reason")))
        except (KeyError, TypeError, AttributeError) as e:
            raise EngineError(f"malformed response from {path}: missing {e}; got {str(data)[:300]}") from e
        if len(out) != r.n:
            raise EngineError(f"{path} returned {len(out)} choices, asked for n={r.n}")
        return out

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Completion]]:
        """Sample ``r.n`` completions for every request, concurrently (see :class:`~.base.Engine`)."""
        check_requests(requests)
        return self.http.map(self._one, list(requests))


class OpenAIPRM:
    """Score completions with a PRM served by ``vllm serve <prm> --runner pooling``.

    Args:
        base_url: Server root; several as for :class:`OpenAIEngine`.
        model: Served PRM name (e.g. ``"Qwen/Qwen2.5-Math-PRM-7B"``).
        step_token: Step separator token.
        system_prompt: System turn of the PRM conversation.
        **http: Options of :class:`HTTPClient`.
    """

    name = "openai-prm"

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        step_token: str = STEP_TOKEN,
        system_prompt: str = PRM_SYSTEM_PROMPT,
        **http: Any,
    ) -> None:
        self.http = HTTPClient(base_url, **http)
        self.model = model
        self.step_token = step_token
        self.system_prompt = system_prompt
        self._step_token_id: int | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def describe(self) -> dict[str, Any]:
        """What decides this PRM's scores, for the run header (no URL, no API key)."""
        return {"backend": self.name, "model": self.model, "revision": None,
                "step_token": self.step_token, "system_prompt": self.system_prompt}

    @property
    def step_token_id(self) -> int:
        """Id of the step token, asked from the server's ``/tokenize`` once."""
        with self._lock:  # scoring threads share one lookup
            if self._step_token_id is None:
                data = self.http.post(
                    "/tokenize", {"model": self.model, "prompt": self.step_token, "add_special_tokens": False}
                )
                ids = data.get("tokens")
                if not isinstance(ids, list) or len(ids) != 1:
                    raise EngineError(f"step token {self.step_token!r} is not one token of {self.model}: {ids}")
                self._step_token_id = int(ids[0])
            return self._step_token_id

    def _one(self, item: tuple[str, list[str]]) -> list[float]:
        question, steps = item
        if not steps:
            return []
        messages = prm_messages(question, steps, system_prompt=self.system_prompt, step_token=self.step_token)
        data = self.http.post(
            "/pooling",
            {
                "model": self.model,
                "messages": messages,
                "task": "token_classify",
                "use_activation": False,
                "add_generation_prompt": False,
            },
        )
        try:
            rows = np.asarray(data["data"][0]["data"], dtype=np.float64)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise EngineError(f"malformed /pooling response: {str(data)[:300]}") from e
        if rows.ndim != 2 or rows.shape[1] != 2:
            raise EngineError(f"/pooling returned shape {rows.shape}, expected (tokens or steps, 2)")
        if rows.shape[0] != len(steps):
            tok = self.http.post(
                "/tokenize", {"model": self.model, "messages": messages, "add_generation_prompt": False}
            )
            ids = np.asarray(tok.get("tokens", []))
            if len(ids) != rows.shape[0]:
                raise EngineError(f"/pooling returned {rows.shape[0]} rows but /tokenize {len(ids)} tokens")
            pos = np.flatnonzero(ids == self.step_token_id)
            if len(pos) != len(steps):
                raise EngineError(f"{len(steps)} steps but {len(pos)} step tokens in the PRM input")
            rows = rows[pos]
        return step_probabilities(rows).tolist()

    def score(self, questions: Sequence[str], completions: Sequence[str]) -> list[list[float]]:
        """Per-step probabilities, concurrently (see :class:`~.base.Scorer`)."""
        if len(questions) != len(completions):
            raise ValueError(f"{len(questions)} questions but {len(completions)} completions")
        items = [(q, split_steps(c)) for q, c in zip(questions, completions, strict=True)]
        return self.http.map(self._one, items)
