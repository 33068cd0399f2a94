"""Selections on disk: compact JSON that loads without tracing the model again, older versions still read,
and every broken or foreign file refused with one error naming the field."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mipp.pruning import MIPP, Selection
from mipp.pruning import serialization as ser
from mipp.pruning.serialization import SelectionFileError

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight[8:] = model[0].weight[:8]  # duplicated units: something to remove
        model[0].bias[8:] = model[0].bias[:8]
    x = torch.randn(300, 5)
    return model, x, MIPP(n_samples=300, progress=False).select(model, x)


def test_round_trip_without_tracing(mlp, tmp_path, monkeypatch):
    model, x, sel = mlp
    path = str(tmp_path / "sel.json")
    sel.save(path)
    text = Path(path).read_text()
    assert "\n" not in text and '"records"' not in text  # compact, no per-node records unless asked
    monkeypatch.setattr(ser, "analyse", lambda *a, **k: pytest.fail("load traced the model again"))
    loaded = Selection.load(path, model)
    assert loaded.keep.keys() == sel.keep.keys()
    assert all(torch.equal(loaded.keep[k], sel.keep[k]) for k in sel.keep)
    for name, g in sel.structure.groups.items():
        h = loaded.structure.groups[name]
        assert (h.n_nodes, h.prunable, h.reason, h.members, h.producers, h.kind) == (
            g.n_nodes,
            g.prunable,
            g.reason,
            g.members,
            g.producers,
            g.kind,
        )
        assert [(c.name, c.kind, c.columns) for c in h.consumers] == [(c.name, c.kind, c.columns) for c in g.consumers]
    assert loaded.structure.order == sel.structure.order
    assert all(torch.equal(loaded.means[k], sel.means[k]) for k in sel.means)  # float64, exactly
    assert torch.equal(loaded.example, sel.example)
    assert loaded.layers["0"].records == [] and loaded.layers["0"].n_after == sel.layers["0"].n_after
    torch.testing.assert_close(loaded.apply(model)(x), sel.apply(model)(x), rtol=0, atol=0)


def test_records_when_asked(mlp, tmp_path):
    model, _, sel = mlp
    path = str(tmp_path / "sel.json")
    sel.save(path, records=True)
    loaded = Selection.load(path, model)
    for name, res in sel.layers.items():
        got = loaded.layers[name].records
        assert len(got) == len(res.records) > 0
        for a, b in zip(got, res.records):
            for f in ("node", "step", "rule", "removed"):
                assert getattr(a, f) == getattr(b, f)
            for f in ("score", "estimate", "statistic"):
                va, vb = getattr(a, f), getattr(b, f)
                assert (math.isnan(va) and math.isnan(vb)) or va == vb


def test_regular_index_lists_are_written_as_rules():
    assert ser._nodes([[0], [1], [2]]) == {"start": 0, "stride": 1, "width": 1, "n": 3}
    assert ser._nodes([[4, 5], [6, 7]]) == {"start": 4, "stride": 2, "width": 2, "n": 2}
    assert ser._nodes([[0], [2], [3]]) == [[0], [2], [3]]
    r = ser._Reader("f")
    for lists in ([[0, 1, 2], [3, 4, 5]], [[7]], [[1, 5], [2, 6]]):
        assert r.nodes(ser._nodes(lists), "x") == lists


def _save_v2(sel, path):
    """The version 2 writer (indented, every record, means and example as lists)."""
    data = {
        "format": ser.FORMAT,
        "version": 2,
        "settings": sel.settings,
        "keep": {n: i.tolist() for n, i in sel.keep.items()},
        "groups": {},
        "signature": {n: [t, [[p, list(s)] for p, s in sh]] for n, (t, sh) in sel.structure.signature.items()},
        "layers": {
            n: {
                "name": r.name,
                "n_before": r.n_before,
                "n_after": r.n_after,
                "consumers": r.consumers,
                "recon_error": r.recon_error,
                "info_removed": r.info_removed,
                "seconds": r.seconds,
                "records": [
                    {
                        "node": c.node,
                        "step": c.step,
                        "rule": c.rule,
                        "removed": c.removed,
                        "score": c.score,
                        "estimate": c.estimate,
                        "statistic": c.statistic,
                    }
                    for c in r.records
                ],
            }
            for n, r in sel.layers.items()
        },
        "means": {k: v.tolist() for k, v in sel.means.items()},
        "seconds": sel.seconds,
        "example": sel.example.tolist(),
        "example_dtype": "float32",
    }
    with open(path, "w") as f:
        json.dump(ser._finite(data), f, indent=1)


def test_version_2_files_still_load(mlp, tmp_path):
    model, x, sel = mlp
    path = str(tmp_path / "v2.json")
    _save_v2(sel, path)
    loaded = Selection.load(path, model)
    assert all(torch.equal(loaded.keep[k], sel.keep[k]) for k in sel.keep)
    assert len(loaded.layers["0"].records) == len(sel.layers["0"].records)
    torch.testing.assert_close(loaded.apply(model)(x), sel.apply(model)(x))


def test_version_1_files_still_load(mlp, tmp_path):
    """Version 1 named the records' score and statistic "gaussian" and "upper"; they read back as such."""
    model, x, sel = mlp
    path = tmp_path / "v1.json"
    _save_v2(sel, str(path))
    data = json.loads(path.read_text())
    for layer in data["layers"].values():
        for rec in layer["records"]:
            rec["gaussian"], rec["upper"] = rec.pop("score"), rec.pop("statistic")
    data["version"] = 1
    path.write_text(json.dumps(data))
    records = Selection.load(str(path), model).layers["0"].records
    tested = [(r.node, r.score, r.statistic) for r in sel.layers["0"].records if r.rule == "test"]
    assert tested and [(r.node, r.score, r.statistic) for r in records if r.rule == "test"] == tested


def _edit(data, how):
    data = json.loads(json.dumps(data))
    how(data)
    return data


BROKEN = {
    "top-level list": (lambda d: [d], "top level is a list"),
    "top-level null": (lambda d: None, "top level is null"),
    "other format": (lambda d: _edit(d, lambda e: e.update(format="x")), "'format'"),
    "newer version": (lambda d: _edit(d, lambda e: e.update(version=99)), "'version'"),
    "no keep": (lambda d: _edit(d, lambda e: e.pop("keep")), "'keep' is missing"),
    "keep a list": (lambda d: _edit(d, lambda e: e.update(keep=[1, 2])), "'keep' must be an object"),
    "keep of strings": (lambda d: _edit(d, lambda e: e["keep"].update({"0": ["a"]})), r"keep\['0'\].*a string"),
    "keep out of range": (lambda d: _edit(d, lambda e: e["keep"].update({"0": [0, 99]})), "'keep'.*99"),
    "keep unknown group": (lambda d: _edit(d, lambda e: e["keep"].update({"nope": [0]})), "'keep'.*nope"),
    "no structure": (lambda d: _edit(d, lambda e: e.pop("structure")), "'structure' is missing"),
    "bad group": (lambda d: _edit(d, lambda e: e["structure"]["groups"].update({"0": 3})), r"structure.groups\['0'\]"),
    "bad n_nodes": (
        lambda d: _edit(d, lambda e: e["structure"]["groups"]["0"].update(n_nodes="x")),
        r"groups\['0'\].n_nodes",
    ),
    "no settings": (lambda d: _edit(d, lambda e: e.pop("settings")), "'settings' is missing"),
    "layers null": (lambda d: _edit(d, lambda e: e.update(layers=None)), "'layers' must be an object, got null"),
    "layer field": (lambda d: _edit(d, lambda e: e["layers"]["0"].pop("n_after")), r"layers\['0'\].*n_after"),
    "record fields": (
        lambda d: _edit(d, lambda e: e["layers"]["0"].update(records=[{"node": 1}])),
        r"layers\['0'\].records\[0\].*missing",
    ),
    "means data": (lambda d: _edit(d, lambda e: e["means"]["2"].update(data="@@")), r"means\['2'\].data"),
    "signature": (lambda d: _edit(d, lambda e: e.update(signature={"0": 5})), r"signature\['0'\]"),
    "example": (lambda d: _edit(d, lambda e: e.update(example={"what": 1})), "'example'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_name_the_field(mlp, tmp_path, case):
    model, _, sel = mlp
    good = str(tmp_path / "good.json")
    sel.save(good)
    data = json.loads(Path(good).read_text())
    make, message = BROKEN[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(make(data)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SelectionFileError, match=message):
        Selection.load(str(path), model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing applied


def test_truncated_and_foreign_files(mlp, tmp_path):
    model, _, sel = mlp
    path = tmp_path / "sel.json"
    sel.save(str(path))
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(SelectionFileError, match=r"not valid JSON.*truncated"):
        Selection.load(str(path), model)
    path.write_bytes(b"\x80\x02\x00binary")
    with pytest.raises(SelectionFileError, match="not"):
        Selection.load(str(path), model)
    with pytest.raises(SelectionFileError, match="cannot read"):
        Selection.load(str(tmp_path / "missing.json"), model)


def test_another_model_is_named(mlp, tmp_path):
    model, _, sel = mlp
    path = str(tmp_path / "sel.json")
    sel.save(path)
    other = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(
        SelectionFileError, match=r"another model.*module '0' is Linear\(bias \[16\], weight \[16, 5\]\)"
    ):
        Selection.load(path, other)


def test_summaries_are_short(mlp):
    from mipp.pruning import analyse

    model, x, sel = mlp
    text = repr(sel)
    assert text.startswith("Selection: 2 groups decided") and "0 " in text and len(text) < 2000
    wide = nn.Sequential(*[m for _ in range(60) for m in (nn.Linear(4, 4), nn.ReLU())], nn.Linear(4, 2))
    structure = analyse(wide, torch.randn(2, 4))
    assert len(repr(structure)) < 2000 and "more groups" in repr(structure)
    assert "structure.summary(limit=None)" in repr(structure)
    assert len(structure.summary(limit=None).splitlines()) == 2 + len(structure.groups)


def test_state_dict_loads_into_the_rebuilt_architecture():
    """A pruned ResNet-18-style model ships as a state_dict: the same classes built at the kept widths
    (from a factory, from the original model, or from kept counts) load it strictly and compute the same."""
    import sys

    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from zoo import ResNet18

    from mipp.pruning import analyse, rebuild

    torch.manual_seed(0)
    model = ResNet18().eval()
    x = torch.randn(8, 3, 16, 16)
    structure = analyse(model, x[:2])
    gen = torch.Generator().manual_seed(1)
    keep = {
        n: torch.randperm(g.n_nodes, generator=gen)[: 1 + i % g.n_nodes]
        for i, (n, g) in enumerate((n, g) for n, g in structure.groups.items() if g.prunable)
    }
    sel = Selection(structure, keep, x[:2])
    small = sel.apply(model, fold=False)
    state = small.state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        ResNet18().load_state_dict(state)
    counts = {n: len(k) for n, k in keep.items()}
    for built in (rebuild(ResNet18, sel), rebuild(model, sel), rebuild(ResNet18, counts, example=x[:2])):
        assert type(built) is ResNet18
        built.load_state_dict(state)  # strict
        with torch.no_grad():
            torch.testing.assert_close(built.eval()(x), small(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="example="):
        rebuild(ResNet18, counts)


def _bias_free_twin(model: nn.Module) -> nn.Module:
    """``model`` with a zero bias on every bias-free convolution: the same function, a different
    parameterisation (where the old fold / re-fit put the intercept)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels, dtype=m.weight.dtype))
    return twin


@pytest.mark.filterwarnings("ignore:.*calibration samples, fewer")
@pytest.mark.parametrize("treatment", ["fold", "refit"])
def test_bias_free_convolutions_stay_bias_free(treatment):
    """conv (bias=False) -> BatchNorm: the fold's and the re-fit's intercept go into the norm's running mean,
    so no convolution gains a bias, the pruned state_dict loads strictly into the rebuilt architecture, and
    the pruned model computes what the old placement (a bias on the convolution) computes, applied and masked."""
    import sys

    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from zoo import ResNet18

    from mipp.pruning import analyse, rebuild

    torch.manual_seed(0)
    model = ResNet18().double()
    x = torch.randn(160, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        model.train()(x)  # running statistics that are not the defaults
    model.eval()
    sel = MIPP(sparsity=0.5, progress=False).select(model, x)
    twin = _bias_free_twin(model)
    twin_sel = Selection(analyse(twin, x[:2]), sel.keep, x[:2], means=sel.means)
    kwargs = {"refit": x} if treatment == "refit" else {"fold": True}
    small, reference = sel.apply(model, **kwargs), twin_sel.apply(twin, **kwargs)
    bias_free = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is None}
    assert bias_free and all(dict(small.named_modules())[n].bias is None for n in bias_free)
    built = rebuild(lambda: ResNet18().double(), sel).eval()
    built.load_state_dict(small.state_dict())  # strict: no bias the architecture lacks
    masked = sel.mask(copy.deepcopy(model), **kwargs)
    assert all(dict(masked.named_modules())[n].bias is None for n in bias_free)
    with torch.no_grad():
        out = small(x)
        torch.testing.assert_close(built(x), out, rtol=0, atol=0)
        torch.testing.assert_close(reference(x), out, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(masked(x), out, rtol=1e-9, atol=1e-9)
    assert (out - model(x)).abs().mean() < (sel.apply(model, fold=False)(x) - model(x)).abs().mean()
