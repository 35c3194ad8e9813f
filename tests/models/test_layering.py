"""The training modules import each other in one direction only: training (pure) < gate < registry (MLflow)
< policy_training (the task)."""

from __future__ import annotations

import grimp
import pytest

MODULES = ("models.evaluation", "models.gate", "models.training", "models.registry", "models.policy_training")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("models", "oo", "data_contracts")


@pytest.mark.parametrize("low", range(len(MODULES)))
def test_no_training_module_reaches_a_module_above_it(graph: grimp.ImportGraph, low: int) -> None:
    for high in MODULES[low + 1 :]:
        chain = graph.find_shortest_chain(importer=MODULES[low], imported=high)
        assert chain is None, f"{MODULES[low]} imports {high} via {chain}"


def test_the_pure_modules_never_reach_the_registry_and_mlflow(graph: grimp.ImportGraph) -> None:
    for module in ("models.evaluation", "models.gate", "models.training"):
        assert not graph.find_shortest_chain(importer=module, imported="models.registry")
