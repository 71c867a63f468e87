"""What people see in the UIs they already use, checked in a real headless Chromium (Debian's `chromium`, driven
by Playwright; never a downloaded browser): the MLflow registry page of a registered model and a Prefect flow
run's artifacts, both served by the team stack on loopback. Screenshots go to reports/ui/ (not in git)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import BIN, PROJECT

pytestmark = pytest.mark.integration

SHOTS = PROJECT / "reports" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


def _page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(90_000)  # the UIs are single-page apps: first paint on 2 busy cores takes a while
    return page


def test_mlflow_registry_page_shows_the_model_card_the_champion_and_the_metrics(browser, stack, smoke_on_stack):
    from mlflow import MlflowClient

    base = stack.client_env["MLFLOW_TRACKING_URI"].rstrip("/")
    name = "genops-smoke-vae"
    champion = MlflowClient(tracking_uri=base).get_model_version_by_alias(name, "champion")
    page = _page(browser)

    page.goto(f"{base}/#/models/{name}")
    page.get_by_text(f"is the version to use (currently version {champion.version})").wait_for()
    page.get_by_text("champion", exact=False).first.wait_for()
    assert page.locator("h1", has_text=name).count() >= 1  # the markdown description rendered, not shown raw
    page.screenshot(path=str(SHOTS / "mlflow-registered-model.png"), full_page=True)

    page.goto(f"{base}/#/models/{name}/versions/{champion.version}")
    table = page.locator("table", has_text="real data (floor)")
    table.wait_for()
    assert table.locator("td", has_text="fid").count() >= 1
    body = page.inner_text("body")
    assert "@ champion" in body or "@champion" in body
    for heading in ("Data", "Lineage", "Metrics", "Promotion", "Serving"):
        assert page.locator("h2", has_text=heading).count() == 1, heading
    assert "```" not in body and "| metric |" not in body  # markdown rendered, not printed
    page.screenshot(path=str(SHOTS / "mlflow-model-version.png"), full_page=True)
    page.close()


def _latest_flow_run(env: dict) -> dict:
    """The newest genops-pipeline flow run on the stack's Prefect server, with its artifacts' keys and types."""
    code = """
import asyncio, json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort

async def main():
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["genops-pipeline"])),
                                           sort=FlowRunSort.START_TIME_DESC, limit=1)
        run = runs[0]
        arts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        print(json.dumps({"id": str(run.id), "artifacts": [{"key": a.key, "type": a.type} for a in arts]}))

asyncio.run(main())
"""
    proc = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_prefect_flow_run_page_shows_the_comparison_table_links_and_sample_grids(browser, stack, smoke_on_stack):
    flow_run = _latest_flow_run(smoke_on_stack["env"])
    kinds = {a["key"]: a["type"] for a in flow_run["artifacts"]}
    # Prefect stores a link artifact as markdown ([text](url)); the table and the images keep their own types.
    assert kinds.get("genops-metrics") == "table" and kinds.get("genops-vae-samples") == "image", kinds
    assert kinds.get("genops-smoke-vae-version") == "markdown" and kinds.get("genops-comparison") == "markdown"
    ui = stack.client_env["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    page = _page(browser)
    run_page = f"{ui}/runs/flow-run/{flow_run['id']}"
    page.goto(run_page)
    page.get_by_text("Artifacts", exact=True).first.click()
    for key in kinds:  # every artifact of the run has its card on the run's Artifacts tab
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=str(SHOTS / "prefect-flow-run-artifacts.png"), full_page=True)

    page.get_by_text("genops-metrics", exact=True).first.click()  # the table artifact's own page renders it
    table = page.locator("table", has_text="vae")
    table.wait_for()
    assert table.locator("th", has_text="fid").count() >= 1
    page.screenshot(path=str(SHOTS / "prefect-metrics-table.png"), full_page=True)

    page.goto(run_page)
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("genops-vae-samples", exact=True).first.click()
    image = page.locator("img[src*='get-artifact']").first
    image.wait_for()
    # The grid really loaded from the MLflow server (an <img> that failed to load has naturalWidth 0).
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    page.screenshot(path=str(SHOTS / "prefect-sample-grid.png"), full_page=True)
    page.close()
