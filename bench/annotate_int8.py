"""Does int8 pay for the annotator's scoring on CPU? Our Encoder in fp32 (baseline) vs the same Encoder after torch
dynamic int8 quantisation of its Linear layers (per tensor, as `quantize_dynamic(model, {nn.Linear}, dtype=qint8)`;
per channel; per channel with the FFN output projections kept fp32) and, when onnxruntime is importable, ONNX Runtime
fp32 and ORT dynamic int8 of the exported encoder (--onnx; needs `pip install onnxruntime onnx`, not project
dependencies). The arm `annotate.int8` is what the config flag runs: per channel, one window per batch (activation
scales are per batch, so batching would make a window's score depend on its batch-mates). Same windows (512-token windows of real code, as bench/annotate_throughput.py collects), same batch
size and thread count, same head (fitted once on fp32 embeddings of other files, as `annotate` does).

Per arm: windows/s (each batch at its fastest of --rounds; arms are interleaved round by round and fp32 runs once
more at the end, so the spread of its pass totals shows drift from other processes on the machine), the ratio vs
fp32, the largest |window probability difference| and the Spearman rank correlation of window probabilities vs
fp32, the share of fp32's top half of files the arm keeps too (what `select` would change), and the ROC-AUC of the
file score at telling HumanEval programs (prompt + canonical solution) from the bench's code files: int8 must keep
the annotator's quality, not only be fast. The head is fitted as bench/annotate_throughput.py does. The fp32 head
on int8 embeddings is the worst case (train/score mismatch); --refit (default) also reports the AUC of a head
fitted on the arm's own embeddings, which is what an int8 Encoder in `annotate` (training and scoring) would give.

    .venv/bin/python bench/annotate_int8.py [--encoder embedded:minilm] [--files 40] [--batch 32] [--threads 2]
                                            [--rounds 2] [--onnx] [--no-refit]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from annotate_throughput import code_files, fit_head  # noqa: E402

from tasks import annotate as ann  # noqa: E402
from tasks.benchmarks import load_benchmark  # noqa: E402


def torch_int8(encoder: ann.Encoder, per_channel: bool = False, keep_fp32: tuple[str, ...] = ()) -> ann.Encoder:
    """A copy of `encoder` whose nn.Linear layers are dynamically quantised to int8 (torch.ao quantize_dynamic:
    int8 weights, activations quantised per batch at run time), per tensor (the default qconfig) or per output
    channel; Linear layers whose name ends with one of `keep_fp32` stay fp32. The fp32 encoder is left untouched."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name, module in encoder.model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith(keep_fp32)}
    q = copy.copy(encoder)
    q.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(encoder.model), spec, dtype=torch.qint8)
    return q


def annotate_int8(encoder: ann.Encoder) -> ann.Encoder:
    """What `annotate.int8: true` runs: a copy of `encoder` after Encoder.quantize_int8 (per-channel weights, one
    window per batch so a window's activation scale is its own)."""
    q = copy.copy(encoder)
    q.model = copy.deepcopy(encoder.model)
    q.quantize_int8()
    return q


class OneByOne:
    """An encoder that embeds one text per batch (no padding): the fp32 control for `annotate.int8`'s batching."""

    def __init__(self, encoder: ann.Encoder):
        self.encoder, self.tokenizer, self.window_tokens = encoder, encoder.tokenizer, encoder.window_tokens

    def embed(self, texts: list[str], batch_size: int = 32, max_tokens: int | None = None) -> np.ndarray:
        return self.encoder.embed(texts, 1, max_tokens)


class _LastHidden(torch.nn.Module):
    """The encoder as a plain (input_ids, attention_mask, token_type_ids) -> last_hidden_state graph, for export."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


class OrtEncoder:
    """Encoder.embed on an ONNX Runtime session: same tokenizer, truncation, longest-first batching, pooling and L2
    normalisation as tasks.annotate.Encoder, so score_texts runs on it unchanged."""

    def __init__(self, encoder: ann.Encoder, onnx_path: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer, self.window_tokens = encoder.tokenizer, encoder.window_tokens
        self.pooling, self.dim = encoder.pooling, encoder.dim

    def embed(self, texts: list[str], batch_size: int = 32, max_tokens: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32 L2-normalised embeddings, as Encoder.embed."""
        max_tokens = min(max_tokens or self.window_tokens, self.window_tokens)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_tokens,
                                   return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in batch.items() if k in self.inputs}
            hidden = self.session.run(None, feed)[0]  # (B, T, H)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return out


def export_onnx(encoder: ann.Encoder, path: str) -> None:
    """The encoder's graph (TorchScript exporter, opset 17) with dynamic batch and sequence axes."""
    batch = encoder.tokenizer(["def f(x):\n    return x", "import os"], padding=True, return_tensors="pt")
    if "token_type_ids" not in batch:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"hidden": {0: "batch", 1: "seq"}}
    with torch.inference_mode():
        torch.onnx.export(_LastHidden(encoder.model).eval(), tuple(batch[n] for n in names), path, dynamo=False,
                          input_names=names, output_names=["hidden"], dynamic_axes=axes, opset_version=17)


def onnx_arms(encoder: ann.Encoder, tmp: str, threads: int) -> dict[str, object]:
    """{'ort fp32': ..., 'ort int8': ...} when onnxruntime imports and the export works; {} (with the reason
    printed) otherwise: ONNX is optional here."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        print(f"onnx arms skipped: {exc}")
        return {}
    fp32_path, int8_path = os.path.join(tmp, "encoder.onnx"), os.path.join(tmp, "encoder.int8.onnx")
    try:
        t0 = time.perf_counter()
        export_onnx(encoder, fp32_path)
        t1 = time.perf_counter()
        quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8)
        t2 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - optional arm: report why and go on with the torch arms
        print(f"onnx arms skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return {}
    print(f"onnx export {t1 - t0:.1f}s ({os.path.getsize(fp32_path) / 1e6:.0f} MB), "
          f"ort quantize_dynamic {t2 - t1:.1f}s ({os.path.getsize(int8_path) / 1e6:.0f} MB)")
    return {"ort fp32": OrtEncoder(encoder, fp32_path, threads), "ort int8": OrtEncoder(encoder, int8_path, threads)}


def timed_pass(enc, wins: list[str], batches: list[np.ndarray], head: tuple[np.ndarray, float],
               window: int) -> tuple[np.ndarray, np.ndarray]:
    """(window probabilities, seconds per batch): `enc` embeds each batch (tokenisation included, as in scoring),
    then the head scores it. Per-batch times let a noisy, shared machine be read at each batch's best round."""
    probs = np.zeros(len(wins))
    secs = np.zeros(len(batches))
    for k, idx in enumerate(batches):
        t0 = time.perf_counter()
        emb = enc.embed([wins[i] for i in idx], len(idx), max_tokens=window)
        secs[k] = time.perf_counter() - t0
        probs[idx] = ann._sigmoid(emb @ head[0] + head[1])
    return probs, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="embedded:minilm")
    ap.add_argument("--window", type=int, default=512, help="window tokens (paper: 512)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--files", type=int, default=40, help="code files scored (40 -> ~118 windows)")
    ap.add_argument("--head-files", type=int, default=128, help="other code files the head is fitted on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="timed passes per arm, interleaved across arms")
    ap.add_argument("--onnx", action="store_true", help="add the ONNX Runtime fp32 and int8 arms (needs onnxruntime, "
                    "onnx; not project dependencies) - slower than torch fp32 here, so off by default")
    ap.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                    help="also fit a head on each arm's own embeddings (as annotate would) and report its AUC")
    args = ap.parse_args()
    if args.files < 1 or args.rounds < 1 or args.threads < 1:
        raise SystemExit("--files, --rounds and --threads must be >= 1")

    torch.set_num_threads(args.threads)
    encoder = ann.Encoder(args.encoder, args.window, device="cpu")
    window = encoder.window_tokens
    all_files = code_files(args.files + args.head_files)
    files, head_files = all_files[: args.files], all_files[args.files :]
    head = fit_head(encoder, head_files, window)
    wins, owner = [], []
    for i, text in enumerate(files):
        ws = ann.windows(text, encoder.tokenizer, window)
        wins += ws
        owner += [i] * len(ws)
    owner = np.asarray(owner)
    humaneval = ann.benchmark_documents(load_benchmark("humaneval"))

    t0 = time.perf_counter()
    arms: dict[str, object] = {
        "fp32": encoder,
        "fp32 b1": OneByOne(encoder),  # fp32, one window per batch: the same batching as annotate.int8
        "torch int8": torch_int8(encoder),  # = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        "torch int8 pc": torch_int8(encoder, per_channel=True),
        "torch int8 pc-ffo": torch_int8(encoder, per_channel=True, keep_fp32=("output.dense",)),
        "annotate.int8": annotate_int8(encoder),  # = pc, one window per batch (batch-independent scores)
    }
    print(f"torch quantize_dynamic x4 {time.perf_counter() - t0:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        if args.onnx:
            arms |= onnx_arms(encoder, tmp, args.threads)
        print(f"{args.encoder} on cpu, {len(files)} files -> {len(wins)} windows of <= {window} tokens, "
              f"batch {args.batch}, torch threads {torch.get_num_threads()}, {len(humaneval)} HumanEval programs, "
              f"load average {os.getloadavg()[0]:.1f}")

        order = np.argsort([-len(w) for w in wins], kind="stable")  # Encoder.embed's longest-first batches
        batches = [order[i : i + args.batch] for i in range(0, len(wins), args.batch)]
        for enc in arms.values():
            timed_pass(enc, wins, batches[:1], head, window)  # warm-up (kernels, allocator, ORT arena)
        seconds: dict[str, list[np.ndarray]] = {name: [] for name in arms}
        probs: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):  # interleaved: every arm sees the same machine load, round by round
            for name, enc in arms.items():
                probs[name], secs = timed_pass(enc, wins, batches, head, window)
                seconds[name].append(secs)
        seconds["fp32"].append(timed_pass(encoder, wins, batches, head, window)[1])  # fp32 again at the very end
        labels = np.r_[np.ones(len(humaneval)), np.zeros(len(files))]
        auc, own_auc = {}, {}
        for name, enc in arms.items():
            file_scores = np.bincount(owner, weights=probs[name]) / np.bincount(owner)  # = score_texts on files
            pos = ann.score_texts(enc, head, humaneval, window, args.batch)
            auc[name] = (ann.roc_auc(labels, np.r_[pos, file_scores]), file_scores)
            if args.refit and name not in ("fp32", "fp32 b1"):  # what annotate would do with this encoder: train the head on it too
                print(f"{name}, refit:", end=" ")
                own_head = fit_head(enc, head_files, window)
                own_auc[name] = ann.roc_auc(labels, np.r_[ann.score_texts(enc, own_head, humaneval + files, window,
                                                                          args.batch)])
        own_auc["fp32"] = auc["fp32"][0]

    def robust_seconds(name: str) -> float:
        return float(np.min(np.stack(seconds[name]), axis=0).sum())  # each batch at its least-disturbed round

    base = len(wins) / robust_seconds("fp32")
    keep = len(files) // 2
    kept_fp32 = set(np.argsort(-auc["fp32"][1], kind="stable")[:keep])
    print(f"\n{'arm':<18} {'windows/s':>9} {'vs fp32':>7} {'pass totals (s)':>22} {'max|dp|':>8} {'spearman':>8} "
          f"{'top50% kept':>11} {'HumanEval AUC':>13} {'own head':>8}")
    for name in arms:
        wps = len(wins) / robust_seconds(name)
        diff = np.abs(probs[name] - probs["fp32"]).max()
        rho = spearmanr(probs[name], probs["fp32"]).statistic
        kept = len(kept_fp32 & set(np.argsort(-auc[name][1], kind="stable")[:keep])) / max(keep, 1)
        totals = " ".join(f"{s.sum():.1f}" for s in seconds[name])
        own = f"{own_auc[name]:8.4f}" if name in own_auc else f"{'-':>8}"
        print(f"{name:<18} {wps:9.1f} {wps / base:6.2f}x {totals:>22} {diff:8.1e} {rho:8.4f} {kept:11.2f} "
              f"{auc[name][0]:13.4f} {own}")
    fp32 = [s.sum() for s in seconds["fp32"]]
    print(f"fp32 pass totals spread {100 * (max(fp32) - min(fp32)) / min(fp32):.0f}% (first {fp32[0]:.1f}s, "
          f"last {fp32[-1]:.1f}s); load average now {os.getloadavg()[0]:.1f}.\n"
          "windows/s = windows / sum over batches of each batch's fastest round; max|dp|, spearman: window "
          "probabilities vs fp32; top50% kept: share of fp32's top half of files also kept;\n"
          f"AUC: HumanEval programs vs the {len(files)} files (file score = window mean), with the fp32 head and "
          "with a head refitted on the arm's own embeddings (own head, --refit)")


if __name__ == "__main__":
    main()
