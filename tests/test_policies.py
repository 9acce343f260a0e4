"""Each policy against a plain per-question Python restatement of its rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from optscale_jax.policies import (
    ASC,
    DSC,
    ESC,
    BestOfN,
    Observed,
    Policy,
    SelfConsistency,
    WeightedVote,
    best_of_n_index,
    beta_majority_probability,
    majority_index,
    official_peek,
    top_two_counts,
    weighted_vote_index,
)
from optscale_jax.pool import Pool
from optscale_jax.replay import run_policy


def random_pool(seed: int, q: int = 60, n: int = 12, min_len: int = 1, n_classes: int = 4) -> Pool:
    """Ragged pool with tied scores, missing answers and few answer classes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, n + 1, size=q)
    lengths[0] = n
    scores, ids, tokens, correct = [], [], [], []
    for length in lengths:
        s = np.round(rng.random(length), 1)  # many ties
        a = rng.integers(-1, n_classes, size=length)
        a[rng.random(length) < 0.5] = rng.integers(0, 2)  # a dominant class
        scores.append(s.tolist())
        ids.append(a.tolist())
        tokens.append(rng.integers(1, 1000, size=length).tolist())
        correct.append((a == 0).tolist())
    return Pool.from_arrays(scores, answer_ids=ids, tokens=tokens, correct=correct)


# ----------------------------------------------------------- plain restatements
def ref_bon(scores, ids):
    # the authors' rule: highest score, answer or not (these pools have no empty completions)
    cand = list(range(len(scores)))
    best = cand[0]
    for j in cand:
        if scores[j] > scores[best]:
            best = j
    return best


def ref_majority(ids):
    counts = Counter(a for a in ids if a >= 0)
    if not counts:
        return 0
    first = {}
    for j, a in enumerate(ids):
        if a >= 0 and a not in first:
            first[a] = j
    top = max(counts.values())
    winner = min((a for a in counts if counts[a] == top), key=lambda a: first[a])
    return first[winner]


def ref_weighted(scores, ids):
    tot, first = {}, {}
    for j, a in enumerate(ids):
        if a >= 0:
            tot[a] = tot.get(a, 0.0) + scores[j]
            first.setdefault(a, j)
    if not tot:
        return 0
    top = max(tot.values())
    winner = min((a for a in tot if tot[a] == top), key=lambda a: first[a])
    return first[winner]


def ref_esc(ids, cap, w, stride):
    n = 0
    while n < cap:
        n += 1
        if n >= w and (n - w) % stride == 0:
            win = ids[n - w : n]
            if all(a >= 0 for a in win) and len(set(win)) == 1:
                return n
    return n


def beta_prob(ids):
    c = Counter(a for a in ids if a >= 0).most_common(2)
    a = c[0][1] if c else 0
    b = c[1][1] if len(c) > 1 else 0
    return stats.beta.sf(0.5, a + 1, b + 1)


def ref_asc(ids, cap, thr, min_samples=1):
    n = 0
    while n < cap:
        n += 1
        if n >= max(min_samples, 2) and beta_prob(ids[:n]) >= thr:
            return n
    return n


def ref_dsc(pool: Pool, n_max: int, w: int, thr: float):
    q = pool.n_questions
    avail = [int(x) for x in pool.n_samples]
    cap = [min(a, n_max) for a in avail]
    drawn = [min(1, c) for c in cap]
    live = [i for i in range(q) if drawn[i] > 0]
    ranked = sorted(live, key=lambda i: (-pool.scores[i, 0], i))
    lo, hi = 0, len(ranked)
    while lo < hi:
        mid = (lo + hi) // 2
        i = ranked[mid]
        drawn[i] = max(drawn[i], min(w, cap[i]))
        row = [int(x) for x in pool.answer_ids[i, : drawn[i]]]
        if drawn[i] >= w and all(a >= 0 for a in row) and len(set(row)) == 1:
            lo = mid + 1
        else:
            hi = mid
    easy = set(ranked[:lo])
    for i in live:
        if i in easy:
            continue
        n = max(drawn[i], min(w, cap[i]))
        ids = [int(x) for x in pool.answer_ids[i]]
        while True:
            if n >= cap[i] or (n >= w and beta_prob(ids[:n]) > thr):
                break
            n += 1
        drawn[i] = n
    return drawn


def rows(pool: Pool, i: int, n: int):
    return [float(x) for x in pool.scores[i, :n]], [int(x) for x in pool.answer_ids[i, :n]]


# ------------------------------------------------------------------------ tests
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 3, 8, 20])
def test_fixed_policies_match_restatements(seed: int, n: int) -> None:
    pool = random_pool(seed)
    for policy, ref in (
        (BestOfN(n), lambda s, a: ref_bon(s, a)),
        (SelfConsistency(n), lambda s, a: ref_majority(a)),
        (WeightedVote(n), lambda s, a: ref_weighted(s, a)),
    ):
        assert isinstance(policy, Policy)
        drawn, chosen, _ = run_policy(pool, policy, vote="math-verify")
        for i in range(pool.n_questions):
            d = min(n, int(pool.n_samples[i]))
            assert drawn[i] == d
            s, a = rows(pool, i, d)
            assert chosen[i] == ref(s, a), (policy.name, i)


def test_best_of_n_never_picks_an_empty_completion_unless_nothing_else() -> None:
    scores = np.array([[0.9, 0.1, 0.1], [0.9, 0.8, 0.3], [0.2, 0.7, 0.7]])
    selectable = np.array([[False, True, True], [False, False, False], [True, True, True]])
    out = best_of_n_index(scores, np.ones((3, 3), bool), selectable)
    assert out.tolist() == [1, 0, 1]


def test_vote_tie_rules_documented() -> None:
    mask = np.ones((1, 4), bool)
    # 5 and 7 both appear twice; 7 drawn first -> 7 wins, its first sample (0).
    assert majority_index(mask, np.array([[7, 5, 5, 7]])).tolist() == [0]
    assert weighted_vote_index(np.array([[0.5, 0.5, 0.5, 0.5]]), mask, np.array([[7, 5, 5, 7]])).tolist() == [0]
    # weighting overturns the majority
    assert weighted_vote_index(np.array([[0.1, 0.1, 0.9, 0.1]]), mask, np.array([[1, 1, 2, 3]])).tolist() == [2]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_max,window,stride", [(8, 5, None), (12, 3, None), (12, 3, 1), (4, 5, None), (12, 2, 3)])
def test_esc_matches_restatement(seed, n_max, window, stride) -> None:
    pool = random_pool(seed, n_classes=2)
    pol = ESC(n_max, window=window, stride=stride)
    drawn, chosen, _ = run_policy(pool, pol, vote="math-verify")
    st = window if stride is None else stride
    for i in range(pool.n_questions):
        ids = [int(x) for x in pool.answer_ids[i]]
        cap = min(n_max, int(pool.n_samples[i]))
        assert drawn[i] == ref_esc(ids, cap, window, st), i
        assert chosen[i] == ref_majority(ids[: drawn[i]])


def test_esc_official_checkpoints() -> None:
    # All answers equal: stop at the first window of 5 when n_max >= 5.
    pool = Pool.from_arrays(np.full((3, 16), 0.5), answer_ids=np.zeros((3, 16), int))
    assert run_policy(pool, ESC(8))[0].tolist() == [5, 5, 5]
    assert run_policy(pool, ESC(4))[0].tolist() == [4, 4, 4]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr,min_samples", [(0.95, 1), (0.8, 1), (0.95, 3), (0.99, 1)])
def test_asc_matches_restatement(seed, thr, min_samples) -> None:
    pool = random_pool(seed, n=16, n_classes=3)
    drawn, chosen, _ = run_policy(
        pool, ASC(16, threshold=thr, min_samples=min_samples), vote="math-verify"
    )
    for i in range(pool.n_questions):
        ids = [int(x) for x in pool.answer_ids[i]]
        cap = int(pool.n_samples[i])
        assert drawn[i] == ref_asc(ids, cap, thr, min_samples), i
        assert chosen[i] == ref_majority(ids[: drawn[i]])


def test_beta_probability_vs_scipy() -> None:
    a, b = np.meshgrid(np.arange(0, 40), np.arange(0, 40))
    ref = stats.beta.sf(0.5, a + 1, b + 1)
    np.testing.assert_allclose(beta_majority_probability(a, b), ref, rtol=1e-12, atol=1e-15)
    # four unanimous votes are the fewest that pass 0.95
    assert beta_majority_probability(np.array(3), np.array(0)) < 0.95 < beta_majority_probability(np.array(4), np.array(0))


def test_top_two_counts() -> None:
    ids = np.array([[1, 2, 2, -1, 3, 1, 2], [-1, -1, -1, -1, -1, -1, -1]])
    a, b = top_two_counts(np.ones(ids.shape, bool), ids)
    assert a.tolist() == [3, 0] and b.tolist() == [2, 0]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_max,window", [(16, 4), (8, 3), (12, 5)])
def test_dsc_matches_restatement(seed, n_max, window) -> None:
    pool = random_pool(seed, q=50, n=16, min_len=2, n_classes=2)
    drawn, chosen, _ = run_policy(pool, DSC(n_max, window=window, variant="window"), vote="math-verify")
    ref = ref_dsc(pool, n_max, window, 0.95)
    assert drawn.tolist() == ref
    for i in range(pool.n_questions):
        assert chosen[i] == ref_majority([int(x) for x in pool.answer_ids[i, : drawn[i]]])


def test_dsc_difficulty_array_and_errors() -> None:
    pool = random_pool(1, q=20, n=8, min_len=8, n_classes=2)
    d = np.arange(20, dtype=float)
    drawn, _, _ = run_policy(pool, DSC(8, difficulty=d, variant="window"), vote="math-verify")
    # ranking by the given difficulty: easy ones (low index) that stopped have 1 or 4 samples
    assert drawn.min() >= 1 and drawn.max() <= 8
    with pytest.raises(ValueError, match="DSC.difficulty has 3 entries"):
        run_policy(pool, DSC(8, difficulty=np.ones(3)))
    with pytest.raises(ValueError, match="question 1 is not a finite"):
        DSC(8, difficulty=np.array([0.0, np.nan]))


def test_policy_parameter_errors() -> None:
    with pytest.raises(ValueError, match="BestOfN.n"):
        BestOfN(0)
    with pytest.raises(ValueError, match="ESC.window"):
        ESC(8, window=0)
    with pytest.raises(ValueError, match="ASC.threshold"):
        ASC(8, threshold=1.5)


def test_official_peek() -> None:
    assert [official_peek(n) for n in (8, 16, 32, 64)] == [3, 5, 10, 20]
    assert official_peek(1) == 1 and official_peek(12) == 4
    with pytest.raises(ValueError):
        official_peek(0)


def test_observed_counts() -> None:
    m = np.array([[True, True, False], [False, False, False]])
    obs = Observed(np.zeros((2, 3)), m, -np.ones((2, 3), np.int32), np.zeros((2, 3), int))
    assert obs.n_drawn.tolist() == [2, 0]


# ------------------------------------------------------------------ OptScale
def score_pool(seed: int, q: int = 40, n: int = 16, min_len: int = 1) -> Pool:
    """Beta-distributed scores (some rows constant), answers, tokens, correctness."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, n + 1, size=q)
    lengths[:3] = n
    scores, ids, tokens, correct = [], [], [], []
    for i, length in enumerate(lengths):
        a, b = rng.uniform(1, 12), rng.uniform(0.5, 4)
        s = rng.beta(a, b, size=length)
        if i == 1:
            s[:] = 0.7  # all equal: DEGENERATE for the MLE
        scores.append(s.tolist())
        ids.append(rng.integers(0, 3, size=length).tolist())
        tokens.append(rng.integers(100, 900, size=length).tolist())
        correct.append((s > 0.8).tolist())
    return Pool.from_arrays(scores, answer_ids=ids, tokens=tokens, correct=correct)


def ref_n_star(mu: float, sigma: float, s_min: float, alpha: float, n_max: int) -> tuple[int, bool]:
    """Brute-force N* with scipy's truncated normal; second value: a near-tie boundary."""
    a, b = (0.0 - mu) / sigma, (1.0 - mu) / sigma
    f = float(stats.truncnorm.cdf(s_min, a, b, loc=mu, scale=sigma))
    for n in range(1, n_max + 1):
        p = 1.0 - f**n
        if p >= alpha:
            return n, abs(p - alpha) < 1e-7 or abs((1.0 - f ** (n - 1)) - alpha) < 1e-7
    return n_max, abs((1.0 - f**n_max) - alpha) < 1e-7


def _fits_at(pool: Pool, n: np.ndarray | int, prior):
    """Core fits of the first ``n[i]`` samples of each row (the rule's input, not its logic)."""
    from optscale_jax import fit as F

    cut = np.arange(pool.n_max)[None, :] < np.broadcast_to(np.asarray(n), (pool.n_questions,))[:, None]
    m = pool.mask & cut
    r = F.fit_mle(pool.scores, m) if prior is None else F.fit_map(pool.scores, prior, m)
    return np.asarray(r.mu), np.asarray(r.sigma), np.asarray(r.status)


POOL_Q, POOL_N = 30, 12  # one pool shape for every OptScale test: one JIT compile per variant


@pytest.mark.parametrize("use_prior", [False, True])
@pytest.mark.parametrize("n_max,s_min,alpha", [(8, 0.9, 0.9), (12, 0.95, 0.99), (12, 0.85, 0.965)])
def test_optscale_oneshot_matches_restatement(use_prior, n_max, s_min, alpha) -> None:
    from optscale_jax.policies import OptScale, gaussian_prior

    pool = score_pool(0, q=POOL_Q, n=POOL_N)
    rng = np.random.default_rng(1)
    prior = gaussian_prior(rng.uniform(0.5, 0.95, POOL_Q), rng.uniform(0.05, 0.2, POOL_Q)) if use_prior else None
    pol = OptScale(n_max, s_min, alpha, prior=prior, mode="oneshot")
    drawn, chosen, _ = run_policy(pool, pol)
    k = official_peek(n_max)
    mu, sigma, _ = _fits_at(pool, k, prior)
    ties = 0
    for i in range(pool.n_questions):
        avail = int(pool.n_samples[i])
        if avail < k:
            want = avail
        else:
            ns, tie = ref_n_star(mu[i], sigma[i], s_min, alpha, n_max)
            want = min(max(ns, k), n_max, avail)
            if tie and drawn[i] != want:
                ties += 1
                continue
        assert drawn[i] == want, i
        s, a = rows(pool, i, int(drawn[i]))
        assert chosen[i] == ref_bon(s, a)
    assert ties <= 1


@pytest.mark.parametrize("use_prior", [False, True])
@pytest.mark.parametrize("step", [1, 3])
def test_optscale_sequential_matches_restatement(use_prior, step) -> None:
    from optscale_jax.fit import FitStatus
    from optscale_jax.policies import OptScale, gaussian_prior

    pool = score_pool(2, q=POOL_Q, n=POOL_N)
    n_max, s_min, alpha = 12, 0.93, 0.95
    rng = np.random.default_rng(3)
    prior = gaussian_prior(rng.uniform(0.5, 0.95, POOL_Q), rng.uniform(0.05, 0.2, POOL_Q)) if use_prior else None
    pol = OptScale(n_max, s_min, alpha, prior=prior, mode="sequential", step=step)
    drawn, _, _ = run_policy(pool, pol)
    n_init = 1 if use_prior else 2
    fits = {n: _fits_at(pool, n, prior) for n in range(1, n_max + 1)}
    bad = (int(FitStatus.NO_DATA), int(FitStatus.DEGENERATE))
    checked = 0
    for i in range(pool.n_questions):
        cap = min(n_max, int(pool.n_samples[i]))
        n = min(n_init, cap)
        tie_seen = False
        while n < cap:
            mu, sigma, status = (f[i] for f in fits[n])
            if int(status) not in bad:
                ns, tie = ref_n_star(float(mu), float(sigma), s_min, alpha, n_max)
                tie_seen |= tie
                if n >= ns:
                    break
            n = min(n + step, cap)
        if not tie_seen:
            assert drawn[i] == n, i
            checked += 1
    assert checked >= POOL_Q - 2
    # the all-equal row never trusts its degenerate MLE fit
    if not use_prior:
        assert drawn[1] == n_max


def test_optscale_parameter_errors() -> None:
    from optscale_jax.policies import OptScale

    with pytest.raises(ValueError, match="s_min"):
        OptScale(8, 1.2, 0.9)
    with pytest.raises(ValueError, match="alpha"):
        OptScale(8, 0.9, 1.0)
    with pytest.raises(ValueError, match="mode"):
        OptScale(8, 0.9, 0.9, mode="greedy")
    assert OptScale(64, 0.9, 0.9).k == 20
    assert OptScale(8, 0.9, 0.9).name == "OptScale0-oneshot"


# ------------------------------------------------- one home for every rule
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_rules_equal_the_rules_at_every_length(seed: int) -> None:
    from optscale_jax.policies import prefix_best_of_n_index, prefix_majority_index

    pool = random_pool(seed, n_classes=5)
    bon = prefix_best_of_n_index(pool.scores, pool.mask, pool.selectable)
    maj = prefix_majority_index(pool.mask, pool.answer_ids)
    for length in range(1, pool.n_max + 1):
        m = pool.mask & (np.arange(pool.n_max)[None, :] < length)
        np.testing.assert_array_equal(bon[:, length - 1], best_of_n_index(pool.scores, m, pool.selectable))
        np.testing.assert_array_equal(maj[:, length - 1], majority_index(m, pool.answer_ids))


def test_majority_does_not_depend_on_how_classes_are_numbered() -> None:
    """Ties go to the class drawn first, whatever its number (a re-ordered pool keeps its ids)."""
    from optscale_jax.policies import prefix_majority_index

    pool = random_pool(3, n_classes=6)
    ids = pool.answer_ids
    relabel = np.random.default_rng(0).permutation(7)  # class c -> relabel[c]; -1 stays -1
    renamed = np.where(ids >= 0, relabel[np.maximum(ids, 0)], -1)
    np.testing.assert_array_equal(prefix_majority_index(pool.mask, ids), prefix_majority_index(pool.mask, renamed))
    np.testing.assert_array_equal(majority_index(pool.mask, ids), majority_index(pool.mask, renamed))
    assert prefix_majority_index(np.ones((1, 4), bool), np.array([[9, 1, 1, 9]]))[0, -1] == 0


def test_answer_counts_equal_pairwise_counting() -> None:
    """answer_counts (O(Q N) memory) equals the (Q, N, N) pairwise definition, weights too."""
    from optscale_jax.policies import answer_counts, weighted_vote_index

    rng = np.random.default_rng(7)
    q, n = 60, 12
    mask = np.arange(n)[None, :] < rng.integers(0, n + 1, q)[:, None]
    ids = rng.integers(-1, 4, (q, n)) * 3 + 2  # sparse, unordered class numbers; -1 -> -1
    w = rng.uniform(0, 1, (q, n))
    valid = mask & (ids >= 0)
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    for weights in (None, w):
        ww = np.ones((q, n)) if weights is None else w
        want = np.array([[sum(ww[r, k] for k in range(n) if same[r, j, k]) for j in range(n)]
                         for r in range(q)])
        np.testing.assert_allclose(answer_counts(mask, ids, weights), want, rtol=1e-12, atol=0)
    # weighted vote: the first sample of the class with the largest total, by brute force
    for r in range(q):
        totals = {}
        for j in range(n):
            if valid[r, j]:
                totals.setdefault(ids[r, j], [j, 0.0])[1] += w[r, j]
        want = max(totals.values(), key=lambda t: (t[1], -t[0]))[0] if totals else 0
        assert weighted_vote_index(w[r:r + 1], mask[r:r + 1], ids[r:r + 1])[0] == want
    assert answer_counts(np.ones((2, 0), bool), np.zeros((2, 0), int)).shape == (2, 0)


def test_optscale_rule_functions() -> None:
    from optscale_jax.policies import (
        OptScale,
        checkpoints,
        default_n_init,
        oneshot_draws,
        sequential_draws,
    )

    assert (default_n_init("MLE"), default_n_init("MAP")) == (2, 1)
    assert checkpoints(64, mode="oneshot").tolist() == [official_peek(64)]
    assert checkpoints(7, mode="sequential", step=2).tolist() == [2, 4, 6]
    assert checkpoints(7, mode="sequential", step=2, variant="MAP").tolist() == [1, 3, 5, 7]
    assert checkpoints(3, mode="sequential", n_init=9).tolist() == [3]
    assert OptScale(8, 0.9, 0.1, mode="sequential", n_init=20).n_init == 8
    assert oneshot_draws(np.array([1, 5, 99]), 3, 8).tolist() == [3, 5, 8]
    lengths = np.array([2, 4, 6])
    n_star = np.array([[3, 2, 9], [9, 9, 9], [1, 1, 1]])
    usable = np.array([[False, True, True], [True, True, True], [True, True, True]])
    # first usable checkpoint with n >= N* and within the row; else the row's cap
    assert sequential_draws(lengths, n_star, usable, np.array([8, 5, 1])).tolist() == [4, 5, 1]


def test_registry_builds_every_method_by_name() -> None:
    from optscale_jax.commands.run import POLICIES, make_policy
    from optscale_jax.policies import POLICY_NAMES, SWEEP_METHODS, MRThinking, OptScale, make
    from optscale_jax.policies.registry import REGISTRY, resolve
    from optscale_jax.report import METHOD_LABELS
    from optscale_jax.sweep import METHODS

    assert POLICIES == POLICY_NAMES and METHODS == SWEEP_METHODS == tuple(METHOD_LABELS)
    assert "MR-Thinking" in POLICY_NAMES and "MR-Thinking" not in SWEEP_METHODS
    for name in POLICY_NAMES:
        for spelling in (name, name.lower(), name.upper()):
            pol = make(spelling, n_max=8, s_min=0.9, alpha=0.1, n_questions=3)
            assert pol.name.split("-")[0] == name.split("-")[0] and pol.n_max == 8
    assert isinstance(make("mr", n_max=2), MRThinking)
    t = make_policy("OptScaleT", 16, s_min=0.9, quantile=0.1, mode="sequential", n_questions=3)
    assert isinstance(t, OptScale) and t.prior is not None and t.mode == "sequential" and t.alpha == 1.0 - 0.1
    assert make_policy("OptScale0", 16, prior=object()).prior is None  # MLE never reads a prior
    assert [n for n, m in REGISTRY.items() if m.uses_prior] == ["OptScaleT", "OptScaleBudget"]
    assert resolve("weightedsc", replayable=True) == "WeightedSC"
    with pytest.raises(ValueError, match="unknown policy 'mr'; choose from BoN"):
        resolve("mr", replayable=True)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope", 4)


def test_synthetic_majority_curve_on_a_reordered_pool() -> None:
    """The calibration curve votes like the policies once rows are re-ordered (ids no longer
    numbered by first appearance)."""
    from optscale_jax.synthetic import majority_accuracy, synthetic_pool

    pool = synthetic_pool("math500", 16, 0).subset(np.arange(100)).permuted(1, 1)[0]
    ns = [1, 2, 3, 8, 16]
    picks = [majority_index(pool.mask & (np.arange(16)[None, :] < n), pool.answer_ids) for n in ns]
    want = [np.mean(pool.correct[np.arange(100), j] & (pool.answer_ids[np.arange(100), j] >= 0)) for j in picks]
    np.testing.assert_allclose(majority_accuracy(pool, ns, vote="math-verify"), want)


def test_registry_default_alpha_matches_the_cli_default_quantile() -> None:
    """make()'s default alpha is the target probability 1 - quantile, with the CLI's
    default quantile 0.05 (not the quantile itself)."""
    from optscale_jax.policies.registry import make

    pol = make("OptScale0", n_max=8)
    assert pol.alpha == pytest.approx(1.0 - 0.05)
