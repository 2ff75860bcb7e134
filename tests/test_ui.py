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
SUBMIT_ATTEMPTS = 3
RETRYABLE_STATUS = frozenset({429, 502, 503})  # what Prefect's client retries


def field(page, label: str):  # type: ignore[no-untyped-def]
    """The input of the form property whose label starts with `label`."""
    header = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}\b"))
    return page.locator(".schema-form-property", has=header).locator("input, textarea").first


def submit_run(page, deployment_id: str) -> dict:  # type: ignore[no-untyped-def]
    """Click Submit and return the flow run the UI created.

    The UI validates the parameters on the server, then posts `create_flow_run`. On a loaded
    2-core machine the server can answer 503 while SQLite is busy; Prefect's own client retries
    those, the UI shows a toast and a user clicks again, so this clicks again (at most
    SUBMIT_ATTEMPTS times). Any other outcome fails with what the page and the API said.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    failed: list[str] = []  # every API answer >= 400 and every page error, for the failure message
    page.on("response", lambda r: failed.append(f"{r.request.method} {r.url} -> {r.status}") if "/api/" in r.url and r.status >= 400 else None)
    page.on("console", lambda m: failed.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: failed.append(f"page error: {e}"))
    create_url = f"/api/deployments/{deployment_id}/create_flow_run"

    def answered(response) -> bool:  # type: ignore[no-untyped-def]
        return response.url.endswith(create_url) or ("/api/" in response.url and response.status in RETRYABLE_STATUS)

    submit = page.get_by_role("button", name="Submit", exact=True)
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        try:
            with page.expect_response(answered, timeout=90_000) as caught:
                submit.click()
            response = caught.value
        except PlaywrightTimeout:
            break  # nothing was posted: a validation message or a lost click, reported below
        if response.url.endswith(create_url) and response.ok:
            return response.json()
        failed.append(f"answer {response.status}: {response.text()[:500]}")
        if response.status not in RETRYABLE_STATUS:
            break
        print(f"submit attempt {attempt}: {response.url} answered {response.status}; clicking Submit again")
        page.wait_for_timeout(2000 * attempt)
    page.screenshot(path=str(SCREENSHOTS / "submit-failed.png"), full_page=True)
    shown = page.locator(".p-toast, .p-label__message, [class*='error']").all_inner_texts()
    raise AssertionError(
        "the form's submission created no flow run\n"
        f"page: {page.url}\nshown: {[t.strip() for t in shown if t and t.strip()]}\nfailed: {failed}"
    )


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
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(f"{server.url}/deployments/deployment/{deployment['id']}/run", wait_until="networkidle")
                for label, value in (("max_concurrency", "2"), ("batch_name", batch_name), ("Output Dir", str(output))):
                    field(page, label).fill(value)
                    expect(field(page, label)).to_have_value(value)
                page.screenshot(path=str(SCREENSHOTS / "run-form.png"), full_page=True)
                created = submit_run(page, deployment["id"])

                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    run = server.api("GET", f"/flow_runs/{created['id']}")
                    if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        break
                    time.sleep(1)
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
