"""The annotator's training-set builder: balance, decontamination, cross-class dedup, quotas, and accounting."""
import numpy as np
import pytest

from snowcoder.config import DecontamConfig, DedupConfig
from tasks.annotator_data import Example, build_training_set, over_ask

VOCAB = [f"w{i:04d}" for i in range(2000)]


def code(i: int, rng: np.random.Generator, words: int = 60) -> str:
    """A distinct made-up function: 60 random identifiers, so two of them are never near-duplicates by chance."""
    body = " + ".join(rng.choice(VOCAB, words))
    return f"def f_{i}(x):\n    \"\"\"Compute thing {i}.\"\"\"\n    return {body}\n"


def examples(n: int, source: str, seed: int, start: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    return [Example(code(start + i, rng), source, f"{source}-{i}") for i in range(n)]


def accounted(ts, n_pos: int, n_neg: int) -> None:
    """Every candidate is kept or dropped with a reason."""
    assert len(ts.positives) + len(ts.negatives) + sum(ts.stats["dropped"].values()) == n_pos + n_neg


def test_builder_balances_classes_and_keeps_source_quotas():
    pos = examples(12, "a", 0) + examples(12, "b", 1, start=100)
    neg = examples(40, "phase1", 2, start=1000)
    ts = build_training_set(pos, neg, quotas={"a": 5, "b": 5}, n_negatives=30, dedup=DedupConfig(), seed=7)
    assert len(ts.positives) == len(ts.negatives) == 10
    assert ts.stats["positives_per_source"] == {"a": 5, "b": 5}
    assert [e.doc_id for e in ts.positives[:5]] == [f"a-{i}" for i in range(5)]  # a source's own order is kept
    assert ts.stats["dropped"] == {"positive-over-quota": 14, "negative-over-quota": 10, "negative-balance": 20}
    accounted(ts, len(pos), len(neg))
    again = build_training_set(pos, neg, quotas={"a": 5, "b": 5}, n_negatives=30, dedup=DedupConfig(), seed=7)
    assert again.negatives == ts.negatives  # the balancing sample is seeded

    unbalanced = build_training_set(pos, neg, quotas={"a": 5, "b": 5}, n_negatives=30, balance=False)
    assert len(unbalanced.positives) == 10 and len(unbalanced.negatives) == 30

    few_neg = build_training_set(pos, neg[:4], quotas={"a": 5, "b": 5}, n_negatives=30)
    assert len(few_neg.positives) == len(few_neg.negatives) == 4
    assert few_neg.stats["dropped"]["positive-balance"] == 6
    assert over_ask(300) == 375 and over_ask(4) == 6


def test_builder_drops_positives_that_contain_a_benchmark_solution():
    from tasks.benchmarks import load_humaneval
    from tasks.decontam import benchmark_index

    he = load_humaneval()
    pos = examples(6, "hf:some/instruct", 0)
    leaked = Example("# a solution found on the web\n" + he[0]["prompt"] + he[0]["canonical_solution"], "hf:some/instruct")
    near = Example(he[12]["canonical_solution"].replace("    ", "  "), "hf:some/instruct")  # whitespace-only change
    pos = pos[:3] + [leaked, near] + pos[3:]
    neg = examples(10, "phase1", 1, start=500)
    ts = build_training_set(pos, neg, quotas={"hf:some/instruct": 8}, n_negatives=10,
                            benchmarks=benchmark_index(DecontamConfig()), balance=False)
    texts = [e.text for e in ts.positives]
    assert leaked.text not in texts and near.text not in texts and len(texts) == 6
    assert ts.stats["contaminated"] == {"humaneval": 2}
    assert set(ts.stats["contaminated_items"]) == {"HumanEval/0", "HumanEval/12"}
    assert ts.stats["dropped"] == {"positive-contaminated": 2}
    accounted(ts, len(pos), len(neg))

    unchecked = build_training_set(pos, neg, quotas={"hf:some/instruct": 8}, n_negatives=10, balance=False)
    assert leaked.text in [e.text for e in unchecked.positives]


def test_builder_never_has_one_text_in_both_classes():
    rng = np.random.default_rng(5)
    pos = examples(8, "corpus:docstring-functions", 0)
    neg = examples(8, "phase1", 1, start=200)
    edited = pos[2].text.replace("Compute thing", "Computes thing")  # a near-duplicate of positive 2
    words = pos[4].text.split(" + ")
    neg += [
        Example(pos[0].text, "phase1", "n-exact"),                     # the same text as a positive
        Example(edited, "phase1", "n-near"),                           # a near-duplicate of one
        Example(code(999, rng), "phase1", pos[1].doc_id),              # the file positive 1 was cut from
        Example(neg[0].text + "\n", "phase1", "n-dup"),                # a duplicate negative (trailing whitespace)
        Example(" + ".join(words[:-1]) + " + extra\n", "phase1", "n-near-4"),  # near positive 4
    ]
    pos += [Example(pos[3].text, "corpus:docstring-functions", "p-dup")]   # an exact duplicate positive
    ts = build_training_set(pos, neg, quotas={"corpus:docstring-functions": 20}, n_negatives=20,
                            dedup=DedupConfig(threshold=0.7), balance=False)
    assert ts.stats["dropped"] == {"positive-duplicate": 1, "negative-duplicate": 1, "negative-duplicate-of-positive": 1,
                                   "negative-source-of-positive": 1, "negative-near-positive": 2}
    pos_texts = {e.text for e in ts.positives}
    assert not pos_texts & {e.text for e in ts.negatives}
    assert {e.doc_id for e in ts.negatives}.isdisjoint({"n-exact", "n-near", pos[1].doc_id, "n-dup", "n-near-4"})
    assert len(ts.positives) == 8 and len(ts.negatives) == 8
    accounted(ts, len(pos), len(neg))

    no_near = build_training_set(pos, neg, quotas={"corpus:docstring-functions": 20}, n_negatives=20, balance=False)
    assert "negative-near-positive" not in no_near.stats["dropped"]  # exact dedup only without a MinHash config


@pytest.mark.parametrize("n_pos", [0, 1])
def test_builder_reports_every_drop_even_when_little_is_left(n_pos):
    pos = examples(n_pos, "a", 0) + [Example("   ", "a")]
    neg = examples(3, "phase1", 1, start=50)
    ts = build_training_set(pos, neg, quotas={"a": 5}, n_negatives=3, dedup=DedupConfig())
    assert ts.stats["dropped"]["positive-empty"] == 1
    accounted(ts, len(pos), len(neg))
