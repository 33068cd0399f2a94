"""The capture's moments of a convolution's receptive fields: rows (``F.unfold`` and the blocked Gram of every
kh x kw-wide row, the path of strided convolutions, token rows and Linear inputs) against the stride-1
convolution's image path (:func:`mipp.pruning.capture.conv_moments`: one C x C product per pixel shift, 13 for a
3 x 3 kernel instead of the rows' 81 column-block products), on the inputs of every stride-1 3 x 3 convolution of
the full-width ResNet-18 (64-128-256-512 channels, 3 x 32 x 32 inputs, untrained: the time does not depend on
the weights), and of narrow 3 x 3, 5 x 5 and 7 x 7 convolutions (6-48 channels: where the rows' one product is
the faster, which sets IMAGE_MIN_CHANNELS).

    PYTHONPATH=python python benchmarks/bench_capture.py [--samples 128] [--repeats 3] [--selection 500]

Each consumer's input is captured once; both paths then accumulate it through the capture's own accumulator
(same chunks, same sampled rows), alternating, medians of --repeats; the moments are checked equal first
(relative max difference). Appends to benchmarks/results/capture.csv (every run kept).

--selection N: the whole selection (KSG criterion, 50% of the nodes, streams joint) and re-fit of the full-width
ResNet-18 on N random images, once the way it was before (every convolution's moments from its rows, the LU
inverse) and once as it is, in one process, one after the other; the kept counts must agree. Writes
benchmarks/results/capture_selection.csv."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from _results import environment, read_csv, write_csv

from mipp.experiments.resnet import ResNet18
from mipp.pruning import MIPP
from mipp.pruning import capture as capture_module
from mipp.pruning.capture import _Accumulator, conv_geometry, feature_rows
from mipp.pruning.criteria import lstsq


def accumulate(module, x, images: bool):
    acc = _Accumulator(seed=0)
    if images:
        acc.add_images(x, conv_geometry(module, x))
    else:
        acc.add(*feature_rows(module, x))
    return acc.finish()


def selection(n: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(n, 3, 32, 32)
    model = ResNet18(widths=(64, 128, 256, 512)).eval()
    images_from, cholesky = capture_module.IMAGE_MIN_CHANNELS, lstsq.spd_inverse
    rows, counts = [], []
    for path in ("rows, LU", "images, Cholesky"):
        before = path == "rows, LU"
        capture_module.IMAGE_MIN_CHANNELS = 1 << 30 if before else images_from
        lstsq.spd_inverse = torch.linalg.inv if before else cholesky
        t0 = time.perf_counter()
        sel = MIPP("ksg", sparsity=0.5, n_samples=n, joint=True, progress=False).select(model, x)
        select = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel.apply(model, refit=x)
        row = {
            "path": path,
            "samples": n,
            "select_seconds": select,
            "capture_seconds": sel.seconds["capture"],
            "decision_seconds": sel.seconds["decisions"],
            "refit_seconds": time.perf_counter() - t0,
        }
        counts.append({k: len(v) for k, v in sel.keep.items()})
        rows.append({**row, **environment()})
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    capture_module.IMAGE_MIN_CHANNELS, lstsq.spd_inverse = images_from, cholesky
    assert counts[0] == counts[1], counts
    write_csv(rows, "capture_selection.csv")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--selection", type=int, default=0, help="also time the whole selection on N images")
    args = parser.parse_args()
    if args.selection:
        selection(args.selection)
    torch.manual_seed(0)
    model = ResNet18(widths=(64, 128, 256, 512)).eval()
    inputs: dict[str, tuple] = {}

    def keep(name):
        def fn(module, args, output):
            inputs[name] = (module, args[0])

        return fn

    hooks = [
        m.register_forward_hook(keep(name))
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.stride == (1, 1) and m.kernel_size == (3, 3)
    ]
    with torch.no_grad():
        model(torch.randn(args.samples, 3, 32, 32))
    for h in hooks:
        h.remove()
    # narrow convolutions (channels, kernel, padding, input size): where the rows' one product is the faster
    for c, k, p, size in ((8, 3, 1, 32), (16, 3, 1, 32), (32, 3, 1, 32), (48, 3, 1, 32), (6, 5, 0, 14), (16, 5, 0, 14),
                          (24, 5, 0, 14), (32, 5, 0, 14), (16, 7, 3, 32), (24, 7, 3, 32), (32, 7, 3, 32)):  # fmt: skip
        inputs[f"narrow-{c}-k{k}"] = (torch.nn.Conv2d(c, c, k, padding=p), torch.randn(args.samples, c, size, size))
    rows, seen = read_csv("capture.csv"), set()  # every run kept
    for name, (m, x) in inputs.items():
        shape = (tuple(x.shape[1:]), m.in_channels, m.kernel_size)
        if shape in seen:  # one consumer per input shape: the others cost the same
            continue
        seen.add(shape)
        ref, got = accumulate(m, x, False), accumulate(m, x, True)
        scale = float(ref.cov.abs().max())
        diff = float((ref.cov - got.cov).abs().max()) / scale
        assert diff < 1e-12 and torch.equal(ref.rows, got.rows), (name, diff)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for images in (False, True):
                t0 = time.perf_counter()
                accumulate(m, x, images)
                times[images].append(time.perf_counter() - t0)
        row = {
            "consumer": name,
            "input": "x".join(map(str, x.shape[1:])),
            "samples": args.samples,
            "features": ref.cov.shape[0],
            "rows_seconds": statistics.median(times[False]),
            "images_seconds": statistics.median(times[True]),
            "max_rel_diff": diff,
        }
        row["speedup"] = row["rows_seconds"] / row["images_seconds"]
        rows.append({**row, **environment()})
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    write_csv(rows, "capture.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
