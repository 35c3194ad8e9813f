"""Great Expectations suites derived from the contracts, and frame validation with reasons.

A suite is built from ``model.model_fields`` (never typed out again): required fields must not be
null, numeric bounds become ``ExpectColumnValuesToBeBetween``, enums and literals become
``ExpectColumnValuesToBeInSet``, ``min_length`` on strings becomes a length expectation.
Nested fields (structs, lists, maps) are checked by pydantic, not here.

Great Expectations takes about 6 s to import, so it is imported on first use.
"""

from __future__ import annotations

import logging
import types
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd


def _gx() -> Any:
    # GX logs ~200 INFO lines at import when structlog was configured before it (Airflow does).
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return great_expectations


def _base(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def expectation_specs(model: type[BaseModel]) -> list[tuple[str, dict[str, Any]]]:
    """The expectations of a contract as ``(expectation class name, kwargs)`` pairs.

    Examples
    --------
    >>> from data_contracts import ReactionEvent
    >>> ("ExpectColumnValuesToBeInSet",
    ...  {"column": "reaction", "value_set": ["done", "snooze", "dismiss"]}) in (
    ...     expectation_specs(ReactionEvent))
    True
    """
    specs: list[tuple[str, dict[str, Any]]] = []
    for name, info in model.model_fields.items():
        annotation, optional = _base(info.annotation)
        specs.append(("ExpectColumnToExist", {"column": name}))
        if not optional:
            specs.append(("ExpectColumnValuesToNotBeNull", {"column": name}))
        if get_origin(annotation) is Literal:
            specs.append(("ExpectColumnValuesToBeInSet", {"column": name, "value_set": list(get_args(annotation))}))
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            specs.append(("ExpectColumnValuesToBeInSet", {"column": name, "value_set": [e.value for e in annotation]}))
        bounds: dict[str, Any] = {}
        for meta in info.metadata:
            if isinstance(meta, at.Ge):
                bounds.update(min_value=meta.ge)
            elif isinstance(meta, at.Gt):
                bounds.update(min_value=meta.gt, strict_min=True)
            elif isinstance(meta, at.Le):
                bounds.update(max_value=meta.le)
            elif isinstance(meta, at.Lt):
                bounds.update(max_value=meta.lt, strict_max=True)
            elif isinstance(meta, at.MinLen) and annotation is str:
                specs.append(("ExpectColumnValueLengthsToBeBetween", {"column": name, "min_value": meta.min_length}))
        if bounds:
            specs.append(("ExpectColumnValuesToBeBetween", {"column": name, **bounds}))
    return specs


@cache
def _validation(model: type[BaseModel]) -> Any:
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        ctx.data_sources.add_pandas(f"{model.__name__}_source")
        .add_dataframe_asset(model.__name__)
        .add_batch_definition_whole_dataframe("batch")
    )
    suite = ctx.suites.add(suite_for(model))
    return ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{model.__name__}_validation", data=batch, suite=suite)
    )


def suite_for(model: type[BaseModel]) -> gx.ExpectationSuite:
    """The Great Expectations suite of a contract."""
    gxm = _gx()
    import great_expectations.expectations as gxe

    version = model.model_fields["schema_version"].default if "schema_version" in model.model_fields else 1
    suite: gx.ExpectationSuite = gxm.ExpectationSuite(
        name=f"{model.__name__}_v{version}",
        expectations=[getattr(gxe, cls)(**kwargs) for cls, kwargs in expectation_specs(model)],
    )
    return suite


def failing_rows(model: type[BaseModel], frame: pd.DataFrame) -> dict[int, list[str]]:
    """Run the contract's suite over ``frame``; map each failing row position to its reasons.

    A failure that names no rows (a missing column) is reported against every row.
    """
    if frame.empty:
        return {}
    flat = frame.reset_index(drop=True)
    validation = _validation(model)
    # a pass/fail run is about 40% cheaper; the full report (row indices) only when something failed
    if validation.run(batch_parameters={"dataframe": flat}, result_format="BOOLEAN_ONLY").success:
        return {}
    result = validation.run(batch_parameters={"dataframe": flat}, result_format="COMPLETE")
    reasons: dict[int, list[str]] = {}
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        what = f"{cfg.type} {cfg.kwargs.get('column', '')}".strip()
        rows = (r.result or {}).get("unexpected_index_list")
        if rows is None:
            rows = list(range(len(flat)))
            detail = str(r.exception_info.get("exception_message", "")) if r.exception_info else ""
        else:
            detail = ""
        for i in rows:
            idx = int(i) if not isinstance(i, dict) else int(next(iter(i.values())))
            value = flat.iloc[idx].get(cfg.kwargs.get("column")) if cfg.kwargs.get("column") in flat else None
            reasons.setdefault(idx, []).append(f"{what} failed (value {value!r}){': ' + detail if detail else ''}")
    return reasons
