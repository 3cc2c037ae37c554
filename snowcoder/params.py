"""Typed flow parameters: a preset name plus a tree of optional overrides, generated from the config tree.

Prefect turns a flow's signature into the deployment's JSON schema, the UI renders that schema as a form, and with
`enforce_parameter_schema: true` the server rejects a run whose parameters do not validate. So every flow takes

    preset: Preset = "tiny"                              # enum: the names in config.PRESETS
    overrides: PipelineOverrides = PipelineOverrides()   # same sections/fields as PipelineConfig, all optional
    run_root: str | None = None

and calls `resolve(preset, overrides, run_root)` to get the validated PipelineConfig.

`PipelineOverrides` is generated from `PipelineConfig` by `partial_model`: the same tree of sections (data, filter,
..., train.alpha/beta/final, annotate, synth, eval); every leaf is optional with default None (None = keep the
preset's value) and keeps its description, bounds (ge/gt/le/lt -> minimum/exclusiveMinimum/...), Literal choices
and title, so the form is typed and the server checks bounds before a run starts. Cross-field checks (e.g. hidden
divisible by n_heads) run in `resolve`, when the merged config is validated again as a PipelineConfig.

An override cannot set a field *to* None (None means "keep"). Where a preset value is a number and None means
"no cap" (data.max_files, eval.limit, annotate.max_files_scored, ...), give a large number instead, or pick a preset
or a YAML file (`load_config`) that already has None.

Overrides serialise compactly: unset fields and empty sections are left out, so `PipelineOverrides().model_dump()`
is `{}` and a run's stored parameters show only what was changed.
"""
from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_serializer

from snowcoder.config import PRESETS, PipelineConfig, UserError, _format_validation_error, load_config

Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]  # ("tiny", "micro", "paper-1.3b")
"""Name of a preset in snowcoder.config.PRESETS; a flow parameter of this type renders as a drop-down."""

_KEEP_NOTE = "Empty fields keep the preset's value."


class _Overrides(BaseModel):
    """Base of the generated partial models: unknown keys are errors, instances are immutable (safe as defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler):
        """Leave out None leaves and sections with nothing set, so a dump holds only the real overrides."""
        out = handler(self)
        return {
            k: v for k, v in out.items()
            if v is not None and not (v == {} and isinstance(getattr(self, k, None), _Overrides))
        }


_CACHE: dict[tuple[type[BaseModel], str | None, frozenset[str]], type[_Overrides]] = {}


def _none_to_empty(value: Any) -> Any:
    return {} if value is None else value


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _partial_annotation(annotation: Any) -> tuple[Any, bool]:
    """(annotation with nested models replaced by their partial models, whether it is a section)."""
    if _is_model(annotation):
        return partial_model(annotation), True
    if get_origin(annotation) in (Union, types.UnionType) and any(_is_model(a) for a in get_args(annotation)):
        return Union[tuple(partial_model(a) if _is_model(a) else a for a in get_args(annotation))], False
    return annotation, False


def partial_model(
    model_cls: type[BaseModel], name: str | None = None, exclude: tuple[str, ...] | frozenset[str] = ()
) -> type[_Overrides]:
    """A model with `model_cls`'s fields (minus `exclude`, top level only), every leaf optional with default None.

    Nested model fields (sections) become the nested class's partial model, defaulting to an empty one (a None
    given for a section means the same). Each leaf keeps its description, title, examples and constraints
    (ge/gt/le/lt/...); Literal choices stay Literal. Model validators are not copied: the partial is validated
    again as `model_cls` after merging (see `resolve`). Cached per (class, name, exclude).
    """
    key = (model_cls, name, frozenset(exclude))
    if key in _CACHE:
        return _CACHE[key]
    fields: dict[str, Any] = {}
    for field_name, info in model_cls.model_fields.items():
        if field_name in key[2]:
            continue
        annotation, is_section = _partial_annotation(info.annotation)
        kwargs = {"description": info.description, "title": info.title, "examples": info.examples,
                  "json_schema_extra": info.json_schema_extra}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if is_section:
            fields[field_name] = (Annotated[annotation, BeforeValidator(_none_to_empty)],
                                  Field(default_factory=annotation, **kwargs))
        else:
            leaf = Optional[annotation]
            if info.metadata:  # constraints (annotated_types.Ge, ...) apply to the non-None branch
                leaf = Annotated[(leaf, *info.metadata)]
            fields[field_name] = (leaf, Field(None, **kwargs))
    doc = " ".join(filter(None, [(model_cls.__doc__ or "").strip(), _KEEP_NOTE]))
    model_name = name or model_cls.__name__.removesuffix("Config") + "Overrides"
    partial = create_model(model_name, __base__=_Overrides, __doc__=doc, __module__=__name__, **fields)
    _CACHE[key] = partial
    return partial


PipelineOverrides = partial_model(PipelineConfig, "PipelineOverrides", exclude=("preset", "run_root"))
"""Every PipelineConfig field except preset/run_root (separate flow parameters), all optional (None = keep)."""

NO_OVERRIDES = PipelineOverrides()


def coerce_overrides(overrides: Any) -> PipelineOverrides:  # type: ignore[valid-type]
    """PipelineOverrides from an instance, a (JSON-like) mapping or None; a bad mapping is a UserError."""
    if overrides is None:
        return NO_OVERRIDES
    if isinstance(overrides, PipelineOverrides):
        return overrides
    if isinstance(overrides, BaseModel):  # e.g. a partial model of another config class
        raise UserError(f"overrides must be a PipelineOverrides or a mapping, not {type(overrides).__name__}")
    if not isinstance(overrides, Mapping):
        raise UserError(f"overrides must be a mapping of config sections, not {type(overrides).__name__}")
    try:
        return PipelineOverrides.model_validate(dict(overrides))
    except ValidationError as exc:
        raise UserError(_format_validation_error(exc, what="overrides")) from None


def overrides_dict(overrides: Any) -> dict[str, Any]:
    """The set (non-None) overrides as a nested plain dict (JSON-compatible), e.g. for MLflow params or a YAML file."""
    return coerce_overrides(overrides).model_dump(mode="json", exclude_none=True)


def resolve(preset: str, overrides: Any = None, run_root: str | None = None) -> PipelineConfig:
    """The preset's config with the set override fields replaced, validated again as a PipelineConfig.

    `overrides` may be a PipelineOverrides, a plain (nested) dict as Prefect may hand it over, or None. Unknown
    presets, unknown keys and out-of-bounds values raise UserError with one line per problem.
    """
    values = coerce_overrides(overrides).model_dump(mode="python", exclude_none=True)
    return load_config(preset, run_root=run_root, overrides=values)


def _diff(base: dict[str, Any], target: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in target.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            sub = _diff(base[key], value, f"{path}{key}.")
            if sub:
                out[key] = sub
        elif base.get(key) != value:
            if value is None:
                raise UserError(f"{path}{key}: an override cannot set None (it means 'keep the preset's value'); "
                                "use a YAML config file or a preset with that value")
            out[key] = value
    return out


def as_overrides(config: PipelineConfig, preset: str | None = None) -> PipelineOverrides:  # type: ignore[valid-type]
    """The smallest overrides that turn `preset` (default: config.preset) into `config` (run_root aside).

    Lets a config resolved locally (CLI + YAML file) start a deployment: `run_deployment(..., parameters={"preset":
    cfg.preset, "overrides": overrides_dict(as_overrides(cfg)), "run_root": cfg.run_root})`.
    """
    base = load_config(preset or config.preset).model_dump(mode="json", exclude={"preset", "run_root"})
    target = config.model_dump(mode="json", exclude={"preset", "run_root"})
    return PipelineOverrides.model_validate(_diff(base, target, ""))
