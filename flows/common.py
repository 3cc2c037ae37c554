"""What phases hand each other: small, serialisable results (URIs, counts), never data."""
from __future__ import annotations

import time

from pydantic import BaseModel, Field

from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking


# Where a run may stop, in DAG order (deployments of single phases stop early; finished stages are reused).
STOPS = ("data", "train-alpha", "eval-alpha", "annotate", "train-beta", "eval-beta",
         "synthesize", "train-final", "eval-final")


def reached(until: str | None, stop: str) -> bool:
    """True when a run asked to stop at `until` has done everything up to and including `stop`."""
    return until is not None and STOPS.index(stop) >= STOPS.index(until)


def prefect_tags() -> dict[str, str]:
    """MLflow tags that link a run back to the Prefect flow run that made it (id, name, UI URL when a server has one)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_run_name": str(flow_run.name or ""),
            "prefect.root_flow_run_id": str(flow_run.root_flow_run_id or "") if flow_run.id else ""}
    if flow_run.id and PREFECT_UI_URL.value():
        tags["prefect.flow_run_url"] = flow_run.ui_url
    return tags


class PhaseResult(BaseModel):
    phase: str = Field(description="alpha | beta | final")
    manifests: dict[str, Manifest] = Field(default_factory=dict, description="Stage name -> manifest.")
    mlflow_run_id: str | None = None
    seconds: float = 0.0

    @property
    def checkpoint(self) -> str | None:
        return self.manifests["train"].uris["checkpoint"] if "train" in self.manifests else None

    def stages(self) -> dict[str, str]:
        """Stage -> 'ran' or 'reused' (finished in an earlier run with the same inputs, config and code)."""
        return {name: "reused" if m.reused else "ran" for name, m in self.manifests.items()}

    def row(self) -> dict:
        """One line of the summary table."""
        empty = Manifest(stage="")
        train = self.manifests.get("train", empty).counts
        ev = self.manifests.get("eval", empty).counts
        tokens = self.manifests.get("tokens", empty).counts
        return {
            "phase": self.phase,
            "docs": int(tokens.get("unique_docs", tokens.get("n_docs", 0))),
            "tokens_available": int(tokens.get("n_tokens", 0)),
            "tokens_trained": int(train.get("tokens", 0)),
            "train_loss": train.get("final_loss"),
            "heldout_loss": ev.get("heldout_loss"),
            "solution_loss": ev.get("solution_loss"),
            "humaneval_pass@1": ev.get("humaneval_pass@1"),
            "scores": {k: v for k, v in ev.items() if "_pass@" in k},  # every benchmark and verdict evaluated
            "checkpoint": self.checkpoint,
            "mlflow_run_id": self.mlflow_run_id,
            "seconds": round(self.seconds, 1),
            "stages": self.stages(),
        }


DATA_STOPS = {"alpha": "data", "beta": "annotate", "final": "synthesize"}


def complete_phase(
    config, phase: str, manifests: dict[str, Manifest], tokenizer_dir: str, heldout_uri: str, init_from: str | None,
    seed: int, run: Tracking, until: str | None, started: float,
) -> PhaseResult:
    """The tail every phase shares, once its data is ready in manifests["tokens"]: unless the run stops after the
    data, train (accelerate subprocess) and evaluate the checkpoint (stopping where `until` says); then the phase's
    result and its Prefect artifacts and MLflow plots."""
    from flows.reporting import publish_phase
    from snowcoder import storage
    from snowcoder.reports import PHASE_DIRS
    from tasks import steps

    out_dir = storage.join(config.run_root, PHASE_DIRS[phase])
    if not reached(until, DATA_STOPS[phase]):
        manifests["train"] = steps.train_task(
            phase, config.model, getattr(config.train, phase), config.train, tokenizer_dir,
            manifests["tokens"].uris["tokens"], heldout_uri, init_from, storage.join(out_dir, "train"), seed, run,
        )
        if not reached(until, f"train-{phase}"):
            manifests["eval"] = steps.eval_task(
                phase, config.eval, manifests["train"].uris["checkpoint"], heldout_uri, config.model.seq_len,
                storage.join(out_dir, "eval"), run,
            )
    result = PhaseResult(phase=phase, manifests=manifests, mlflow_run_id=run.run_id,
                         seconds=time.perf_counter() - started)
    publish_phase(result, run)
    return result


__all__ = ["STOPS", "PhaseResult", "Tracking", "complete_phase", "prefect_tags", "reached"]
