"""Tokenizer training, token shards and packing (tasks/tokenize.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from snowcoder import storage
from snowcoder.config import SynthConfig, TokenizerConfig, UserError
from tasks.tokenize import (
    EOS, FIM, PAD, language_budgets, mixture_budgets, order_documents, pack, token_dtype, tokenize_shard,
    tokenize_shards, train_tokenizer,
)


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


def token_source(tok_dir: str, tmp_path, docs: pd.DataFrame, name: str) -> str:
    """Documents -> document shards -> a token-shard directory (what pack reads)."""
    uris = write_source(tmp_path, docs, name)
    return tokenize_shards(tok_dir, uris, str(tmp_path / f"{name}-tokens")).uris["tokens"]


def read_tokens(out_dir: str) -> tuple[np.ndarray, dict]:
    meta = json.loads((storage.read_text(storage.join(out_dir, "meta.json"))))
    return np.fromfile(storage.join(out_dir, "tokens.bin"), dtype=meta["dtype"]), meta


def split_docs(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eos)
    return np.split(tokens[: ends[-1] + 1], ends[:-1] + 1)


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


# --------------------------------------------------------------------------- token shards
def test_shard_round_trip_decodes_every_document(tok_dir, tmp_path):
    docs = make_docs(30, languages=("python", "go"))
    docs.loc[3, "content"] = ""  # an empty file is just its <|endoftext|>
    docs.loc[4, "content"] = "naïve ✓ 日本 tab\t\n"
    [uri] = storage.write_shards(docs, str(tmp_path / "docs"), "train", 100)
    info = tokenize_shard(tok_dir, uri, str(tmp_path / "out" / "train-00000"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tokens = np.fromfile(tmp_path / "out" / "train-00000.bin", dtype=np.uint16)
    index = pd.read_parquet(tmp_path / "out" / "train-00000.index.parquet")
    assert list(index.columns) == ["doc_id", "repo", "language", "start", "length"]
    assert index["doc_id"].tolist() == docs["doc_id"].tolist()  # input order
    assert (index["start"].diff().fillna(0).iloc[1:] == index["length"].iloc[:-1].to_numpy()).all()  # rows tile
    assert int(index["length"].sum()) == len(tokens) == info["tokens"] and info["docs"] == 30
    for row, text in zip(index.itertuples(), docs["content"]):
        doc = tokens[row.start : row.start + row.length]
        assert doc[-1] == tok.eos_token_id and tok.decode(doc[:-1].tolist()) == text
    assert info["dtype"] == "uint16" and info["skipped"] == 0 and info["tokens_per_s"] > 0
    assert info["bytes"] == sum(len(t.encode()) for t in docs["content"])


def test_token_dtype_uint16_or_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    assert token_dtype(400) == np.uint16 and token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32
    # a word-level tokenizer with 70k ids: ids above 65535 must survive, so the shard is uint32
    vocab = {EOS: 0, PAD: 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    wl = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=wl, eos_token=EOS, pad_token=PAD).save_pretrained(str(tmp_path / "big"))
    docs = make_docs(2)
    docs["content"] = ["w69999 w3", "w7"]
    [uri] = storage.write_shards(docs, str(tmp_path / "docs"), "docs", 10)
    m = tokenize_shards(str(tmp_path / "big"), [uri], str(tmp_path / "tokens"))
    assert m.stats["dtype"] == "uint32"
    tokens = np.fromfile(tmp_path / "tokens" / "docs-00000.bin", dtype=np.uint32)
    assert tokens.tolist() == [70_001, 5, 0, 9, 0]
    p = pack([(m.uris["tokens"], 1.0)], str(tmp_path / "packed"), order="random", seed=0)
    assert read_tokens(p.uris["tokens"])[1]["dtype"] == "uint32" and p.counts["n_tokens"] == 5


def test_resume_skips_finished_shards_and_redoes_stale_ones(tok_dir, tmp_path):
    uris = storage.write_shards(make_docs(50), str(tmp_path / "docs"), "docs", 17)  # 3 shards
    out = tmp_path / "tokens"
    first = tokenize_shards(tok_dir, uris, str(out))
    assert first.counts["shards"] == 3 and first.counts["shards_reused"] == 0 and first.counts["tokens_per_s"] > 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["docs-00000.bin", "docs-00000.index.parquet", "docs-00001.bin", "docs-00001.index.parquet",
                     "docs-00002.bin", "docs-00002.index.parquet", "shards.json"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a run killed after two shards: the third has its .bin but no index (not committed)
    (out / "docs-00002.index.parquet").unlink()
    (out / "docs-00002.bin").write_bytes(b"torn")
    (out / "shards.json").unlink()
    again = tokenize_shards(tok_dir, uris, str(out))
    assert again.counts["shards_reused"] == 2 and again.digest == first.digest
    assert [s["skipped"] for s in again.stats["per_shard"]] == [1, 1, 0]
    for name in ("docs-00000.bin", "docs-00000.index.parquet", "docs-00001.bin", "docs-00001.index.parquet"):
        assert (out / name).stat().st_mtime_ns == mtimes[name]  # finished shards are not rewritten
    # another document shard at the same URI is stale: redone, and the digest follows the content
    storage.write_shards(make_docs(17, prefix="z"), str(tmp_path / "docs"), "docs", 17)
    changed = tokenize_shards(tok_dir, uris, str(out))
    assert [s["skipped"] for s in changed.stats["per_shard"]] == [0, 1, 1] and changed.digest != first.digest
    # fewer input shards: the others' files go
    tokenize_shards(tok_dir, uris[:1], str(out))
    assert sorted(p.name for p in out.iterdir()) == ["docs-00000.bin", "docs-00000.index.parquet", "shards.json"]


def test_parallel_workers_write_the_same_bytes(tok_dir, tmp_path):
    uris = storage.write_shards(make_docs(60, languages=("python", "go")), str(tmp_path / "docs"), "docs", 20)
    one = tokenize_shards(tok_dir, uris, str(tmp_path / "w1"), workers=1)
    two = tokenize_shards(tok_dir, uris, str(tmp_path / "w2"), workers=2)
    assert one.digest == two.digest and two.counts["workers"] == 2
    names = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "w2").iterdir()) and len(names) == 7
    for name in names:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    assert one.counts["tokens"] == sum(s["tokens"] for s in one.stats["per_shard"])
    assert set(one.stats["per_language"]) == {"python", "go"}


def test_tokenize_rejects_bad_input(tok_dir, tmp_path):
    uris = write_source(tmp_path, make_docs(5), "a")
    with pytest.raises(UserError, match="workers"):
        tokenize_shards(tok_dir, uris, str(tmp_path / "x"), workers=0)
    with pytest.raises(UserError, match="no document shards"):
        tokenize_shards(tok_dir, [], str(tmp_path / "x"))
    other = write_source(tmp_path, make_docs(5), "b")
    with pytest.raises(UserError, match="distinct"):  # two docs-00000 shards would write the same token shard
        tokenize_shards(tok_dir, uris + other, str(tmp_path / "x"))
    with pytest.raises(UserError, match="not a token-shard directory"):
        pack([(str(tmp_path / "a"), 1.0)], str(tmp_path / "p"), order="random", seed=0)


# --------------------------------------------------------------------------- ordering and packing
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
    src = token_source(tok_dir, tmp_path, docs, "src")  # 3 token shards
    m1 = pack([(src, 1.0)], str(tmp_path / "p1"), order="language-repo", seed=7)
    tokens, meta = read_tokens(str(tmp_path / "p1"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert meta["dtype"] == "uint16" and meta["n_tokens"] == len(tokens) == m1.counts["n_tokens"]
    assert meta["eos_id"] == tok.eos_token_id and meta["vocab_size"] == len(tok)
    assert meta["n_docs"] == 40 and int((tokens == tok.eos_token_id).sum()) == 40 and tokens[-1] == tok.eos_token_id
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in docs["content"])
    assert len(tokens) == expected
    assert sum(meta["per_language"].values()) == len(tokens) and set(meta["per_language"]) == {"go", "python"}
    # language -> repo order across shards: the documents come back in order_documents' order
    by_text = dict(zip(docs["content"], docs["doc_id"]))
    packed_ids = [by_text[tok.decode(d[:-1].tolist())] for d in split_docs(tokens, tok.eos_token_id)]
    assert packed_ids == docs["doc_id"].iloc[order_documents(docs, "language-repo", 7)].tolist()
    assert m1.counts["tokens_per_s"] > 0

    # deterministic given the seed; another seed gives another order with the same multiset of tokens
    pack([(src, 1.0)], str(tmp_path / "p2"), order="language-repo", seed=7)
    pack([(src, 1.0)], str(tmp_path / "p3"), order="language-repo", seed=8)
    again, _ = read_tokens(str(tmp_path / "p2"))
    other, _ = read_tokens(str(tmp_path / "p3"))
    assert np.array_equal(tokens, again)
    assert not np.array_equal(tokens, other) and np.array_equal(np.sort(tokens), np.sort(other))

    # repeat multiplies the tokens; each repetition is re-shuffled
    m4 = pack([(src, 1.0)], str(tmp_path / "p4"), order="language-repo", seed=7, repeat=3)
    rep, meta4 = read_tokens(str(tmp_path / "p4"))
    assert len(rep) == 3 * len(tokens) == m4.counts["n_tokens"] and meta4["n_docs"] == 120
    assert np.array_equal(rep[: len(tokens)], tokens)
    assert not np.array_equal(rep[len(tokens) : 2 * len(tokens)], tokens)
    assert np.array_equal(np.sort(rep[len(tokens) : 2 * len(tokens)]), np.sort(tokens))


def test_pack_two_sources_respects_weights(tok_dir, tmp_path):
    small = token_source(tok_dir, tmp_path, make_docs(10, prefix="s"), "synthetic")
    big = token_source(tok_dir, tmp_path, make_docs(50, prefix="b"), "hq")
    total = 6000
    m = pack([(small, 0.3), (big, 0.7)], str(tmp_path / "mix"), order="language-repo", seed=1, total_tokens=total)
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
    small = token_source(tok_dir, tmp_path, make_docs(2, prefix="s"), "synthetic")
    big = token_source(tok_dir, tmp_path, make_docs(80, prefix="b"), "hq")
    m = pack([(small, 0.5), (big, 0.5)], str(tmp_path / "mix"), order="language-repo", seed=1,
             total_tokens=4000, max_repeat=3)
    tokens, meta = read_tokens(str(tmp_path / "mix"))
    assert meta["per_source"]["0"] == 3 * meta["sources"][0]["unique_tokens"]
    assert abs(len(tokens) - 4000) <= 2 and m.counts["n_tokens"] == len(tokens)


def test_language_budgets_definition():
    # synthetic: python only; hq: 200 python, 600 go, 200 rust. Natural mixture at 1000 tokens: python 500 + 100.
    unique = [{"python": 1000}, {"python": 200, "go": 600, "rust": 200}]
    b = language_budgets(1000, [0.5, 0.5], unique, {"python": 0.5})
    # python 500 split 5:1 as in the natural mixture; go:rust keep 3:1 in the other 500
    assert b == [{"python": 417}, {"python": 83, "go": 375, "rust": 125}]
    # a capped language cannot reach its share: the others take what it cannot fill
    b = language_budgets(1000, [0.5, 0.5], [{"python": 100}, {"go": 2000, "rust": 1000}], {"python": 0.5},
                         max_repeat=2)
    assert b == [{"python": 200}, {"go": 533, "rust": 267}]
    # a share of 0 drops a language; shares summing to 1 leave nothing to the others
    assert language_budgets(1000, [1.0], [{"python": 10, "go": 10}], {"go": 0.0}) == [{"python": 1000}]
    assert language_budgets(1000, [1.0], [{"python": 10, "go": 10, "c": 5}], {"python": 0.25, "go": 0.75}) == \
        [{"python": 250, "go": 750}]
    # only named languages present: they fill the whole mixture in proportion to their shares
    assert language_budgets(1000, [1.0], [{"python": 10}], {"python": 0.5}) == [{"python": 1000}]


@pytest.mark.parametrize("shares, match", [
    ({"python": 1.5}, "in \\[0, 1\\]"), ({"python": -0.1}, "in \\[0, 1\\]"),
    ({"python": 0.6, "go": 0.6}, "sum to 1.2"), ({"cobol": 0.2}, "cobol, which no source"),
    ({"Python": 0.5}, "languages present: go, python"),
])
def test_bad_language_shares_are_rejected(shares, match):
    with pytest.raises(UserError, match=match):
        language_budgets(1000, [1.0, 1.0], [{"python": 10}, {"go": 10}], shares)


def test_config_language_shares():
    assert SynthConfig().language_shares == {"python": 0.5}
    for bad in ({"python": 2.0}, {"python": 0.7, "go": 0.5}):
        with pytest.raises(ValueError):
            SynthConfig(language_shares=bad)


def test_pack_reaches_language_shares(tok_dir, tmp_path):
    synthetic = token_source(tok_dir, tmp_path, make_docs(12, prefix="s"), "synthetic")  # python only
    hq_docs = make_docs(90, languages=("python", "go", "rust", "go"), prefix="h")  # go: twice rust's files
    hq = token_source(tok_dir, tmp_path, hq_docs, "hq")
    m = pack([(synthetic, 0.5), (hq, 0.5)], str(tmp_path / "mix"), order="language-repo", seed=2,
             total_tokens=20_000, language_shares={"python": 0.5})
    tokens, meta = read_tokens(str(tmp_path / "mix"))
    assert abs(len(tokens) - 20_000) <= 5 and sum(meta["per_language"].values()) == len(tokens)
    shares = meta["language_shares_achieved"]
    assert meta["language_shares"] == {"python": 0.5} and m.stats["language_shares_achieved"] == shares
    assert abs(shares["python"] - 0.5) < 0.005
    # the other languages keep their proportions (those of their unique tokens) in the other half
    index = pd.concat(pd.read_parquet(p) for p in (tmp_path / "hq-tokens").glob("*.index.parquet"))
    unique = index.groupby("language")["length"].sum()
    assert abs(shares["go"] / shares["rust"] - unique["go"] / unique["rust"]) < 0.02
    # without shares the same mixture is mostly python (all of the synthetic half + a quarter of hq)
    plain = pack([(synthetic, 0.5), (hq, 0.5)], str(tmp_path / "plain"), order="language-repo", seed=2,
                 total_tokens=20_000)
    assert plain.stats["language_shares_achieved"]["python"] > 0.58
    # language -> repo order: the hq part is a few cycles, each in language order (random order: many descents)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    lang_of = dict(zip(hq_docs["content"], hq_docs["language"]))
    hq_part = split_docs(tokens[meta["per_source"]["0"]:], tok.eos_token_id)
    langs = [lang_of[t] for t in (tok.decode(d[:-1].tolist()) for d in hq_part) if t in lang_of]
    assert len(langs) > 200 and sum(1 for a, b in zip(langs, langs[1:]) if b < a) <= 5
    with pytest.raises(UserError, match="cobol"):
        pack([(hq, 1.0)], str(tmp_path / "bad"), order="random", seed=0, language_shares={"cobol": 0.1})


def test_pack_rejects_empty_source(tok_dir, tmp_path):
    empty = token_source(tok_dir, tmp_path, make_docs(0), "empty")
    with pytest.raises(UserError, match="no documents"):
        pack([(empty, 1.0)], str(tmp_path / "out"), order="random", seed=0)


def test_remote_uris_go_through_storage(tok_dir, tmp_path):
    """memory:// stands in for s3://: shards are written through storage, inputs localized, outputs uploaded."""
    uris = storage.write_shards(make_docs(20), "memory://sc-tok/docs", "docs", 10)
    m = train_tokenizer(TokenizerConfig(vocab_size=300), uris, "memory://sc-tok/tokenizer")
    assert storage.exists("memory://sc-tok/tokenizer/tokenizer.json") and m.digest
    t = tokenize_shards("memory://sc-tok/tokenizer", uris, "memory://sc-tok/shards")
    assert storage.exists("memory://sc-tok/shards/docs-00001.index.parquet") and t.counts["docs"] == 20
    assert tokenize_shards("memory://sc-tok/tokenizer", uris, "memory://sc-tok/shards").counts["shards_reused"] == 2
    p = pack([(t.uris["tokens"], 1.0)], "memory://sc-tok/tokens", order="random", seed=0)
    meta = storage.read_json(p.uris["meta"])
    assert meta["n_tokens"] == p.counts["n_tokens"] == t.counts["tokens"] > 0
    assert len(storage.read_bytes(p.uris["tokens_bin"])) == 2 * meta["n_tokens"]  # uint16


def _shard_docs(token_dir: str) -> dict[str, np.ndarray]:
    """doc_id -> its tokens, over every shard of a token-shard directory."""
    toc = json.loads(storage.read_text(storage.join(token_dir, "shards.json")))
    out = {}
    for shard in toc["shards"]:
        index = pd.read_parquet(storage.join(token_dir, f"{shard['shard']}.index.parquet"))
        tokens = np.fromfile(storage.join(token_dir, f"{shard['shard']}.bin"), dtype=toc["dtype"])
        for doc_id, start, length in zip(index["doc_id"], index["start"], index["length"]):
            out[doc_id] = tokens[start : start + length]
    return out


def test_subset_copies_a_selection_out_of_token_shards_like_tokenizing_it(tok_dir, tmp_path):
    from tasks.tokenize import subset_shards

    docs = make_docs(60, languages=("python", "go"))
    source = token_source(tok_dir, tmp_path, docs, "all")
    keep = docs.iloc[[1, 2, 5, 30, 31, 59]]  # a selection spanning several source shards (17 docs each)
    sub = subset_shards(source, keep[["doc_id", "size_bytes"]], str(tmp_path / "sub"))
    retokenized = tokenize_shards(tok_dir, write_source(tmp_path, keep, "keep"), str(tmp_path / "keep-tokens"))
    ours, theirs = _shard_docs(sub.uris["tokens"]), _shard_docs(retokenized.uris["tokens"])
    assert list(ours) == keep["doc_id"].tolist()  # source order kept
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[d], theirs[d]) for d in ours)
    assert sub.counts["docs"] == 6 and sub.counts["tokens"] == retokenized.counts["tokens"]
    assert sub.counts["bytes"] == retokenized.counts["bytes"] and sub.counts["shards"] == 3
    assert sub.stats["per_language"] == retokenized.stats["per_language"]
    packed = pack([(sub.uris["tokens"], 1.0)], str(tmp_path / "packed"), order="language-repo", seed=0, repeat=2)
    assert packed.counts["n_tokens"] == 2 * sub.counts["tokens"]  # pack reads it like any token-shard directory

    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sub").iterdir()}
    again = subset_shards(source, keep[["doc_id", "size_bytes"]], str(tmp_path / "sub"))
    assert again.counts["shards_reused"] == 3 and again.digest == sub.digest
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sub").iterdir() if p.suffix != ".json"} == \
        {k: v for k, v in mtimes.items() if not k.endswith(".json")}
    fewer = subset_shards(source, keep.iloc[:2][["doc_id", "size_bytes"]], str(tmp_path / "sub"))
    assert fewer.counts["docs"] == 2 and sorted(p.name for p in (tmp_path / "sub").glob("*.bin")) == ["docs-00000.bin"]

    with pytest.raises(UserError, match="not in the token shards"):
        subset_shards(source, pd.DataFrame({"doc_id": ["nope"], "size_bytes": [1]}), str(tmp_path / "bad"))
