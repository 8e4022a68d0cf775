from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batch_engage.cli import cli

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"

CliRun = Callable[..., Result]


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> CliRun:
    """Run the CLI in-process; stdout and stderr are kept apart."""
    monkeypatch.delenv("BATCH_ENGAGE_TOKEN", raising=False)
    monkeypatch.delenv("BATCH_ENGAGE_API_URL", raising=False)

    def _invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)

    return _invoke


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read_requests(out: Path) -> list[dict[str, Any]]:
    lines = (out / "requests.jsonl").read_text("utf-8").split("\n")[:-1]
    return [json.loads(line) for line in lines]


def read_summary(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "summary.json").read_text("utf-8"))
    return data


MOCK_TOKEN = "mock-token-4f1c9a"


def read_csv(path: Path) -> list[dict[str, str]]:
    """A report as rows of dicts (the BOM dropped)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def token_env(url: str, token: str = MOCK_TOKEN) -> dict[str, str]:
    return {"BATCH_ENGAGE_API_URL": url, "BATCH_ENGAGE_TOKEN": token}
