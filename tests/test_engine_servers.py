"""Several inference servers: least outstanding work, retries that move, a circuit breaker each.

Real HTTP: the fake vLLM server of ``tests/fake_vllm/server.py`` (vLLM 0.32.0's request and
response JSON), several at once on 127.0.0.1, one of which fails mid-run (503s after M
requests, or its port closed). The balancer's choices are also checked against a brute-force
argmin, and the breaker's states with an injected clock.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

import pytest
from test_engine_openai import FAST, fake
from test_online import QUESTIONS
from test_online_integrity import SECRET, _bench, invoke

from optscale_jax.engines.balancer import (
    Balancer,
    CircuitBreaker,
    ServersUnavailableError,
    display_url,
    parse_urls,
)
from optscale_jax.engines.base import EngineError, SampleRequest
from optscale_jax.engines.openai import OpenAIEngine, OpenAIPRM
from optscale_jax.grading import Grader
from optscale_jax.journal import SAMPLES_FILE, read_samples
from optscale_jax.online import run
from optscale_jax.policies import BestOfN


class Flaky(fake.FakeVLLMServer):
    """Answers its first ``ok`` requests, then 503 to every one (a server that fell over)."""

    def __init__(self, ok: int, **kw):
        super().__init__(**kw)
        self.ok = ok
        self.seen = 0

    def handle(self, path, body):
        with self._lock:
            self.seen += 1
            down = self.seen > self.ok
        if down:
            return 503, {"error": {"message": "server fell over", "type": "ServiceUnavailableError"}}
        return super().handle(path, body)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def served(*servers, path="/v1/chat/completions"):
    """Successful answers per request seed, over all servers."""
    return Counter(b["seed"] for srv in servers for p, b, s, _ in srv.log if p == path and s == 200)


def expected(req: SampleRequest) -> list[str]:
    prompt = fake.chatml([{"role": "user", "content": req.prompt}], True)
    return [fake.toy_completion(prompt, req.seed, j) for j in range(req.n)]


# --- URLs ----------------------------------------------------------------------------------


def test_parse_urls_and_display():
    assert parse_urls("http://a:1") == ["http://a:1"]
    assert parse_urls(["http://a:1/, http://b:2", "https://c"]) == ["http://a:1", "http://b:2", "https://c"]
    with pytest.raises(ValueError, match="--base-url: http://a:1 is given twice"):
        parse_urls("http://a:1,http://a:1/", "--base-url")
    with pytest.raises(ValueError, match="'ftp://a' is not a server root"):
        parse_urls("ftp://a")
    with pytest.raises(ValueError, match="no server URL given"):
        parse_urls(" , ")
    with pytest.raises(ValueError, match="'a:8000' is not a server root"):
        parse_urls("a:8000")
    assert display_url("http://u:pw@h:1/x") == "http://h:1/x" and display_url("http://h:1") == "http://h:1"
    with pytest.raises(ValueError, match="'ftp://h:1' is not") as e:  # credentials never in the message
        parse_urls("ftp://u:pw@h:1")
    assert "pw" not in str(e.value)


# --- the balancer without I/O ---------------------------------------------------------------


def test_breaker_states_with_a_clock():
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown=10.0, clock=clock)
    assert not b.failure() and not b.failure() and b.state == "closed"
    assert b.success() is False and b.consecutive == 0  # a success resets the count
    assert [b.failure() for _ in range(3)] == [False, False, True] and b.state == "open"
    assert not b.usable()
    clock.t = 9.99
    assert not b.usable()
    clock.t = 10.0
    assert b.usable()
    b.take()
    assert b.state == "half-open" and not b.usable()  # one probe at a time
    assert b.failure() and b.state == "open" and b.opened_at == 10.0  # a failed probe: another cool-down
    clock.t = 19.0
    assert not b.usable()
    clock.t = 20.0
    b.take()
    b.neutral()  # a 429 answer to the probe says nothing: the next request probes again
    assert b.state == "open" and b.usable()
    b.take()
    assert b.success() is True and b.state == "closed" and b.usable() and b.times_opened == 2


def test_choice_is_least_outstanding_work_brute_force():
    """Random acquire/release sequences: each choice minimises (this request's attempts,
    work in flight) over the usable servers, as a brute-force scan computes it."""
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(1, 4)
        bal = Balancer([f"http://s{i}:1" for i in range(n)], failure_threshold=10**6)
        inflight: list[tuple[int, float]] = []
        work = [0.0] * n
        for _ in range(60):
            if inflight and rng.random() < 0.4:
                i, w = inflight.pop(rng.randrange(len(inflight)))
                bal.release(i, w, "ok")
                work[i] -= w
                continue
            w = float(rng.randint(1, 8))
            tried = {i: rng.randint(0, 1) for i in range(n) if rng.random() < 0.3}
            i = bal.acquire(w, tried, 2)
            key = [(tried.get(k, 0), work[k]) for k in range(n)]
            assert key[i] == min(key)
            work[i] += w
            inflight.append((i, w))
        assert [s["outstanding"] for s in bal.stats()] == work


def test_ties_go_round_robin_and_exhausted_requests_get_none():
    bal = Balancer("http://a:1,http://b:1,http://c:1")
    picks = []
    for _ in range(6):
        i = bal.acquire(1.0, {}, 1)
        bal.release(i, 1.0, "ok")
        picks.append(i)
    assert picks == [0, 1, 2, 0, 1, 2]
    assert bal.acquire(1.0, {0: 1, 1: 1, 2: 1}, 1) is None


# --- real HTTP ------------------------------------------------------------------------------


def test_a_server_that_fails_mid_run_loses_nothing():
    """B answers 3 requests, then 503s: its breaker opens, A takes the load, and every
    request's samples arrive exactly once and equal what one healthy server gives."""
    reqs = [SampleRequest(f"question {i}", 1 + i % 3, seed=1000 + i) for i in range(24)]
    with fake.FakeVLLMServer(delay=0.01) as a, Flaky(ok=3, delay=0.01) as b:
        eng = OpenAIEngine([a.url, b.url], "m", concurrency=4, failure_threshold=2, cooldown=600.0,
                           max_retries=2, **FAST)
        out = eng.sample(reqs)
        stats = eng.http.stats()
        eng.close()
    assert [[c.text for c in comps] for comps in out] == [expected(r) for r in reqs]
    both = served(a, b)
    assert both == Counter({r.seed: 1 for r in reqs})  # each request answered exactly once
    assert served(b).total() == 3 and served(a).total() == len(reqs) - 3
    sa, sb = stats
    # the breaker opens at the 2nd consecutive failure; attempts already in flight then (at
    # most concurrency - 1 more) still fail there, and none are sent after
    assert sb["state"] == "open" and sb["times_opened"] == 1 and 2 <= sb["failures"] <= 2 + 3
    assert sa["state"] == "closed" and sa["failures"] == 0
    assert sb["outstanding"] == sa["outstanding"] == 0
    assert len(b.log) == 3 + sb["failures"]
    assert sa["work_done"] + sb["work_done"] == sum(r.n for r in reqs)


def test_load_goes_to_the_server_with_less_work_in_flight():
    """One request asks for 8 samples and its server holds it until the other server has
    answered the 8 small ones: every small request that starts while the big one is in flight
    goes to the other server (round-robin by request count would send half of them to it)."""
    import threading

    release = threading.Event()

    class Holding(fake.FakeVLLMServer):
        def handle(self, path, body):
            if body.get("n") == 8:
                release.wait(10)
            return super().handle(path, body)

    reqs = [SampleRequest("big", 8, seed=0)] + [SampleRequest(f"q{i}", 1, seed=1 + i) for i in range(8)]
    with Holding() as a, Holding() as b:
        def watch():
            while sum(s == 200 for srv in (a, b) for _, bd, s, _ in list(srv.log) if bd["n"] == 1) < 7:
                threading.Event().wait(0.01)
            release.set()

        threading.Thread(target=watch, daemon=True).start()
        eng = OpenAIEngine([a.url, b.url], "m", concurrency=2, **FAST)
        out = eng.sample(reqs)
        eng.close()
        release.set()
    assert [[c.text for c in x] for x in out] == [expected(r) for r in reqs]
    big = a if any(bd["n"] == 8 for _, bd, _, _ in a.log) else b
    other = b if big is a else a
    # at most one small request raced the big one to its server before the big one was counted
    assert sum(bd["n"] == 1 for _, bd, _, _ in big.log) <= 1
    assert sum(bd["n"] == 1 for _, bd, _, _ in other.log) >= 7


def test_connection_refused_moves_to_the_other_server():
    a = fake.FakeVLLMServer().__enter__()
    with fake.FakeVLLMServer() as b:
        eng = OpenAIEngine([a.url, b.url], "m", concurrency=2, failure_threshold=2, cooldown=600.0, **FAST)
        first = [SampleRequest(f"q{i}", 2, seed=i) for i in range(6)]
        assert [[c.text for c in x] for x in eng.sample(first)] == [expected(r) for r in first]
        assert served(a).total() >= 2 and served(b).total() >= 2  # both had work
        a.__exit__()  # port closed: connection refused from now on
        second = [SampleRequest(f"p{i}", 1, seed=100 + i) for i in range(8)]
        assert [[c.text for c in x] for x in eng.sample(second)] == [expected(r) for r in second]
        sa, sb = eng.http.stats()
        eng.close()
    assert sa["state"] == "open" and sb["state"] == "closed"
    assert all(served(b)[r.seed] == 1 for r in second)  # all of the second batch went to B
    assert served(a, b) == Counter({r.seed: 1 for r in first + second})


def test_every_server_open_is_one_line_naming_them_and_the_key_stays_out(caplog):
    caplog.set_level(logging.WARNING, logger="optscale_jax.engines")

    class Leaky(Flaky):  # its 503 body echoes the key
        def handle(self, path, body):
            return 503, {"error": {"message": f"down; your key {SECRET}"}}

    with Leaky(ok=0) as a, Flaky(ok=0) as b:
        eng = OpenAIEngine([a.url, f"http://user:pw@{b.url[len('http://'):]}"], "m", failure_threshold=2,
                           cooldown=600.0, max_retries=3, api_key=SECRET, **FAST)
        with pytest.raises(ServersUnavailableError) as e:
            eng.sample([SampleRequest("q", 1, seed=1)])
        message = str(e.value)
        with pytest.raises(ServersUnavailableError):  # later requests fail at once
            eng.sample([SampleRequest("q", 1, seed=2)])
        eng.close()
    assert len(a.log) == 2 and len(b.log) == 2  # 2 attempts each opened both breakers; none after
    assert "\n" not in message and message.startswith("every server is unavailable")
    assert f"{a.url} (last: HTTP 503" in message and f"{b.url} (last: HTTP 503" in message
    assert SECRET not in message and "pw" not in message and "***" in message
    assert isinstance(e.value, EngineError) and e.value.__context__ is None
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "circuit open" in logged and SECRET not in logged and "user:pw" not in logged


def test_half_open_probe_closes_the_breaker():
    clock, sleeps = Clock(), []
    with fake.FakeVLLMServer(fail=[503, 503]) as a:
        eng = OpenAIEngine(a.url, "m", failure_threshold=2, cooldown=30.0, max_retries=5, clock=clock,
                           timeout=5.0, backoff=0.5, sleep=sleeps.append)
        with pytest.raises(ServersUnavailableError, match=r"open after 2 consecutive failures"):
            eng.sample([SampleRequest("q", 1, seed=1)])
        clock.t = 29.0
        with pytest.raises(ServersUnavailableError):
            eng.sample([SampleRequest("q", 1, seed=1)])
        clock.t = 30.0  # cool-down over: the next request is the probe, and it succeeds
        (comps,) = eng.sample([SampleRequest("q", 1, seed=1)])
        (st,) = eng.http.stats()
    assert comps[0].text == expected(SampleRequest("q", 1, seed=1))[0]
    assert st["state"] == "closed" and st["times_opened"] == 1 and sleeps == [0.5]
    assert [s for _, _, s, _ in a.log] == [503, 503, 200]


def test_prm_over_several_servers_with_one_failing():
    completions = [f"step {i}\n\nSo \\boxed{{{i}}}." for i in range(12)]
    with fake.FakeVLLMServer(step_rows=True) as a, Flaky(ok=2, step_rows=True) as b:
        prm = OpenAIPRM(f"{a.url},{b.url}", "prm", concurrency=3, failure_threshold=1, cooldown=600.0, **FAST)
        scores = prm.score(["q"] * 12, completions)
        stats = prm.http.stats()
    with fake.FakeVLLMServer(step_rows=True) as ref:
        assert scores == OpenAIPRM(ref.url, "prm", **FAST).score(["q"] * 12, completions)
    assert stats[1]["state"] == "open"
    pooled = Counter(b["messages"][2]["content"] for srv in (a, b) for p, b, s, _ in srv.log
                     if p == "/pooling" and s == 200)
    assert sorted(pooled.values()) == [1] * 12


# --- a live run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=0) as g:
        yield g


def _samples(out):
    _, recs = read_samples(out / SAMPLES_FILE)
    return sorted(((r["q"], r["j"]), json.dumps(r, sort_keys=True)) for r in recs)


def test_live_run_with_one_failing_server_has_every_sample_once(tmp_path, grader):
    """online.run with two generator and two PRM servers, one falling over after 4 requests:
    the journal holds each (question, sample) exactly once, with no gaps, and equals the
    journal of a run against one healthy server."""
    kw = dict(batch=2, seed=3, grader=grader, progress=False)
    with fake.FakeVLLMServer(step_rows=True) as ref:
        run(QUESTIONS, OpenAIEngine(ref.url, "m", **FAST), OpenAIPRM(ref.url, "p", **FAST), BestOfN(4),
            out=tmp_path / "ref", **kw)
    with fake.FakeVLLMServer(step_rows=True) as a, Flaky(ok=4, step_rows=True) as b:
        opts = dict(concurrency=3, failure_threshold=2, cooldown=600.0, **FAST)
        eng, prm = OpenAIEngine([a.url, b.url], "m", **opts), OpenAIPRM([b.url, a.url], "p", **opts)
        res = run(QUESTIONS, eng, prm, BestOfN(4), out=tmp_path / "two", **kw)
        assert eng.http.stats()[1]["state"] == "open" and prm.http.stats()[0]["state"] == "open"
    got = _samples(tmp_path / "two")
    assert [k for k, _ in got] == [(q, j) for q in range(len(QUESTIONS)) for j in range(4)]
    assert got == _samples(tmp_path / "ref")
    assert res.summary["samples"] == 4 * len(QUESTIONS)


def test_live_run_with_every_server_down_stops_and_resumes(tmp_path, grader):
    """Both servers fall over after the first wave: the run stops with the one-line error,
    keeps the wave it wrote, and a rerun against healthy servers completes it; the journal
    then equals a run that never failed."""
    kw = dict(batch=2, seed=5, grader=grader, progress=False)
    opts = dict(concurrency=2, failure_threshold=2, cooldown=600.0, **FAST)
    qs = QUESTIONS[:3]
    with fake.FakeVLLMServer(step_rows=True) as ref:
        run(qs, OpenAIEngine(ref.url, "m", **FAST), OpenAIPRM(ref.url, "p", **FAST), BestOfN(4),
            out=tmp_path / "ref", **kw)
    # wave 1 is 3 generation requests and 6 PRM requests: 9 answers between the two servers
    with Flaky(ok=5, step_rows=True) as a, Flaky(ok=4, step_rows=True) as b:
        urls = [a.url, b.url]
        with pytest.raises(ServersUnavailableError, match="every server is unavailable"):
            run(qs, OpenAIEngine(urls, "m", **opts), OpenAIPRM(urls, "p", **opts), BestOfN(4),
                out=tmp_path / "run", **kw)
    _, recs = read_samples(tmp_path / "run" / SAMPLES_FILE)
    assert sorted((r["q"], r["j"]) for r in recs) == [(q, j) for q in range(3) for j in range(2)]
    with fake.FakeVLLMServer(step_rows=True) as a, fake.FakeVLLMServer(step_rows=True) as b:
        urls = [a.url, b.url]
        res = run(qs, OpenAIEngine(urls, "m", **opts), OpenAIPRM(urls, "p", **opts), BestOfN(4),
                  out=tmp_path / "run", **kw)
    assert res.summary["resumed_samples"] == 6
    assert _samples(tmp_path / "run") == _samples(tmp_path / "ref")


# --- the CLI --------------------------------------------------------------------------------


def test_cli_several_urls_and_the_key_stays_out(tmp_path):
    bench = str(_bench(tmp_path / "b.json"))
    out = tmp_path / "run"
    args = ["--engine", "openai", "--model", "m", "--prm", "p", "--dataset", bench, "--policy", "BoN",
            "--n-max", "2", "--max-tokens", "64", "--timeout", "5", "--max-retries", "1", "--no-progress"]
    with fake.FakeVLLMServer() as a, Flaky(ok=1) as b:
        # repeated and comma-separated; the failing one's breaker opens (threshold 5 > its
        # 1 + 1 attempts per request, so requests move to A after a retry)
        res = invoke([*args, "--base-url", f"{a.url},{b.url}", "--base-url", "http://127.0.0.1:9",
                      "--prm-base-url", b.url, "--prm-base-url", a.url, "--api-key", SECRET,
                      "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    header, recs = read_samples(out / SAMPLES_FILE)
    assert "127.0.0.1" not in json.dumps(header) and len(recs) == 6
    assert Counter((r["q"], r["j"]) for r in recs) == Counter({(q, j): 1 for q in range(3) for j in range(2)})
    # every server down, the key from the environment: one engine-error line, no key, exit 3
    res = invoke([*args, "--base-url", "http://127.0.0.1:9,http://127.0.0.1:7", "--out", str(tmp_path / "r2")],
                 env={"OPTSCALE_API_KEY": SECRET})
    assert res.exit_code == 3 and SECRET not in res.output, res.output
    assert "ConnectError" in res.output


def test_cli_bad_url_is_one_line_exit_2_before_anything(tmp_path):
    bench = str(_bench(tmp_path / "b.json"))
    res = invoke(["--engine", "openai", "--model", "m", "--dataset", bench, "--out", str(tmp_path / "run"),
                  "--base-url", "http://127.0.0.1:9", "--prm-base-url", "localhost:8001", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == ("error: --prm-base-url: 'localhost:8001' is not a server root; expected "
                                  "http://host:port or https://host:port")
    assert not (tmp_path / "run").exists()
