"""The ML engineers' notebooks run on a real lake, feature store and MLflow built here from a small
simulated run (the same library calls the DAGs make), executed with papermill; their summaries
agree with the stores they read, and a notebook pointed at empty stores says what to run."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from oo.settings import get_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Simulated traffic -> events_ingest -> features -> training (as the DAGs run them), small."""
    from models.cli import simulate_traffic
    from models.features import pipeline
    from models.policy_admin import promote
    from models.policy_training import train_and_register
    from models.registry import Registry
    from oo.db import migrate
    from oo.events_ingest import run_ingest

    var = tmp_path_factory.mktemp("nbvar")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OO_PATHS__VAR_DIR", str(var))
        mp.setenv("OO_FEAST__PROJECT", f"nb_{uuid.uuid4().hex[:8]}")
        mp.setenv("OO_TRAINING__N_BOOTSTRAP", "50")
        get_settings.cache_clear()
        now = datetime.now(UTC)
        migrate()
        simulate_traffic(users=6, days=3, seed=5, now=now)
        run_ingest()
        built = pipeline.build("notebook-test", now.isoformat())
        pipeline.validate(built["staging"])
        pipeline.publish_and_apply(built["staging"])
        pipeline.materialize()
        written = pipeline.training_examples(built["as_of"])
        summary = train_and_register(now)
        assert summary["trained"], summary
        registry = Registry()
        if registry.version_for("champion") is None:  # the gate refused: an engineer promotes by hand
            promote(str(registry.version_for("challenger")), "notebook test needs a champion", "test")
        yield {
            "var": var,
            "training_examples": written,
            "champion": registry.version_for("champion"),
            "challenger": registry.version_for("challenger"),
            "registry": registry,
            "settings": get_settings(),
        }
    get_settings.cache_clear()


def execute(name: str, out: Path, **parameters: Any) -> tuple[dict[str, Any], Any]:
    """Run notebook ``name`` with papermill; its SUMMARY line and the executed notebook."""
    import nbformat
    import papermill

    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(out), parameters=parameters, cwd=str(ROOT), kernel_name="python3", progress_bar=False
    )
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    line = next(x for x in text.splitlines() if x.startswith("SUMMARY "))
    return json.loads(line.removeprefix("SUMMARY ")), nb


def images(nb: Any) -> int:
    return sum(
        "image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def test_policy_analysis_compares_champion_challenger_and_baseline_from_mlflow_and_the_lake(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    summary, nb = execute(
        "policy_analysis.ipynb",
        tmp_path / "policy.ipynb",
        var_dir=str(stores["var"]),
        n_bootstrap=100,
        lofo_features=5,
        lofo_bootstrap=30,
    )
    assert summary["examples"] == stores["training_examples"]
    assert summary["holdout"] == round(summary["examples"] * stores["settings"].training.holdout_fraction)
    assert summary["versions"] == {"champion": stores["champion"], "challenger": stores["challenger"]}
    assert set(summary["policies"]) == {
        f"@champion (v{stores['champion']})",
        f"@challenger (v{stores['challenger']})",
        "baseline (rule-based, floor 0.05)",
    }
    for estimate in summary["policies"].values():
        assert estimate["dr_low"] <= estimate["dr"] <= estimate["dr_high"]
    assert set(summary["regret"]) == {*summary["policies"], "logged"}
    assert all(r >= 0 for r in summary["regret"].values())  # nothing beats the best candidate
    registry = stores["registry"]
    run = registry.client.get_run(registry.client.get_model_version(registry.model_name, stores["challenger"]).run_id)
    assert summary["lofo_recipe"] == run.data.tags["mlflow.runName"]
    assert 1 <= len(summary["lofo"]) <= 5
    assert images(nb) >= 3  # intervals, reward/regret curves, importance


def test_feature_exploration_reads_the_feature_tables_the_examples_and_the_online_store(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from oo.feature_store import TABLES, table_path

    summary, nb = execute("feature_exploration.ipynb", tmp_path / "features.ipynb", var_dir=str(stores["var"]))
    settings = stores["settings"]
    assert summary["tables"] == {name: pq.read_metadata(table_path(name, settings)).num_rows for name in TABLES}
    assert summary["examples"] == stores["training_examples"]
    assert summary["context_features"] > 0 and summary["candidate_features"] > 0
    assert summary["online_user"].startswith("sim-user-")
    assert summary["online_context_known"] == 1.0  # materialized: serving would know this user
    assert 0 < summary["online_tasks_known"] <= summary["online_tasks"]
    assert summary["skew_features"] > 0
    assert images(nb) >= 2


def test_a_notebook_on_empty_stores_says_what_to_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="run `make demo-batch` first"):
        execute("policy_analysis.ipynb", tmp_path / "empty.ipynb", var_dir=str(tmp_path / "empty-var"))
