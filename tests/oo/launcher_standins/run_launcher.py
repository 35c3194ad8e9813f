"""Run :class:`oo.launcher.Launcher` on a JSON spec (``run_launcher.py SPEC``), as ``make run`` would."""

import json
import sys
from pathlib import Path

from rich.console import Console

from oo.launcher import Launcher, Service

spec = json.loads(Path(sys.argv[1]).read_text())
launcher = Launcher(
    [Service(**s) for s in spec["services"]],
    run_dir=Path(spec["run_dir"]),
    log_dir=Path(spec["log_dir"]),
    console=Console(width=220, force_terminal=False),
    health_timeout_s=spec.get("health_timeout_s", 30),
    stop_timeout_s=spec.get("stop_timeout_s", 5),
    seed=spec.get("seed"),
    seed_marker=Path(spec["seed_marker"]) if spec.get("seed_marker") else None,
    seed_note="SIMULATED history (test)",
    title="test platform",
)
sys.exit(launcher.up())
