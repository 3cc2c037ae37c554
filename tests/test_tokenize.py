"""Tokenizer training and token packing (tasks/tokenize.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from snowcoder import storage
from snowcoder.config import TokenizerConfig, UserError
from tasks.tokenize import mixture_budgets, EOS, FIM, PAD, order_documents, pack, train_tokenizer


def python_text(i: int) -> str:
    op = ["+", "-", "*", "//", "%"][i % 5]
    return (f'def combine_{i}(a, b):\n    """Combine a and b with {op}."""\n    return a {op} b\n\n\n'
            f"class Counter{i}:\n    def __init__(self, start={i}):\n        self.value = start\n")


def make_docs(n: int, *, languages=("python",), n_repos: int = 5, prefix: str = "d") -> pd.DataFrame:
    rows = []
    for i in range(n):
        text = python_text(i) if i % 7 else f"# tail {i}\nx = {i}\n"
        rows.append(dict(doc_id=f"{prefix}{i:04d}", repo=f"{prefix}repo{i % n_repos}", path=f"pkg/m{i}.py",
                         language=languages[i % len(languages)], content=text, size_bytes=len(text),
                         content_sha256="", source="test"))
    return pd.DataFrame(rows, columns=storage.DOC_COLUMNS)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tok")
    uris = storage.write_shards(make_docs(60), str(root / "docs"), "docs", 25)
    out = str(root / "tokenizer")
    manifest = train_tokenizer(TokenizerConfig(vocab_size=400, min_frequency=2), uris, out)
    assert manifest.counts["docs"] == 60 and manifest.counts["vocab_size"] <= 400
    assert manifest.uris["tokenizer"] == out
    return out


def write_source(tmp_path, docs: pd.DataFrame, name: str) -> list[str]:
    return storage.write_shards(docs, str(tmp_path / name), "docs", 17)


def read_tokens(out_dir: str) -> tuple[np.ndarray, dict]:
    meta = json.loads((storage.read_text(storage.join(out_dir, "meta.json"))))
    return np.fromfile(storage.join(out_dir, "tokens.bin"), dtype=meta["dtype"]), meta


def test_tokenizer_roundtrip_and_autotokenizer(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.eos_token == EOS and tok.bos_token == EOS and tok.pad_token == PAD
    assert tok.eos_token_id != tok.pad_token_id
    for special in [EOS, PAD, *FIM]:  # each special token is one id
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    text = 'def f(x):\n    return x + 1  # héllo ✓ 日本\n\tprint("tab")\n'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: any text round-trips, nothing unknown
    assert len(ids) < len(text.encode())  # BPE merged something


def test_pretrained_tokenizer_is_saved(tok_dir, tmp_path):
    manifest = train_tokenizer(TokenizerConfig(pretrained=tok_dir), [], str(tmp_path / "copy"))
    assert AutoTokenizer.from_pretrained(str(tmp_path / "copy")).get_vocab() == AutoTokenizer.from_pretrained(tok_dir).get_vocab()
    assert manifest.counts["vocab_size"] == len(AutoTokenizer.from_pretrained(tok_dir))
    with pytest.raises(UserError):
        train_tokenizer(TokenizerConfig(pretrained=str(tmp_path / "missing")), [], str(tmp_path / "x"))


def test_order_groups_by_language_then_repo():
    docs = make_docs(90, languages=("python", "go", "rust"), n_repos=6)
    pos = order_documents(docs, "language-repo", seed=3)
    assert sorted(pos.tolist()) == list(range(len(docs)))
    seq = docs.iloc[pos]
    langs = seq["language"].tolist()
    assert langs == sorted(langs)  # one contiguous block per language
    keys = list(zip(seq["language"], seq["repo"]))
    changes = sum(1 for a, b in zip(keys, keys[1:]) if a != b)
    assert changes + 1 == len(set(keys))  # each (language, repo) group is contiguous
    # repos are shuffled inside a language, files inside a repo: not the sorted order, and seed-dependent
    assert seq["doc_id"].tolist() != sorted(seq["doc_id"].tolist())
    assert order_documents(docs, "language-repo", seed=4).tolist() != pos.tolist()
    # deterministic, and independent of the input row order
    shuffled = docs.sample(frac=1.0, random_state=0).reset_index(drop=True)
    again = shuffled.iloc[order_documents(shuffled, "language-repo", seed=3)]
    assert again["doc_id"].tolist() == seq["doc_id"].tolist()


def test_random_order_mixes_repos():
    docs = make_docs(60, n_repos=3)
    seq = docs.iloc[order_documents(docs, "random", seed=0)]
    keys = seq["repo"].tolist()
    assert sum(1 for a, b in zip(keys, keys[1:]) if a != b) > 10


def test_pack_single_source(tok_dir, tmp_path):
    docs = make_docs(40, languages=("python", "go"))
    uris = write_source(tmp_path, docs, "src")
    m1 = pack(tok_dir, [(uris, 1.0)], str(tmp_path / "p1"), order="language-repo", seed=7)
    tokens, meta = read_tokens(str(tmp_path / "p1"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert meta["dtype"] == "uint16" and meta["n_tokens"] == len(tokens) == m1.counts["n_tokens"]
    assert meta["n_docs"] == 40 and int((tokens == tok.eos_token_id).sum()) == 40 and tokens[-1] == tok.eos_token_id
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in docs["content"])
    assert len(tokens) == expected
    assert sum(meta["per_language"].values()) == len(tokens) and set(meta["per_language"]) == {"go", "python"}
    # the text comes back: first document decoded is one of the inputs (go sorts first)
    first = tokens[: int(np.argmax(tokens == tok.eos_token_id))]
    assert tok.decode(first.tolist()) in set(docs[docs.language == "go"]["content"])
    assert m1.counts["tokens_per_s"] > 0

    # deterministic given the seed; another seed gives another order with the same multiset of tokens
    pack(tok_dir, [(uris, 1.0)], str(tmp_path / "p2"), order="language-repo", seed=7)
    pack(tok_dir, [(uris, 1.0)], str(tmp_path / "p3"), order="language-repo", seed=8)
    again, _ = read_tokens(str(tmp_path / "p2"))
    other, _ = read_tokens(str(tmp_path / "p3"))
    assert np.array_equal(tokens, again)
    assert not np.array_equal(tokens, other) and np.array_equal(np.sort(tokens), np.sort(other))

    # repeat multiplies the tokens; each repetition is re-shuffled
    m4 = pack(tok_dir, [(uris, 1.0)], str(tmp_path / "p4"), order="language-repo", seed=7, repeat=3)
    rep, meta4 = read_tokens(str(tmp_path / "p4"))
    assert len(rep) == 3 * len(tokens) == m4.counts["n_tokens"] and meta4["n_docs"] == 120
    assert np.array_equal(rep[: len(tokens)], tokens)
    assert not np.array_equal(rep[len(tokens) : 2 * len(tokens)], tokens)


def test_pack_two_sources_respects_weights(tok_dir, tmp_path):
    small = write_source(tmp_path, make_docs(10, prefix="s"), "synthetic")
    big = write_source(tmp_path, make_docs(50, prefix="b"), "hq")
    total = 6000
    m = pack(tok_dir, [(small, 0.3), (big, 0.7)], str(tmp_path / "mix"), order="language-repo", seed=1,
             total_tokens=total)
    tokens, meta = read_tokens(str(tmp_path / "mix"))
    assert abs(len(tokens) - total) <= 2 and m.counts["n_tokens"] == len(tokens)
    share = meta["per_source"]["0"] / len(tokens)
    assert abs(share - 0.3) < 0.03  # the small source is cycled to reach its share
    assert meta["per_source"]["0"] > meta["sources"][0]["unique_tokens"]


def test_mixture_budgets_cap_small_sources_and_redistribute():
    # proportional when nothing is capped
    assert mixture_budgets(1000, [0.5, 0.5], [10_000, 10_000], max_repeat=4) == [500, 500]
    # a 50-token synthetic source at weight 0.5 may fill only 4 x 50; the rest goes to the big source
    assert mixture_budgets(1000, [0.5, 0.5], [50, 10_000], max_repeat=4) == [200, 800]
    # three sources: the capped one's shortfall is shared among the others by weight
    assert mixture_budgets(1000, [0.5, 0.3, 0.2], [10, 10_000, 10_000], max_repeat=2) == [20, 588, 392]
    # all capped: the mixture is shorter than asked, never repeated beyond the cap
    assert mixture_budgets(1000, [1, 1], [100, 100], max_repeat=2) == [200, 200]
    # no cap: the weights alone decide
    assert mixture_budgets(1000, [0.5, 0.5], [50, 10_000]) == [500, 500]
    with pytest.raises(UserError):
        mixture_budgets(1000, [0, 0], [1, 1])


def test_pack_caps_repetition_of_a_small_source(tok_dir, tmp_path):
    small = write_source(tmp_path, make_docs(2, prefix="s"), "synthetic")
    big = write_source(tmp_path, make_docs(80, prefix="b"), "hq")
    m = pack(tok_dir, [(small, 0.5), (big, 0.5)], str(tmp_path / "mix"), order="language-repo", seed=1,
             total_tokens=4000, max_repeat=3)
    tokens, meta = read_tokens(str(tmp_path / "mix"))
    assert meta["per_source"]["0"] == 3 * meta["sources"][0]["unique_tokens"]
    assert abs(len(tokens) - 4000) <= 2 and m.counts["n_tokens"] == len(tokens)


def test_pack_rejects_empty_source(tok_dir, tmp_path):
    empty = write_source(tmp_path, make_docs(0), "empty")
    with pytest.raises(UserError):
        pack(tok_dir, [(empty, 1.0)], str(tmp_path / "out"), order="random", seed=0)


def test_remote_uris_go_through_storage(tok_dir, tmp_path):
    """memory:// stands in for s3://: outputs are written locally and uploaded, inputs localized."""
    uris = storage.write_shards(make_docs(20), "memory://sc-tok/docs", "docs", 10)
    m = train_tokenizer(TokenizerConfig(vocab_size=300), uris, "memory://sc-tok/tokenizer")
    assert storage.exists("memory://sc-tok/tokenizer/tokenizer.json") and m.digest
    p = pack("memory://sc-tok/tokenizer", [(uris, 1.0)], "memory://sc-tok/tokens", order="random", seed=0)
    meta = storage.read_json(p.uris["meta"])
    assert meta["n_tokens"] == p.counts["n_tokens"] > 0
    assert len(storage.read_bytes(p.uris["tokens_bin"])) == 2 * meta["n_tokens"]  # uint16
