"""A fake vLLM OpenAI-compatible server on 127.0.0.1 for tests.

Endpoints (shapes of vLLM 0.32.0): ``/v1/completions``, ``/v1/chat/completions``
(``n``, ``seed``, ``return_token_ids``, usage), ``/pooling`` (chat messages,
``task="token_classify"``; one row of 2 logits per prompt token, or per step
when ``step_rows=True``) and ``/tokenize``. A toy model answers: one token per
character, ChatML special tokens with Qwen2.5 ids.

Failure injection: ``fail`` is a list of HTTP statuses returned (in order) before
normal answers; ``delay`` seconds of sleep per request; the server stops by
itself after ``max_requests`` requests or ``lifetime`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<extra_0>": 151651}
EOS = SPECIAL["<|im_end|>"]
_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL) + ")")


def encode(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _SPLIT.split(text):
        ids.extend([SPECIAL[piece]] if piece in SPECIAL else [ord(c) for c in piece])
    return ids


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _unit(*parts: Any) -> float:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") / 2**64


def toy_completion(prompt: str, seed: int | None, index: int) -> str:
    k = 1 + int(3 * _unit("k", prompt, seed, index))
    steps = [f"step {j}: {int(100 * _unit('x', prompt, seed, index, j))}" for j in range(k)]
    return "\n\n".join(steps + [f"So \\boxed{{{int(3 * _unit('a', prompt, seed, index))}}}."])


def toy_step_logit(step_text: str) -> float:
    return 6.0 * _unit("prm", step_text) - 2.0


class FakeVLLMServer:
    """Run with ``with FakeVLLMServer(...) as srv: srv.url``."""

    def __init__(
        self,
        *,
        fail: list[int] | None = None,
        delay: float = 0.0,
        step_rows: bool = False,
        token_ids: bool = True,
        max_requests: int = 500,
        lifetime: float = 60.0,
    ) -> None:
        self.fail = list(fail or [])
        self.delay = delay
        self.step_rows = step_rows
        self.token_ids = token_ids
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.log: list[tuple[str, dict, int, Any]] = []  # (path, body, status, response)
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- handlers ---------------------------------------------------------------
    def _completion(self, body: dict, chat: bool) -> dict:
        prompt = chatml(body["messages"], True) if chat else body["prompt"]
        choices, total = [], 0
        for j in range(int(body.get("n", 1))):
            text = toy_completion(prompt, body.get("seed"), j)
            ids = encode(text) + [EOS]
            reason = "stop"
            if len(ids) > body.get("max_tokens", 16):
                ids, reason = ids[: body["max_tokens"]], "length"
                text = "".join(chr(t) for t in ids)
            total += len(ids)
            c: dict[str, Any] = {"index": j, "finish_reason": reason, "logprobs": None, "stop_reason": None}
            if chat:
                c["message"] = {"role": "assistant", "content": text, "reasoning": None, "tool_calls": []}
            else:
                c["text"] = text
            if self.token_ids and body.get("return_token_ids"):
                c["token_ids"] = ids
            choices.append(c)
        n_prompt = len(encode(prompt))
        return {
            "id": "cmpl-fake",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": total, "total_tokens": n_prompt + total},
        }

    def _pooling(self, body: dict) -> dict:
        if body.get("task") != "token_classify":
            raise ValueError(f"unsupported task {body.get('task')!r}")
        text = chatml(body["messages"], body.get("add_generation_prompt", False))
        ids = encode(text)
        steps = text.split("<|im_start|>assistant\n", 1)[-1].split("<extra_0>")[:-1]
        rows = [[0.0, 0.0] for _ in ids]
        pos = [t for t, i in enumerate(ids) if i == SPECIAL["<extra_0>"]]
        for t, s in zip(pos, steps, strict=True):
            rows[t] = [0.0, toy_step_logit(s)]
        if self.step_rows:
            rows = [rows[t] for t in pos]
        return {
            "id": "pool-fake",
            "object": "list",
            "created": 0,
            "model": body["model"],
            "data": [{"index": 0, "object": "pooling", "data": rows}],
            "usage": {"prompt_tokens": len(ids), "total_tokens": len(ids), "completion_tokens": 0},
        }

    def _tokenize(self, body: dict) -> dict:
        if "messages" in body:
            ids = encode(chatml(body["messages"], body.get("add_generation_prompt", True)))
        else:
            ids = encode(body["prompt"])
        return {"count": len(ids), "max_model_len": 32768, "tokens": ids, "token_strs": None}

    def handle(self, path: str, body: dict) -> tuple[int, Any]:
        with self._lock:
            if self.fail:
                return self.fail.pop(0), {"error": {"message": "injected failure", "type": "InternalServerError"}}
        if path == "/v1/completions":
            return 200, self._completion(body, chat=False)
        if path == "/v1/chat/completions":
            return 200, self._completion(body, chat=True)
        if path == "/pooling":
            return 200, self._pooling(body)
        if path == "/tokenize":
            return 200, self._tokenize(body)
        return 404, {"error": {"message": f"no route {path}"}}

    # -- server -----------------------------------------------------------------
    def __enter__(self) -> FakeVLLMServer:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                with srv._lock:
                    srv.inflight += 1
                    srv.max_inflight = max(srv.max_inflight, srv.inflight)
                counted = True

                def done() -> None:  # out of flight once the answer is ready, before it is sent:
                    nonlocal counted  # a client may start its next request the moment it reads it
                    if counted:
                        with srv._lock:
                            srv.inflight -= 1
                        counted = False

                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    time.sleep(srv.delay)
                    try:
                        status, resp = srv.handle(self.path, body)
                    except (KeyError, ValueError) as e:
                        status, resp = 400, {"error": {"message": f"bad request: {e}"}}
                    srv.log.append((self.path, body, status, resp))
                    done()
                    payload = json.dumps(resp).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    done()
                    if len(srv.log) >= srv.max_requests:
                        threading.Thread(target=srv._httpd.shutdown, daemon=True).start()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self._httpd.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
