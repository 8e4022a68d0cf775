"""The built wheel, installed in a fresh virtual environment outside the repository.

What `pip install batch-engage` gives a user: every command works from an empty folder, with
the samples, templates and scripts read from the installed package, never from the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from batch_engage import __version__
from batch_engage.cli import _demo_inputs, on_disk

from .conftest import REPO, SAMPLES, read_requests

# The wheel is built from a copy of what a source distribution holds: setuptools reuses a
# build/ folder left in the source tree, which would slip in files pyproject.toml no longer
# lists, and the checkout is shared with other builds.
SOURCE_FILES = ["pyproject.toml", "README.md"]
# Building, then installing the dependencies from the package index, can take minutes.
INSTALL_TIMEOUT = 900
SAMPLE_STEMS = ["attachments", "clients_cp1251", "customers", "phones"]
# Lists the installed package's data files through importlib.resources, after importing the
# web page's module (and so its dependencies) as `serve` does.
LIST_PACKAGE_DATA = """
import json
from importlib.resources import files

import batch_engage.web.app

def data_files(folder, prefix=""):
    for item in folder.iterdir():
        if item.is_dir():
            yield from data_files(item, prefix + item.name + "/")
        elif not item.name.endswith((".py", ".pyc")):
            yield prefix + item.name

print(json.dumps(sorted(data_files(files("batch_engage")))))
"""


def _environment() -> dict[str, str]:
    """This process's environment minus whatever could lead the new venv back to the
    checkout or to a real API."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
            and not k.startswith("BATCH_ENGAGE_")}


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_environment(),
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)


def _succeed(*args: str | Path, cwd: Path) -> str:
    done = _run(*args, cwd=cwd)
    assert done.returncode == 0, f"{shlex.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Installed:
    venv: Path
    root: Path

    def batch_engage(self, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        return _run(self.venv / "bin" / "batch-engage", *args, cwd=cwd)

    def empty_folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir()
        return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """`pip install` of a freshly built wheel into a new venv, all in a temporary folder."""
    root = tmp_path_factory.mktemp("wheel").resolve()
    assert not root.is_relative_to(REPO), f"{root} must be outside the checkout {REPO}"
    source = root / "source"
    shutil.copytree(REPO / "batch_engage", source / "batch_engage",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in SOURCE_FILES:
        shutil.copy2(REPO / name, source / name)
    _succeed(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
             "--disable-pip-version-check", "-w", root / "dist", source, cwd=root)
    [wheel] = (root / "dist").glob("batch_engage-*.whl")
    _succeed(sys.executable, "-m", "venv", root / "venv", cwd=root)
    _succeed(root / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", wheel, cwd=root)
    return Installed(root / "venv", root)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT)
def test_the_wheel_holds_every_data_file_of_the_package(installed: Installed) -> None:
    package = REPO / "batch_engage"
    expected = sorted(
        p.relative_to(package).as_posix() for p in package.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts)
    printed = _succeed(installed.venv / "bin" / "python", "-c", LIST_PACKAGE_DATA,
                       cwd=installed.empty_folder("list"))
    assert json.loads(printed) == expected, (
        "add the missing files to [tool.setuptools.package-data] in pyproject.toml")
    assert any(name.startswith("samples/files/") for name in expected)
    assert "web/templates/base.html" in expected


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT)
def test_the_demo_runs_in_an_empty_folder_on_the_packaged_samples(installed: Installed) -> None:
    folder = installed.empty_folder("demo")
    done = installed.batch_engage("demo", cwd=folder)
    assert done.returncode in {0, 1}, done.stdout + done.stderr
    engaged = re.search(r"^The mock server engaged (\d+) profiles; the reports are in (\S+)$",
                        done.stdout, re.MULTILINE)
    assert engaged is not None, done.stdout + done.stderr
    assert int(engaged[1]) > 0
    for stem in SAMPLE_STEMS:
        assert (folder / engaged[2] / stem / "summary.json").is_file(), stem
    inputs = re.findall(r"^\$ batch-engage run (\S+)", done.stdout, re.MULTILINE)
    assert len(inputs) == len(SAMPLE_STEMS)
    for path in inputs:
        assert Path(path).is_relative_to(installed.venv), f"{path} is not the installed sample"


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT)
def test_a_packaged_sample_config_finds_its_attachments_beside_it(installed: Installed) -> None:
    folder = installed.empty_folder("dry-run")
    samples = Path(_succeed(
        installed.venv / "bin" / "python", "-c",
        "from importlib.resources import files; print(files('batch_engage') / 'samples')",
        cwd=folder).strip())
    assert samples.is_relative_to(installed.venv)
    done = installed.batch_engage("run", samples / "attachments.csv", "--config",
                                  samples / "attachments.toml", "--dry-run", "--out", "dry",
                                  cwd=folder)
    # Rows 4 and 5 name a missing file and one outside attach_dir, on purpose.
    assert done.returncode == 1, done.stdout + done.stderr
    assert [r["row"] for r in read_requests(folder / "dry")] == [2, 3]


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT)
def test_the_commands_start(installed: Installed) -> None:
    folder = installed.empty_folder("commands")
    version = installed.batch_engage("--version", cwd=folder)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"batch-engage, version {__version__}"
    for command in ["run", "serve", "demo", "init-config", "mock-server"]:
        done = installed.batch_engage(command, "--help", cwd=folder)
        assert done.returncode == 0, done.stderr
        assert f"Usage: batch-engage {command} [OPTIONS]" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT)
def test_serve_shows_its_page_and_its_static_files(installed: Installed) -> None:
    folder = installed.empty_folder("serve")
    server = subprocess.Popen(
        [installed.venv / "bin" / "batch-engage", "serve", "--port", "0", "--data-dir", "data"],
        cwd=folder, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert server.stdout is not None
        printed = ""
        while (url := re.search(r"(http://\S+)/\?key=\S+", printed)) is None:
            line = server.stdout.readline()
            assert line, f"serve ended before printing its address:\n{printed}"
            printed += line
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with browser.open(url[0], timeout=30) as page:
            assert 'name="file"' in page.read().decode("utf-8")
        for static in ["style.css", "app.js"]:
            with browser.open(f"{url[1]}/static/{static}", timeout=30) as response:
                assert response.status == 200
                assert response.read()
    finally:
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=30)
    assert server.returncode == 0, errors


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def test_the_samples_come_out_of_a_zipped_package(tmp_path: Path) -> None:
    """A package imported from a zip (a zipapp, a pex) has no folder on disk: the demo gets
    a temporary copy of its samples, gone when the demo ends."""
    archive = tmp_path / "package.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in _files(SAMPLES).items():
            zipped.writestr(f"samples/{name}", data)
    with on_disk(zipfile.Path(archive) / "samples") as folder:
        assert _files(folder) == _files(SAMPLES)
        assert [d.name for d, _ in _demo_inputs(folder)] == [
            d.name for d, _ in _demo_inputs(SAMPLES)]
    assert not folder.exists()


def test_installed_samples_are_used_in_place() -> None:
    with on_disk(SAMPLES) as folder:
        assert folder == SAMPLES

