"""The command line: the only module that knows about click, exit codes and the terminal."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shlex
import stat
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import phonenumbers
from click.core import ParameterSource

from . import __version__
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
from .options import ConfigFile, Matching, RunOptions, Secret, load_config
from .reader import DELIMITER_NAMES
from .reporter import Summary
from .status import ExitStatus

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


_OUTCOME_LABELS = {
    "valid": "valid, would be sent", "ok": "succeeded", "validation": "invalid",
    "duplicate": "duplicate, skipped", "api": "refused by the API", "http": "HTTP error",
    "network": "no answer", "unsent": "not sent yet", "uncertain": "outcome unknown",
}


_SKIPPED_LABELS = {"hidden_in_sheet": "hidden, in skipped.csv"}


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
              help="With --resume: also send rows whose request was on its way when the run "
                   "was killed (they may have been engaged already).")
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
        )
        summary = run_job(options, on_warning=warn, handle_signals=True)
    options = dataclasses.replace(options, out=Path(summary.out))
    _echo_summary(summary, rerun_command(options, config.path if config else None))
    if summary.stopped is not None:
        click.echo(f"To send the rest: {resume_command(options, token_file)}", err=True)
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
    }
    for name, value in stored.items():
        if name in kw and ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            kw[name] = convert.get(name, lambda v: v)(value)
    return stored["columns"] if columns is None else columns


def resume_command(options: RunOptions, token_file: Path | None) -> str:
    """The command that continues a stopped run."""
    args = ["batch-engage", "run", str(options.input), "--out", str(options.out), "--resume"]
    if token_file is not None:
        args += ["--token-file", str(token_file)]
    return shlex.join(args)


def main() -> None:
    cli()




def _demo_inputs(samples: Path) -> list[tuple[Path, Path]]:
    """Each sample is a data file with a TOML config of the same name beside it."""
    pairs = []
    for config in sorted(samples.glob("*.toml")):
        data = [p for p in config.parent.glob(config.stem + ".*") if p.suffix != ".toml"]
        if len(data) == 1:
            pairs.append((data[0], config))
    return pairs


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--samples", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default="samples", show_default=True,
              help="Folder of sample files, each with a TOML config of the same name.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Folder for the runs' reports. [default: runs/demo-<UTC time>]")
@verbose_option
def demo(samples: Path, out: Path | None, verbose: bool) -> None:
    """Send every sample file through `run` to a mock API server started in this process.

    Needs no network, no token and no arguments; run it from the repository folder.

    \b
        batch-engage demo
    """
    ctx = click.get_current_context()
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
