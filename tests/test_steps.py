"""The stage wrapper (tasks/steps.stage_task): what is and is not part of a stage's reuse key."""
from __future__ import annotations

from snowcoder.config import TrainConfig
from snowcoder.manifest import Manifest
from tasks.steps import stage_task

CALLS: list[str] = []


@stage_task("probe", not_keyed=("cfg.timeout_s", "cfg.registered_model"))
def probe_task(cfg: TrainConfig, out_dir: str) -> Manifest:
    CALLS.append(out_dir)
    return Manifest(stage="probe", uris={}, counts={"n": len(CALLS)})


def test_not_keyed_config_fields_do_not_invalidate_a_finished_stage(tmp_path):
    out = str(tmp_path / "probe")
    first = probe_task(TrainConfig(), out)
    assert not first.reused and len(CALLS) == 1
    # two not-keyed fields of the same config changed at once: still the same stage
    again = probe_task(TrainConfig(timeout_s=99, registered_model=None), out)
    assert again.reused and len(CALLS) == 1 and again.counts == first.counts
    # a keyed field (how the model trains) re-runs it
    other = probe_task(TrainConfig(order="random"), out)
    assert not other.reused and len(CALLS) == 2
