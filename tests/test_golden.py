"""Every sample's dry-run requests.jsonl equals its reviewed, committed expected file.

After a deliberate change, regenerate with ``UPDATE_GOLDEN=1 make test`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batch_engage.cli import _demo_inputs

from .conftest import SAMPLES, CliRun, read_requests, read_summary

GOLDEN = Path(__file__).parent / "golden"
CASES = _demo_inputs(SAMPLES)


def test_every_sample_has_a_golden_file() -> None:
    assert {data.stem for data, _ in CASES} == {
        "attachments", "clients_cp1251", "customers", "phones",
    }


@pytest.mark.parametrize(("data", "config"), CASES, ids=[d.stem for d, _ in CASES])
def test_sample_requests_match_golden(
    invoke: CliRun, tmp_path: Path, data: Path, config: Path
) -> None:
    out = tmp_path / "out"
    result = invoke("run", data, "--config", config, "--dry-run", "--out", out)
    assert result.exit_code == 1, result.output  # every sample has invalid rows on purpose
    actual = (out / "requests.jsonl").read_bytes()
    golden = GOLDEN / f"{data.stem}.requests.jsonl"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(actual)
    assert actual == golden.read_bytes()


def test_xlsx_phones_are_e164_and_ids_stay_text(invoke: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    invoke("run", SAMPLES / "phones.xlsx", "--config", SAMPLES / "phones.toml", "--dry-run",
           "--out", out)
    bodies = [r["body"] for r in read_requests(out)]
    assert [b["phone"] for b in bodies] == [
        "+79001234567", "+79161234567", "+79037654321", "+79261112233",
    ]
    assert bodies[0]["content"]["customer_id"] == "03999315"
    assert bodies[0]["content"]["birthday"] == "1990-01-15"
    assert bodies[0]["content"]["last_order"] == "2026-11-20T08:30:00"
    assert bodies[0]["content"]["visited_at"] == "15"
    assert read_summary(out)["errors"] == {"missing_value": 1, "invalid_phone": 1}


def test_cp1251_sample_needs_only_config(invoke: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("run", SAMPLES / "clients_cp1251.csv", "--config",
                    SAMPLES / "clients_cp1251.toml", "--dry-run", "--out", out)
    assert "cp1251, semicolon-separated" in result.output
    first = read_requests(out)[0]["body"]
    assert first["email"] == "ivan.petrov@yandex.ru"
    assert first["content"] == {"first_name": "Иван", "city": "Москва",
                                "promo_code": "ЗИМА-2026", "birthday": "1985-03-14"}
    failed = (out / "failed.csv").read_bytes()
    assert failed.startswith(b"\xef\xbb\xbf\xd0\xad")  # BOM, then 'Э' in UTF-8
    assert "Электронная почта,Имя" in failed.decode("utf-8-sig")
