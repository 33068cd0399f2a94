"""Compile every mipp Triton kernel ahead of time for sm_90 (H100) without a GPU and report its cost.

For each kernel, dtype (float32, float64) and a few representative constexpr settings this prints the
registers and spill bytes (from ``ptxas -v`` on the generated PTX) and, from the SASS of the cubin, the
instruction count of the hot inner loop and the instructions per pair-dimension.

How the hot loop is found: the SASS is split into loops at its backward branches (a ``BRA`` whose target
precedes it); the innermost loops that contain a global load (``LDG``) are the column loops of
``_tiles._group_distance`` (one per group, plus remainder loops where LLVM unrolled; nothing else in
the kernels loads inside an innermost loop), and the hot loop is the one doing the most pair-columns
per iteration. Each iteration of such a loop handles one column for every pair of the thread's share of
the tile, with one max per pair (``FMNMX`` in float32; in float64 a ``DSETP`` compare and two ``FSEL``),
so instructions per pair-dimension = loop instructions / number of maxes in the loop (unrolling changes
both alike; subtracts are not counted because ptxas also uses ``DADD`` for a float64 abs). The floor is
2 in float32 (a subtract and a max whose operand takes the free ``|.|`` modifier) and about 5 in float64
(subtract, abs, compare, two selects); loads, address arithmetic and the loop branch come on top.

Exit status: non-zero if any kernel fails to compile (or TRITON_INTERPRET is set: the interpreter has no
compiler). Run from the repository root: ``python benchmarks/aot_compile.py [label filter]``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("aot_compile.py compiles for the GPU: unset TRITON_INTERPRET (it selects the interpreter)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # mipp_kernels from this checkout

import torch
import triton
from triton.backends.compiler import GPUTarget

from mipp_kernels.count_within import _count_within_kernel
from mipp_kernels.knn_distance import _knn_distance_kernel
from mipp_kernels.marginal_radius import _marginal_radius_kernel

TARGET = GPUTarget("cuda", 90, 32)
# The one max per pair and column: FMNMX (float32) or the compare of compare-and-select (float64).
MAXES = ("FMNMX", "DSETP")

# (label, autotuned kernel, constexprs). Every config the kernel's own pruner keeps for these constexprs
# is compiled; BB > 1 with a shared group is the batched case (one distance tile for BB problems).
_GROUPS2 = dict(G=2, SHARED0=False, SHARED1=False, SHARED2=False)
_Y_SHARED = dict(G=2, SHARED0=False, SHARED1=True, SHARED2=True)
VARIANTS = [
    ("knn k=3", _knn_distance_kernel, dict(K=3, K_PAD=4, BB=1, **_GROUPS2)),
    ("knn k=64", _knn_distance_kernel, dict(K=64, K_PAD=64, BB=1, **_GROUPS2)),
    ("knn k=3 BB=4 y shared", _knn_distance_kernel, dict(K=3, K_PAD=4, BB=4, **_Y_SHARED)),
    ("count strict", _count_within_kernel, dict(STRICT=True, BB=1, **_GROUPS2)),
    (
        "count BB=8 y shared",
        _count_within_kernel,
        dict(STRICT=True, BB=8, G=1, SHARED0=True, SHARED1=True, SHARED2=True),
    ),
    ("marginal_radius", _marginal_radius_kernel, dict(BB=1, **_GROUPS2)),
]


def configs(kernel, dtype: str, constexprs) -> list:
    """The GPU configs that the kernel's own pruner keeps for this dtype and these constexprs."""
    example = torch.empty(0, dtype=torch.float32 if dtype == "fp32" else torch.float64)
    return kernel.early_config_prune(kernel.configs, {"x0_ptr": example}, **constexprs)


def compile_variant(kernel, dtype: str, constexprs: dict, config):
    fn = kernel.fn
    constants = {**constexprs, **config.kwargs}
    # Specialise as the JIT does for a typical call: tensors 16-byte aligned, the packed groups' batch
    # and column strides multiples of 16 (N_pad is), a contiguous radius (row stride 1).
    if "srn" in fn.arg_names:
        constants["srn"] = 1
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*i64" if name == "out_ptr" and kernel is _count_within_kernel else f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if re.fullmatch(r"s\d[bd]", name):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(src, target=TARGET, options=dict(num_warps=config.num_warps, num_stages=config.num_stages))


def ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers, spill store + load bytes) from ``ptxas -v`` on the kernel's PTX."""
    ptxas = triton.knobs.nvidia.ptxas_blackwell.path  # the ptxas Triton itself uses for sm_90
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        log = subprocess.run(
            [ptxas, "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a", str(src), "-o", str(Path(tmp, "k.cubin"))],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = sum(int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
    return regs, spills


def sass(cubin: bytes) -> list[tuple[int, str, str]]:
    """(address, opcode, text) of every SASS instruction of the cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, "-sass", f.name], capture_output=True, text=True, check=True
        ).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            tokens = m.group(2).split()
            op = tokens[1] if tokens[0].startswith("@") else tokens[0]
            out.append((int(m.group(1), 16), op.split(".")[0], m.group(2)))
    return out


def column_loops(instructions) -> list[Counter]:
    """Opcode counts of the innermost loops that contain a global load: the distance column loops."""
    loops = []
    for addr, op, text in instructions:
        target = re.search(r"0x([0-9a-f]+)", text) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr:
            loops.append((int(target.group(1), 16), addr))
    innermost = [(lo, hi) for lo, hi in loops if not any((lo, hi) != (a, b) and lo <= a and b <= hi for a, b in loops)]
    bodies = [Counter(op for addr, op, _ in instructions if lo <= addr <= hi) for lo, hi in innermost]
    return [body for body in bodies if body["LDG"] and any(body[m] for m in MAXES)]


def main(only: str = "") -> int:
    rows, failures = [], 0
    start = time.time()
    for label, kernel, constexprs in VARIANTS:
        if only not in label:
            continue
        for dtype in ("fp32", "fp64"):
            for config in configs(kernel, dtype, constexprs):
                tile = f"{config.kwargs['BLOCK_Q']}x{config.kwargs['BLOCK_N']}/w{config.num_warps}"
                try:
                    t0 = time.time()
                    compiled = compile_variant(kernel, dtype, constexprs, config)
                    seconds = time.time() - t0
                    regs, spills = ptxas_usage(compiled.asm["ptx"])
                    loops = column_loops(sass(compiled.asm["cubin"]))
                    if not loops:
                        raise RuntimeError("no distance column loop found in the SASS")
                    # the hot loop: the (unrolled) column loop doing the most pair-columns per iteration
                    hot = max(loops, key=lambda body: sum(body[m] for m in MAXES))
                    n, pairs = sum(hot.values()), sum(hot[m] for m in MAXES)
                    rows.append((label, dtype, tile, regs, spills, n, pairs, n / pairs, seconds))
                except Exception as exc:  # report every failing kernel, then fail the run
                    failures += 1
                    print(f"FAILED: {label} {dtype} {tile}: {type(exc).__name__}: {exc}", file=sys.stderr)
    header = (
        "kernel",
        "dtype",
        "BQxBN/warps",
        "regs",
        "spill B",
        "loop instr",
        "pair-cols",
        "instr/pair-dim",
        "compile s",
    )
    widths = (22, 5, 11, 4, 7, 10, 9, 14, 9)
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(f"{v:>{w}.2f}" if isinstance(v, float) else f"{v:>{w}}" for v, w in zip(row, widths)))
    print(
        "hot loop: the innermost SASS loop with global loads and the most max instructions (one per pair\n"
        "and column); instr/pair-dim = its instructions / its maxes; floor 2 (fp32), about 5 (fp64)"
    )
    print(f"{len(rows)} kernels compiled for sm_90, {failures} failures, {time.time() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
