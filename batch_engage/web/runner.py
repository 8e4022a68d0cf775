"""The page's runs while they live: a queue per API token, live progress, stop and resume.

A run is the library's ``run_async`` on the server's own event loop. Runs for one token
send one at a time, as the API's limit is per token; later ones wait, visibly, in order.
Progress events are kept per run and handed to every tab that watches (server-sent
events), so a tab costs the run nothing: the run tells one object, tabs read it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BatchEngageError
from ..job import RunControl, run_async
from ..journal import JOURNAL_NAME
from ..options import Secret
from ..progress import ProgressEvent
from .store import DataDir, RunRecord, read_summary

log = logging.getLogger(__name__)

QUEUED = "queued"
SENDING = "sending"
STOPPED = "stopped"
FINISHED = "finished"


@dataclass
class LiveRun:
    record: RunRecord
    token_key: str
    control: RunControl = field(default_factory=RunControl)
    status: str = QUEUED
    event: ProgressEvent | None = None
    error: str | None = None
    """A run that could not start (the input file changed...): what went wrong."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    message: bytes | None = None
    """The server-sent event every tab gets for the current state: made once, not per tab."""

    def publish(self) -> None:
        """Wake every tab that watches; each makes a new wait after reading."""
        self.message = None
        self.changed.set()
        self.changed = asyncio.Event()


class Runner:
    def __init__(self, data: DataDir, api_url: str | None,
                 token_source: Callable[[], Secret | None]) -> None:
        self.data = data
        self.api_url = api_url
        self._token_source = token_source
        self.live: dict[str, LiveRun] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._queues: dict[str, list[str]] = {}

    def token(self, typed: str | None) -> Secret | None:
        """The token typed into the page for this run, else the server's own."""
        return Secret(typed) if typed else self._token_source()

    @staticmethod
    def _token_key(token: Secret) -> str:
        # Only to group runs by token in memory; never stored or shown.
        return hashlib.sha256(token.reveal().encode()).hexdigest()

    def start(self, record: RunRecord, token: Secret, *, resume: bool) -> LiveRun:
        live = LiveRun(record, self._token_key(token))
        self.live[record.id] = live
        self._queues.setdefault(live.token_key, []).append(record.id)
        live.task = asyncio.create_task(self._go(live, token, resume))
        return live

    def queue_position(self, live: LiveRun) -> int:
        """1 for the next run to send, 2 for the one after..."""
        queue = self._queues.get(live.token_key, [])
        return queue.index(live.record.id) + 1 if live.record.id in queue else 0

    async def _go(self, live: LiveRun, token: Secret, resume: bool) -> None:
        record = live.record
        lock = self._locks.setdefault(live.token_key, asyncio.Lock())
        queue = self._queues[live.token_key]
        try:
            async with lock:
                queue.remove(record.id)
                for other in queue:  # every later run moved up one place
                    self.live[other].publish()
                if live.control.reason is not None:  # stopped while it waited
                    return
                live.status = SENDING
                live.publish()
                await self._send(live, token, resume)
        finally:
            if record.id in queue:
                queue.remove(record.id)
            live.status = self.status_on_disk(record.id)
            live.publish()
            del self.live[record.id]

    async def _send(self, live: LiveRun, token: Secret, resume: bool) -> None:
        record = live.record
        upload = self.data.upload(record.upload_id)
        out = self.data.run_folder(record.id)
        if upload is None:
            live.error = "the uploaded file of this run is gone from the data folder"
            return
        resume = resume and (out / JOURNAL_NAME).exists()

        def on_progress(event: ProgressEvent) -> None:
            if live.event is None:  # the run has its folder now: the mapping goes in it
                write_mapping()
            live.event = event
            live.publish()

        def write_mapping() -> None:
            (out / "mapping.toml").write_text(record.mapping.toml(record.input_name), "utf-8")

        try:
            options = record.mapping.options(
                upload.path, out=out, token=token, api_url=self.api_url, resume=resume,
                attach_dir=self.data.attachments(upload.id),
                row_limit=record.row_limit, ledger=self.data.ledger)
            await run_async(options, on_progress=on_progress, control=live.control)
        except BatchEngageError as e:
            live.error = str(e)
        except Exception:  # a bug: keep the server up for the other runs, and say so
            log.exception("run %s crashed", record.id)
            live.error = "an unexpected error stopped the run; the server's log has details"
        finally:
            if out.exists():  # not when the run was refused before it began
                write_mapping()

    def stop(self, run_id: str) -> bool:
        live = self.live.get(run_id)
        if live is None:
            return False
        live.control.stop("stopped from the page")
        live.publish()
        return True

    def status_on_disk(self, run_id: str) -> str:
        return _ended(read_summary(self.data.run_folder(run_id)))

    def status(self, run_id: str) -> tuple[str, dict[str, Any] | None]:
        """``queued``, ``sending``, ``stopped`` or ``finished``, and the summary so far."""
        live = self.live.get(run_id)
        if live is not None and live.status == QUEUED:
            return QUEUED, None
        summary = read_summary(self.data.run_folder(run_id))
        if live is not None and live.status == SENDING:
            return SENDING, summary
        return _ended(summary), summary

    async def shutdown(self) -> None:
        """Server stopping: stop every run as Ctrl-C would, so each can be resumed."""
        for live in list(self.live.values()):
            live.control.stop("the server stopped")
        tasks = [live.task for live in self.live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks)


def _ended(summary: dict[str, Any] | None) -> str:
    """A run no task is sending: finished, or stopped (Stop, a refusal, a kill) for Resume."""
    if summary and summary.get("finished_at") and summary.get("stopped") is None:
        return FINISHED
    return STOPPED


def run_path(data: DataDir, run_id: str, name: str) -> Path | None:
    """A download from the run's own folder, or None: only these names, nothing else."""
    if name not in DOWNLOADS:
        return None
    path = data.run_folder(run_id) / name
    return path if path.is_file() else None


DOWNLOADS = ("success.csv", "failed.csv", "failed.xlsx", "skipped.csv", "summary.json",
             "mapping.toml")
