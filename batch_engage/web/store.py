"""The data folder: uploads, the page's runs (each a run folder of the library's), mappings.

Layout under ``--data-dir``::

    uploads/<upload id>/input.<suffix>   the uploaded bytes, under a name of our own
    uploads/<upload id>/upload.json      the name the browser gave, size, time
    uploads/<upload id>/checks/<n>/      the dry runs of the Check step
    runs/<run id>/                       the run folder: reports, journal, mapping.toml
    pages/<run id>.json                  what the page knows of a run: its upload, mapping

Names the browser sends are only ever shown, never used as paths: ids are made here and
checked against a strict pattern before they touch the file system.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..options import Matching, RunOptions, Secret, toml_value

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Mapping:
    """What the page's mapping form says: the options that decide each row's request."""

    workflow_id: int
    matching: Matching = Matching.EMAIL
    columns: dict[str, str] = field(default_factory=dict)
    """Header -> the name batch-engage understands (``email``, ``content.city``...)."""
    field_name: str | None = None
    resource_id: int | None = None
    phone_region: str | None = None
    content: tuple[tuple[str, str], ...] = ()
    sheet: str | None = None
    rate: float = 10.0
    concurrency: int = 8

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["matching"] = self.matching.value
        data["content"] = [list(pair) for pair in self.content]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mapping:
        return cls(**{**data, "matching": Matching(data["matching"]),
                      "content": tuple((str(k), str(v)) for k, v in data["content"])})

    def options(self, input_path: Path, *, out: Path, token: Secret | None,
                api_url: str | None, attach_dir: Path, dry_run: bool = False,
                resume: bool = False, row_limit: int | None = None,
                ledger: Path) -> RunOptions:
        return RunOptions(
            input=input_path, workflow_id=self.workflow_id, api_url=api_url, token=token,
            matching=self.matching, field_name=self.field_name,
            resource_id=self.resource_id, phone_region=self.phone_region,
            content=self.content, sheet=self.sheet, columns=self.columns,
            attach_dir=attach_dir,
            rate_per_second=self.rate, max_in_flight=self.concurrency, out=out,
            dry_run=dry_run, quiet=True, resume=resume, row_limit=row_limit, ledger=ledger,
        )

    def toml(self, input_name: str) -> str:
        """The mapping as a ``--config`` file, so a nightly ``run`` sends the same way."""
        lines = [
            f"# The mapping of {input_name}, from batch-engage serve.",
            f"# batch-engage run {input_name} --config mapping.toml",
            f"workflow_id = {self.workflow_id}",
            f"matching = {toml_value(self.matching.value)}",
        ]
        for key, value in (("field_name", self.field_name), ("phone_region", self.phone_region),
                           ("sheet", self.sheet)):
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        if self.resource_id is not None:
            lines.append(f"resource_id = {self.resource_id}")
        if self.content:
            pairs = ", ".join(toml_value(f"{k}={v}") for k, v in self.content)
            lines.append(f"content = [{pairs}]")
        lines += [f"rate = {self.rate:g}", f"concurrency = {self.concurrency}"]
        if self.columns:
            lines += ["", "[columns]"]
            lines += [f"{toml_value(h)} = {toml_value(n)}" for h, n in self.columns.items()]
        return "\n".join(lines) + "\n"


@dataclass
class Upload:
    id: str
    name: str
    """The file name the browser gave: shown, never used as a path."""
    path: Path
    size: int
    uploaded_at: str
    origins: list[str] = field(default_factory=list)
    """For a fixed failed.csv: the uploads whose runs it may have come from. Its Send skips
    whom those runs engaged (a duplicate row left in the file is not engaged again)."""


@dataclass
class RunRecord:
    """What the page knows of one of its runs, beyond the run folder."""

    id: str
    upload_id: str
    input_name: str
    created_at: str
    mapping: Mapping
    headers: list[str]
    row_limit: int | None = None
    """A test send of the first N valid rows."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mapping": self.mapping.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data.pop("engaged_in", None)  # kept by earlier versions; the ledger does its work now
        return cls(**{**data, "mapping": Mapping.from_json(data["mapping"])})


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ledger = root / "ledger.sqlite"
        """Whom the page's runs engaged: Check counts them, Send skips them."""
        for sub in ("uploads", "runs", "pages"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Only the user who started the server may read what marketers upload.
        for folder in (root, root / "uploads", root / "runs", root / "pages"):
            folder.chmod(0o700)

    # --- uploads ------------------------------------------------------------------------------

    def new_upload(self, suffix: str) -> tuple[str, Path]:
        upload_id = secrets.token_hex(16)
        folder = self.root / "uploads" / upload_id
        folder.mkdir(mode=0o700)
        return upload_id, folder / f"input{suffix}"

    def save_upload(self, upload: Upload) -> None:
        meta = {"name": upload.name, "file": upload.path.name, "size": upload.size,
                "uploaded_at": upload.uploaded_at, "origins": upload.origins}
        _write_json(upload.path.parent / "upload.json", meta)

    def upload(self, upload_id: str) -> Upload | None:
        if not UPLOAD_ID.fullmatch(upload_id):
            return None
        folder = self.root / "uploads" / upload_id
        try:
            meta = json.loads((folder / "upload.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return Upload(upload_id, meta["name"], folder / meta["file"], meta["size"],
                      meta["uploaded_at"], meta["origins"])

    def last_check(self, upload_id: str) -> Mapping | None:
        """The mapping of the upload's latest Check, so going back keeps what was typed."""
        checks = self.root / "uploads" / upload_id / "checks"
        numbers = sorted((int(p.name) for p in checks.glob("*") if p.name.isdigit()),
                         reverse=True) if checks.is_dir() else []
        for number in numbers:
            try:
                data = json.loads((checks / str(number) / "mapping.json").read_text("utf-8"))
            except (OSError, ValueError):
                continue
            return Mapping.from_json(data)
        return None

    def attachments(self, upload_id: str) -> Path:
        """Where the files an upload's ``attach`` column names are kept (its attach_dir)."""
        return self.root / "uploads" / upload_id / "files"

    def check_folder(self, upload_id: str) -> Path:
        """A fresh folder for one Check (dry run) of an upload."""
        checks = self.root / "uploads" / upload_id / "checks"
        checks.mkdir(mode=0o700, exist_ok=True)
        number = 1 + max((int(p.name) for p in checks.iterdir() if p.name.isdigit()), default=0)
        return checks / str(number)

    # --- runs ---------------------------------------------------------------------------------

    def new_run_id(self) -> str:
        return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"

    def run_folder(self, run_id: str) -> Path:
        assert RUN_ID.fullmatch(run_id)
        return self.root / "runs" / run_id

    def save_record(self, record: RunRecord) -> None:
        _write_json(self.root / "pages" / f"{record.id}.json", record.to_json())

    def record(self, run_id: str) -> RunRecord | None:
        if not RUN_ID.fullmatch(run_id):
            return None
        try:
            data = json.loads((self.root / "pages" / f"{run_id}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return RunRecord.from_json(data)

    def records(self) -> list[RunRecord]:
        """Every run of the page, newest first."""
        found = [self.record(p.stem) for p in (self.root / "pages").glob("*.json")]
        return sorted((r for r in found if r is not None), key=lambda r: r.id, reverse=True)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), "utf-8")
    os.replace(tmp, path)


def read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((folder / "summary.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data
