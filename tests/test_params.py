"""Typed flow parameters: the JSON schema Prefect builds from the flow signature, the server-side validator that
`enforce_parameter_schema: true` runs on it, and resolving preset + overrides into a PipelineConfig."""
import json
from typing import Literal, get_args

import pytest
from prefect import flow
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError as SchemaValidationError
from prefect.utilities.schema_tools.validation import validate as server_validate
from pydantic import BaseModel, Field, ValidationError

from snowcoder.config import PRESETS, PipelineConfig, UserError, load_config
from snowcoder.params import (
    NO_OVERRIDES,
    PipelineOverrides,
    Preset,
    as_overrides,
    coerce_overrides,
    overrides_dict,
    partial_model,
    resolve,
)


@flow(name="params-probe")
def probe(preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES, run_root: str | None = None):
    """Declared exactly as the pipeline and stage flows declare their parameters.

    Args:
        preset: Starting configuration.
        overrides: Fields changed on top of the preset.
        run_root: Where outputs go.
    """


@pytest.fixture(scope="module")
def schema() -> dict:
    """What the deployment stores as parameter_openapi_schema (prefect deploy calls parameter_schema(flow))."""
    return parameter_schema(probe).model_dump()


def _server_accepts(schema: dict, parameters: dict) -> None:
    """The call the API makes in create_flow_run_from_deployment when enforce_parameter_schema is true."""
    server_validate(parameters, schema, raise_on_error=True)


def _leaf(schema: dict, definition: str, field: str) -> dict:
    return schema["definitions"][definition]["properties"][field]


# ----------------------------------------------------------------------------------------------- schema shape


def test_preset_is_an_enum_of_the_presets(schema):
    p = schema["properties"]["preset"]
    assert p["type"] == "string" and p["enum"] == list(PRESETS) and p["default"] == "tiny"
    assert set(get_args(Preset)) == set(PRESETS)
    assert p["description"] == "Starting configuration."


def test_overrides_schema_mirrors_the_config_tree(schema):
    o = schema["properties"]["overrides"]
    assert o["$ref"] == "#/definitions/PipelineOverrides" and o["default"] == {}
    top = schema["definitions"]["PipelineOverrides"]["properties"]
    assert set(top) == set(PipelineConfig.model_fields) - {"preset", "run_root"}
    assert top["train"]["$ref"] == "#/definitions/TrainOverrides"
    train = schema["definitions"]["TrainOverrides"]["properties"]
    for phase in ("alpha", "beta", "final"):
        assert train[phase]["$ref"] == "#/definitions/PhaseTrainOverrides" and train[phase]["description"]
    assert schema["required"] == []


def test_leaves_keep_description_bounds_and_choices(schema):
    lr = _leaf(schema, "PhaseTrainOverrides", "lr")
    assert lr["default"] is None and lr["description"] == "Peak learning rate."
    number, null = lr["anyOf"]
    assert null == {"type": "null"}
    assert number["type"] == "number" and number["exclusiveMinimum"] == 0 and number["maximum"] == 1
    threshold = _leaf(schema, "DedupOverrides", "threshold")["anyOf"][0]
    assert threshold["exclusiveMinimum"] == 0 and threshold["exclusiveMaximum"] == 1
    num_perm = _leaf(schema, "DedupOverrides", "num_perm")["anyOf"][0]
    assert (num_perm["type"], num_perm["minimum"], num_perm["maximum"]) == ("integer", 16, 1024)
    top = _leaf(schema, "AnnotateOverrides", "top_fraction")["anyOf"][0]
    assert top["exclusiveMinimum"] == 0 and top["maximum"] == 1
    sched = _leaf(schema, "PhaseTrainOverrides", "schedule")["anyOf"][0]
    assert sched["enum"] == ["cosine", "rewarm-linear", "linear", "constant"]
    assert _leaf(schema, "SynthOverrides", "n_seeds")["anyOf"][0]["minimum"] == 1


def test_every_field_is_described_and_every_number_bounded_below(schema):
    for name, definition in schema["definitions"].items():
        for field, prop in definition["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
            branch = next((b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"), prop)
            if branch.get("type") in ("integer", "number"):
                assert {"minimum", "exclusiveMinimum"} & set(branch), f"{name}.{field} has no lower bound"


# ------------------------------------------------------------------------------ server-side validation


def test_server_accepts_valid_nested_overrides(schema):
    _server_accepts(schema, {})
    _server_accepts(schema, {"preset": "micro", "overrides": {}, "run_root": None})
    _server_accepts(schema, {"preset": "paper-1.3b", "run_root": "s3://bucket/runs/x", "overrides": {
        "seed": 7, "dedup": {"threshold": 0.8, "num_perm": 256}, "train": {"alpha": {"lr": 3e-4, "schedule": "cosine"}},
        "annotate": {"top_fraction": 0.1}, "synth": {"n_seeds": 100}, "data": {"max_files": None, "sources": ["/src"]},
    }})


@pytest.mark.parametrize("overrides, field", [
    ({"train": {"alpha": {"lr": -1}}}, "overrides.train.alpha.lr"),
    ({"train": {"beta": {"lr": 0}}}, "overrides.train.beta.lr"),  # exclusive minimum
    ({"dedup": {"threshold": 2}}, "overrides.dedup.threshold"),
    ({"dedup": {"num_perm": 8}}, "overrides.dedup.num_perm"),
    ({"annotate": {"top_fraction": 1.5}}, "overrides.annotate.top_fraction"),
    ({"train": {"final": {"schedule": "step"}}}, "overrides.train.final.schedule"),
    ({"train": {"alpha": {"tokens": "many"}}}, "overrides.train.alpha.tokens"),
    ({"synth": {"n_seeds": 0}}, "overrides.synth.n_seeds"),
])
def test_server_rejects_out_of_bounds(schema, overrides, field):
    with pytest.raises(SchemaValidationError, match=field.replace(".", r"\.")):
        _server_accepts(schema, {"preset": "tiny", "overrides": overrides})


def test_server_rejects_unknown_preset_and_unknown_keys(schema):
    with pytest.raises(SchemaValidationError, match="preset"):
        _server_accepts(schema, {"preset": "huge"})
    with pytest.raises(SchemaValidationError, match="lrr"):
        _server_accepts(schema, {"overrides": {"train": {"alpha": {"lrr": 1e-3}}}})
    with pytest.raises(SchemaValidationError):  # run_root is its own parameter, not an override
        _server_accepts(schema, {"overrides": {"run_root": "/x"}})


# -------------------------------------------------------------------------- Prefect client round trip


def test_prefect_coerces_and_serialises_the_parameters():
    params = probe.validate_parameters({"preset": "micro", "overrides": {"train": {"alpha": {"lr": 0.01}}}})
    assert isinstance(params["overrides"], PipelineOverrides)
    assert params["overrides"].train.alpha.lr == 0.01 and params["overrides"].train.beta.lr is None
    stored = probe.serialize_parameters(params)  # what the API stores for the flow run
    assert stored == {"preset": "micro", "overrides": {"train": {"alpha": {"lr": 0.01}}}, "run_root": None}
    json.dumps(stored)
    with pytest.raises(Exception, match="lr"):
        probe.validate_parameters({"overrides": {"train": {"alpha": {"lr": -1}}}})


def test_json_round_trip():
    model = PipelineOverrides(seed=3, dedup={"threshold": 0.9}, train={"beta": {"repeat": 2, "schedule": "linear"}},
                              eval={"benchmarks": [{"name": "humaneval"}], "n_samples": 4, "temperature": 0.8})
    again = PipelineOverrides.model_validate(json.loads(model.model_dump_json()))
    assert again == model
    assert json.loads(model.model_dump_json()) == {
        "seed": 3, "dedup": {"threshold": 0.9}, "train": {"beta": {"repeat": 2, "schedule": "linear"}},
        "eval": {"benchmarks": [{"name": "humaneval", "path": None, "hub": None, "split": None, "subset": None}],
                 "n_samples": 4, "temperature": 0.8}}
    assert NO_OVERRIDES.model_dump() == {} and PipelineOverrides.model_validate({}) == NO_OVERRIDES


def test_overrides_are_immutable_and_reject_unknown_keys():
    with pytest.raises(ValidationError):
        NO_OVERRIDES.seed = 5
    with pytest.raises(ValidationError, match="extra"):
        PipelineOverrides(dedup={"thresh": 0.5})


# ----------------------------------------------------------------------------------------------- resolve


def test_resolve_changes_only_the_overridden_field():
    base = load_config("micro")
    cfg = resolve("micro", {"train": {"alpha": {"lr": 1e-2}}, "dedup": {"threshold": 0.8}}, run_root="/tmp/r")
    assert cfg.train.alpha.lr == 1e-2 and cfg.dedup.threshold == 0.8 and cfg.run_root == "/tmp/r"
    assert cfg.preset == "micro"
    expected = base.model_dump()
    expected["train"]["alpha"]["lr"] = 1e-2
    expected["dedup"]["threshold"] = 0.8
    expected["run_root"] = "/tmp/r"
    assert cfg.model_dump() == expected


def test_resolve_none_keeps_preset_values():
    for preset in PRESETS:
        assert resolve(preset) == load_config(preset)
        assert resolve(preset, NO_OVERRIDES) == load_config(preset)
    explicit_nones = {"seed": None, "train": {"alpha": {"lr": None, "tokens": None}}, "eval": None}
    assert resolve("micro", explicit_nones) == load_config("micro")
    assert resolve("micro", PipelineOverrides.model_validate(explicit_nones)) == load_config("micro")


def test_digest_changes_only_with_a_real_value():
    d = load_config("micro").digest()
    same = resolve("micro", {"train": {"alpha": {"lr": load_config("micro").train.alpha.lr}}, "seed": None})
    assert same.digest() == d
    assert resolve("micro", run_root="s3://elsewhere").digest() == d
    assert resolve("micro", {"train": {"alpha": {"lr": 0.5}}}).digest() != d
    assert resolve("micro", {"train": {"beta": {"lr": 0.5}}}).digest() != resolve(
        "micro", {"train": {"alpha": {"lr": 0.5}}}).digest()


def test_resolve_accepts_a_model_instance():
    cfg = resolve("tiny", PipelineOverrides(model={"n_layers": 3}, synth={"n_seeds": 4}))
    assert cfg.model.n_layers == 3 and cfg.synth.n_seeds == 4 and cfg.model.hidden == load_config("tiny").model.hidden


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"alpha": {"lrr": 1e-3}}}, "train.alpha.lrr"),
    ({"nonsense": 1}, "nonsense"),
    ({"run_root": "/x"}, "run_root"),
    ({"dedup": {"threshold": 2}}, "dedup.threshold"),
    ({"train": {"alpha": "fast"}}, "train.alpha"),
])
def test_resolve_bad_dict_is_a_user_error(overrides, message):
    with pytest.raises(UserError, match=f"invalid overrides(.|\n)*{message}"):
        resolve("tiny", overrides)


def test_resolve_runs_cross_field_validation_and_checks_the_preset():
    with pytest.raises(UserError, match="divisible by n_heads"):
        resolve("micro", {"model": {"hidden": 65}})
    with pytest.raises(UserError, match="unknown preset"):
        resolve("huge")
    with pytest.raises(UserError, match="mapping"):
        resolve("tiny", ["train"])


def test_as_overrides_round_trips_a_resolved_config():
    cfg = load_config("micro", run_root="/r", overrides={"train": {"final": {"tokens": 1234}}, "eval": {"limit": 3},
                                                         "data": {"extensions": [".py", ".pyi"]}})
    ov = as_overrides(cfg)
    assert overrides_dict(ov) == {"train": {"final": {"tokens": 1234}}, "eval": {"limit": 3},
                                  "data": {"extensions": [".py", ".pyi"]}}
    assert resolve(cfg.preset, overrides_dict(ov), cfg.run_root) == cfg
    assert as_overrides(load_config("tiny")) == NO_OVERRIDES
    with pytest.raises(UserError, match="eval.limit"):  # None cannot be expressed as an override
        as_overrides(load_config("micro", overrides={"eval": {"limit": None}}))


# ----------------------------------------------------------------------------------------- partial_model


class _Inner(BaseModel):
    """Inner doc."""

    k: int = Field(..., ge=2, description="required k")


class _Outer(BaseModel):
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    inner: _Inner = Field(default_factory=lambda: _Inner(k=3), description="inner section")
    maybe: int | None = Field(5, gt=0)


def test_partial_model_is_optional_recursive_and_cached():
    P = partial_model(_Outer, exclude=("name",))
    assert P is partial_model(_Outer, exclude=("name",)) and P.__name__ == "_OuterOverrides"
    assert partial_model(_Outer).model_fields.keys() == {"name", "mode", "inner", "maybe"}
    assert "name" not in P.model_fields
    empty = P()
    assert empty.mode is None and empty.maybe is None and empty.inner.k is None  # required k became optional
    assert P(inner=None) == empty
    assert P(inner={"k": 4}).inner.k == 4
    with pytest.raises(ValidationError):
        P(inner={"k": 1})  # bound kept
    with pytest.raises(ValidationError):
        P(mode="c")  # choices kept
    with pytest.raises(ValidationError):
        P(maybe=0)
    s = P.model_json_schema()
    assert s["$defs"]["_InnerOverrides"]["description"].startswith("Inner doc.")
    assert s["$defs"]["_InnerOverrides"]["properties"]["k"]["description"] == "required k"
    assert s["properties"]["inner"]["description"] == "inner section"


def test_coerce_overrides_passthrough():
    ov = PipelineOverrides(seed=1)
    assert coerce_overrides(ov) is ov and coerce_overrides(None) is NO_OVERRIDES
    with pytest.raises(UserError):
        coerce_overrides(partial_model(_Outer)())
