"""Several servers behind one engine: least outstanding work and a circuit breaker per server.

:class:`Balancer` is the bookkeeping of the HTTP engine (:class:`~.openai.HTTPClient`)
when it is given several base URLs; it does no I/O itself. For every attempt of a
request the engine asks :meth:`Balancer.acquire` for a server and reports the
outcome with :meth:`Balancer.release`:

* **Least outstanding work.** A request is sent to the usable server with the least
  work in flight (requests weighted by the samples ``n`` they ask for); ties go
  round-robin, so a sequential caller still spreads its requests.
* **Retries move.** An attempt that fails (timeout, connection error, 5xx, 429) is
  retried on a server this request has not failed on yet when one is usable, at once;
  back on a server it already failed on only after an exponential backoff. Each server
  gets at most ``max_retries + 1`` attempts of one request. Retries resend the same
  body, seed included, so a moved request returns the same samples: nothing is lost or
  drawn twice.
* **Circuit breaker per server.** ``failure_threshold`` consecutive failed attempts
  open a server's breaker: no request is sent there for ``cooldown`` seconds; then one
  request is let through as a probe (half-open). The probe's success closes the
  breaker, its failure opens it for another cool-down. A 429 (the server is alive but
  busy) and a 4xx answer neither open nor close it.
* **Every server open.** A request that finds every breaker open fails at once with
  :class:`ServersUnavailableError`, one line naming each server and its last failure;
  a live run keeps what it has written and resumes when rerun.

Server URLs are shown without credentials (``user:password@``) in every message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .base import EngineError

__all__ = ["Balancer", "CircuitBreaker", "ServersUnavailableError", "display_url", "parse_urls"]

log = logging.getLogger("optscale_jax.engines")


class ServersUnavailableError(EngineError):
    """Every server's circuit breaker is open."""


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (for messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse_urls(urls: str | Sequence[str], name: str = "base_url") -> list[str]:
    """Server roots from one URL, a comma-separated list, or a sequence of either.

    Args:
        urls: ``"http://a:8000"``, ``"http://a:8000,http://b:8000"`` or a list of such.
        name: Argument name for errors.

    Returns:
        The URLs, stripped, without a trailing ``/``, in the given order.

    Raises:
        ValueError: When there is none, one is not ``http(s)://host...``, or one is given twice.
    """
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{name}: expected URL strings, got {type(item).__name__}")
        for raw in item.split(","):
            url = raw.strip().rstrip("/")
            if not url:
                continue
            parts = urlsplit(url)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:  # a port that is not a number in 0..65535
                port_ok = False
            if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok
                    or any(ch.isspace() for ch in url) or parts.query or parts.fragment):
                raise ValueError(f"{name}: {display_url(url)!r} is not a server root; expected "
                                 "http://host:port or https://host:port")
            if url in out:
                raise ValueError(f"{name}: {display_url(url)} is given twice")
            out.append(url)
    if not out:
        raise ValueError(f"{name}: no server URL given; expected http://host:port[,http://host:port...]")
    return out


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooldown``.

    Not thread-safe by itself; :class:`Balancer` calls it under its lock.

    Args:
        threshold: Consecutive failures that open it (>= 1).
        cooldown: Seconds it stays open before one probe is let through (>= 0).
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(self, threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if int(threshold) < 1 or not float(cooldown) >= 0:
            raise ValueError(f"need failure threshold >= 1 and cooldown >= 0; got {threshold}, {float(cooldown)}")
        self.threshold = int(threshold)
        self.cooldown = float(cooldown)
        self._clock = clock
        self.state = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False
        self.times_opened = 0

    def usable(self) -> bool:
        """Whether a request may be sent now (without taking the probe)."""
        if self.state == "closed":
            return True
        if self.probing:
            return False
        return self._clock() - self.opened_at >= self.cooldown

    def take(self) -> None:
        """A request is being sent; if the breaker is open (cool-down over) it is the probe."""
        if self.state != "closed":
            self.state, self.probing = "half-open", True

    def success(self) -> bool:
        """Record a success; True when this closed an open breaker."""
        reopened = self.state != "closed"
        self.state, self.consecutive, self.probing = "closed", 0, False
        return reopened

    def failure(self) -> bool:
        """Record a failure; True when this opened the breaker."""
        self.consecutive += 1
        if self.state == "half-open" or (self.state == "closed" and self.consecutive >= self.threshold):
            self.state, self.opened_at, self.probing = "open", self._clock(), False
            self.times_opened += 1
            return True
        return False

    def neutral(self) -> None:
        """An attempt that says nothing about the server's health (429, 4xx): free the probe."""
        if self.state == "half-open":
            self.state, self.probing = "open", False  # cool-down already over: the next one probes


@dataclass
class _Server:
    url: str
    breaker: CircuitBreaker
    outstanding: float = 0.0
    attempts: int = 0
    failures: int = 0
    work_done: float = 0.0
    last_error: str = ""


class Balancer:
    """Pick servers by least outstanding work, with a circuit breaker each (thread-safe).

    Args:
        urls: Server roots (see :func:`parse_urls`).
        failure_threshold: Consecutive failed attempts that open a server's breaker.
        cooldown: Seconds a breaker stays open before a probe.
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(self, urls: str | Sequence[str], *, failure_threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.urls = parse_urls(urls)
        self._servers = [_Server(u, CircuitBreaker(failure_threshold, cooldown, clock)) for u in self.urls]
        self._lock = threading.Lock()
        self._turn = 0

    def __len__(self) -> int:
        return len(self._servers)

    def acquire(self, weight: float, tried: dict[int, int], max_tries: int) -> int | None:
        """Choose the server for the next attempt of a request and count its work as in flight.

        Args:
            weight: The request's work (samples asked for).
            tried: Attempts of this request so far per server index (not modified).
            max_tries: Attempts of one request a server may get.

        Returns:
            The server index, or None when this request has used up its attempts on
            every server whose breaker would let it through.

        Raises:
            ServersUnavailableError: When every server's breaker is open.
        """
        with self._lock:
            n = len(self._servers)
            usable = [i for i, s in enumerate(self._servers) if s.breaker.usable()]
            if not usable:
                raise ServersUnavailableError(self._all_open_message())
            left = [i for i in usable if tried.get(i, 0) < max_tries]
            if not left:
                return None
            # fewest attempts of this request first (a fresh server before a retry), then
            # least work in flight, then round-robin
            best = min(left, key=lambda i: (tried.get(i, 0), self._servers[i].outstanding, (i - self._turn) % n))
            self._turn = (best + 1) % n
            s = self._servers[best]
            s.breaker.take()
            s.outstanding += weight
            s.attempts += 1
            return best

    def release(self, index: int, weight: float, outcome: str, error: str = "") -> None:
        """Report an attempt's outcome: ``"ok"``, ``"failed"`` (counts toward the breaker) or ``"neutral"``."""
        with self._lock:
            s = self._servers[index]
            s.outstanding -= weight
            if outcome == "ok":
                s.work_done += weight
                if s.breaker.success():
                    log.warning("server %s answers again: circuit closed", display_url(s.url))
            elif outcome == "failed":
                s.failures += 1
                s.last_error = error
                if s.breaker.failure():
                    log.warning("server %s: circuit open after %d consecutive failures (last: %s); "
                                "next probe in %g s", display_url(s.url), s.breaker.consecutive, error,
                                s.breaker.cooldown)
            else:
                s.breaker.neutral()

    def _all_open_message(self) -> str:
        b = self._servers[0].breaker
        each = "; ".join(f"{display_url(s.url)} (last: {s.last_error or 'n/a'})" for s in self._servers)
        return (f"every server is unavailable: the circuit is open after {b.threshold} consecutive "
                f"failures on each of {len(self._servers)} server(s): {each}; next probe after a "
                f"{b.cooldown:g} s cool-down")

    def stats(self) -> list[dict[str, Any]]:
        """Per server: URL (no credentials), breaker state, attempts, failures, work done and in flight."""
        with self._lock:
            return [{"url": display_url(s.url), "state": s.breaker.state, "attempts": s.attempts,
                     "failures": s.failures, "work_done": s.work_done, "outstanding": s.outstanding,
                     "times_opened": s.breaker.times_opened} for s in self._servers]
