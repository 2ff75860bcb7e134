"""The Prefect UI, driven in Debian's headless chromium: fill extract-batch's form, submit, check the finished run."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

from tests.prefect_server import REPO_ROOT, PrefectServer

pytestmark = pytest.mark.ui
POOL = "docbatch-process"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
ATTEMPTS = 3
RETRYABLE_STATUS = frozenset({429, 502, 503})  # what Prefect's own client retries


def field(page, label: str):  # type: ignore[no-untyped-def]
    """The input of the form property whose label starts with `label`."""
    header = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}\b"))
    return page.locator(".schema-form-property", has=header).locator("input, textarea").first


class WatchedPage:
    """A browser page that keeps what went wrong (API answers >= 400, console and page errors).

    On a loaded 2-core machine the SQLite-backed server answers 503 while the database is busy.
    Prefect's own client retries those; the UI does not: it shows a toast (or an empty page) and a
    user clicks again or reloads. So does this, but only after a retryable answer; anything else
    fails at once with what the page and the API said, and a screenshot.
    """

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.page = page
        self.failed: list[str] = []
        self.retryable = 0
        page.on("response", self._answer)
        page.on("console", lambda m: self.failed.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.failed.append(f"page error: {e}"))

    def _answer(self, response) -> None:  # type: ignore[no-untyped-def]
        if "/api/" in response.url and response.status >= 400:
            self.failed.append(f"{response.request.method} {response.url} -> {response.status}")
            self.retryable += response.status in RETRYABLE_STATUS

    def fail(self, what: str) -> NoReturn:
        self.page.screenshot(path=str(SCREENSHOTS / "failed.png"), full_page=True)
        raise AssertionError(f"{what}\npage: {self.page.url}\nfailed: {self.failed}\nscreenshot: {SCREENSHOTS / 'failed.png'}")

    def open(self, url: str, ready) -> None:  # type: ignore[no-untyped-def]
        """Load `url` until `ready` (a locator) is visible."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        for attempt in range(1, ATTEMPTS + 1):
            seen = self.retryable
            self.page.goto(url, wait_until="networkidle")
            try:
                ready.wait_for(state="visible", timeout=60_000)
                return
            except PlaywrightTimeout:
                if self.retryable == seen:
                    break
                print(f"open attempt {attempt}: the server answered {self.failed[-1]}; reloading")
        self.fail(f"{url} never showed {ready}")

    def submit_run(self, deployment_id: str) -> dict:
        """Click Submit and return the flow run the UI created (the API's answer)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        create_url = f"/api/deployments/{deployment_id}/create_flow_run"

        def answered(response) -> bool:  # type: ignore[no-untyped-def]
            # The form validates on the server first: a retryable answer there also ends the attempt.
            return response.url.endswith(create_url) or ("/api/" in response.url and response.status in RETRYABLE_STATUS)

        submit = self.page.get_by_role("button", name="Submit", exact=True)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.page.expect_response(answered, timeout=90_000) as caught:
                    submit.click()
            except PlaywrightTimeout:
                break  # nothing was posted: a validation message or a lost click, reported below
            response = caught.value
            if response.url.endswith(create_url) and response.ok:
                return response.json()
            self.failed.append(f"answer {response.status}: {response.text()[:500]}")
            if response.status not in RETRYABLE_STATUS:
                break
            print(f"submit attempt {attempt}: {response.url} answered {response.status}; clicking Submit again")
            self.page.wait_for_timeout(2000 * attempt)
        self.fail("the form's submission created no flow run")


def test_run_extract_batch_from_the_ui_form(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

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
                page = WatchedPage(browser.new_page(viewport={"width": 1400, "height": 1800}))
                page.open(f"{server.url}/deployments/deployment/{deployment['id']}/run", ready=field(page.page, "batch_name"))
                for label, value in (("max_concurrency", "2"), ("batch_name", batch_name), ("Output Dir", str(output))):
                    field(page.page, label).fill(value)
                    expect(field(page.page, label)).to_have_value(value)
                page.page.screenshot(path=str(SCREENSHOTS / "run-form.png"), full_page=True)
                created = page.submit_run(deployment["id"])

                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    run = server.api("GET", f"/flow_runs/{created['id']}")
                    if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        break
                    time.sleep(1)
                assert run["state_type"] == "COMPLETED", (run["state_type"], server.print_logs())
                # The finished run as the UI shows it: its name (the batch's), its state and the status tag.
                page.open(f"{server.url}/runs/flow-run/{run['id']}", ready=page.page.get_by_text(batch_name, exact=True).first)
                expect(page.page.get_by_text("docbatch-status:partially_failed", exact=True).first).to_be_visible()
                expect(page.page.get_by_text("Completed", exact=True).first).to_be_visible()
                page.page.wait_for_timeout(1500)
                page.page.screenshot(path=str(SCREENSHOTS / "finished-run.png"), full_page=True)
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
