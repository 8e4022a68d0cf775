"""The page's routes: upload, what was read, mapping, Check, Send, progress, Done, Runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import jinja2
from aiohttp import BodyPartReader, web

from ..errors import BatchEngageError
from ..guesser import guess_columns
from ..job import ALREADY_ENGAGED, HIDDEN_IN_SHEET, run
from ..options import Secret
from ..reader import EXCEL_SUFFIXES, open_table
from .forms import (
    MATCHINGS,
    ROLES,
    ColumnRow,
    FormError,
    parse_mapping,
    rows_from_guess,
    rows_from_mapping,
)
from .runner import DOWNLOADS, QUEUED, SENDING, STOPPED, Runner, run_path
from .security import security_middleware
from .store import DataDir, Mapping, RunRecord, Upload, now_iso

PREVIEW_ROWS = 20
GUESS_ROWS = 50
PROBLEM_ROWS = 100
EXAMPLE_BODIES = 3
_CHUNK = 256 * 1024
_HERE = Path(__file__).parent
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    access_key: str
    api_url: str | None = None
    token: Callable[[], Secret | None] = lambda: None
    """The server's token, read afresh for each run (a fixed token file needs no restart)."""
    token_hint: str = "type the API token into the page"
    """Where the server's token comes from, for the message after a refusal."""
    rate: float = 10.0
    concurrency: int = 8
    max_upload_mb: float = 200
    public_url: str | None = None


# --- numbers for people --------------------------------------------------------------------


def count(value: Any) -> str:
    return f"{int(value):,}" if value is not None else "—"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1:
        return "less than a second"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# --- reading an upload (off the loop: a big workbook takes a while) ------------------------


@dataclass
class Preview:
    format: str
    encoding: str | None
    delimiter: str | None
    sheet: str | None
    sheets: list[str]
    headers: list[str]
    rows: list[list[str]]
    sample: list[list[str]]
    row_count: int
    own_report: bool


def read_preview(path: Path, sheet: str | None) -> Preview:
    with closing(open_table(path, sheet=sheet)) as table:
        rows: list[list[str]] = []
        for record in table.records():
            rows.append(record.cells + record.extra)
            if len(rows) >= GUESS_ROWS:
                break
        return Preview(
            format="Excel workbook" if path.suffix.lower() in EXCEL_SUFFIXES else "text",
            encoding=getattr(table, "encoding", None),
            delimiter=getattr(table, "delimiter", None),
            sheet=getattr(table, "sheet", None), sheets=list(getattr(table, "sheets", [])),
            headers=table.headers, rows=rows[:PREVIEW_ROWS], sample=rows,
            row_count=table.estimate_rows(),
            own_report=any(h.strip().casefold() == "_row" for h in table.headers),
        )


def browser_name(given: str) -> str:
    """A file name as the browser meant it: some clients %-encode it (aiohttp always,
    Chromium a quote or a line break), and Windows ones send a whole path."""
    return unquote(given).replace("\\", "/")


def attachment_name(given: str) -> str | None:
    """The name an attachment is kept under: the browser's file name, which the
    spreadsheet's attach cells refer to, when it is a plain name; None otherwise."""
    name = browser_name(given).rsplit("/", 1)[-1].strip()
    if not name or name.startswith(".") or "\0" in name or len(name.encode()) > 255:
        return None
    return name


def _shown(message: str, upload: Upload) -> str:
    """The library names the file we saved; the marketer knows it by their own name."""
    return message.replace(upload.path.name, upload.name)


# --- the application ------------------------------------------------------------------------


class Pages:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.data = DataDir(config.data_dir)
        self.runner = Runner(self.data, config.api_url, config.token)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        # Whether the page must ask for a token; the token itself is read at each run.
        self._has_token = config.token() is not None
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, auto_reload=False,
        )
        self.env.filters["count"] = count
        self.env.filters["duration"] = duration
        self.env.filters["encoding"] = encoding_name
        self.env.filters["for_the_page"] = for_the_page

    async def work(self, function: Callable[..., T], *args: Any) -> T:
        """Reading a spreadsheet and a dry run are pure CPU: in a worker thread they would
        hold the interpreter lock against the page's own thread (another tab waited up to a
        second); in a worker process the page answers at once."""
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(1, (os.cpu_count() or 2) - 1),
                mp_context=multiprocessing.get_context("spawn"))
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("error", None)
        html = self.env.get_template(name).render(server_token=self._has_token, **context)
        return web.Response(text=html, content_type="text/html", status=status)

    # --- 1. upload ------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        return self.render("home.html", runs=self._runs()[:5],
                           max_mb=self.config.max_upload_mb)

    def _refuse_upload(self, message: str, status: int = 400) -> web.Response:
        return self.render("home.html", status=status, runs=self._runs()[:5],
                           max_mb=self.config.max_upload_mb, error=message)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        limit = int(self.config.max_upload_mb * 1024 * 1024)
        too_big = (f"The file is larger than {self.config.max_upload_mb:g} MB, the largest "
                   "this server accepts (batch-engage serve --max-upload-mb); split it, or "
                   "ask whoever runs the server to raise the limit.")
        if request.content_length is not None and request.content_length > limit + _CHUNK:
            return self._refuse_upload(too_big, 413)
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError):
            return self._refuse_upload("Choose a spreadsheet to upload.")
        part = await reader.next()
        while part is not None and not (isinstance(part, BodyPartReader)
                                        and part.name == "file"):
            part = await reader.next()
        if not isinstance(part, BodyPartReader) or not part.filename:
            return self._refuse_upload("Choose a spreadsheet to upload.")
        name = browser_name(part.filename).rsplit("/", 1)[-1] or "upload"
        # Only the suffix of the browser's name is kept, so the reader can judge the kind
        # of file (and refuse an .xls with the CLI's own advice).
        suffix = Path(name).suffix.lower()
        if not re.fullmatch(r"\.[a-z0-9]{1,10}", suffix):
            suffix = ""
        upload_id, path = self.data.new_upload(suffix)
        size = 0
        with path.open("wb") as file:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > limit:  # judged while it streams: nothing bigger is ever kept
                    break
                file.write(chunk)
        if size > limit:
            path.unlink()
            path.parent.rmdir()
            return self._refuse_upload(too_big, 413)
        upload = Upload(upload_id, name, path, size, now_iso())
        try:
            preview = await self.work(read_preview, path, None)
        except BatchEngageError as e:
            path.unlink()
            path.parent.rmdir()
            return self._refuse_upload(_shown(str(e), upload))
        if preview.own_report:
            upload.origins = sorted({r.upload_id for r in self._origin_runs(preview.headers)})
        self.data.save_upload(upload)
        raise web.HTTPSeeOther(f"/uploads/{upload_id}")

    def _upload(self, request: web.Request) -> Upload:
        upload = self.data.upload(request.match_info["upload"])
        if upload is None:
            raise web.HTTPNotFound(text="No such upload; upload the file again.")
        return upload

    # --- 2-3. what was read, and the mapping ----------------------------------------------

    async def attach(self, request: web.Request) -> web.StreamResponse:
        """Files the spreadsheet's ``attach`` column names, kept beside the upload."""
        upload = self._upload(request)
        folder = self.data.attachments(upload.id)
        folder.mkdir(mode=0o700, exist_ok=True)
        limit = int(self.config.max_upload_mb * 1024 * 1024)
        used = sum(p.stat().st_size for p in folder.iterdir())
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.filename:
                continue
            name = attachment_name(part.filename)
            if name is None:
                return await self._read_page(upload, None, status=400, error=(
                    f"{part.filename!r} cannot be an attachment's name; rename the file"))
            path = folder / name
            tmp = folder / f".{name}.part"
            with tmp.open("wb") as file:
                while chunk := await part.read_chunk(_CHUNK):
                    used += len(chunk)
                    if used > limit:
                        break
                    file.write(chunk)
            if used > limit:
                tmp.unlink()
                return await self._read_page(upload, None, status=413, error=(
                    f"The attachments add up to more than {self.config.max_upload_mb:g} MB, "
                    "the most this server accepts for one upload (--max-upload-mb)."))
            tmp.replace(path)
        raise web.HTTPSeeOther(f"/uploads/{upload.id}")

    async def read(self, request: web.Request) -> web.Response:
        return await self._read_page(self._upload(request), request.query.get("sheet") or None)

    async def _read_page(self, upload: Upload, sheet: str | None, *, status: int = 200,
                         error: str | None = None) -> web.Response:
        try:
            preview = await self.work(read_preview, upload.path, sheet)
        except BatchEngageError as e:
            return self._refuse_upload(_shown(str(e), upload))
        origins = self._origin_runs(preview.headers) if preview.own_report else []
        last = self.data.last_check(upload.id)
        record = None
        if last is not None and last.sheet == preview.sheet:
            mapping = last
            columns = rows_from_mapping(preview.headers, mapping, "as in your last Check")
        elif origins:
            record = origins[0]
            # failed.csv is always a comma-separated UTF-8 file of one sheet.
            mapping = Mapping.from_json({**record.mapping.to_json(), "sheet": None})
            columns = rows_from_mapping(preview.headers, mapping, "as in the earlier run")
        else:
            guess = guess_columns(preview.headers, preview.sample)
            columns = rows_from_guess(guess)
            mapping = Mapping(workflow_id=0, matching=guess.matching,
                              phone_region=guess.phone_region, sheet=preview.sheet,
                              rate=self.config.rate, concurrency=self.config.concurrency)
        return self.render("read.html", status=status, error=error, upload=upload,
                           preview=preview, columns=columns, mapping=mapping, earlier=record,
                           attachments=self._attachments(upload), **self._form_choices())

    def _attachments(self, upload: Upload) -> list[str]:
        folder = self.data.attachments(upload.id)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def _form_choices(self) -> dict[str, Any]:
        return {"roles": ROLES, "matchings": MATCHINGS, "max_rate": self.config.rate,
                "max_concurrency": self.config.concurrency}

    def _origin_runs(self, headers: list[str]) -> list[RunRecord]:
        """The runs a fixed failed.csv may come from, newest first: those whose input had
        its columns (less the _ ones)."""
        own = [h.strip() for h in headers if not h.strip().startswith("_")]
        return [r for r in self.data.records()
                if [h.strip() for h in r.headers if not h.strip().startswith("_")] == own]

    # --- 4. Check ------------------------------------------------------------------------

    async def check(self, request: web.Request) -> web.Response:
        upload = self._upload(request)
        form = await request.post()
        sheet = str(form.get("sheet") or "") or None
        preview = await self.work(read_preview, upload.path, sheet)
        try:
            mapping = parse_mapping(form, preview.headers,  # type: ignore[arg-type]
                                    max_rate=self.config.rate,
                                    max_concurrency=self.config.concurrency)
        except FormError as e:
            return self._mapping_again(upload, preview, form, str(e))
        out = self.data.check_folder(upload.id)
        options = mapping.options(upload.path, out=out, token=None, api_url=None,
                                  attach_dir=self.data.attachments(upload.id), dry_run=True,
                                  ledger=self.data.ledger)
        try:
            summary = await self.work(run, options)
        except BatchEngageError as e:
            return self._mapping_again(upload, preview, form, _shown(str(e), upload))
        (out / "mapping.json").write_text(json.dumps(mapping.to_json()), "utf-8")
        problems, bodies = await asyncio.to_thread(
            _check_details, out, self.data.attachments(upload.id))
        engaged = summary.skipped.get(ALREADY_ENGAGED, 0)
        valid = summary.outcomes.get("valid", 0)
        return self.render(
            "check.html", upload=upload, mapping=mapping, summary=summary.to_json(),
            check_id=out.name, problems=problems, bodies=bodies, valid=valid,
            invalid=summary.outcomes.get("validation", 0),
            duplicates=summary.outcomes.get("duplicate", 0),
            hidden=summary.skipped.get(HIDDEN_IN_SHEET, 0),
            engaged=engaged, to_send=valid, can_send=self.config.api_url is not None,
            seconds=valid / mapping.rate if mapping.rate else None,
            warnings=summary.warnings,
        )

    def _mapping_again(self, upload: Upload, preview: Preview, form: Any,
                       message: str) -> web.Response:
        columns = [ColumnRow(i, h.strip(), str(form.get(f"role_{i}", "ignore")),
                             str(form.get(f"key_{i}", "")), "")
                   for i, h in enumerate(preview.headers) if f"role_{i}" in form]
        try:
            mapping = parse_mapping(form, preview.headers, max_rate=self.config.rate,
                                    max_concurrency=self.config.concurrency)
        except FormError:
            mapping = Mapping(workflow_id=0, rate=self.config.rate,
                              concurrency=self.config.concurrency)
        return self.render("read.html", status=400, upload=upload, preview=preview,
                           columns=columns, mapping=mapping, earlier=None, error=message,
                           attachments=self._attachments(upload), **self._form_choices())

    # --- 5. Send and Test send -----------------------------------------------------------

    async def send(self, request: web.Request) -> web.StreamResponse:
        upload = self._upload(request)
        check = request.match_info["check"]
        form = await request.post()
        folder = self.data.root / "uploads" / upload.id / "checks" / check
        if not check.isdigit() or not (folder / "mapping.json").is_file():
            raise web.HTTPNotFound(text="No such check; press Check again.")
        mapping = Mapping.from_json(json.loads((folder / "mapping.json").read_text("utf-8")))
        row_limit = None
        if form.get("kind") == "test":
            text = str(form.get("rows", "5")).strip()
            if not text.isdigit() or int(text) < 1:
                raise web.HTTPBadRequest(text="Rows to test must be a whole number above 0.")
            row_limit = int(text)
        token = self.runner.token(str(form.get("token", "")).strip() or None)
        if token is None:
            raise web.HTTPBadRequest(text="Type the API token: this server has none.")
        headers = (await self.work(read_preview, upload.path, mapping.sheet)).headers
        record = RunRecord(
            id=self.data.new_run_id(), upload_id=upload.id, input_name=upload.name,
            created_at=now_iso(), mapping=mapping, headers=headers, row_limit=row_limit)
        self.data.save_record(record)
        self.runner.start(record, token, resume=False)
        raise web.HTTPSeeOther(f"/runs/{record.id}")

    # --- 6-7. progress and Done ----------------------------------------------------------

    def _record(self, request: web.Request) -> RunRecord:
        record = self.data.record(request.match_info["run"])
        if record is None:
            raise web.HTTPNotFound(text="No such run.")
        return record

    def _state(self, record: RunRecord, *, live_only: bool = False) -> dict[str, Any]:
        """What a tab shows of a run, live or on disk; also what server-sent events carry
        (``live_only``: a sending run's summary.json is not read, its events say more)."""
        live = self.runner.live.get(record.id)
        if live_only and live is not None and live.status in (QUEUED, SENDING):
            status, summary = live.status, None
        else:
            status, summary = self.runner.status(record.id)
        event = live.event if live is not None else None
        state: dict[str, Any] = {
            "id": record.id, "status": status, "summary": summary,
            "queue_position": self.runner.queue_position(live) if live else 0,
            "error": live.error if live else None,
            "stopping": live.control.reason if live and status == SENDING else None,
            "progress": None,
        }
        if event is not None:
            total = event.total
            state["progress"] = {
                "total": total, "done": event.done, "ok": event.ok, "failed": event.failed,
                "skipped": event.skipped, "requests": event.requests, "retries": event.retries,
                "rate": event.rows_per_second, "seconds_left": event.seconds_left,
                "percent": round(100 * event.done / total) if total else None,
                "text": {
                    "done": f"{count(event.done)} of {count(total)} rows" if total is not None
                    else f"{count(event.done)} rows",
                    "ok": count(event.ok), "failed": count(event.failed),
                    "rate": f"{event.rows_per_second:,.1f}/s" if event.rows_per_second
                    is not None else "—",
                    "left": duration(event.seconds_left), "retries": count(event.retries),
                },
                "errors": [{"error": e.error, "count": count(e.count), "text": e.text}
                           for e in event.errors],
            }
        return state

    async def run_page(self, request: web.Request) -> web.Response:
        record = self._record(request)
        state = self._state(record)
        folder = self.data.run_folder(record.id)
        downloads = [name for name in DOWNLOADS if (folder / name).is_file()]
        return self.render("run.html", record=record, state=state, downloads=downloads,
                           refused=_refused(state["summary"]), token_hint=self.config.token_hint,
                           attachments=self.data.attachments(record.upload_id))

    async def events(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        while True:
            live = self.runner.live.get(record.id)
            if live is None:  # the run is over: the tab reloads to show Done
                state = json.dumps(self._state(record))
                await response.write(f"data: {state}\n\n".encode())
                break
            changed = live.changed
            if live.message is None:
                state = json.dumps(self._state(record, live_only=True))
                live.message = f"data: {state}\n\n".encode()
            await response.write(live.message)
            try:
                await asyncio.wait_for(changed.wait(), timeout=15)
            except TimeoutError:
                await response.write(b": still here\n\n")
        return response

    async def stop(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        self.runner.stop(record.id)
        raise web.HTTPSeeOther(f"/runs/{record.id}")

    async def resume(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        form = await request.post()
        if self.runner.status(record.id)[0] != STOPPED:
            raise web.HTTPSeeOther(f"/runs/{record.id}")
        token = self.runner.token(str(form.get("token", "")).strip() or None)
        if token is None:
            raise web.HTTPBadRequest(text="Type the API token: this server has none.")
        self.runner.start(record, token, resume=True)
        raise web.HTTPSeeOther(f"/runs/{record.id}")

    async def check_failed(self, request: web.Request) -> web.StreamResponse:
        """A Check's problem rows, to fix before anything is sent."""
        upload = self._upload(request)
        check = request.match_info["check"]
        path = self.data.root / "uploads" / upload.id / "checks" / check / "failed.csv"
        if not check.isdigit() or not path.is_file():
            raise web.HTTPNotFound(text="No such check; press Check again.")
        return web.FileResponse(path, headers={
            "Content-Disposition": 'attachment; filename="failed.csv"'})

    async def download(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        path = run_path(self.data, record.id, request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="No such file in this run's folder.")
        return web.FileResponse(path, headers={
            "Content-Disposition": f'attachment; filename="{path.name}"'})

    # --- 8. Runs -------------------------------------------------------------------------

    def _runs(self) -> list[dict[str, Any]]:
        runs = []
        for record in self.data.records():
            status, summary = self.runner.status(record.id)
            runs.append({"record": record, "status": status, "summary": summary})
        return runs

    async def runs(self, request: web.Request) -> web.Response:
        return self.render("runs.html", runs=self._runs())

    async def api_runs(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"id": r["record"].id, "status": r["status"], "summary": r["summary"]}
            for r in self._runs()])

    async def api_run(self, request: web.Request) -> web.Response:
        record = self._record(request)
        status, summary = self.runner.status(record.id)
        return web.json_response({"id": record.id, "status": status, "summary": summary})


def _refused(summary: dict[str, Any] | None) -> str:
    """Why the API refused the token (or the account's access), when that stopped the run:
    the API's words only; the library's advice after them is for the command line."""
    errors = (summary or {}).get("errors") or {}
    stopped = (summary or {}).get("stopped") or ""
    for code in ("401", "403"):
        if f"error {code}" in stopped or f"api_{code}" in errors:
            found = re.search(r"\((error \d+[^)]*)\)", stopped)
            return found.group(1) if found else f"error {code}"
    return ""


# The library's advice names command-line options and folders; the page has neither.
_CLI_ADVICE = (
    ("; pass --allow-duplicates to send every row", ""),
    ("or pass --attach-dir with the folder that holds it",
     "or add the file under Attachment files"),
    ("move the file into that folder", "name the file alone, without a folder"),
)


def for_the_page(text: str, attachments: Path | None = None) -> str:
    if attachments is not None:
        text = text.replace(str(attachments.resolve()), "of this upload")
    for advice, instead in _CLI_ADVICE:
        text = text.replace(advice, instead)
    return text


_ENCODINGS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8 (with BOM)",
              "cp1251": "Windows-1251 (Cyrillic)", "cp1252": "Windows-1252 (Western)",
              "utf-16": "UTF-16", "utf-16-le": "UTF-16", "utf-16-be": "UTF-16"}


def encoding_name(encoding: str) -> str:
    return _ENCODINGS.get(encoding.lower(), encoding)


def _check_details(out: Path, attachments: Path) -> tuple[list[dict[str, str]], list[str]]:
    problems = []
    with (out / "failed.csv").open(encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file):
            problems.append({"row": row["_row"], "error": row["_error"],
                             "text": for_the_page(row["_error_text"], attachments)})
            if len(problems) >= PROBLEM_ROWS:
                break
    bodies = []
    with (out / "requests.jsonl").open(encoding="utf-8") as file:
        for line in file:
            bodies.append(json.dumps(json.loads(line)["body"], ensure_ascii=False, indent=2))
            if len(bodies) >= EXAMPLE_BODIES:
                break
    return problems, bodies


PAGES = web.AppKey("pages", Pages)


def make_app(config: ServeConfig) -> web.Application:
    pages = Pages(config)
    app = web.Application(
        middlewares=[security_middleware(config.access_key, config.public_url)],
        # The upload handler streams and enforces --max-upload-mb itself; this bounds the
        # small forms.
        client_max_size=1024 * 1024,
    )
    app[PAGES] = pages
    app.router.add_get("/", pages.home)
    app.router.add_post("/upload", pages.upload)
    app.router.add_get("/uploads/{upload}", pages.read)
    app.router.add_post("/uploads/{upload}/attachments", pages.attach)
    app.router.add_post("/uploads/{upload}/check", pages.check)
    app.router.add_post("/uploads/{upload}/checks/{check}/send", pages.send)
    app.router.add_get("/uploads/{upload}/checks/{check}/failed.csv", pages.check_failed)
    app.router.add_get("/runs", pages.runs)
    app.router.add_get("/runs/{run}", pages.run_page)
    app.router.add_get("/runs/{run}/events", pages.events)
    app.router.add_post("/runs/{run}/stop", pages.stop)
    app.router.add_post("/runs/{run}/resume", pages.resume)
    app.router.add_get("/runs/{run}/files/{name}", pages.download)
    app.router.add_get("/api/runs", pages.api_runs)
    app.router.add_get("/api/runs/{run}", pages.api_run)
    app.router.add_static("/static", _HERE / "static")

    async def on_shutdown(_app: web.Application) -> None:
        await pages.runner.shutdown()
        pages.close()

    app.on_shutdown.append(on_shutdown)
    return app

