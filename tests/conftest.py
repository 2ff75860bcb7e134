"""Test fixtures: one real Prefect API (prefect_test_harness) for the whole session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before Prefect is imported: a private Prefect home, no telemetry (no internet here).
_HOME = tempfile.mkdtemp(prefix="docbatch-test-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# The model extractors' result cache (tasks/result_cache.py): private to this session, so no
# test sees another run's answers and nothing is written under the user's ~/.cache.
os.environ["DOCBATCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="docbatch-test-cache-")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = (ROOT.parent / "shared" / "corpus" / "public").resolve()
EXAMPLES = ROOT / "examples" / "documents"


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """URL of a real Prefect API server (a subprocess with a temporary SQLite database)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture()
def cli_env(prefect_api: str) -> dict[str, str]:
    """Environment for a `docbatch` subprocess talking to the session's Prefect API."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = prefect_api
    env["PREFECT_LOGGING_COLORS"] = "false"
    return env


def corpus(*parts: str) -> Path:
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"corpus file missing: {path} (../shared/corpus/public must sit beside the repo)")
    return path


def copy_into(folder: Path, *files: Path | tuple[Path, str]) -> list[str]:
    """Copy corpus files into a batch folder; returns the names in the order docbatch lists them."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for item in files:
        source, name = item if isinstance(item, tuple) else (item, item.name)
        shutil.copyfile(source, folder / name)
        names.append(name)
    return sorted(names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a `server` or `ui` test first, in their usual order, then the rest.

    Under xdist's `--dist loadfile` each process takes whole files in this order: the longest
    files (a Prefect server with workers, minutes each) start at once instead of ending the run
    alone on one process while the other sits idle.
    """
    slow = {item.path for item in items if item.get_closest_marker("server") or item.get_closest_marker("ui")}
    items.sort(key=lambda item: item.path not in slow)
