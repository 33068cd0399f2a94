"""The captured moments: exact, and independent of how the samples were batched."""

from __future__ import annotations

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


def test_moments_of_every_position_equal_the_direct_ones():
    """150 samples x 100 positions (15,000 rows, several chunks) captured in uneven batches: the float64
    moments of all the receptive-field rows, and one sampled row per sample taken from its own positions."""
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
