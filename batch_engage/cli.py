"""The command line: the only module that knows about click, exit codes and the terminal."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import secrets
import shlex
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from . import __version__
from . import ledger as ledger_file
from .errors import BatchEngageError
from .job import run as run_job
from .journal import stored_options
from .mock_server import (
    DEFAULT_TOKEN,
    UNKNOWN_PROFILE_ERROR,
    MockConfig,
    MockServer,
    serve,
    serve_in_thread,
)
from .options import ConfigFile, Matching, RunOptions, Secret, load_config, toml_value
from .reader import DELIMITER_NAMES
from .reporter import Summary
from .status import ExitStatus

if TYPE_CHECKING:  # the guesser (and phonenumbers) only for init-config
    from .guesser import Guess, Sample

F = TypeVar("F", bound=Callable[..., Any])
TOKEN_ENV = "BATCH_ENGAGE_TOKEN"
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# --delimiter takes a character or its name, as the summary prints it ("semicolon").
_DELIMITERS_BY_NAME = {name: d for d, name in DELIMITER_NAMES.items()} | {"\\t": "\t"}


class CliError(click.ClickException):
    """Bad options, config or input: nothing was sent."""

    exit_code = ExitStatus.USAGE_OR_INPUT_ERROR


class CrashError(click.ClickException):
    """Something nobody planned for: stop, and say how to see more."""

    exit_code = ExitStatus.STOPPED


@contextmanager
def exit_statuses(verbose: bool) -> Iterator[None]:
    """The one place where library exceptions become messages and exit codes."""
    try:
        yield
    except click.ClickException:
        raise
    except BatchEngageError as e:
        # -v shows where the error came from; the exit code stays the one a scheduler reads.
        if verbose:
            click.echo(traceback.format_exc(), err=True, nl=False)
        raise CliError(str(e)) from None
    except Exception as e:
        if verbose:
            click.echo(traceback.format_exc(), err=True, nl=False)
        raise CrashError(
            f"unexpected error: {type(e).__name__}: {e}"
            + ("" if verbose else
               "\nRun the same command with -v to see the traceback, and report it.")
        ) from None


def _load_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """Eager: the file's options become defaults, below the command line and environment."""
    if value is None:
        return None
    known = frozenset(p.name for p in ctx.command.params if p.name and p.name != "config")
    try:
        config = load_config(value, known)
    except BatchEngageError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=_param) from None
    options = dict(config.options)
    if isinstance(options.get("content"), dict):  # a [content] table instead of KEY=VALUE items
        options["content"] = [f"{k}={v}" for k, v in options["content"].items()]
    ctx.default_map = {**(ctx.default_map or {}), **options}
    ctx.meta["batch_engage.config"] = config
    return value


def _parse_content(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE; write e.g. --content promo_code=SPRING", param=param
            )
        pairs.append((key.strip(), value))
    return tuple(pairs)


def _parse_region(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    if value is None:
        return None
    import phonenumbers  # noqa: PLC0415  (as in the mapper: only where phones are)

    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise click.BadParameter(
            f"{value!r} is not a two-letter country code; write e.g. RU, DE or US", param=param
        )
    return region


def _parse_delimiter(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    if value is None:
        return None
    delimiter = _DELIMITERS_BY_NAME.get(value.lower(), value)
    if len(delimiter) != 1:
        raise click.BadParameter(
            f"{value!r} is not one character; write e.g. ';', '|', tab or comma", param=param
        )
    return delimiter


def read_token(token_file: Path | None, warn: Callable[[str], None]) -> Secret | None:
    """--token-file wins over BATCH_ENGAGE_TOKEN; the value is never echoed."""
    if token_file is None:
        value = os.environ.get(TOKEN_ENV, "").strip()
        return Secret(value) if value else None
    try:
        mode = token_file.stat().st_mode
        text = token_file.read_text("utf-8-sig").strip()
    except OSError as e:
        raise CliError(
            f"cannot read --token-file {token_file}: {e.strerror or e}",
        ) from None
    if mode & stat.S_IROTH:
        warn(f"--token-file {token_file} can be read by every user of this machine; "
             f"restrict it with: chmod 600 {token_file}")
    if not text:
        raise CliError(f"--token-file {token_file} is empty; put the API token in it")
    return Secret(text)


def verbose_option(f: F) -> F:
    return click.option(
        "-v", "--verbose", "--traceback", "verbose", is_flag=True,
        help="On an error, show the full traceback (never the token).",
    )(f)


def reading_options(f: F) -> F:
    """How INPUT is read: shared by every command that reads a spreadsheet."""
    for decorator in reversed([
        click.option("--sheet", metavar="NAME",
                     help="Worksheet of an Excel file. [default: the first visible sheet]"),
        click.option("--encoding", metavar="NAME",
                     help="Text encoding of a CSV, e.g. cp1251. [default: detected]"),
        click.option("--delimiter", metavar="CHAR", callback=_parse_delimiter,
                     help="Delimiter of a CSV: , ; | or tab. [default: detected]"),
    ]):
        f = decorator(f)
    return f


def mapping_options(f: F) -> F:
    """How each row becomes a request."""
    for decorator in reversed([
        click.option("-w", "--workflow-id", type=int, metavar="INT",
                     help="Scenario id (the request's id). [required]"),
        click.option("--matching", type=click.Choice([m.value for m in Matching]),
                     default=Matching.EMAIL.value, show_default=True,
                     help="How profiles are matched; INPUT needs the matching column."),
        click.option("--field-name", metavar="NAME",
                     help="Profile field for --matching custom (values: field_value column)."),
        click.option("--resource-id", type=int, metavar="INT",
                     help="Default resource_id; a resource_id column overrides it per row."),
        click.option("--phone-region", metavar="CC", callback=_parse_region,
                     help="Country for phones written without +, e.g. RU. [default: + needed]"),
        click.option("--content", "content", multiple=True, metavar="KEY=VALUE",
                     callback=_parse_content,
                     help="Content field sent with every row (repeatable)."),
        click.option("--attach", multiple=True, type=click.Path(path_type=Path),
                     metavar="PATH", help="File attached to every request (repeatable)."),
        click.option("--attach-dir", type=click.Path(path_type=Path, file_okay=False),
                     metavar="DIR",
                     help="Only folder per-row attach paths may point into. "
                          "[default: INPUT's folder]"),
        click.option("--allow-duplicates", is_flag=True,
                     help="Send rows whose identifier repeats an earlier row."),
    ]):
        f = decorator(f)
    return f


def sending_options(f: F) -> F:
    """Where and how fast requests go."""
    for decorator in reversed([
        click.option("--api-url", envvar="BATCH_ENGAGE_API_URL", metavar="URL",
                     help="API base URL. [env: BATCH_ENGAGE_API_URL]"),
        click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
                     metavar="PATH",
                     help=f"File holding the API token. [default: env {TOKEN_ENV}]"),
        click.option("--rate", type=click.FloatRange(min=0), default=10.0, show_default=True,
                     help="Most requests per second over any 1-second window; 0 = no limit."),
        click.option("--concurrency", type=click.IntRange(min=1), default=8,
                     show_default=True, help="Most requests in flight at once."),
        click.option("--max-attempts", type=click.IntRange(min=1), default=5,
                     show_default=True, help="Tries per row for retryable failures."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
                     show_default=True, help="Seconds per request."),
        click.option("--no-verify-tls", "no_verify_tls", is_flag=True,
                     help="Do not check the API's TLS certificate (a test server only: "
                          "anyone on the way could read the token)."),
    ]):
        f = decorator(f)
    return f


def unattended_options(f: F) -> F:
    """What a nightly import needs: memory across runs, and guards against a bad export."""
    for decorator in reversed([
        click.option("--ledger", type=click.Path(path_type=Path, dir_okay=False),
                     metavar="PATH",
                     help="SQLite file shared by runs: profiles it holds as engaged in this "
                          "workflow are not sent again (skipped.csv); engagements are added."),
        click.option("--ledger-days", type=click.FloatRange(min=0, min_open=True),
                     metavar="N",
                     help="Only the ledger's engagements of the last N days count. [default: "
                          "all]"),
        click.option("--min-rows", type=click.IntRange(min=0), metavar="N",
                     help="Refuse (exit 2, nothing sent) an input with fewer data rows."),
        click.option("--max-rows", type=click.IntRange(min=0), metavar="N",
                     help="Refuse (exit 2, nothing sent) an input with more data rows."),
    ]):
        f = decorator(f)
    return f


_OUTCOME_LABELS = {
    "valid": "valid, would be sent", "ok": "succeeded", "validation": "invalid",
    "duplicate": "duplicate, skipped", "api": "refused by the API", "http": "HTTP error",
    "network": "no answer", "unsent": "not sent yet", "uncertain": "outcome unknown",
}


_SKIPPED_LABELS = {"hidden_in_sheet": "hidden, in skipped.csv",
                   "already_engaged": "engaged before, skipped"}


def exit_status(summary: Summary) -> ExitStatus:
    """The exit code a finished (or stopped) run ends with."""
    if summary.stopped is not None:
        return ExitStatus.STOPPED
    return ExitStatus.ROWS_FAILED if summary.failed else ExitStatus.SUCCESS


def rerun_command(options: RunOptions, config: Path | None) -> str:
    """The command that sends failed.csv again, once its rows are fixed."""
    args = ["batch-engage", "run", str(Path(options.out or ".") / "failed.csv")]
    if config is not None:
        args += ["--config", str(config)]
    args += ["-w", str(options.workflow_id)]
    if options.matching is not Matching.EMAIL:
        args += ["--matching", options.matching.value]
    for flag, value in (("--field-name", options.field_name),
                        ("--resource-id", options.resource_id),
                        ("--phone-region", options.phone_region),
                        ("--api-url", options.api_url)):
        if value is not None:
            args += [flag, str(value)]
    for key, value in options.content:
        args += ["--content", f"{key}={value}"]
    for path in options.attach:
        args += ["--attach", str(path.absolute())]
    # failed.csv keeps attach paths as written, relative to the original folder.
    args += ["--attach-dir", str((options.attach_dir or options.input.parent).absolute())]
    if config is not None and (options.encoding or options.delimiter):
        args += ["--encoding", "utf-8-sig", "--delimiter", ","]  # what failed.csv is
    # The same ledger and log as the run; its few rows are not the export --min-rows guards.
    same: list[tuple[str, object]] = [
        ("--ledger", options.ledger), ("--ledger-days", options.ledger_days),
        ("--log-file", options.log_file)]
    for name, kept in same:
        if kept is not None:
            args += [name, f"{kept:g}" if isinstance(kept, float) else str(kept)]
    if options.min_rows:
        args += ["--min-rows", "0"]
    if options.dry_run:
        args.append("--dry-run")
    return shlex.join(args)


def _echo_summary(summary: Summary, rerun: str) -> None:
    what = "Dry run of" if summary.dry_run else "Run of"
    click.echo(f"{what} {summary.input} ({summary.input_format}): {summary.rows} rows"
               + (f", {summary.blank} blank rows skipped" if summary.blank else ""))
    for outcome, count in sorted(summary.outcomes.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {_OUTCOME_LABELS.get(outcome, outcome) + ':':<24}{count:>8}")
    for reason, count in sorted(summary.skipped.items()):
        click.echo(f"  {_SKIPPED_LABELS.get(reason, reason) + ':':<24}{count:>8}")
    if not summary.dry_run:
        rate = summary.to_json()["requests_per_second"]
        line = f"Requests: {summary.requests_sent} sent" + (f", {rate}/s" if rate else "")
        if summary.retries:
            line += "; retries: " + ", ".join(
                f"{reason} {n}" for reason, n in summary.retries.most_common())
            if summary.retries_unanswered:
                line += (f" ({summary.retries_unanswered} after no answer: the API may "
                         "have acted on those)")
        click.echo(line)
    if summary.errors:
        click.echo("Top errors:")
        for code, count in summary.errors.most_common(5):
            click.echo(f"  {code} ({count}), e.g. {summary.examples[code]}")
    click.echo(f"Reports: {summary.out}{os.sep}")
    if summary.failed:
        click.echo(f"Fix the rows in {Path(summary.out) / 'failed.csv'}, then send them again:")
        click.echo(f"  {rerun}")
    if summary.stopped is not None:
        unsent = summary.outcomes.get("unsent", 0)
        click.echo(f"Stopped: {summary.stopped}. Nothing more was sent; {unsent} rows were "
                   "not sent.", err=True)


@click.group("batch-engage", context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="batch-engage")
def cli() -> None:
    """Engage customer profiles in a marketing scenario in bulk, from a CSV or Excel file.

    Every row of the file becomes one "Engage profile in scenario" request
    (POST /api/v1.1/workflows/start); the run folder gets a success and a failure report.

    \b
    Try it with no account and no network:
        batch-engage run samples/customers.csv -w 12 --dry-run
    """


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@mapping_options
@sending_options
@reading_options
@unattended_options
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Run folder for reports and state. [default: runs/<INPUT stem>-<UTC time>]")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              is_eager=True, expose_value=False, callback=_load_config,
              help="TOML file of options plus a [columns] table that renames headers.")
@click.option("--include-hidden-rows", is_flag=True,
              help="Also send rows hidden in the sheet (by a filter or by hand); otherwise "
                   "they go to skipped.csv.")
@click.option("--dry-run", is_flag=True,
              help="Check and map every row, write requests.jsonl, send nothing.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out with its own options: rows already finished "
                   "are not sent again.")
@click.option("--resend-uncertain", is_flag=True,
              help="With --resume or --ledger: also send rows whose request was on its way "
                   "when a run was killed (they may have been engaged already).")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), metavar="PATH",
              help="Append a JSON line for each row's outcome, retry, slow-down, stop and "
                   "resume to PATH, for jq or a log shipper (identifiers masked, never the "
                   "token).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@verbose_option
def run(input_path: Path, verbose: bool, token_file: Path | None, **kw: Any) -> None:
    """Send one "engage profile" request per row of INPUT (.csv .tsv .txt .xlsx .xlsm).

    The matching column (email, phone, profile_id, field_value or custom_request) identifies
    the profile; content.KEY columns fill {apicontent.KEY} in templates. Reports go to --out:
    failed.csv can be fixed and run again as it is. Set the token in BATCH_ENGAGE_TOKEN or
    a --token-file, never on the command line.

    \b
    Check a file without sending anything:
        batch-engage run samples/customers.csv -w 12 --dry-run
    Send it (exit 0: all sent, 1: some rows failed, 2: bad input, 3: stopped):
        export BATCH_ENGAGE_API_URL=https://example.com
        batch-engage run samples/customers.csv -w 12 --token-file ~/.engage-token --out runs/c
    Finish it after Ctrl-C, a kill or a rejected token (nothing is sent twice):
        batch-engage run samples/customers.csv --token-file ~/.engage-token --out runs/c --resume
    """
    ctx = click.get_current_context()

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    config: ConfigFile | None = ctx.meta.get("batch_engage.config")
    with exit_statuses(verbose):
        columns = config.columns if config else {}
        if kw["resume"]:
            columns = _resume_defaults(ctx, kw, columns if config else None)
        token = None if kw["dry_run"] else read_token(token_file, warn)
        if kw["no_verify_tls"] and not kw["dry_run"]:
            warn("--no-verify-tls: the API's TLS certificate is not checked, so anyone on the "
                 "network path could read the token; use it only with a test server")
        options = RunOptions(
            input=input_path,
            workflow_id=kw["workflow_id"],
            api_url=kw["api_url"],
            token=token,
            matching=Matching(kw["matching"]),
            field_name=kw["field_name"],
            resource_id=kw["resource_id"],
            phone_region=kw["phone_region"],
            content=kw["content"],
            attach=tuple(kw["attach"]),
            attach_dir=kw["attach_dir"],
            rate_per_second=kw["rate"],
            max_in_flight=kw["concurrency"],
            max_attempts=kw["max_attempts"],
            timeout_seconds=kw["timeout"],
            out=kw["out"],
            sheet=kw["sheet"],
            encoding=kw["encoding"],
            delimiter=kw["delimiter"],
            columns=columns,
            allow_duplicates=kw["allow_duplicates"],
            include_hidden_rows=kw["include_hidden_rows"],
            dry_run=kw["dry_run"],
            quiet=kw["quiet"],
            verify_tls=not kw["no_verify_tls"],
            resume=kw["resume"],
            resend_uncertain=kw["resend_uncertain"],
            ledger=kw["ledger"],
            ledger_days=kw["ledger_days"],
            min_rows=kw["min_rows"],
            max_rows=kw["max_rows"],
            log_file=kw["log_file"],
        )
        summary = run_job(options, on_warning=warn, handle_signals=True)
    options = dataclasses.replace(options, out=Path(summary.out))
    config_path = config.path if config else None
    _echo_summary(summary, rerun_command(options, config_path))
    if summary.stopped is not None:
        click.echo(f"To send the rest: {resume_command(options, token_file, config_path)}",
                   err=True)
    elif options.resume and not summary.pass_requests:
        click.echo("Nothing was left to send: every row already had its result.")
    ctx.exit(exit_status(summary))


def _resume_defaults(
    ctx: click.Context, kw: dict[str, Any], columns: dict[str, str] | None
) -> dict[str, str]:
    """--resume: options not given now are the run's own; returns the column renames.

    Options given now stay, and the library refuses those that differ from the run's.
    """
    if kw["out"] is None:
        raise CliError("--resume needs --out, the folder of the run to continue")
    stored = stored_options(kw["out"])
    convert: dict[str, Callable[[Any], Any]] = {
        "content": lambda pairs: tuple(tuple(p) for p in pairs),
        "attach": lambda paths: tuple(Path(p) for p in paths),
        "attach_dir": Path,
        "ledger": lambda path: None if path is None else Path(path),
    }
    for name, value in stored.items():
        if name in kw and ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            kw[name] = convert.get(name, lambda v: v)(value)
    return stored["columns"] if columns is None else columns


def resume_command(options: RunOptions, token_file: Path | None, config: Path | None) -> str:
    """The command that continues a stopped run (with its config: its rate and token file)."""
    args = ["batch-engage", "run", str(options.input), "--out", str(options.out), "--resume"]
    if config is not None:
        args += ["--config", str(config)]
    if token_file is not None:
        args += ["--token-file", str(token_file)]
    if options.log_file is not None:  # not kept with the run: the resume logs there too
        args += ["--log-file", str(options.log_file)]
    return shlex.join(args)


def main() -> None:
    # A run keeps rows on their way (ledger look-ups, the sending window), and with them
    # alive the collector ran 3,600 times in a 1,000,000-row dry run with a ledger, its full
    # passes walking every imported module's objects: 0.7 s. Those objects live as long as
    # the process, so they are set aside, and a young generation of 10,000 objects holds a
    # run's rows in flight without a collection. The process is the command's own; the
    # library leaves its caller's collector alone.
    gc.freeze()
    gc.set_threshold(10_000)
    cli()




def _demo_inputs(samples: Path) -> list[tuple[Path, Path]]:
    """Each sample is a data file with a TOML config of the same name beside it."""
    pairs = []
    for config in sorted(samples.glob("*.toml")):
        data = [p for p in config.parent.glob(config.stem + ".*") if p.suffix != ".toml"]
        if len(data) == 1:
            pairs.append((data[0], config))
    return pairs


def on_disk(folder: Traversable) -> AbstractContextManager[Path]:
    """A package's folder as a folder on disk while the context lasts.

    An installed package's folder is already one; a package imported from a zip gets a
    temporary copy, because `run` opens its inputs (and a config's attach_dir) by path.
    """
    if sys.version_info < (3, 12) and not isinstance(folder, Path):
        return _copy_of(folder)  # Python 3.11's as_file copies single files, not folders
    return as_file(folder)


@contextmanager
def _copy_of(folder: Traversable) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="batch-engage-") as tmp:
        copy = Path(tmp) / folder.name
        _copy_tree(folder, copy)
        yield copy


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir()
    for item in source.iterdir():
        if item.is_dir():
            _copy_tree(item, target / item.name)
        else:
            (target / item.name).write_bytes(item.read_bytes())


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--samples", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder of sample files, each with a TOML config of the same name. "
                   "[default: the samples that ship inside batch-engage]")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Folder for the runs' reports. [default: runs/demo-<UTC time>]")
@verbose_option
def demo(samples: Path | None, out: Path | None, verbose: bool) -> None:
    """Send every sample file through `run` to a mock API server started in this process.

    Needs no network, no token and no arguments, and works from any folder: the samples ship
    inside batch-engage (--samples DIR sends others), the reports go to runs/demo-<UTC time>
    in the current folder (or --out DIR).

    \b
        batch-engage demo
    """
    ctx = click.get_current_context()
    if samples is None:
        samples = ctx.with_resource(on_disk(files("batch_engage") / "samples"))
    pairs = _demo_inputs(samples)
    if not pairs:
        raise CliError(f"no samples in {samples}: each needs a data file and a .toml config "
                       "of the same name")
    base = out or Path("runs") / f"demo-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    worst = ExitStatus.SUCCESS
    # A throwaway token that only this mock server accepts, handed over as a user would.
    token = secrets.token_urlsafe(16)
    with serve_in_thread(MockConfig(token=token)) as mock, \
            tempfile.TemporaryDirectory(prefix="batch-engage-demo-") as tmp:
        token_file = Path(tmp) / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(token, "utf-8")
        click.echo(f"Mock API server (in this process): {mock.url}")
        for data, config in pairs:
            click.echo(f"\n$ batch-engage run {data} --config {config} --api-url {mock.url} "
                       "--rate 50 -q")
            args = [str(data), "--config", str(config), "--api-url", mock.url,
                    "--token-file", str(token_file), "--rate", "50", "-q",
                    "--out", str(base / data.stem)]
            if verbose:
                args.append("-v")
            with run.make_context("run", args, parent=ctx) as sub:
                try:
                    run.invoke(sub)
                    code = ExitStatus.SUCCESS
                except click.exceptions.Exit as e:
                    code = ExitStatus(e.exit_code)
                except click.ClickException as e:
                    e.show()
                    code = ExitStatus(e.exit_code)
            worst = max(worst, code)
        accepted = sum(mock.stats.accepted.values())
    click.echo(f"\nThe mock server engaged {accepted} profiles; the reports are in {base}{os.sep}")
    ctx.exit(worst)


# --- init-config ------------------------------------------------------------------------------

# Values shown for the options a starter config leaves commented that have no default. Every
# option of `run` is listed from `run` itself, so a new one shows up without an edit here.
_CONFIG_EXAMPLES: dict[str, Any] = {
    "field_name": "CRM_ID", "resource_id": 24, "phone_region": "RU",
    "content": ["promo_code=SPRING"], "attach": ["terms.pdf"], "attach_dir": "files",
    "api_url": "https://your-account.example.com", "token_file": "token.txt",
    "out": "runs/nightly", "sheet": "Sheet1", "encoding": "cp1251", "delimiter": ";",
    "log_file": "batch-engage.jsonl", "ledger": "engaged.sqlite", "ledger_days": 30,
    "min_rows": 1, "max_rows": 100000,
}
# Options that belong to one invocation more than to a config; listed last.
_PER_RUN_OPTIONS = ("dry_run", "resume", "resend_uncertain", "quiet", "verbose")
def _comment(text: str) -> str:
    """Text for a TOML comment, which may hold no control character but tab."""
    return "".join(c if c >= " " and c != "\x7f" else repr(c)[1:-1] for c in text)


def _commented_options(skip: set[str]) -> list[str]:
    """Every option of `run` not in ``skip``, as a commented line with its default."""
    lines: list[str] = []
    later: list[str] = []
    for param in run.params:
        if not isinstance(param, click.Option) or param.name in skip or param.name is None:
            continue
        default: Any = False if param.is_flag else param.default
        help_text = param.help or ""
        if isinstance(default, bool | int | float | str):
            line = f"# {param.name} = {toml_value(default)}"
        else:
            if param.name in _CONFIG_EXAMPLES:
                value = _CONFIG_EXAMPLES[param.name]
            elif isinstance(param.type, click.types.IntParamType | click.types.FloatParamType):
                value = 1
            else:
                value = param.metavar or "..."
            line = f"# {param.name} = {toml_value(value)}  # for example"
            if "[default:" not in help_text:
                help_text += " [default: none]"
        long = "--" + param.name.replace("_", "-")
        flag = long if long in param.opts else max(param.opts, key=len)
        entry = [f"# {flag}: {help_text}", line]
        (later if param.name in _PER_RUN_OPTIONS else lines).extend(entry)
    if later:
        lines += ["", "# Usually given on the command line, for one run:", *later]
    return lines


def _columns_table(guess: Guess) -> list[str]:
    lines = []
    written: set[str] = set()
    renames = guess.renames()
    for number, column in enumerate(guess.columns, start=1):
        if not column.header:
            lines.append(f"# (column {number} has no header: it is not sent)")
            continue
        key = toml_value(column.header)
        if column.header in written:
            lines.append(f"# {key}  # column {number}: {column.reason}")
            continue
        written.add(column.header)
        if column.role != "ignore":
            lines.append(f"{key} = {toml_value(column.name)}  # {column.reason}")
        elif column.header in renames:
            lines.append(f"{key} = {toml_value(renames[column.header])}  # {column.reason}")
        else:
            lines.append(f"# {key}  # {column.reason}")
    return lines


def _starter_config(
    input_path: Path, output: Path, sample: Sample, guess: Guess, attach_dir: str | None
) -> str:
    identifier = guess.identifier
    check = shlex.join(["batch-engage", "run", str(input_path), "--config", str(output),
                        "--dry-run"])
    lines = [
        f"# batch-engage config for {_comment(input_path.name)}, written by "
        "`batch-engage init-config`",
        f"# from its header and first {len(sample.rows)} row"
        f"{'' if len(sample.rows) == 1 else 's'}: a guess, to check before anything is sent:",
        f"#   {_comment(check)}",
        "# The command line and environment variables win over what is set here. Relative "
        "paths",
        "# (attach, attach_dir, token_file, log_file, ledger) are taken from this file's folder.",
        "",
        "# The scenario id (the request's \"id\"): replace 0 with yours. 0 is a placeholder "
        "that no",
        "# scenario has (ids are positive), so a send with it engages nobody; a dry run works "
        "already.",
        "workflow_id = 0",
        "",
        "# How profiles are matched: email, phone, profile_id, custom or custom_request.",
    ]
    if identifier is not None:
        lines.append(f"# Guessed from column {identifier.header!r}: {identifier.reason}.")
    else:
        lines.append("# No column looks like an e-mail, phone or profile id: name one in "
                     '[columns] below (e.g. "Client" = "email"), or the run refuses the file.')
    lines.append(f"matching = {toml_value(guess.matching.value)}")
    written = {"workflow_id", "matching", "config"}
    if guess.matching is Matching.CUSTOM:
        lines += ["# The profile field that the field_value column is matched against: "
                  "replace it.", 'field_name = "REPLACE_ME"']
        written.add("field_name")
    if guess.phone_region is not None:
        lines += ["", "# Phones written without \"+\" are numbers of this country, guessed from "
                  "the phone column;", "# a dry run lists the numbers that are still not valid.",
                  f"phone_region = {toml_value(guess.phone_region)}"]
        written.add("phone_region")
    if attach_dir is not None:
        lines += ["", "# The folder that holds the files named in the attach column (found "
                  "beside the input file).", f"attach_dir = {toml_value(attach_dir)}"]
        written.add("attach_dir")
    lines += ["", "# How the file is read (detected from it):"]
    if sample.sheet is not None:
        lines.append(f"sheet = {toml_value(sample.sheet)}")
        written |= {"sheet", "encoding", "delimiter"}  # the last two are for text files
    else:
        lines += [f"encoding = {toml_value(sample.encoding)}",
                  f"delimiter = {toml_value(sample.delimiter)}"]
        written |= {"sheet", "include_hidden_rows", "encoding", "delimiter"}  # for workbooks
    lines += ["", "# Every other option of `batch-engage run`, with its default: remove the "
              '"# " to set one.', *_commented_options(written)]
    lines += [
        "",
        "# Each header of the file -> the name batch-engage understands: email, phone, "
        "profile_id,",
        "# field_value, custom_request, resource_id, attach, content.KEY, "
        "subscription_filter.KEY.",
        '# A commented header is not sent; to send it, write e.g. "Notes" = "content.notes". '
        'A name',
        '# starting with "_" ("_ignored") leaves a column out without a warning.',
        "[columns]",
        *_columns_table(guess),
    ]
    return "\n".join(lines) + "\n"


def _write_config(path: Path, text: str, force: bool) -> None:
    data = text.encode("utf-8")
    try:
        if not force:
            with path.open("xb") as f:  # never over a file that appeared meanwhile
                f.write(data)
            return
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        partial.write_bytes(data)
        os.replace(partial, path)
    except FileExistsError:
        raise CliError(f"{path} already exists; pass --force to overwrite it, or choose "
                       "another file with -o") from None
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}; choose another file "
                       "with -o") from None


@cli.command("init-config", context_settings=CONTEXT_SETTINGS)
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Config file to write. [default: INPUT's name with .toml, beside it]")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@reading_options
@verbose_option
def init_config(input_path: Path, *, output: Path | None, force: bool, verbose: bool,
                sheet: str | None, encoding: str | None, delimiter: str | None) -> None:
    """Write a starter --config for INPUT: a guess for each column, and every run option.

    Reads the header and the first rows, guesses each column from its header (English or
    Russian: E-mail, Телефон, Имя, ID клиента...) and from its values (a column of phone
    numbers is a phone column), and writes the config beside INPUT. A column it cannot place
    is left out, as a commented line. Check the guess with a dry run, then put your
    scenario's id in workflow_id.

    \b
        batch-engage init-config samples/clients_cp1251.csv -o clients.toml
        batch-engage run samples/clients_cp1251.csv --config clients.toml --dry-run
    """
    output = output or input_path.with_suffix(".toml")
    with exit_statuses(verbose):
        if output.resolve() == input_path.resolve():
            raise CliError(f"-o {output} is INPUT itself; choose another file for the config")
        if output.exists() and not force:
            raise CliError(f"{output} already exists; pass --force to overwrite it, or "
                           "choose another file with -o")
        from .guesser import find_attach_dir, guess_columns, read_sample  # noqa: PLC0415

        sample = read_sample(input_path, encoding=encoding, delimiter=delimiter, sheet=sheet)
        guess = guess_columns(sample.headers, sample.rows)
        attach_dir = None
        attach = next((i for i, c in enumerate(guess.columns) if c.role == "attach"), None)
        if attach is not None:
            found = find_attach_dir(input_path.parent, [row[attach] for row in sample.rows])
            if found is not None:
                # Relative when the config sits beside INPUT, so the two can move together.
                attach_dir = str(found.resolve())
                if found.resolve().is_relative_to(output.resolve().parent):
                    attach_dir = found.resolve().relative_to(
                        output.resolve().parent).as_posix()
        _write_config(output, _starter_config(input_path, output, sample, guess, attach_dir),
                      force)

    identifier = guess.identifier
    click.echo(f"Wrote {output}: {sample.description}, matching by {guess.matching.value}"
               + (f" (column {identifier.header!r})" if identifier else "") + ".")
    shown = [(c.header or "(no header)", "(not sent)" if c.role == "ignore" else c.name,
              c.reason) for c in guess.columns if not c.header.startswith("_")]
    width = min(24, max((len(h) for h, _, _ in shown), default=0))
    target_width = min(24, max((len(t) for _, t, _ in shown), default=0))
    for header, target, reason in shown:
        click.echo(f"  {header:<{width}}  {target:<{target_width}}  {reason}")
    if identifier is None:
        click.echo(f"warning: no column looks like an e-mail, phone or profile id; name the "
                   f"one to match by in the [columns] table of {output}", err=True)
    click.echo("Check it with a dry run (nothing is sent), then put your scenario's id in "
               "workflow_id:")
    click.echo("  " + shlex.join(["batch-engage", "run", str(input_path), "--config",
                                  str(output), "--dry-run"]))


@cli.command("ledger", context_settings=CONTEXT_SETTINGS)
@click.argument("path", metavar="LEDGER", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--forget", is_flag=True,
              help="Delete the -w workflow's entries: its profiles may be engaged again.")
@click.option("-w", "--workflow-id", type=int, metavar="INT",
              help="The workflow whose entries --forget deletes.")
@verbose_option
def ledger(path: Path, forget: bool, workflow_id: int | None, verbose: bool) -> None:
    """Show what a --ledger file holds, per workflow; or forget one workflow's entries.

    \b
        batch-engage ledger nightly/engaged.sqlite
        batch-engage ledger nightly/engaged.sqlite --forget -w 12
    """
    with exit_statuses(verbose):
        if forget:
            if workflow_id is None:
                raise CliError("--forget needs -w, the workflow whose entries to delete")
            deleted = ledger_file.forget(path, workflow_id)
            click.echo(f"Forgot {deleted:,} engagements of workflow {workflow_id} in {path}; "
                       "the next run with this ledger sends to those profiles again.")
            return
        if workflow_id is not None:
            raise CliError("-w only goes with --forget; without it every workflow is shown")
        counts = ledger_file.describe(path)
    if not counts:
        click.echo(f"{path} holds no engagements.")
        return
    click.echo(f"{'workflow':>10}  {'matched by':<14}{'engaged':>10}{'uncertain':>11}  "
               "latest run")
    for c in counts:
        click.echo(f"{c.workflow_id:>10}  {c.kind:<14}{c.engaged:>10,}{c.uncertain:>11,}  "
                   f"{c.latest_run} ({ledger_file.iso(c.latest_at)})")
    if any(c.uncertain for c in counts):
        click.echo("Uncertain: a run was killed while those requests were on their way; the "
                   "next run reports them in failed.csv (--resend-uncertain sends them).")


@cli.command("mock-server", context_settings=CONTEXT_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token", default=DEFAULT_TOKEN, show_default=True,
              help="The one token it accepts: a made-up one, never your real token.")
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              metavar="P", help="Share of requests answered HTTP 503.")
@click.option("--rate-limit", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="N", help="Requests per second let through; more get 429 with "
                                "Retry-After. 0 = no limit.")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="MS", help="Delay before each answer.")
@click.option("--unknown-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              metavar="P", help=f"Share of identifiers with no profile (HTTP 200, error "
                                f"{UNKNOWN_PROFILE_ERROR}); the same ones every time.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              metavar="P", help="Share of connections closed before an answer.")
@click.option("--seed", type=int, help="Seed for the faults, to replay the same run.")
def mock_server(host: str, port: int, token: str, seed: int | None, **faults: float) -> None:
    """Serve a stand-in for the API on this machine, with faults injected on purpose.

    It checks each request as the real API does and answers in the same shape. Ctrl-C
    stops it and prints what it received; GET /_mock/stats shows the counts meanwhile.

    \b
    Rehearse a run against 10% server errors and a 200 requests/s limit:
        batch-engage mock-server --fail-rate 0.1 --rate-limit 200
    then, in another terminal:
        export BATCH_ENGAGE_TOKEN=mock-token
        batch-engage run samples/customers.csv -w 12 --api-url http://127.0.0.1:8080
    """
    server = MockServer(MockConfig(token=token, seed=seed, **faults))

    def ready(url: str) -> None:
        shown = f" (token: {token})" if token == DEFAULT_TOKEN else ""
        click.echo(f"Mock API listening on {url}{shown}; Ctrl-C stops it.", err=True)

    try:
        asyncio.run(serve(server, host, port, ready))
    except OSError as e:
        raise CliError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                       "choose another --port, or 0 for any free one") from None
    stats = server.stats.to_json()
    click.echo(f"Received {stats['received']} requests: "
               + ", ".join(f"{k} {v}" for k, v in sorted(stats["answers"].items())), err=True)


# --- serve -----------------------------------------------------------------------------------


@cli.command("serve", context_settings=CONTEXT_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 on a team host (with --public-url).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              default="batch-engage-data", show_default=True,
              help="Folder for uploads, runs and their reports.")
@click.option("--api-url", envvar="BATCH_ENGAGE_API_URL", metavar="URL",
              help="API base URL the page's runs send to. [env: BATCH_ENGAGE_API_URL]")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), metavar="PATH",
              help=f"File holding the API token, read again at each run. [default: env "
                   f"{TOKEN_ENV}; with neither, the page asks for a token per run]")
@click.option("--rate", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Default, and highest, requests per second of a page's run; 0 = no limit.")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Default, and highest, requests in flight of a page's run.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=200.0,
              show_default=True, help="Largest upload accepted, in MB.")
@click.option("--access-key-file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="PATH", help="A fixed access key (a team host). [default: a new random "
                                   "key at each start]")
@click.option("--public-url", metavar="URL",
              help="The address people open when the server runs behind a name; printed, "
                   "and the only other Host accepted.")
@verbose_option
def serve_command(*, host: str, port: int, data_dir: Path, api_url: str | None,
                  token_file: Path | None, rate: float, concurrency: int, max_upload_mb: float,
                  access_key_file: Path | None, public_url: str | None, verbose: bool) -> None:
    """Serve a web page where marketers upload a spreadsheet, check it and send it.

    Open the address it prints (it carries a one-time access key). Runs started from the
    page are the same runs as `batch-engage run`, in folders under --data-dir/runs/.

    \b
        export BATCH_ENGAGE_API_URL=https://example.com
        batch-engage serve --token-file ~/.engage-token
    Rehearse with the mock API in another terminal (its token is "mock-token"):
        batch-engage mock-server --port 8080
        echo mock-token > token.txt
        batch-engage serve --api-url http://127.0.0.1:8080 --token-file token.txt
    """
    # Only here: `run` and the other commands start without the web page's imports.
    from .web import ServeConfig  # noqa: PLC0415
    from .web import serve as serve_page  # noqa: PLC0415

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    with exit_statuses(verbose):
        if public_url and urlsplit(public_url).scheme not in ("http", "https"):
            raise CliError(f"--public-url {public_url!r} is not a web address; write it in "
                           "full, e.g. https://engage.example.com")
        if api_url and urlsplit(api_url).scheme not in ("http", "https"):
            raise CliError(f"--api-url {api_url!r} is not a web address; write it in full, "
                           "e.g. https://your-account.example.com")
        first = read_token(token_file, warn)  # a token file that cannot be read: say so now
        if access_key_file is not None:
            try:
                key = access_key_file.read_text("utf-8").strip()
            except OSError as e:
                raise CliError(f"cannot read --access-key-file {access_key_file}: "
                               f"{e.strerror or e}") from None
            if len(key) < 16:
                raise CliError(f"--access-key-file {access_key_file} holds a key of "
                               f"{len(key)} characters; use at least 16 random ones")
        else:
            key = secrets.token_urlsafe(24)

        def token() -> Secret | None:
            if token_file is None:
                return first
            try:
                return read_token(token_file, warn)
            except CliError as e:
                warn(e.format_message())
                return None

        hint = (f"put the right token in {token_file}" if token_file is not None else
                f"restart batch-engage serve with the right {TOKEN_ENV}" if first is not None
                else "type the right token when you resume")
        config = ServeConfig(
            data_dir=data_dir, access_key=key, api_url=api_url, token=token, token_hint=hint,
            rate=rate, concurrency=concurrency, max_upload_mb=max_upload_mb,
            public_url=public_url)
        if api_url is None:
            warn("no --api-url (or BATCH_ENGAGE_API_URL): the page can check files but not "
                 "send them")

        def ready(url: str) -> None:
            click.echo(f"batch-engage serve: data in {data_dir.absolute()}{os.sep}")
            click.echo("Open this address in your browser (it holds the access key; keep it "
                       "to yourself):")
            click.echo(f"    {url}", nl=True)
            click.echo("Press Ctrl-C to stop; runs that are sending stop and can be resumed.")

        serve_page(config, host, port, ready)
