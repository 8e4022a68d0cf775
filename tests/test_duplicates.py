"""The duplicate check in bounded memory: the same answers as a dictionary of every row."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from batch_engage import duplicates
from batch_engage.duplicates import SPILL_NAME, FirstRows
from batch_engage.job import run
from batch_engage.options import RunOptions


def keys_with_repeats(count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    keys: list[str] = []
    for i in range(count):
        # About one row in five repeats an earlier one, near or far.
        keys.append(rnd.choice(keys) if keys and rnd.random() < 0.2 else f"p{i}@example.com")
    return keys


def first_rows(index: FirstRows, keys: list[str], *, bound: int | None = None) -> list[int]:
    answers = []
    for row, key in enumerate(keys, start=2):
        answers.append(index.first(key, row))
        if bound is not None:
            assert index.in_memory <= bound
    return answers


def expected(keys: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    return [seen.setdefault(key, row) for row, key in enumerate(keys, start=2)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_answers_match_a_dictionary_of_every_row_across_many_writes(tmp_path: Path,
                                                                    seed: int) -> None:
    keys = keys_with_repeats(3000, seed)
    index = FirstRows(tmp_path, memory_keys=50, bitmap_bits=2**12)
    try:
        assert first_rows(index, keys, bound=100) == expected(keys)
        assert (tmp_path / SPILL_NAME).exists()
        assert index.file_reads > 0  # repeats of written rows were looked up in the file
    finally:
        index.close()
    assert not (tmp_path / SPILL_NAME).exists()


def test_a_hash_shared_by_every_key_never_makes_a_false_duplicate(tmp_path: Path) -> None:
    # Every key sets and tests the same two bits: after the first write, every new key is
    # a "maybe" of the bitmap, and only the file's exact comparison may say no.
    keys = [f"k{i}" for i in range(400)] + ["k3", "k399", "k200"]
    index = FirstRows(tmp_path, memory_keys=16, bitmap_bits=64, hash_of=lambda _key: 5)
    try:
        answers = first_rows(index, keys)
    finally:
        index.close()
    assert answers[:400] == list(range(2, 402))
    assert answers[400:] == [5, 401, 202]
    assert index.file_reads >= 400 - 16


def test_without_a_folder_the_file_is_a_temporary_one(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    keys = keys_with_repeats(500, 4)
    index = FirstRows(None, memory_keys=20)
    try:
        assert first_rows(index, keys) == expected(keys)
        assert list(tmp_path.iterdir()) == []  # SQLite's own, deleted as it was opened
    finally:
        index.close()


def test_a_temporary_file_that_cannot_be_written_says_so(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr("batch_engage.duplicates.orjson.dumps", lambda _part: b"{not json")
    index = FirstRows(None, memory_keys=1)
    with pytest.raises(OSError, match="could not write its file in the temporary folder"):
        first_rows(index, ["a", "b", "c"])
    index.close()


def test_a_file_left_by_a_killed_run_is_replaced(tmp_path: Path) -> None:
    (tmp_path / SPILL_NAME).write_bytes(b"not an SQLite file at all")
    index = FirstRows(tmp_path, memory_keys=3)
    try:
        assert first_rows(index, ["a", "b", "c", "d", "a", "e"]) == [2, 3, 4, 5, 2, 7]
    finally:
        index.close()


def test_a_file_left_by_a_killed_run_goes_at_the_end_even_without_a_write(
        tmp_path: Path) -> None:
    (tmp_path / SPILL_NAME).write_bytes(b"a killed run's")
    index = FirstRows(tmp_path, memory_keys=10)
    assert first_rows(index, ["a", "b", "a"]) == [2, 3, 2]
    index.close()
    assert not (tmp_path / SPILL_NAME).exists()


def test_a_write_that_fails_keeps_the_answers_right_then_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batch_engage.duplicates.orjson.dumps", lambda _part: b"{not json")
    index = FirstRows(tmp_path, memory_keys=3)
    try:
        assert first_rows(index, ["a", "b", "c", "d", "a", "e", "b"]) == [2, 3, 4, 5, 2, 7, 3]
        with pytest.raises(OSError, match=r"could not write its file in .*free some disk "
                                          r"space there, or pass --allow-duplicates"):
            first_rows(index, ["f", "g"])
    finally:
        index.close()


def test_a_folder_it_cannot_write_in_is_named(tmp_path: Path) -> None:
    index = FirstRows(tmp_path / "gone", memory_keys=2)
    with pytest.raises(OSError, match=r"could not write its file in .*gone"):
        first_rows(index, ["a", "b", "c"])
    index.close()


def test_a_run_reports_repeats_of_rows_written_out_and_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duplicates, "MEMORY_KEYS", 5)
    keys = keys_with_repeats(300, 5)
    source = tmp_path / "in.csv"
    source.write_text("email\n" + "".join(f"{k}\n" for k in keys), "utf-8")
    out = tmp_path / "out"
    summary = run(RunOptions(input=source, workflow_id=1, dry_run=True, out=out))
    first = expected(keys)
    repeats = {row: f for row, f in enumerate(first, start=2) if f != row}
    assert summary.outcomes["valid"] == len(keys) - len(repeats)
    with (out / "failed.csv").open(encoding="utf-8") as f:
        failed = list(csv.DictReader(f))
    assert {int(r["_row"]): r["_error_text"] for r in failed} == {
        row: (f"row {row}, column email: '{keys[row - 2]}' repeats row {f}, so it was not "
              "sent again; pass --allow-duplicates to send every row")
        for row, f in repeats.items()}
    assert not (out / SPILL_NAME).exists()
