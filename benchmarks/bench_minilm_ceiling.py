"""How far choosing and re-fitting FFN neurons layer by layer can take the pretrained MiniLM (issue 19's goal:
held-out cosine >= 0.97 at 50% and >= 0.93 at 75% of the FFN neurons removed, no fine-tuning), at the same
count in every layer (uniform: the allocation is not what is measured here).

    PYTHONPATH=python python benchmarks/bench_minilm_ceiling.py [--sparsities 0.5 0.75] [--modes ...]

Same model, sentences and held-out metrics as bench_minilm.py (800 calibration / 1,000 held-out sentences,
no module shared). Layer by layer from the input, each mode chooses the kept neurons with the least-squares
screen (mipp's ``LSState``: greedy removal of the neuron whose loss least increases the re-fitted error,
rank-one updates) and re-fits the down-projection by least squares on every calibration token row:

* ``screen``: the neurons chosen on the dense model's activations to reproduce its own FFN output, then the
  sequential re-fit toward the dense LayerNorm input (what ``screen_selection`` + ``apply(refit=...)`` do);
* ``screen-ln``: the screen's choice on the dense activations in the LayerNorm's view (rows and outputs
  weighted as in ``sequential-ln`` below), and the same weighted re-fit: the LayerNorm's view without the
  sequential choice;
* ``sequential``: chosen on the pruned model's activations (the layers before already pruned and
  re-fitted) to reproduce the stream target z_dense + (stream_dense - stream_pruned), the target the
  re-fit uses, so the choice also corrects the error left upstream;
* ``sequential-ln``: the same in the LayerNorm's view: every token row weighted by 1 / the standard deviation
  of the dense LayerNorm input (the norm's Jacobian divides an error by it) and the outputs by the norm's
  gain, for the choice and the re-fit;
* ``sequential-ln-attention``: also the attention output projections re-fitted toward the dense attention
  LayerNorm input (more parameters absorbing the upstream error).

Writes benchmarks/results/minilm_ceiling.csv (every run appended)."""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import environment, read_csv, write_csv
from bench_minilm import draw_sentences, embed, encode_batches, fidelity, length_batches, load_minilm

from mipp.pruning.criteria.lstsq import Block, LSState, gaussian_scores

MODES = ("screen", "screen-ln", "sequential", "sequential-ln", "sequential-ln-attention")
RIDGE = 1e-8


def _same(v: torch.Tensor) -> torch.Tensor:
    return v


@torch.no_grad()
def tap(model, batches, taps: dict) -> dict[str, torch.Tensor]:
    """Every token row of each tap (name -> (module, 0: input / 1: output, fn applied)) over the batches,
    float64."""
    got: dict[str, list] = {n: [] for n in taps}
    handles = [
        mod.register_forward_hook(lambda m, i, o, n=n, w=w, f=f: got[n].append(f((i[0], o)[w]).flatten(0, 1)))
        for n, (mod, w, f) in taps.items()
    ]
    try:
        for b in batches:
            model(**b)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v).double() for n, v in got.items()}


def weighted_moments(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor):
    """Mean, covariance of x and the least-squares coefficients of t on [x, 1], every row weighted by w^2."""
    w2 = (w * w) / (w * w).sum()
    mean = (w2 * x).sum(0)
    xc = x - mean
    cov = (xc * w2).T @ xc
    tc = t - (w2 * t).sum(0)
    cross = (xc * w2).T @ tc
    lam = RIDGE * float(cov.diagonal().mean())
    beta = torch.linalg.solve(cov + lam * torch.eye(len(cov), dtype=cov.dtype), cross)  # (F, q)
    return mean, cov, beta


def screen(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor, gain: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` columns of x that the least-squares screen keeps to reproduce t (rows weighted by w,
    outputs by ``gain``): the best re-fit of t on a subset is the best re-fit of its least-squares part
    x beta, so mipp's screen state on the weights beta^T decides it."""
    mean, cov, beta = weighted_moments(x, t, w)
    block = Block(cov, mean, x[:0], len(x), (beta * gain).T.contiguous(), [torch.tensor([c]) for c in range(len(cov))])
    st = LSState(block, torch.zeros(len(cov), dtype=torch.bool), RIDGE, rows=False)
    st.sigma2 = max(block.target_variance, 1e-300)
    alive = list(range(len(cov)))
    while len(alive) > keep:
        j = int(gaussian_scores([st], alive).argmin())
        st.remove(st.cols(alive.pop(j)))
    return torch.tensor(alive)


def refit_linear(linear: nn.Linear, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor, cols=None) -> None:
    """linear's weights (on ``cols`` of x, all when None) and bias by weighted least squares onto t."""
    if cols is not None:
        x = x[:, cols]
    mean, _, beta = weighted_moments(x, t, w)
    w2 = (w * w) / (w * w).sum()
    bias = (w2 * t).sum(0) - mean @ beta
    linear.weight = nn.Parameter(beta.T.float().contiguous())
    linear.bias = nn.Parameter(bias.float())
    linear.in_features = x.shape[1]


@torch.no_grad()
def prune(model: nn.Module, calib, keep: int, mode: str) -> nn.Module:
    small = copy.deepcopy(model)
    for i, (dense, layer) in enumerate(zip(model.layers, small.layers)):
        ln = "-ln" in mode
        if mode.endswith("attention") and i > 0:
            a = tap(model, calib, {"s": (dense.attn_norm, 0, _same)})["s"]
            p = tap(small, calib, {"x": (layer.attn_out, 0, _same), "z": (layer.attn_out, 1, _same),
                                   "s": (layer.attn_norm, 0, _same)})  # fmt: skip
            refit_linear(layer.attn_out, p["x"], a - (p["s"] - p["z"]), 1 / a.std(1, keepdim=True))
        d = tap(model, calib, {"h": (dense.intermediate, 1, F.gelu), "z": (dense.output, 1, _same),
                               "s": (dense.out_norm, 0, _same)})  # fmt: skip
        p = tap(small, calib, {"h": (layer.intermediate, 1, F.gelu), "z": (layer.output, 1, _same),
                               "s": (layer.out_norm, 0, _same)})  # fmt: skip
        w = 1 / d["s"].std(1, keepdim=True) if ln else torch.ones(len(d["s"]), 1, dtype=torch.float64)
        gain = dense.out_norm.weight.double() if ln else torch.ones(d["s"].shape[1], dtype=torch.float64)
        target = d["s"] - (p["s"] - p["z"])  # restores the norm's input: z + the stream's drift
        if mode.startswith("screen"):
            kept = screen(d["h"], d["z"], w, gain, keep)
        else:
            kept = screen(p["h"], target, w, gain, keep)
        layer.intermediate.weight = nn.Parameter(layer.intermediate.weight[kept].clone())
        layer.intermediate.bias = nn.Parameter(layer.intermediate.bias[kept].clone())
        layer.intermediate.out_features = len(kept)
        refit_linear(layer.output, p["h"], target, w, kept)
    return small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--n-calib", type=int, default=800)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="minilm_ceiling.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_minilm()
    calib, held = draw_sentences(args.n_calib, args.n_eval, args.seed)
    calib_batches, held_batches = length_batches(tok, calib), encode_batches(tok, held, batch=64)
    dense = embed(model, held_batches)
    rows = read_csv(args.out)  # every run kept
    env = environment()
    for sp in args.sparsities:
        keep = round(1536 * (1 - sp))
        for mode in args.modes:
            t0 = time.perf_counter()
            small = prune(model, calib_batches, keep, mode)
            row = {"sparsity": sp, "kept_per_layer": keep, "mode": mode, **fidelity(dense, embed(small, held_batches))}
            row.update(seconds=round(time.perf_counter() - t0, 1), n_calib=len(calib), n_eval=len(held), seed=args.seed)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            rows.append({**row, **env})
            write_csv(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
