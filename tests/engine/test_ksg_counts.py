"""The fused op mipp::ksg_counts: the C++ kernel against the specification (reference.ksg_counts) bit for bit
(eps and counts, torch.equal) on every CPU path with proof that it ran, on ties and duplicated rows, both
algorithms, the MI and CMI marginals and others, batches with shared groups, float32 / float64, query rows and
thread counts; its argument checks, and the estimators' argument names in its data errors (names=).

The specification itself is checked against the independent oracle in test_reference_oracle.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mipp
from mipp import _ext, reference
from mipp.ops import MAX_GROUPS, overflow_message

needs_ext = pytest.mark.skipif(_ext._C is None, reason=f"extension not built: {_ext.MISSING_REASON}")

ops = torch.ops.mipp
MI = [0b01, 0b10]  # (x), (y) of groups (x, y)
CMI = [0b101, 0b110, 0b100]  # (x, z), (y, z), (z) of groups (x, y, z)
PATHS = ["brute", "sweep", "strips", "auto"]


def _data(kind: str, b: int, n: int, d: int, dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=gen, dtype=torch.float64)
    if kind == "rounded":  # few distinct values: ties in every marginal, the k-th distance tied
        x = (x * 2).round()
    elif kind == "duplicates":  # whole rows repeated (within each group, at the same samples): distance 0
        x[:, n // 2 :] = x[:, : n - n // 2].clone()
    elif kind == "offset":  # large values: the differences round
        x = 1e6 + x * 1e-3 if dtype == torch.float64 else 1e4 + x * 1e-2
    elif kind == "heavy":  # Cauchy tails: a one-column count's value buckets (KeyIndex) nearly all empty
        x = x / torch.randn(b, n, d, generator=gen, dtype=torch.float64)
    elif kind == "clusters":  # two clusters 1e5 apart: the buckets between them empty, windows at the gap
        x[:, ::2] += 1e5
    elif kind == "zeros":  # +0 and -0 (equal keys of different bits) among continuous values
        x[:, ::31] = 0.0
        x[:, ::62] = -0.0
    return x.to(dtype)


def _groups(kind, dims, batches, n, dtype, seed):
    return [_data(kind, b, n, d, dtype, seed + 7 * i) for i, (b, d) in enumerate(zip(batches, dims))]


def _path_run(path: str, groups) -> str:
    """The path a forced one runs as: "sweep" and "strips" are the op's sorted path, which needs two joint
    columns (one runs the brute force)."""
    joint = sum(int(g.shape[-1]) for g in groups)
    if path == "brute" or joint < 2:
        return "brute"
    return "strips"


def _run(groups, k, masks, algorithm, path, q0=0, q1=-1):
    """ops.ksg_counts on a forced path, asserting that the C++ kernel ran it ("auto": either)."""
    before = dict(_ext.paths)
    with _ext.force_path(path):
        out = ops.ksg_counts(groups, k, masks, algorithm, q0, q1)
    ran = [key for key in _ext.paths if _ext.paths[key] != before.get(key, 0)]
    assert len(ran) == 1 and _ext.paths[ran[0]] == before.get(ran[0], 0) + 1, ran
    if path == "auto":
        assert ran[0] in ("ksg_counts:brute", "ksg_counts:strips")
    else:
        assert ran[0] == f"ksg_counts:{_path_run(path, groups)}"
    return out


def check_every_path(groups, k, masks, algorithm, rows=((0, -1),)):
    """Every CPU path and every query-row range equal reference.ksg_counts exactly."""
    n = int(groups[0].shape[1])
    eps, counts = reference.ksg_counts(groups, k, masks, algorithm)
    batch = reference.batch_size(groups)
    assert eps.shape == (batch, n) and counts.shape == (batch, len(masks), n) and counts.dtype == torch.int64
    for path in PATHS:
        for q0, q1 in rows:
            got_eps, got_counts = _run(groups, k, masks, algorithm, path, q0, q1)
            stop = n if q1 == -1 else q1
            assert got_eps.dtype == eps.dtype and got_counts.dtype == torch.int64
            assert torch.equal(got_eps, eps[:, q0:stop]), (path, q0, q1)
            assert torch.equal(got_counts, counts[..., q0:stop]), (path, q0, q1)
    return eps, counts


# (dims per group, batch size per group, marginals): MI and CMI with batches of 1 and B mixed, wider groups (the
# brute force's marginals from its rows, the sorted path's sweep windows), other marginals (the joint space, a
# pair of groups)
LAYOUTS = {
    "mi": ((1, 1), (1, 1), MI),
    "mi-x-batched": ((1, 1), (4, 1), MI),
    "mi-y-batched": ((1, 1), (1, 4), MI),
    "mi-both-batched": ((1, 1), (3, 3), MI),
    "mi-wide": ((2, 3), (3, 1), MI),
    "cmi": ((1, 1, 1), (1, 1, 1), CMI),
    "cmi-x-batched": ((1, 1, 1), (4, 1, 1), CMI),
    "cmi-wide-mixed": ((2, 1, 2), (1, 3, 3), CMI),
    "other-marginals": ((1, 2, 1), (2, 1, 2), [0b111, 0b011, 0b010, 0b100]),
}


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["continuous", "rounded", "duplicates", "offset", "heavy", "clusters"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("algorithm", [1, 2])
def test_equals_reference_on_every_path(dtype, kind, layout, algorithm):
    dims, batches, masks = LAYOUTS[layout]
    n = 150
    groups = _groups(kind, dims, batches, n, dtype, seed=len(layout) + algorithm)
    for k in (1, 4):
        check_every_path(groups, k, masks, algorithm, rows=((0, -1), (13, 150), (149, 150), (70, 70)))
    # the data holds what it is meant to test
    if kind == "rounded":  # samples at exactly the k-th distance: a strict count and a <= count differ
        eps = reference.knn_distance(groups, 4)
        assert not torch.equal(reference.count_within(groups, eps, True), reference.count_within(groups, eps, False))
    if kind == "duplicates":  # every sample has a copy in the joint space
        assert (reference.knn_distance(groups, 1) == 0).all()


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["continuous", "zeros", "rounded", "heavy", "clusters"])
@pytest.mark.parametrize("layout", ["mi", "mi-both-batched", "mi-wide", "cmi"])
@pytest.mark.parametrize("algorithm", [1, 2])
def test_equals_reference_where_the_sorted_path_buckets(dtype, kind, layout, algorithm):
    """At N = 1,000 the sorted path's sorts bucket the keys by value (from 256 samples; ties, heavy tails and
    clusters fall back to the radix sort), its one-column counts find their window edges in 16-position vector
    windows (edges beyond one: galloping), its wider marginals count on strips of their own (two at this N; the
    next test walks more), and its k-NN inserts without branches up to k = 8 (k = 9: the branchy insertion);
    every one of these is checked against the specification here, with the query rows at both ends."""
    dims, batches, masks = LAYOUTS[layout]
    n = 1000
    groups = _groups(kind, dims, batches, n, dtype, seed=len(layout) + 3 * algorithm)
    if kind == "zeros":  # both zeros are there
        signs = torch.signbit(groups[0][groups[0] == 0])
        assert signs.any() and not signs.all()
    for k in (3, 8, 9):
        check_every_path(groups, k, masks, algorithm, rows=((0, -1), (0, 20), (980, 1000)))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["continuous", "rounded"])
@pytest.mark.parametrize("algorithm", [1, 2])
def test_wide_marginals_count_across_many_strips(dtype, kind, algorithm):
    """A marginal of several columns counts on strips of 16 sqrt(N) samples: at N = 4,096 four of them, and with
    4 + 4 joint columns (a k-NN radius spanning ~40% of each column) a query's runs lie in several strips on
    either side; CMI's two-column marginals with far smaller radii."""
    n = 4096
    for dims, masks in (((4, 4), MI), ((1, 1, 1), CMI)):
        groups = _groups(kind, dims, (1,) * len(dims), n, dtype, seed=5 + algorithm)
        check_every_path(groups, 3, masks, algorithm, rows=((0, -1),))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algorithm", [1, 2])
def test_constant_and_tied_groups_in_wide_marginals(dtype, algorithm):
    """The brute force's counts of marginals of several columns (from its rows) where whole chunks of candidates
    lie at distance 0 or at the k-th distance: a constant group (a dead unit) and groups of few values, in MI
    and CMI marginals, with a group of the batch shared, at k = 3 and k = 40 (eps 0 in the tied group)."""
    n = 1000
    gen = torch.Generator().manual_seed(17)
    const = torch.full((1, n, 2), 0.25, dtype=torch.float64)
    tied = torch.randint(0, 3, (1, n, 2), generator=gen).double()
    cont = torch.randn(3, n, 3, generator=gen, dtype=torch.float64)
    for groups, masks in (([const, tied], MI), ([tied, cont], MI), ([const, cont, tied], CMI)):
        groups = [g.to(dtype) for g in groups]
        for k in (3, 40):
            want = reference.ksg_counts(groups, k, masks, algorithm)
            got = _run(groups, k, masks, algorithm, "brute")
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (k, masks)
    # the data holds what it is meant to test: marginals whose every distance is 0, and k-th distances tied
    assert (reference.knn_distance([const], 1) == 0).all()
    assert (reference.knn_distance([tied], 40) == 0).all()


@needs_ext
@pytest.mark.parametrize("algorithm", [1, 2])
def test_duplicates_give_zero_eps_and_count_the_copies(algorithm):
    """Samples 0..2 are one point: its k = 1 and 2 distances are 0; algorithm 1 counts < 0 (nothing), algorithm 2
    counts the copies at distance 0 in each marginal."""
    x = torch.tensor([[0.0], [0.0], [0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)[None]
    y = torch.tensor([[5.0], [5.0], [5.0], [5.0], [2.0], [9.0]], dtype=torch.float64)[None]
    for path in PATHS:
        eps, counts = _run([x, y], 2, MI, algorithm, path)
        assert eps[0].tolist() == [0.0, 0.0, 0.0, 1.0, 3.0, 7.0]
        want = reference.ksg_counts([x, y], 2, MI, algorithm)[1]
        assert torch.equal(counts, want)
        if algorithm == 1:
            assert counts[0, :, :3].tolist() == [[0, 0, 0], [0, 0, 0]]
        else:
            assert counts[0, :, :3].tolist() == [[2, 2, 2], [3, 3, 3]]  # y = 5 at samples 0..3


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algorithm", [1, 2])
def test_many_chunks_blocks_and_threads(dtype, algorithm):
    """N = 1,100 (several candidate chunks of the brute force, several query blocks of the sorted path, so the
    kernels run on several threads), a batch with a shared group, every thread count giving the same bits."""
    n = 1100
    mi = _groups("rounded", (1, 1), (3, 1), n, dtype, seed=90)
    cmi = _groups("duplicates", (1, 2, 1), (1, 3, 1), n, dtype, seed=91)
    threads = torch.get_num_threads()
    try:
        for groups, masks in ((mi, MI), (cmi, CMI)):
            want = reference.ksg_counts(groups, 3, masks, algorithm)
            for t in (1, 2, 5):
                torch.set_num_threads(t)
                for path in ("brute", "strips"):
                    eps, counts = _run(groups, 3, masks, algorithm, path)
                    assert torch.equal(eps, want[0]) and torch.equal(counts, want[1]), (t, path)
                    eps, counts = _run(groups, 3, masks, algorithm, path, 257, 1031)
                    assert torch.equal(eps, want[0][:, 257:1031]) and torch.equal(counts, want[1][..., 257:1031])
    finally:
        torch.set_num_threads(threads)


@needs_ext
@pytest.mark.parametrize("algorithm", [1, 2])
def test_one_large_problem_on_several_threads(algorithm):
    """N = 9,000, one problem: the sorted path's threads take the marginals side by side (MI's two on 2 threads,
    CMI's three on 3) or split each marginal's queries (CMI's three on 2), and the column sorts run side by
    side; every thread count gives the bits of one thread, which the reference tests above pin down."""
    n = 9000
    mi = _groups("rounded", (1, 1), (1, 1), n, torch.float64, seed=95)
    cmi = _groups("duplicates", (1, 1, 1), (1, 1, 1), n, torch.float64, seed=96)
    threads = torch.get_num_threads()
    try:
        for groups, masks in ((mi, MI), (cmi, CMI)):
            torch.set_num_threads(1)
            want = _run(groups, 3, masks, algorithm, "strips")
            for t in (2, 3):
                torch.set_num_threads(t)
                got = _run(groups, 3, masks, algorithm, "strips")
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), t
    finally:
        torch.set_num_threads(threads)


@needs_ext
@pytest.mark.parametrize("kind", ["rounded", "duplicates"])
def test_few_samples_every_k(kind):
    """N from 2 to 10 with every k up to N - 1: windows and strips at their edges."""
    for n in range(2, 11):
        for dims, batches, masks in (((1, 1), (2, 1), MI), ((1, 1, 1), (1, 2, 2), CMI), ((3,), (2,), [1])):
            groups = _groups(kind, dims, batches, n, torch.float64, seed=n)
            for k in range(1, n):
                for algorithm in (1, 2):
                    check_every_path(groups, k, masks, algorithm)


@needs_ext
def test_empty_and_non_contiguous():
    base = _data("rounded", 2, 80, 6, torch.float64, seed=5)
    x = base.transpose(1, 2).contiguous().transpose(1, 2)[:, ::2, ::2]  # (2, 40, 3), strided rows and columns
    y = _data("duplicates", 1, 80, 2, torch.float64, seed=6)[:, 1::2, 1:]  # (1, 40, 1)
    assert not x.is_contiguous() and not y.is_contiguous()
    for algorithm in (1, 2):
        check_every_path([x, y], 3, MI, algorithm)
    for path in PATHS:
        eps, counts = _run([x[:, :0], y[:, :0]], 1, MI, 2, path)
        assert eps.shape == (2, 0) and counts.shape == (2, 2, 0)


@needs_ext
def test_auto_path():
    """Auto takes the sorted path on few joint columns with one-column marginals and the brute force above
    8 joint columns (the sorted path's limit)."""
    low = _groups("continuous", (1, 1), (1, 1), 2000, torch.float64, seed=1)
    high = _groups("continuous", (6, 6), (1, 1), 300, torch.float64, seed=2)
    before = _ext.paths["ksg_counts:strips"]
    ops.ksg_counts(low, 3, MI, 1)
    assert _ext.paths["ksg_counts:strips"] == before + 1
    before = _ext.paths["ksg_counts:brute"]
    with _ext.force_path("strips"):  # forced, but the sorted path cannot take 12 joint columns
        ops.ksg_counts(high, 3, MI, 2)
    assert _ext.paths["ksg_counts:brute"] == before
    before = _ext.paths["ksg_counts:brute"]
    eps, counts = ops.ksg_counts(high, 3, MI, 2)
    assert _ext.paths["ksg_counts:brute"] == before + 1
    want = reference.ksg_counts(high, 3, MI, 2)
    assert torch.equal(eps, want[0]) and torch.equal(counts, want[1])


@needs_ext
def test_most_groups():
    """MAX_GROUPS one-column groups (the masks' highest bit), each marginal one group or all of them."""
    groups = [_data("rounded", 1, 12, 1, torch.float64, seed=g) for g in range(MAX_GROUPS)]
    masks = [1, 1 << (MAX_GROUPS - 1), (1 << MAX_GROUPS) - 1, 0b1011 << 40]
    for algorithm in (1, 2):
        eps, counts = reference.ksg_counts(groups, 2, masks, algorithm)
        # the joint space as a marginal: fewer than k samples strictly within eps, at least k within its radius
        assert (counts[0, 2] <= 1).all() if algorithm == 1 else (counts[0, 2] >= 2).all()
        for path in ("brute", "strips"):
            got = _run(groups, 2, masks, algorithm, path)
            assert torch.equal(got[0], eps) and torch.equal(got[1], counts)


@needs_ext
@pytest.mark.parametrize("algorithm", [1, 2])
def test_estimators_equal_the_separate_ops(algorithm):
    """mipp.mi's per-sample counts (reduction="counts") are the ones the separate ops give."""
    x = _data("rounded", 3, 200, 1, torch.float64, seed=3)
    y = _data("rounded", 1, 200, 1, torch.float64, seed=4)
    got = mipp.mi(x, y, 3, algorithm=algorithm, reduction="counts")  # (B, N, 2)
    eps = ops.knn_distance([x, y], 3)
    if algorithm == 1:
        nx, ny = ops.count_within([x], eps, True), ops.count_within([y], eps, True)
    else:
        radii = ops.marginal_radius([x, y], eps)
        nx = ops.count_within([x], radii[..., 0].contiguous(), False)
        ny = ops.count_within([y], radii[..., 1].contiguous(), False)
    assert torch.equal(got, torch.stack([nx, ny], dim=-1))


_BRUTE_IN_A_CHILD = """
import sys, torch
from mipp import _C, _ext
groups = torch.load(sys.argv[1])
with _ext.force_path("brute"):
    out = [torch.ops.mipp.ksg_counts(groups, 3, [0b01, 0b10], a) for a in (1, 2)]
    out.append(torch.ops.mipp.knn_distance(groups, 3))
torch.save((_C.build_info()["avx512_distances"], out), sys.argv[2])
"""


@needs_ext
@pytest.mark.parametrize("kind", ["rounded", "duplicates", "offset", "heavy", "zeros"])
def test_the_avx512_and_avx2_distance_loops_give_the_same_bits(kind, tmp_path):
    """The brute force's float64 loops run AVX-512 versions where the CPU has them (the group distances by
    vrangepd: max(acc, |d|) in one selection; the k-NN test and the counts on 8 doubles at a time) and the AVX2 /
    baseline clones elsewhere; MIPP_NO_AVX512=1 turns the former off. A child process with it off gives the same
    eps and counts, bit for bit, on ties, duplicates, rounding differences, heavy tails and +0 / -0 (on a CPU
    without AVX-512 both run the clones)."""
    groups = _groups(kind, (11, 6), (2, 1), 203, torch.float64, seed=13)
    torch.save(groups, tmp_path / "groups.pt")
    env = {**os.environ, "MIPP_NO_AVX512": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [sys.executable, "-c", _BRUTE_IN_A_CHILD, str(tmp_path / "groups.pt"), str(tmp_path / "out.pt")],
        env=env, check=True,
    )  # fmt: skip
    child_avx512, child = torch.load(tmp_path / "out.pt")
    assert child_avx512 is False
    with _ext.force_path("brute"):
        here = [ops.ksg_counts(groups, 3, MI, a) for a in (1, 2)]
        here.append(ops.knn_distance(groups, 3))
    for got, want in zip(here[:2], child[:2]):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(here[2], child[2])
    assert torch.equal(here[0][0], reference.ksg_counts(groups, 3, MI, 1)[0])


# ---------------------------------------------------------------------------------------------------
# argument checks and their wording


def _xy(n: int = 20):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, n, 1, dtype=torch.float64, generator=g)
    return x, torch.randn(1, n, 2, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("masks", [[0], [4], [-1], [], [1, 2, 3, 1 << 62]])
def test_marginals_out_of_range_are_refused(masks):
    x, y = _xy()
    before = sum(_ext.paths.values())
    with pytest.raises(ValueError, match=r"marginals must be non-empty bitmasks of the 2 groups \(each in \[1, 3\]\)"):
        ops.ksg_counts([x, y], 3, masks, 1)
    assert sum(_ext.paths.values()) == before  # refused before the kernel


@pytest.mark.parametrize("algorithm", [0, 3, -1])
def test_algorithm_out_of_range_is_refused(algorithm):
    x, y = _xy()
    with pytest.raises(ValueError, match=f"algorithm must be 1 or 2, got {algorithm}"):
        ops.ksg_counts([x, y], 3, MI, algorithm)


def test_too_many_groups_are_refused():
    groups = [torch.randn(1, 10, 1, dtype=torch.float64) for _ in range(MAX_GROUPS + 1)]
    with pytest.raises(ValueError, match=f"at most {MAX_GROUPS} groups, got {MAX_GROUPS + 1}"):
        ops.ksg_counts(groups, 3, [1], 1)


def test_the_contract_is_checked_as_in_the_other_ops():
    x, y = _xy()
    with pytest.raises(ValueError, match=r"mipp::ksg_counts: k=20 must be in \[1, N - 1\] for N=20"):
        ops.ksg_counts([x, y], 20, MI, 1)
    with pytest.raises(ValueError, match=r"query rows"):
        ops.ksg_counts([x, y], 3, MI, 1, 15, 10)
    with pytest.raises(ValueError, match=r"groups\[1\] is torch\.float32"):
        ops.ksg_counts([x, y.float()], 3, MI, 1)
    bad = y.clone()
    bad[0, 4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"mipp::ksg_counts: groups\[1\] contains NaN or inf"):
        ops.ksg_counts([x, bad], 3, MI, 1)


def test_names_word_the_data_errors_as_the_estimators():
    x, y = _xy()
    bad = y.clone()
    bad[0, 4, 1] = float("inf")
    with pytest.raises(ValueError) as info:
        ops.ksg_counts([x, bad], 3, MI, 1, names="a,b")
    assert str(info.value) == "b contains NaN or inf; drop or impute those samples first"
    huge = torch.tensor([-1e308, 1e308] * 10, dtype=torch.float64).reshape(1, 20, 1)
    with pytest.raises(ValueError) as info:
        ops.ksg_counts([huge, y], 3, MI, 1, names="a,b")
    assert str(info.value) == overflow_message("a", torch.float64)
    with pytest.raises(ValueError) as info:
        ops.ksg_counts([x, y], 20, MI, 1, names="a,b")
    assert str(info.value) == "k=20 needs more than k samples, got N=20; lower k or add samples"
    with pytest.raises(ValueError, match=r"names='a' must name each of the 2 groups"):
        ops.ksg_counts([x, y], 3, MI, 1, names="a")


@pytest.mark.parametrize("which", ["x", "y", "z"])
def test_estimator_errors_name_the_argument(which):
    """mipp.mi / mipp.cmi name the bad argument (their own checks eagerly, the op's names= when compiled:
    test_ops.py::test_compiled_estimators_keep_the_checks)."""
    g = torch.Generator().manual_seed(1)
    args = {name: torch.randn(30, dtype=torch.float64, generator=g) for name in "xyz"}
    args[which][7] = float("nan")
    want = f"{which} contains NaN or inf; drop or impute those samples first"
    if which != "z":
        with pytest.raises(ValueError) as info:
            mipp.mi(args["x"], args["y"])
        assert str(info.value) == want
    with pytest.raises(ValueError) as info:
        mipp.cmi(args["x"], args["y"], args["z"])
    assert str(info.value) == want
