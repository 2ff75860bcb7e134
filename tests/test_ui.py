"""The Prefect UI, driven in Debian's headless chromium: fill extract-batch's form, submit, check the finished run."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.prefect_server import REPO_ROOT, PrefectServer

pytestmark = pytest.mark.ui
POOL = "docbatch-process"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"


def field(page, label: str):  # type: ignore[no-untyped-def]
    """The input of the form property whose label starts with `label`."""
    header = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}\b"))
    return page.locator(".schema-form-property", has=header).locator("input, textarea").first


def test_run_extract_batch_from_the_ui_form(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (dev.sh installs it with apt-get)"
    output = tmp_path / "exports"
    batch_name = f"ui batch {uuid.uuid4().hex[:6]}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with PrefectServer(ui=True) as server:
        server.prefect("work-pool", "create", POOL, "--type", "process", check=True)
        deployed = server.prefect("deploy", "--all", "--prefect-file", "deployments.yaml", cwd=REPO_ROOT, env={"PWD": str(REPO_ROOT)})
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        ingest = server.api("GET", "/deployments/name/ingest-inbox/ingest-inbox")
        server.api("PATCH", f"/deployments/{ingest['id']}", json={"paused": True})  # no scheduled runs in this test
        deployment = server.api("GET", "/deployments/name/extract-batch/extract-batch")
        server.start_worker(POOL)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(f"{server.url}/deployments/deployment/{deployment['id']}/run", wait_until="networkidle")
                field(page, "max_concurrency").fill("2")
                field(page, "batch_name").fill(batch_name)
                field(page, "Output Dir").fill(str(output))
                page.screenshot(path=str(SCREENSHOTS / "run-form.png"), full_page=True)
                page.get_by_role("button", name="Submit").click()

                deadline = time.monotonic() + 240
                run = None
                while time.monotonic() < deadline:
                    runs = server.api("POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}})
                    run = next((r for r in runs if r["parameters"].get("batch_name") == batch_name), None)
                    if run and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        break
                    time.sleep(1)
                assert run is not None, "the form's submission created no flow run"
                assert run["state_type"] == "COMPLETED", (run["state_type"], server.print_logs())
                page.goto(f"{server.url}/runs/flow-run/{run['id']}", wait_until="networkidle")
                page.wait_for_timeout(1500)
                page.screenshot(path=str(SCREENSHOTS / "finished-run.png"), full_page=True)
                assert batch_name in page.content()
            finally:
                browser.close()

        assert run["name"] == batch_name
        assert run["parameters"]["max_concurrency"] == 2 and run["parameters"]["export"]["output_dir"] == str(output)
        artifacts = server.api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        assert {a["key"] for a in artifacts} >= {"docbatch-summary", "docbatch-documents", "docbatch-progress", "docbatch-exports"}
        assert "docbatch-status:partially_failed" in server.api("GET", f"/flow_runs/{run['id']}")["tags"]
    reports = list(output.glob("*/report.json"))
    assert len(reports) == 1 and (reports[0].parent / "documents.xlsx").is_file()
    assert (SCREENSHOTS / "finished-run.png").stat().st_size > 10_000
