"""Fine-tuned annotator mode (tasks/annotator_finetune.py) on the embedded MiniLM, 24 + 24 short toy texts."""
import numpy as np
import pytest
import torch

from snowcoder.config import UserError
from tasks import annotate as ann
from tasks import annotator_finetune as ft

WINDOW = 64
TRAIN_ARGS = dict(epochs=2, lr=5e-5, head_lr=1e-2, batch_size=8, seed=7)

_FUNCS = [
    ("add_all", "values", "Return the sum of all numbers in a list.", "total = 0\n    for v in values:\n"
     "        total += v\n    return total"),
    ("mean", "values", "Compute the arithmetic mean of a non-empty list.", "return sum(values) / len(values)"),
    ("is_palindrome", "text", "Tell whether a string reads the same backwards.", "s = text.lower()\n"
     "    return s == s[::-1]"),
    ("count_vowels", "text", "Count the vowels in a string.", "return sum(1 for c in text.lower() if c in 'aeiou')"),
    ("factorial", "n", "Return n factorial for a non-negative integer.", "out = 1\n    for k in range(2, n + 1):\n"
     "        out *= k\n    return out"),
    ("fib", "n", "Return the n-th Fibonacci number iteratively.", "a, b = 0, 1\n    for _ in range(n):\n"
     "        a, b = b, a + b\n    return a"),
    ("flatten", "rows", "Flatten a list of lists into one list.", "return [x for row in rows for x in row]"),
    ("dedupe", "items", "Remove duplicates from a list keeping the first occurrence.", "seen = set()\n    out = []\n"
     "    for x in items:\n        if x not in seen:\n            seen.add(x)\n            out.append(x)\n"
     "    return out"),
    ("word_counts", "text", "Map each word of a text to the number of times it occurs.", "counts = {}\n"
     "    for w in text.split():\n        counts[w] = counts.get(w, 0) + 1\n    return counts"),
    ("max_index", "values", "Return the index of the largest element.", "best = 0\n    for i, v in enumerate(values):\n"
     "        if v > values[best]:\n            best = i\n    return best"),
    ("gcd", "a, b", "Compute the greatest common divisor of two integers.", "while b:\n        a, b = b, a % b\n"
     "    return abs(a)"),
    ("chunks", "items, size", "Split a list into consecutive chunks of a given size.",
     "return [items[i:i + size] for i in range(0, len(items), size)]"),
]
_PROSE = [
    "The village market opens early on Saturdays, and by nine the square is full of stalls selling bread, cheese "
    "and flowers from the surrounding farms.",
    "Our hiking group met at the trailhead just after dawn. The fog lifted slowly as we climbed towards the ridge.",
    "Thank you for your letter. We are delighted to confirm your reservation for two nights in the garden room.",
    "The committee will meet next Tuesday to discuss the budget for the spring festival and the new parking rules.",
    "My grandmother kept a small notebook of recipes, each one annotated with the name of the friend who gave it.",
    "Rain is expected throughout the weekend, with strong winds along the coast and cooler temperatures inland.",
    "The museum's new wing displays textiles from the eighteenth century, including a rare embroidered wedding coat.",
    "Please remember to return your library books before the end of the month, when the building closes for repairs.",
    "The orchestra rehearsed the second movement three times before the conductor was satisfied with the strings.",
    "After the harvest, the farmers gathered in the barn for a long dinner that lasted well past midnight.",
    "Tickets for the evening lecture on medieval architecture are free, but seats must be booked in advance.",
    "The ferry crossing took two hours; children watched for dolphins while their parents read on the deck.",
]
_CONFIGS = [
    "[server]\nhost = 0.0.0.0\nport = 8080\nworkers = 4\n\n[logging]\nlevel = info\nfile = /var/log/app.log\n",
    "version: '3'\nservices:\n  web:\n    image: nginx:latest\n    ports:\n      - '80:80'\n  db:\n"
    "    image: postgres:15\n",
    "name: build\non: [push, pull_request]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
    "      - uses: actions/checkout@v4\n",
    "[database]\nuser = admin\npassword_env = DB_PASSWORD\nhost = db.internal\nport = 5432\npool_size = 10\n",
    "root = true\n\n[*]\nindent_style = space\nindent_size = 4\nend_of_line = lf\ncharset = utf-8\n",
    "replicas: 3\nimage:\n  repository: myorg/api\n  tag: 1.4.2\nresources:\n  limits:\n    cpu: 500m\n"
    "    memory: 256Mi\n",
    "[tool.black]\nline-length = 100\ntarget-version = ['py311']\n\n[tool.isort]\nprofile = 'black'\n",
    "LOG_LEVEL=debug\nCACHE_TTL=300\nFEATURE_FLAGS=beta,dark_mode\nMAX_UPLOAD_MB=25\nTIMEZONE=UTC\n",
    "[mysqld]\nmax_connections = 200\ninnodb_buffer_pool_size = 1G\nslow_query_log = 1\nlong_query_time = 2\n",
    "locale: en_US\ntheme: dark\nnotifications:\n  email: true\n  sms: false\nbackup:\n  schedule: daily\n",
    "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n[remote \"origin\"]\n\tfetch = main\n",
    "upstream backend {\n  server 10.0.0.2:8000;\n  server 10.0.0.3:8000;\n}\nserver {\n  listen 80;\n}\n",
]


def _positives() -> list[str]:
    """24 documented Python functions, rendered like tasks/annotate.py's problem/solution positives."""
    out = []
    for variant in range(2):
        for name, args, doc, body in _FUNCS:
            fname = name if variant == 0 else f"{name}_v2"
            out.append(f"# Problem: {doc}\n\ndef {fname}({args}):\n    \"\"\"{doc}\"\"\"\n    {body}\n")
    return out


def _negatives() -> list[str]:
    return _PROSE + _CONFIGS  # 24 prose paragraphs and config files


def _encoder() -> ann.Encoder:
    return ann.Encoder("embedded:minilm", window_tokens=WINDOW, device="cpu")


@pytest.fixture(scope="module")
def tuned():
    """One fine-tuning run from a fresh encoder: (encoder, weights, bias, metrics, digest before, digest after)."""
    enc = _encoder()
    before = ft.encoder_state_digest(enc)
    weights, bias, metrics = ft.finetune_annotator(enc, _positives(), _negatives(), **TRAIN_ARGS)
    return enc, weights, bias, metrics, before, ft.encoder_state_digest(enc)


def test_finetuning_changes_the_encoder_in_place(tuned):
    enc, weights, bias, metrics, before, after = tuned
    assert before != after  # the encoder weights moved
    assert ft.encoder_state_digest(_encoder()) == before  # a fresh load still has the original weights
    assert not enc.model.training  # left in eval mode: embed() is deterministic afterwards
    assert weights.dtype == np.float32 and weights.shape == (enc.dim,) and isinstance(bias, float)
    assert metrics["finetune_epochs"] == 2 and metrics["finetune_steps"] == 2 * 5  # ceil(38 / 8) steps per epoch
    assert metrics["n_train"] == 38 and metrics["n_heldout"] == 10 and metrics["finetune_s"] > 0


def test_finetuning_is_deterministic_for_a_seed():
    pos, neg = _positives()[::3], _negatives()[::3]  # 8 + 8 texts, 1 epoch: determinism does not need more
    args = {**TRAIN_ARGS, "epochs": 1, "batch_size": 4}
    runs = []
    for seed in (args["seed"], args["seed"], args["seed"] + 1):
        enc = _encoder()
        weights, bias, metrics = ft.finetune_annotator(enc, pos, neg, **{**args, "seed": seed})
        runs.append((ft.encoder_state_digest(enc), weights, bias, metrics))
    (d1, w1, b1, m1), (d2, w2, b2, m2), (d3, _, _, _) = runs
    assert d1 == d2  # same seed, fresh encoders: bit-identical encoder weights (CPU)
    np.testing.assert_allclose(w2, w1, atol=1e-6)
    assert b2 == pytest.approx(b1, abs=1e-6)
    assert m2["finetune_epoch_loss"] == m1["finetune_epoch_loss"] and m2["heldout_auc"] == m1["heldout_auc"]
    assert d3 != d1  # another seed: another split, batch order and dropout


def test_separable_toy_set_is_learned_and_head_matches_the_model(tuned):
    enc, weights, bias, metrics, _, _ = tuned
    expected = {"train_auc", "train_acc", "train_f1", "heldout_auc", "heldout_acc", "heldout_f1", "heldout_ece",
                "train_loss", "n_train", "n_heldout", "calibration", "finetune_epochs", "finetune_steps", "finetune_s"}
    assert expected <= metrics.keys()
    assert metrics["heldout_auc"] > 0.9 and metrics["train_auc"] > 0.9
    losses = metrics["finetune_epoch_loss"]
    assert len(losses) == 2 and losses[1] < losses[0] < 0.75  # learning from a zero head (loss log 2 = 0.69)

    # The returned head on encoder.embed (what tasks/annotate.py scores with) reproduces the reported metrics.
    texts = _positives() + _negatives()
    y = np.concatenate([np.ones(24), np.zeros(24)])
    train_idx, test_idx = ann._stratified_split(y, np.random.default_rng(TRAIN_ARGS["seed"]))
    p = ann._sigmoid(enc.embed(texts, max_tokens=WINDOW) @ weights + bias)
    assert ann.roc_auc(y[test_idx], p[test_idx]) == pytest.approx(metrics["heldout_auc"])
    assert ann.roc_auc(y[train_idx], p[train_idx]) == pytest.approx(metrics["train_auc"])
    assert ann.f1_score(y[test_idx], p[test_idx]) == pytest.approx(metrics["heldout_f1"])
    assert float(((p[test_idx] >= 0.5) == (y[test_idx] > 0)).mean()) == pytest.approx(metrics["heldout_acc"])
    bins = ann.calibration_bins(y[test_idx], p[test_idx])  # equal up to float noise (embed batches pad differently)
    assert [(b["n"], b["frac_pos"]) for b in bins] == [(b["n"], b["frac_pos"]) for b in metrics["calibration"]]
    assert [b["mean_prob"] or 0 for b in bins] == pytest.approx([b["mean_prob"] or 0 for b in metrics["calibration"]],
                                                                abs=1e-5)
    # and the file scorer of tasks/annotate.py gives the same probabilities (one window each: texts fit in it)
    scores = ann.score_texts(enc, (weights, bias), [texts[i] for i in test_idx], WINDOW, batch_size=4)
    np.testing.assert_allclose(scores, p[test_idx], atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_trainable_pooling_matches_encoder_embed(pooling):
    enc = _encoder()
    enc.pooling = pooling
    texts = _positives()[:3] + _negatives()[:3]
    with torch.no_grad():
        got = ft.pooled_embeddings(enc, texts, WINDOW).numpy()
    np.testing.assert_allclose(got, enc.embed(texts, batch_size=len(texts)), atol=1e-5)


def test_lr_schedule_warms_up_then_decays():
    total, warmup = 20, 2
    f = [ft.lr_factor(s, warmup, total) for s in range(total)]
    assert f[0] == 0.5 and f[1] == 1.0  # the first step already moves
    assert all(a >= b for a, b in zip(f[1:], f[2:])) and 0 < f[-1] <= 1 / (total - warmup) + 1e-12


@pytest.mark.parametrize("n_pos,n_neg", [(1, 5), (5, 1), (0, 0)])
def test_too_few_examples_per_class_is_a_user_error(n_pos, n_neg):
    with pytest.raises(UserError, match="at least 2 positive and 2 negative"):
        ft.finetune_annotator(None, _positives()[:n_pos], _negatives()[:n_neg], **TRAIN_ARGS)


def test_bad_hyperparameters_are_user_errors():
    with pytest.raises(UserError, match="epochs >= 1"):
        ft.finetune_annotator(None, _positives()[:4], _negatives()[:4], **{**TRAIN_ARGS, "epochs": 0})
    with pytest.raises(UserError, match="head_lr > 0"):
        ft.finetune_annotator(None, _positives()[:4], _negatives()[:4], **{**TRAIN_ARGS, "head_lr": 0.0})
