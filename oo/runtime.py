"""Process set-up done once, in one place: no telemetry, no remote look-ups, state under ./var,
and library log noise tamed.

The stack reads these switches from environment variables, some at import time, so
:func:`configure` runs first in every entry point (the CLI, the DAGs, the services, the tests).
It only sets defaults: an operator's explicit environment wins.
"""

from __future__ import annotations

import gc
import logging
import os
import warnings
from pathlib import Path

from oo.logging import LogFormat, configure_logging

OFFLINE_SWITCHES: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # one DNS look-up per process otherwise
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "True",  # `bentoml serve` reports usage otherwise
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # importing litellm fetches a cost map otherwise
    "LITELLM_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "SCARF_NO_ANALYTICS": "true",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "FEAST_USAGE": "False",
}
"""Environment switches that stop the stack phoning home."""

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
"""The project's DAGs (Airflow's dags-folder bundle must point here for ``dag.test()``)."""

NOISY_LOGGERS: dict[str, int] = {
    "great_expectations": logging.WARNING,
    "great_expectations.data_context.types.base": logging.WARNING,
    "alembic": logging.WARNING,
    "LiteLLM": logging.WARNING,
    "LiteLLM Router": logging.WARNING,
    "httpx": logging.WARNING,
    "feast": logging.WARNING,
    "mlflow": logging.WARNING,
    "bentoml": logging.WARNING,
    "nats": logging.WARNING,
}


KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"fetch_arrow_table\(\) is deprecated", DeprecationWarning),  # ibis 12 + duckdb 2, every Feast read
    (r"On demand feature view is an experimental feature", RuntimeWarning),  # Feast, every apply
    (r".*Any type hint is inferred as AnyType", UserWarning),  # MLflow, logging a pyfunc
    (r"The ``noload`` loader strategy is deprecated", Warning),  # MLflow's store on SQLAlchemy 2.1
)
"""Third-party warnings that say nothing actionable to an oO user."""


def tool_homes(var_dir: Path) -> dict[str, str]:
    """Where each tool keeps its state, all under ``var_dir`` (never ``~``)."""
    var = var_dir.resolve()
    return {
        "AIRFLOW_HOME": str(var / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "BENTOML_HOME": str(var / "bentoml"),
        "MPLCONFIGDIR": str(var / "matplotlib"),
    }


def configure(var_dir: Path | None = None, log_level: str | None = None, log_format: LogFormat | None = None) -> None:
    """Set the offline switches and tool homes (as defaults), set up structured logs
    (:func:`oo.logging.configure_logging`) and tame library loggers."""
    if var_dir is None or log_level is None or log_format is None:
        from oo.settings import get_settings

        s = get_settings()
        var_dir = var_dir or s.paths.resolve()
        log_level = log_level or s.log_level
        log_format = log_format or s.log_format
    for key, value in {**OFFLINE_SWITCHES, **tool_homes(var_dir)}.items():
        os.environ.setdefault(key, value)
    configure_logging(level=log_level, fmt=log_format)
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def freeze_startup_heap() -> int:
    """Exempt what a long-running process built at start-up (imported modules, the stores it
    opened, the model it loaded) from the cyclic garbage collector; the count frozen.

    A full collection walks every tracked object: with serving's start-up heap (~480k objects,
    Feast, MLflow, LiteLLM) each one paused the process for 150-800 ms on the build machine, once
    every few thousand requests: the tail of the latency. Objects made later are collected as
    before; the frozen ones live as long as the process anyway (``gc.freeze``, Python's documented
    remedy for this).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
