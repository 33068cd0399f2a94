"""The captured moments: exact, and independent of how the samples were batched."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mipp.pruning.capture import _Accumulator, capture


def conv_pair(seed: int):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1)).eval()


def test_moments_do_not_depend_on_how_the_rows_were_batched():
    """Rows arriving in batches of every size (1 row, CHUNK - 1, CHUNK + 1, many chunks at once) are summed in
    the same chunks of CHUNK rows: bit-identical moments and sampled rows."""
    torch.manual_seed(0)
    rows = torch.randn(3 * _Accumulator.CHUNK + 123, 6)  # 3 positions per sample
    rows = rows[: len(rows) // 3 * 3]

    def stats(sizes):
        acc = _Accumulator(seed=4)
        for part in rows.split(sizes):
            acc.add(part, 3)
        return acc.finish()

    c = _Accumulator.CHUNK
    ref = stats([len(rows)])
    for sizes in (
        [3] * 5 + [len(rows) - 15],
        [c - 1 - (c - 1) % 3, 3, len(rows) - c + 1 + (c - 1) % 3 - 3],
        [c + 2 - (c + 2) % 3] * 3 + [len(rows) - 3 * (c + 2 - (c + 2) % 3)],
    ):
        got = stats(sizes)
        assert got.n_rows == ref.n_rows == len(rows)
        assert torch.equal(got.mean, ref.mean) and torch.equal(got.cov, ref.cov) and torch.equal(got.rows, ref.rows)


@pytest.mark.parametrize("images", [False, True])
def test_moments_of_every_position_equal_the_direct_ones(monkeypatch, images):
    """150 samples x 100 positions (15,000 rows, several chunks) captured in uneven batches, from the rows and
    from the images: the float64 moments of all the receptive-field rows, and one sampled row per sample
    taken from its own positions."""
    from mipp.pruning import capture as capture_module

    monkeypatch.setattr(capture_module, "IMAGE_MIN_CHANNELS", 1 if images else 1 << 30)
    monkeypatch.setattr(_Accumulator, "CONV_ROWS", 4096)  # several chunks of images too
    model = conv_pair(0)
    x = torch.randn(150, 2, 10, 10)
    got = capture(model, list(x.split([7, 41, 1, 101])), ["2"], seed=5)["2"]
    with torch.no_grad():
        h = model[1](model[0](x)).double()
    rows = F.unfold(h, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    centred = rows - rows.mean(0)
    assert got.n_rows == 15_000
    torch.testing.assert_close(got.mean, rows.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got.cov, centred.T @ centred / len(rows), rtol=1e-6, atol=1e-7)
    per_sample = rows.view(150, 100, 27)
    assert got.rows.shape == (150, 27)
    assert all(bool((per_sample[i] - got.rows[i]).abs().amax(1).min() < 1e-6) for i in range(150))


def test_gram_matrix_equals_the_full_product():
    """The block-triangle product mirrored: every entry as a.T @ a computes it (to rounding), at widths on
    both sides of the blocked path's threshold and not divisible by the block count."""
    from mipp.pruning.capture import gram_matrix

    g = torch.Generator().manual_seed(3)
    for F_ in (5, 511, 512, 515, 1030):
        a = torch.randn(300, F_, dtype=torch.float64, generator=g) + 2.0
        want = a.T @ a
        got = gram_matrix(a)
        assert got.shape == (F_, F_)
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13 * float(want.abs().max()))


def test_capture_and_refit_show_progress_with_totals(capsys):
    """Long work shows a bar with its total: the capture over the batches, the re-fit over consumers x
    batches; nothing is printed when progress is off."""
    from mipp.pruning import MIPP

    torch.manual_seed(0)  # a fixed model and data: the budget's split between the two groups decides the total
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 2)).eval()
    x = torch.randn(300, 6)
    batches = list(x.split(100))  # 3 batches
    sel = MIPP(sparsity=0.5, progress=True).select(model, batches)
    err = capsys.readouterr().err
    assert "MIPP capture" in err and "/3" in err
    sel.apply(model, refit=batches, progress=True)
    err = capsys.readouterr().err
    assert "MIPP re-fit" in err and "/6" in err  # 2 consumers re-fitted x 3 batches
    MIPP(sparsity=0.5, progress=False).select(model, batches).apply(model, refit=batches)
    assert capsys.readouterr().err == ""


CONV_CASES = [
    (nn.Conv2d(3, 4, 3, padding=1), (2, 3, 7, 6)),
    (nn.Conv2d(3, 4, (2, 3), padding=(0, 2), dilation=(1, 2)), (2, 3, 5, 9)),  # even kernel, dilated, uneven pads
    (nn.Conv2d(2, 4, 5, padding=3), (3, 2, 4, 4)),  # kernel wider than the image, padding beyond it
    (nn.Conv2d(2, 2, 3), (2, 2, 3, 3)),  # no padding: one output position
    (nn.Conv2d(2, 2, 3, padding=2, dilation=2), (2, 2, 8, 8)),
    (nn.Conv2d(4, 2, 3, padding=1, groups=2), (2, 4, 5, 5)),  # grouped: the rows hold every input channel
    (nn.Conv1d(2, 3, 3, padding=1), (4, 2, 11)),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_moments_equal_the_receptive_field_rows(case):
    """The image path's sum and Gram equal those of the unfolded rows (to float64 rounding) for kernels,
    dilations and paddings of every kind, and its sampled rows are the rows at the drawn positions."""
    from mipp.pruning.capture import conv_geometry, conv_moments, feature_rows, receptive_rows

    module, shape = CONV_CASES[case]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(case)) + 0.5
    rows, positions = feature_rows(module, x)
    rows = rows.double()
    geo = conv_geometry(module, x)
    assert geo is not None and math.prod(geo.out) == positions
    images = x.unsqueeze(-2) if x.dim() == 3 else x
    sums, gram = conv_moments(images, geo)
    want = rows.T @ rows
    torch.testing.assert_close(sums, rows.sum(0), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(gram, want, rtol=1e-13, atol=1e-13 * float(want.abs().max()))
    pick = torch.randint(positions, (len(x),), generator=torch.Generator().manual_seed(9))
    per_sample = rows.view(len(x), positions, -1)
    assert torch.equal(receptive_rows(images, geo, pick).double(), per_sample[torch.arange(len(x)), pick])


def test_conv_geometry_leaves_other_layers_to_the_rows():
    """Strided, 1 x 1, string-padded and non-zero-padded convolutions and Linear layers take the rows path."""
    from mipp.pruning.capture import conv_geometry

    x = torch.randn(1, 2, 6, 6)
    for module in (
        nn.Conv2d(2, 2, 3, stride=2, padding=1),
        nn.Conv2d(2, 2, 1),
        nn.Conv2d(2, 2, 3, padding="same"),
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
        nn.Linear(6, 2),
    ):
        assert conv_geometry(module, x) is None
    assert conv_geometry(nn.Conv2d(2, 2, 3, padding=1), x) is not None


def test_image_moments_do_not_depend_on_how_the_images_were_batched(monkeypatch):
    """Images summed in fixed chunks whatever the batching (chunks of 3 images here, batches of 1, 2, 4 and 7
    images): bit-identical moments and sampled rows; and the same, to rounding, as the rows path."""
    from mipp.pruning.capture import conv_geometry, feature_rows

    monkeypatch.setattr(_Accumulator, "CONV_ROWS", 3 * 25)
    module = nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(14, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    geo = conv_geometry(module, x)

    def stats(sizes):
        acc = _Accumulator(seed=4)
        for part in x.split(sizes):
            acc.add_images(part, geo)
        return acc.finish()

    ref = stats([14])
    for sizes in ([1] * 14, [2, 4, 1, 7], [7, 7]):
        got = stats(sizes)
        assert got.n_rows == ref.n_rows == 14 * 25
        assert torch.equal(got.mean, ref.mean) and torch.equal(got.cov, ref.cov) and torch.equal(got.rows, ref.rows)
    rows = _Accumulator(seed=4)
    rows.add(*feature_rows(module, x))
    want = rows.finish()
    assert torch.equal(want.rows, ref.rows)
    torch.testing.assert_close(ref.mean, want.mean, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ref.cov, want.cov, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case", [0, 1, 4, 6])
@pytest.mark.parametrize("subset", [False, True])
def test_refit_normal_equations_from_images_equal_those_from_rows(monkeypatch, case, subset):
    """The re-fit's Gram of [rows, 1] and its product with the targets, from a stride-1 convolution's images
    (conv_moments and the weight gradient), equal those of the receptive-field rows, with and without kept
    outputs and a column subset (a masked model)."""
    from mipp.pruning import capture, refit

    monkeypatch.setattr(capture, "IMAGE_MIN_CHANNELS", 1)
    module, shape = CONV_CASES[case]
    gen = torch.Generator().manual_seed(case)
    x = torch.randn(shape, generator=gen)
    with torch.no_grad():
        target = module(x) + 0.1 * torch.randn(module(x).shape, generator=gen)
    n_cols = module.in_channels * math.prod(module.kernel_size)
    kept_out = torch.tensor([1, 0]) if subset else None
    cols = torch.arange(0, n_cols, 2) if subset else None
    got = refit._normal_equations(module, x, target, kept_out, cols)
    monkeypatch.setattr(refit, "image_geometry", lambda m, x: None)
    want = refit._normal_equations(module, x, target, kept_out, cols)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12 * float(w.abs().max()))


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(2, 3, 2, padding="same"),  # even kernel: torch pads the odd pixel on the right / bottom
        nn.Conv2d(2, 3, (3, 4), padding="same", dilation=(1, 2)),
        nn.Conv2d(2, 3, 3, padding="valid"),
        nn.Conv1d(2, 3, 4, padding="same"),
    ],
)
def test_feature_rows_reproduce_string_padded_convolutions(module):
    """The rows of a convolution padded by name, times its flattened weight, give its output at every
    position (a "same"-padded even kernel once lost a row and a column of positions)."""
    from mipp.pruning.capture import feature_rows, flat_weight

    x = torch.randn(3, 2, 6, 7) if isinstance(module, nn.Conv2d) else torch.randn(3, 2, 9)
    rows, positions = feature_rows(module, x)
    with torch.no_grad():
        out = module(x)
    want = out.reshape(3, out.shape[1], -1).transpose(1, 2).reshape(-1, out.shape[1])
    assert positions == want.shape[0] // 3
    torch.testing.assert_close(rows @ flat_weight(module).T + module.bias, want, rtol=1e-5, atol=1e-5)


def test_all_finite_trusts_a_finite_sum_and_checks_an_overflowing_one():
    """A finite sum proves every value finite; a sum that overflows (finite values near the dtype's limit) or is
    NaN (inf - inf) falls back to the elementwise test, which finds NaN and inf wherever they sit."""
    from mipp.pruning.capture import all_finite

    big = torch.full((4, 3), 3e38, dtype=torch.float32)  # finite, but the sum overflows to inf
    assert not bool(torch.isfinite(big.sum())) and all_finite(big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(5, 6, dtype=torch.float64)
        x[3, 4] = bad
        assert not all_finite(x)
    both = torch.zeros(3)
    both[0], both[2] = float("inf"), -float("inf")  # the sum is NaN
    assert not all_finite(both) and all_finite(torch.zeros(3))
