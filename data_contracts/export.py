"""Write (or check) the JSON Schema file of every contract: ``python -m data_contracts.export``.

``--check`` exits non-zero, naming the stale files, when a file differs from its model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from data_contracts import CONTRACTS

SCHEMAS = Path(__file__).with_name("schemas")


def rendered() -> dict[str, str]:
    """File name to JSON text, for every contract."""
    return {
        f"{model.__name__}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for model in CONTRACTS
    }


def stale(folder: Path = SCHEMAS) -> list[str]:
    """Files that are missing, differ from their model, or belong to no contract."""
    want = rendered()
    have = {p.name for p in folder.glob("*.json")} if folder.exists() else set()
    out = [n for n, text in want.items() if not (folder / n).exists() or (folder / n).read_text() != text]
    return sorted(out + sorted(have - want.keys()))


def write(folder: Path = SCHEMAS) -> list[str]:
    """Write every schema file; remove files of contracts that no longer exist."""
    folder.mkdir(exist_ok=True)
    want = rendered()
    for name, text in want.items():
        (folder / name).write_text(text)
    for extra in {p.name for p in folder.glob("*.json")} - want.keys():
        (folder / extra).unlink()
    return sorted(want)


def main(argv: list[str]) -> int:
    """Entry point."""
    if "--check" in argv:
        bad = stale()
        if bad:
            print("stale JSON Schema files (run `make contracts`):", ", ".join(bad))  # noqa: T201
            return 1
        return 0
    for name in write():
        print(f"wrote {SCHEMAS / name}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
