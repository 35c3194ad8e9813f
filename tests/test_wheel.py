"""The built wheel is what a deployable installs: it carries feature_repo/ (so get_store() finds the
Feast definitions) and leaves the stand-in servers (oo.fakes) out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
from pathlib import Path
import oo.feature_store as fs
from oo.settings import Settings
unpacked = Path(sys.argv[1]).resolve()
assert Path(fs.__file__).resolve().is_relative_to(unpacked), fs.__file__
assert fs.REPO_PATH.resolve() == unpacked / "feature_repo", fs.REPO_PATH
store = fs.get_store(Settings())
names = fs.apply(store)
assert "tip_policy_v1" in names, names
assert store.get_feature_service("tip_policy_v1").name == "tip_policy_v1"
try:
    import oo.fakes.todoist
except ModuleNotFoundError:
    print("no fakes")
print("store ok", len(names))
"""


@pytest.mark.slow
def test_the_wheel_ships_feature_repo_and_no_fakes_and_get_store_works_from_it(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    out = tmp_path / "dist"
    build = subprocess.run(
        [uv, "build", "--wheel", "--offline", "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("oo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "feature_repo/feature_store.yaml" in names and "feature_repo/features.py" in names
    assert not [n for n in names if n.startswith("oo/fakes/")]
    assert "serving/__init__.py" in names and "app_api/__init__.py" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what an installer puts in site-packages
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # ahead of the checkout's editable install
        "OO_PATHS__VAR_DIR": str(tmp_path / "var"),
    }
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(site)],
        cwd=tmp_path,  # not the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "no fakes" in probe.stdout and "store ok" in probe.stdout
