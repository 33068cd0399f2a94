"""The KSG criterion and the least-squares state (mipp.pruning.criteria.ksg, .lstsq): closed forms against
brute-force least squares, the KSG statistic against the Gaussian channel, the non-inferiority rule, exact
rules, planted wide layers."""

import math

import pytest
import torch

from mipp.pruning import MIPP
from mipp.pruning.criteria import KSGCriterion, Layer, ScreenCriterion
from mipp.pruning.criteria.lstsq import Block, LSState, chi2_upper_factor, gaussian_scores, spd_inverse
from mipp.pruning.testing import planted_layer, sparse_planted_layer


def dense_block(X, W):
    Xc = X - X.mean(0)
    return Block(Xc.T @ Xc / len(X), X.mean(0), X, len(X), W, [torch.tensor([i]) for i in range(X.shape[1])])


def decide(blocks, n_nodes, *, tolerance, min_keep, generator, **settings):
    """The KSG criterion on one layer of ``blocks``."""
    layer = Layer("layer", n_nodes, blocks)
    return KSGCriterion(**settings).decide(layer, tolerance=tolerance, min_keep=min_keep, generator=generator)


def lstsq_error(X, Z, cols):
    """Mean squared residual of Z regressed (with intercept) on X[:, cols]: the brute-force re-fit error."""
    A = torch.cat([X[:, cols], torch.ones(len(X), 1, dtype=X.dtype)], 1)
    sol = torch.linalg.lstsq(A, Z).solution
    return float(((Z - A @ sol) ** 2).sum(1).mean())


def test_gaussian_score_and_downdates_equal_brute_force_least_squares():
    """The closed form's reconstruction error ||w_i||^2 Var(x_i | rest) equals the increase of the re-fitted
    error when node i goes, at the start and after rank-one removals (a correlated layer)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    W = torch.randn(5, 12, generator=g, dtype=torch.float64)
    Z = X @ W.T
    st = LSState(dense_block(X, W), torch.zeros(12, dtype=torch.bool), ridge=0.0)
    st.sigma2 = 1.0
    kept = list(range(12))
    for victim in (3, 7, 0):
        scores = gaussian_scores([st], kept)
        for j, i in enumerate(kept):
            rest = [c for c in kept if c != i]
            brute = lstsq_error(X, Z, rest) - lstsq_error(X, Z, kept)
            assert math.expm1(2 * float(scores[j])) == pytest.approx(brute, rel=1e-8, abs=1e-9)
        e, Pg = st.residual(st.cols(victim))
        st.remove(st.cols(victim), e, Pg)
        kept.remove(victim)
        # the downdated weights are the least-squares re-fit on the kept nodes
        A = torch.cat([X[:, kept], torch.ones(len(X), 1, dtype=X.dtype)], 1)
        refit = torch.linalg.lstsq(A, Z).solution[:-1].T
        torch.testing.assert_close(st.W[:, st.live], refit, rtol=1e-8, atol=1e-8)
        assert float(st.W[:, ~st.live].abs().max()) < 1e-10 and float(st.precision[~st.live].abs().max()) < 1e-10
        st_fresh = LSState(dense_block(X, W), torch.tensor([c not in kept for c in range(12)]), ridge=0.0)
        torch.testing.assert_close(st.precision[st.live][:, st.live], st_fresh.precision, rtol=1e-8, atol=1e-8)


def test_group_score_is_the_logdet_of_the_removed_block():
    """A node of several columns (a conv channel, a flattened map): 1/2 logdet(I + W_G V_G W_G^T / s2)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(800, 9, generator=g, dtype=torch.float64) @ torch.randn(9, 9, generator=g, dtype=torch.float64)
    W = torch.randn(4, 9, generator=g, dtype=torch.float64)
    Xc = X - X.mean(0)
    block = Block(
        Xc.T @ Xc / 800,
        X.mean(0),
        X,
        800,
        W,
        [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])],
    )
    st = LSState(block, torch.zeros(9, dtype=torch.bool), ridge=0.0)
    st.sigma2 = 0.5
    scores = gaussian_scores([st], [0, 1, 2])
    C = block.cov
    for node, G in enumerate(([0, 1, 2], [3, 4, 5], [6, 7, 8])):
        R = [c for c in range(9) if c not in G]
        V = C[G][:, G] - C[G][:, R] @ torch.linalg.solve(C[R][:, R], C[R][:, G])  # Var(x_G | rest)
        expected = 0.5 * torch.logdet(torch.eye(4, dtype=torch.float64) + W[:, G] @ V @ W[:, G].T / 0.5)
        assert float(scores[node]) == pytest.approx(float(expected), rel=1e-9)


def test_group_scores_stay_exact_through_removals_and_compactions():
    """Multi-column nodes' scores read each node's W^T W block and P block, downdated at every removal (P's own
    downdates deferred to the compaction): through 36 removals (a compaction after 32) they and the precision
    equal those of a state built afresh on the kept nodes. Nodes own
    interleaved columns, and one has a constant column (dropped: a node of two columns beside nodes of three)."""
    g = torch.Generator().manual_seed(2)
    n_nodes = 40
    X = torch.randn(600, 120, generator=g, dtype=torch.float64)
    X = X @ (torch.eye(120, dtype=torch.float64) + 0.3 * torch.randn(120, 120, generator=g, dtype=torch.float64))
    X[:, 45] = 1.5  # node 5's second column
    W = torch.randn(6, 120, generator=g, dtype=torch.float64)
    Xc = X - X.mean(0)
    columns = [torch.tensor([i, i + n_nodes, i + 2 * n_nodes]) for i in range(n_nodes)]
    block = Block(Xc.T @ Xc / len(X), X.mean(0), X, len(X), W, columns)
    st = LSState(block, torch.zeros(120, dtype=torch.bool), ridge=0.0)
    st.sigma2 = 0.7
    kept = list(range(n_nodes))
    for step in range(36):
        victim = kept[(7 * step) % len(kept)]
        e, Pg = st.residual(st.cols(victim))
        st.remove(st.cols(victim), e, Pg)
        kept.remove(victim)
        if step in (0, 30, 31, 32, 35):
            gone = torch.ones(120, dtype=torch.bool)
            for i in kept:
                gone[columns[i]] = False
            fresh = LSState(block, gone, ridge=0.0)
            fresh.sigma2 = 0.7
            torch.testing.assert_close(
                gaussian_scores([st], kept), gaussian_scores([fresh], kept), rtol=1e-8, atol=1e-10
            )
            # the precision with its deferred downdates (applied at the compaction) is the fresh one
            torch.testing.assert_close(st.precision[st.live][:, st.live], fresh.precision, rtol=1e-8, atol=1e-10)


def test_shared_precision_is_reused_and_never_modified():
    """States built on one capture share the precision of a consumer's first build (a budget's ranking walk and
    its final walk): a second state with the same columns starts from the very same matrix, a state with other
    columns computes (and does not store) its own, and removals, compactions and rebuilds of the first state leave
    the shared matrix equal to a fresh inverse, so the second state's scores equal an unshared state's."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(400, 30, generator=g, dtype=torch.float64) @ torch.randn(30, 30, generator=g, dtype=torch.float64)
    W = torch.randn(5, 30, generator=g, dtype=torch.float64)
    block = dense_block(X, W)
    block.precisions = {}
    none = torch.zeros(30, dtype=torch.bool)
    first = LSState(block, none, ridge=1e-9)
    shared = first.P
    assert len(block.precisions) == 1
    other = LSState(block, torch.arange(30) < 3, ridge=1e-9)  # other columns: its own, not stored
    assert other.P.shape == (27, 27) and len(block.precisions) == 1
    fresh_P = spd_inverse(block.cov + 1e-9 * float(block.cov.diagonal().mean()) * torch.eye(30, dtype=torch.float64))
    for i in range(20):  # compactions every 32 would not come: force both with rebuilds and a compaction
        e, Pg = first.residual(first.cols(i))
        first.remove(first.cols(i), e, Pg)
        if i == 9:
            first._compact()
    first._rebuild()
    assert torch.equal(shared, fresh_P)
    second = LSState(block, none, ridge=1e-9)
    unshared = LSState(block, none, ridge=1e-9, shared=False)
    assert second.P is shared and unshared.P is not shared
    for st in (second, unshared):
        st.sigma2 = 0.3
    kept = list(range(30))
    assert torch.equal(gaussian_scores([second], kept), gaussian_scores([unshared], kept))


def test_ksg_statistic_matches_the_gaussian_channel():
    """For Gaussian nodes the KSG estimate of Delta is the closed form: one node, several SNRs."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(3000, 2, generator=g, dtype=torch.float64)
    for w in (0.05, 0.15, 0.4):
        W = torch.tensor([[w, 1.0]], dtype=torch.float64)
        d = decide(
            [dense_block(X, W)],
            2,
            k=3,
            alpha=0.05,
            tolerance=-1.0,
            noise=0.01,
            min_keep=1,
            generator=torch.Generator().manual_seed(0),
        )
        rec = next(r for r in d.records if r.node == 0)
        truth = 0.5 * math.log1p(w**2 / (0.01 * (1 + w**2)))
        assert rec.score == pytest.approx(truth, rel=0.05)
        assert rec.estimate == pytest.approx(truth, abs=0.05)
        # the bound: the smaller of KSG's and the closed form's upper bounds, both above the point values
        assert min(rec.estimate, rec.score) <= rec.statistic <= 1.1 * rec.score


def test_burden_of_proof_is_on_removing():
    """A node whose information (0.016 nats) is just below the tolerance (0.02) is removed when the data show
    it (large N) and kept when they cannot (small N: wide confidence bounds). A weak test keeps nodes."""

    def layer(n, seed):
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, 4, generator=g, dtype=torch.float64)
        W = torch.tensor([[0.0312, 1.0, 1.0, 1.0]], dtype=torch.float64)
        return decide(
            [dense_block(X, W)],
            4,
            k=3,
            alpha=0.05,
            tolerance=0.02,
            noise=0.01,
            min_keep=1,
            generator=torch.Generator().manual_seed(0),
        )

    big = layer(20000, 0)
    assert next(r for r in big.records if r.node == 0).score == pytest.approx(0.016, abs=0.001)
    assert 0 not in big.kept
    assert sum(0 in layer(60, s).kept for s in range(5)) >= 4
    for s in range(3):  # and nothing informative is removed by a weak test
        assert {1, 2, 3} <= set(layer(60, s).kept)


def test_spd_inverse_takes_cholesky_only_where_it_is_well_conditioned():
    """A well-conditioned covariance, whatever its columns' scales: its Cholesky inverse (the LU's entries to
    1e-12); near-duplicate columns
    held apart by a ridge, or an indefinite matrix: the LU inverse itself, bit for bit."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 40, generator=g, dtype=torch.float64)
    C = a.T @ a / 500
    got = spd_inverse(C)
    torch.testing.assert_close(got, torch.linalg.inv(C), rtol=1e-12, atol=1e-12)
    assert not torch.equal(got, torch.linalg.inv(C))  # another factorisation: the path the test means
    # columns of scales 1e-5 .. 1e5 (nearly dead channels beside live ones): the same conditioning once each
    # column is divided by its scale, so the Cholesky inverse still, as accurate in those units
    d = torch.logspace(-5, 5, 40, dtype=torch.float64)
    scaled = spd_inverse(d[:, None] * C * d[None, :])
    assert not torch.equal(scaled, torch.linalg.inv(d[:, None] * C * d[None, :]))
    torch.testing.assert_close(d[:, None] * scaled * d[None, :], torch.linalg.inv(C), rtol=1e-10, atol=1e-10)
    dup = torch.cat([a, a[:, :1]], 1)
    near = dup.T @ dup / 500 + 1e-10 * torch.eye(41, dtype=torch.float64)
    assert torch.equal(spd_inverse(near), torch.linalg.inv(near))
    indefinite = C - 2 * float(torch.linalg.eigvalsh(C).max()) * torch.eye(40, dtype=torch.float64)
    assert torch.equal(spd_inverse(indefinite), torch.linalg.inv(indefinite))


def test_chi2_upper_factor():
    scipy_stats = pytest.importorskip("scipy.stats")
    for dof in (5, 40, 700):
        for alpha in (0.05, 0.2):
            assert chi2_upper_factor(dof, alpha) == pytest.approx(dof / scipy_stats.chi2.ppf(alpha, dof), rel=0.02)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_exact_rules_remove_constants_duplicates_and_affine_combinations_untested(seed):
    """A constant, a duplicate of node 0 and node 5 = 2 x1 - x2 + 5 go untested; of the set {1, 2, 5} the
    combination, of the largest variance, is the one that goes (lstsq.next_node), whatever the weights."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(400, 4, generator=g, dtype=torch.float64)
    X = torch.cat(
        [base, base[:, :1], 2 * base[:, 1:2] - base[:, 2:3] + 5, torch.full((400, 1), 3.0, dtype=torch.float64)], 1
    )
    W = torch.randn(3, 7, generator=g, dtype=torch.float64)
    d = decide(
        [dense_block(X, W)],
        7,
        k=3,
        alpha=0.05,
        tolerance=1e-3,
        noise=1e-4,
        min_keep=1,
        generator=torch.Generator().manual_seed(0),
    )
    rules = {r.node: r.rule for r in d.records if r.removed}
    assert rules.pop(6) == "constant"
    assert len(rules) == 2 and set(rules.values()) == {"affine"}
    assert len({0, 4} & set(d.kept)) == 1 and {1, 2, 3} <= set(d.kept) and 5 not in d.kept
    # exact: the kept nodes reproduce the consumer, to the rounding of the rank-one downdates through the
    # collinear set (entries of P of order 1 / ridge cancel: 3e-8 measured)
    assert d.recon_error < 1e-7


def test_min_keep_and_no_collapse():
    X = torch.randn(300, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    W = torch.zeros(2, 6, dtype=torch.float64)  # nobody reads the layer: everything is removable
    W[0, 0] = 1e-12
    d = decide(
        [dense_block(X, W)],
        6,
        k=3,
        alpha=0.05,
        tolerance=0.1,
        noise=0.01,
        min_keep=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(d.kept) == 2
    assert sum(r.rule == "min_keep" for r in d.records) == 2


def test_screen_is_greedy_least_squares():
    p = planted_layer(48, 1500, 0)
    block = dense_block(p.X, torch.linalg.lstsq(p.X - p.X.mean(0), p.Y - p.Y.mean(0)).solution.T)
    screen = ScreenCriterion({"layer": len(p.groups)}, noise=1.0)
    kept = screen.decide(Layer("layer", 48, [block]), tolerance=0.0, min_keep=1, generator=None).kept
    assert len(kept) == len(p.groups)
    assert p.score(kept)["unrelated_removed"] == 1.0


@pytest.mark.parametrize("D", [64, 128])
def test_planted_wide_layer(D):
    """Noisy copies of informative latents, exact mixtures, unrelated nodes; Y nonlinear in the latents."""
    p = planted_layer(D, 1500, seed=D)
    kept, res = MIPP(progress=False).select_layer(p.X, p.Y)
    score = p.score(kept)
    assert score["unrelated_removed"] >= 0.9
    # every latent keeps its information: a copy, or an exact mixture with a kept partner copy
    # (1 - R^2: the residual's share of the latent's variance, below 5%)
    assert bool((1 - p.latent_r2(kept) < 0.05).all()), p.latent_r2(kept)
    # of 3 copies one is enough: a second tells Y what the read-out cannot explain anyway (its residual is
    # channel noise); before that floor the channel's 1% noise kept 2-3 copies per latent
    assert score["copies_mean"] <= 1.5
    assert res.n_tests > 0 and res.recon_error < 0.05


@pytest.mark.parametrize("tolerance", [0.1, 0.2])
def test_planted_layer_keeps_about_one_node_per_latent(tolerance):
    """The issue's proportions on 64 nodes (6 latents x 3 copies of noise 0.1, 6 mixtures, 40 unrelated; Y = 16
    tanh outputs + 5% noise), N = 1,000, 3 seeds: at most 1.5 nodes per latent (a second copy adds ~0.05
    nats about Y: the Gaussian closed form at N = 200,000), every latent recoverable, at most one of the 40
    unrelated nodes (each passes the cross-fitted screen at about alpha^2 and the nonlinear rescue at alpha)."""
    for seed in range(3):
        p = sparse_planted_layer(64, 1000, seed)
        kept, _ = MIPP(tolerance=tolerance, progress=False, seed=seed).select_layer(p.X, p.Y)
        assert len(kept) <= 1.5 * len(p.groups), (seed, kept)
        assert bool((p.latent_r2(kept) >= 0.95).all()), (seed, p.latent_r2(kept))
        assert len(set(kept) & set(p.unrelated)) <= 1, (seed, kept)


def test_select_layer_is_seeded_and_checks_its_arguments():
    p = planted_layer(64, 800, 1)
    a, ra = MIPP(progress=False, seed=5).select_layer(p.X, p.Y)
    b, rb = MIPP(progress=False, seed=5).select_layer(p.X, p.Y)
    assert a == b and [r.statistic for r in ra.records] == [r.statistic for r in rb.records]
    with pytest.raises(ValueError, match="samples"):
        MIPP(progress=False).select_layer(p.X, p.Y[:10])
    with pytest.raises(ValueError, match="NaN"):
        MIPP(progress=False).select_layer(p.X.clone().fill_(float("nan")), p.Y)
    with pytest.raises(TypeError, match="X"):
        MIPP(progress=False).select_layer(p.X.numpy(), p.Y)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(tolerance=-0.1), "tolerance"),
        (dict(tolerance=float("inf")), "tolerance"),
        (dict(noise=0.0), "noise"),
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=0), "alpha"),
        (dict(min_keep=0), "min_keep"),
        (dict(k=0), "k"),
        (dict(k=2.5), "k"),
        (dict(n_samples=True), "n_samples"),
        (dict(ridge=-1.0), "ridge"),
        (dict(m_max=0), "m_max"),
    ],
)
def test_bad_settings_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        MIPP(**kwargs)


def test_screen_ranks_every_node_with_fewer_samples_than_features():
    """N = 40 samples, F = 100 features: the greedy's rank-one downdates through the singular covariance
    gave NaN scores where the present columns became independent (39 left), and the ranking stopped there;
    recomputing the precision matrix then lets it rank down to min_keep, every score finite."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 100, dtype=torch.float64, generator=g)
    W = torch.randn(20, 100, dtype=torch.float64, generator=g)
    d = ScreenCriterion(noise=0.01).decide(
        Layer("layer", 100, [dense_block(X, W)]), tolerance=math.inf, min_keep=1, generator=None
    )
    scores = [r.score for r in d.records if r.removed]
    assert len(d.kept) == 1 and len(scores) == 99
    assert all(math.isfinite(s) for s in scores)
