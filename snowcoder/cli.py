"""`snowcoder` command line.

    snowcoder run [--preset tiny] [--config file.yaml] [--run-root URI] [--until STOP] [--no-reuse]
    snowcoder stack [--state-dir D] up|down|status|env   # local Prefect server + MLflow server + S3 store (infra/)
    snowcoder deploy [--name N] [--worker]           # register deployments/prefect.yaml (PREFECT_API_URL)
    snowcoder serve --model DIR [--port 8000]       # OpenAI-compatible server for a checkpoint (snowcoder serve -h)
    snowcoder eval (--model DIR | --endpoint URL) [--benchmarks humaneval mbpp+=FILE ...] [--out DIR]
    snowcoder presets
    snowcoder config [--preset P] [--config F]      # print the resolved config and its digest
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from snowcoder.config import PRESETS, UserError, load_config

# Offline-friendly defaults; every one can be overridden from the environment.
_ENV_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "snowcoder",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


def _setup_env() -> None:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def preflight(config) -> None:
    """Catch the common user mistakes before any flow starts (clear message, no stack trace): unknown source
    syntax, missing directories or dump files, a local directory without a single file to crawl."""
    from tasks.sources import check_sources

    exts = tuple(config.data.extensions)
    for spec in check_sources(config.data):
        if spec.kind != "local" or "*" in exts:
            continue
        if not any(f.endswith(exts) for _, _, files in os.walk(spec.target) for f in files):
            raise UserError(f"source directory {spec.target} holds no files with extensions {', '.join(exts)}")


def _default_run_root(preset: str) -> str:
    return str(Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}")


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.preset, args.config, args.run_root)
    if args.run_root is None and config.run_root == "runs/latest":
        config.run_root = _default_run_root(config.preset)
    if not ("://" in config.run_root):
        config.run_root = str(Path(config.run_root).resolve())
    preflight(config)
    if args.no_reuse:
        os.environ["SNOWCODER_REUSE"] = "0"
    print(f"snowcoder: preset={config.preset} digest={config.digest()} run_root={config.run_root}", flush=True)

    from flows.pipeline import pipeline
    from snowcoder.summary import format_table

    summary = pipeline(config, until=args.until)
    # The local ephemeral Prefect server logs its shutdown at exit; keep the summary path the last thing shown.
    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)
    print()
    print(format_table(summary))
    print(summary["summary_uri"])
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from snowcoder.deploy import deploy, worker_command

    for line in deploy(args.name):
        print(line)
    if args.worker:
        os.execv(sys.executable, worker_command())
    return 0


def parse_benchmark(spec: str) -> dict:
    """'humaneval', 'mbpp+=path/MbppPlus.jsonl.gz' or 'mbpp+=hf:evalplus/mbppplus' -> a BenchmarkSource dict."""
    name, _, where = spec.partition("=")
    if not where:
        return {"name": name}
    return {"name": name, "hub": where[3:]} if where.startswith("hf:") else {"name": name, "path": where}


def cmd_eval(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from snowcoder import storage
    from snowcoder.config import EvalConfig, _format_validation_error
    from snowcoder.summary import format_eval
    from tasks.evaluate import evaluate

    if bool(args.model) == bool(args.endpoint):
        raise UserError("give exactly one of --model (a local HF checkpoint or hub id) and --endpoint (a URL)")
    fields = {k: v for k, v in dict(
        benchmarks=[parse_benchmark(b) for b in args.benchmarks], limit=args.limit, n_samples=args.n_samples,
        temperature=args.temperature, pass_k=args.pass_k, max_new_tokens=args.max_new_tokens, workers=args.workers,
        endpoint=args.endpoint, endpoint_model=args.endpoint_model).items() if v is not None}
    try:
        cfg = EvalConfig(**fields)
    except ValidationError as err:
        raise UserError(_format_validation_error(err, "evaluation settings")) from None
    out = args.out or str(Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
    manifest = evaluate(args.model, cfg, out, heldout_tokens_uri=args.heldout, seq_len=args.seq_len)
    manifest.save(storage.join(out, "manifest.json"))
    print(format_eval(manifest))
    print(out)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = load_config(args.preset, args.config, args.run_root)
    print(json.dumps({"digest": config.digest(), "config": config.model_dump(mode="json")}, indent=2))
    return 0


def cmd_presets(_: argparse.Namespace) -> int:
    for name in sorted(PRESETS):
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snowcoder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("run", cmd_run, "run the three-phase pipeline"),
                            ("config", cmd_config, "print the resolved configuration")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--preset", default="tiny", help=f"one of: {', '.join(sorted(PRESETS))} (default: tiny)")
        p.add_argument("--config", default=None, help="YAML file overriding any config field")
        p.add_argument("--run-root", default=None, help="local directory or fsspec URL (s3://...) for all outputs")
        p.set_defaults(fn=fn)
        if name == "run":
            from flows.common import STOPS

            p.add_argument("--until", choices=STOPS, default=None, help="stop after this stage (default: run everything)")
            p.add_argument("--no-reuse", action="store_true",
                           help="run every stage again, even those finished in this run root with the same inputs")
    # listed for -h only: main() hands `snowcoder stack ...` to snowcoder.stack.main, which owns its arguments
    sub.add_parser("stack", help="the local stack: Prefect server, MLflow server, S3-compatible store "
                                 "(snowcoder stack -h)")
    sub.add_parser("serve", help="an OpenAI-compatible server for an HF checkpoint (snowcoder serve -h)")
    p = sub.add_parser("deploy", help="register deployments/prefect.yaml on the Prefect server (PREFECT_API_URL)")
    p.add_argument("--name", action="append", default=None, help="only this deployment (repeatable; default: all)")
    p.add_argument("--worker", action="store_true", help="then run a process worker in the foreground")
    p.set_defaults(fn=cmd_deploy)
    p = sub.add_parser("eval", help="evaluate a local checkpoint or an OpenAI-compatible endpoint on code benchmarks")
    p.add_argument("--model", help="HF checkpoint folder or hub id")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (key: $OPENAI_API_KEY)")
    p.add_argument("--endpoint-model", help="model id sent to the endpoint")
    p.add_argument("--benchmarks", nargs="+", default=["humaneval"],
                   help="NAME or NAME=FILE or NAME=hf:DATASET (humaneval ships offline; e.g. mbpp+=MbppPlus.jsonl.gz)")
    p.add_argument("--limit", type=int, help="first N problems of each benchmark")
    p.add_argument("--n-samples", type=int, help="completions per problem (default 1, greedy)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--pass-k", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 1,10")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--workers", type=int, help="sandboxed executions in parallel")
    p.add_argument("--heldout", help="packed token dir (tokens.bin + meta.json) for held-out loss (local model only)")
    p.add_argument("--seq-len", type=int, default=2048, help="window of the held-out loss")
    p.add_argument("--out", help="output directory (default runs/eval-<time>)")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("presets", help="list the presets")
    p.set_defaults(fn=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    _setup_env()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["stack"]:
        from snowcoder.stack import main as stack_main

        return stack_main(argv[1:])
    if argv[:1] == ["serve"]:
        from snowcoder.serve import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as exc:
        print(f"snowcoder: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snowcoder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
