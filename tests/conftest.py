import os

# Keep tests offline and quiet; every test that starts Prefect gets its own PREFECT_HOME.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --- the local stack (Prefect + MLflow + moto S3), started once per session on free ports -------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """A running local stack in a temporary state dir, on free ports (a user's stack on the defaults is untouched).

    Yields a namespace with `env` (the client variables: PREFECT_API_URL, MLFLOW_TRACKING_URI, AWS_*...) and
    `settings` (snowcoder.stack.StackSettings). Stopped at session end; teardown asserts no process is left.
    Tests using it should be marked @pytest.mark.slow.
    """
    import types

    from snowcoder import stack as stack_mod

    s3_port, mlflow_port, prefect_port = stack_mod.free_ports(3)
    settings = stack_mod.StackSettings(state_dir=tmp_path_factory.mktemp("stack"), s3_port=s3_port,
                                       mlflow_port=mlflow_port, prefect_port=prefect_port)
    timings: dict = {}
    env = stack_mod.up(settings, timings)
    pids = {name: info["pid"] for name, info in stack_mod.status(settings).items()}
    try:
        yield types.SimpleNamespace(env=env, settings=settings, timings=timings, pids=pids)
    finally:
        stack_mod.down(settings, save_s3=False)
        left = {name: stack_mod.group_members(pid) for name, pid in pids.items() if stack_mod.group_members(pid)}
        assert not left, f"stack processes still running after down(): {left}"
