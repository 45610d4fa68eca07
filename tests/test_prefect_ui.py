"""The Prefect UI in a real browser: headless Chromium (Debian's package) opens the UI served by
a `prefect server` on loopback, starts the `pipeline` deployment through its "Custom run" form
on the tiny budget, a `prefect worker` runs it to completion, and the finished run's artifacts
are screenshotted.

Needs Debian's chromium (`bash .ci/browser-deps`) and playwright from the `dev` extra; the
browser playwright would download (`playwright install`) is never used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

# tests/ is on sys.path (pytest's default "prepend" import mode): the pipeline test's budget.
from conftest import REPO, free_port, stop_group, wait_http
from test_flow_pipeline import tiny_pipeline_params

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 600
SCREENSHOT = "prefect-ui-run-artifacts.png"
SUMMARY_SCREENSHOT = "prefect-ui-pipeline-summary.png"
SUMMARY_LABELS = ("base policy, pass@1", "after ReST-GRPO, pass@1",
                  "majority vote of N samples (no value model)", "best-of-N with the value model",
                  "best-of-N, votes weighted by the value model", "VM-MCTS at the same budget",
                  "VM-MCTS, answer by weighted vote")


def _missing(message: str):
    """Fail in CI, which installs the browser; skip on a developer's machine without it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")  # session: checked before the session's prefect server starts
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[dev]' "
                 "(never `playwright install`: the test drives Debian's chromium)")
    exe = (os.environ.get("RESTRL_CHROMIUM") or shutil.which("chromium")
           or shutil.which("chromium-browser"))
    if not exe:
        _missing("Debian's chromium is not installed: run `bash .ci/browser-deps` "
                 "(apt-get install chromium), or point RESTRL_CHROMIUM at a Chromium binary")
    return exe


@pytest.fixture(scope="module")
def ui_stack(chromium, deployed):
    """The registered deployments and a process worker polling their pool."""
    env, work = deployed
    log_path = work / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect",
             "worker", "start", "--pool", "restrl-process", "--type", "process"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"env": env, "work": work, "worker_log": log_path}
    finally:
        stop_group(worker, grace=3)  # a worker waits 30 s on SIGTERM or SIGINT; its run is done


def _point_ui_at(page, url: str, api: str) -> None:
    """The UI asks `{url}/ui-settings` where the API is. Unless PREFECT_UI_API_URL (or
    PREFECT_SERVER_API_PORT) is set for the server, that answer is the default port 4200, not
    the port the fixture picked; then answer it with the real API URL."""
    import httpx

    settings = httpx.get(f"{url}/ui-settings", timeout=30).json()
    if settings.get("api_url") == api:
        return

    def fulfill(route):
        response = route.fetch()
        body = response.json()
        body["api_url"] = api
        route.fulfill(response=response, body=json.dumps(body))

    page.route("**/ui-settings", fulfill)


def _wait_for_run(api: str, name: str, worker_log: Path, timeout: float) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={
            "flow_runs": {"name": {"any_": [name]}}, "limit": 1}, timeout=30).json()
        run = runs[0] if runs else {}
        state = (run.get("state") or {}).get("type")
        if state == "COMPLETED":
            return run
        if state in ("FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(3)
    log = worker_log.read_text(errors="replace")[-6000:]
    state = (run.get("state") or {})
    pytest.fail(f"flow run {name!r} ended {state.get('type') or 'not found'} "
                f"({state.get('message')}) within {timeout:.0f} s; worker log tail:\n{log}")


def _save(shot: Path) -> None:
    extra = os.environ.get("RESTRL_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(extra) / shot.name)


def test_pipeline_started_from_the_ui_form_completes(chromium, ui_stack, prefect_server,
                                                     tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, api = prefect_server["url"], prefect_server["api"]
    shots = tmp_path / "artifacts"
    shots.mkdir()
    parameters = {"params": tiny_pipeline_params()}
    timings: dict[str, float] = {}
    start = time.monotonic()

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            context.set_default_timeout(60_000)
            page = context.pages[0] if context.pages else context.new_page()
            _point_ui_at(page, url, api)

            # The deployments list -> the pipeline deployment (not the flow of the same name).
            page.goto(f"{url}/deployments")
            page.locator("a[href*='/deployments/deployment/']").get_by_text(
                "pipeline", exact=True).click()
            page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+"))
            deployment_page = page.url.split("?")[0]

            # Run -> Custom run: the parameters form, switched to JSON input.
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run", exact=True).click()
            page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+/run"))
            page.get_by_text("params (Optional)").wait_for()
            run_name = page.locator("input[type=text]").first.input_value()
            assert run_name, "the Custom run form has no run name"
            page.locator(".flow-run-create-form-v2__header .p-icon-button-menu button").click()
            page.get_by_text("Use JSON input", exact=True).first.click()
            editor = page.locator(".schema-input textarea")
            editor.fill(json.dumps(parameters, indent=2))
            form_shot = shots / "prefect-ui-custom-run-form.png"
            page.screenshot(path=str(form_shot))
            _save(form_shot)
            page.get_by_role("button", name="Submit", exact=True).click()
            page.wait_for_url(lambda u: u.split("?")[0] == deployment_page)
            timings["submitted"] = time.monotonic() - start

            # The worker runs it; the REST API says when it is done.
            run = _wait_for_run(api, run_name, ui_stack["worker_log"], RUN_TIMEOUT_S)
            timings["completed"] = time.monotonic() - start
            assert run["parameters"]["params"]["stage1"]["problems"][0]["n"] == 4

            # The finished run's page, Artifacts tab.
            page.goto(f"{url}/runs/flow-run/{run['id']}")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.wait_for_url(re.compile(r"tab=Artifacts"))
            card = page.get_by_text("pipeline-summary", exact=True).last
            expect(card).to_be_visible()
            expect(page.get_by_text(run_name, exact=True).first).to_be_visible()
            expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
            expect(page.get_by_text("ReST-RL pipeline results").first).to_be_visible()
            page.wait_for_timeout(1000)  # the run graph settles
            shot = shots / SCREENSHOT
            page.screenshot(path=str(shot))
            _save(shot)

            # The artifact itself: the summary table rendered from its markdown.
            card.click()
            page.wait_for_url(re.compile(r"/artifacts/artifact/[0-9a-f-]+"))
            for label in SUMMARY_LABELS:
                expect(page.get_by_text(label, exact=True).first).to_be_visible()
            summary_shot = shots / SUMMARY_SCREENSHOT
            page.screenshot(path=str(summary_shot))
            _save(summary_shot)

            # A plot artifact: the accuracy-vs-budget curves, drawn inline.
            page.goto(f"{url}/runs/flow-run/{run['id']}")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.wait_for_url(re.compile(r"tab=Artifacts"))
            page.get_by_text("accuracy-vs-budget", exact=True).last.click()
            page.wait_for_url(re.compile(r"/artifacts/artifact/[0-9a-f-]+"))
            expect(page.locator("img[src^='data:image/png']").first).to_be_visible()
            plot_shot = shots / "prefect-ui-accuracy-vs-budget.png"
            page.screenshot(path=str(plot_shot))
            _save(plot_shot)
        finally:
            context.close()

    assert shot.stat().st_size > 10_000 and summary_shot.stat().st_size > 10_000
    mlflow_shots = _screenshot_mlflow(chromium, ui_stack["work"], shots)
    timings["total"] = time.monotonic() - start
    print("prefect UI test timings (s):", {k: round(v, 1) for k, v in timings.items()},
          "screenshots:", shot, summary_shot, *mlflow_shots)


def _screenshot_mlflow(chromium: str, work: Path, shots: Path) -> list[Path]:
    """The MLflow UI (`mlflow server` on loopback over the runs' database): the pipeline's
    accuracy-vs-budget plot among its run's artifacts, and the value model as a logged model
    with its metrics."""
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    db = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(db)
    experiment = client.get_experiment_by_name("restrl").experiment_id
    (run,) = client.search_runs([experiment], "attributes.run_name = 'pipeline'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    model = next(m for m in client.search_logged_models([experiment])
                 if m.name == "value_model")
    port = free_port()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", db],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    paths = [shots / "mlflow-ui-accuracy-vs-budget.png", shots / "mlflow-ui-logged-model.png"]
    try:
        wait_http(url + "/health", timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}/artifacts")
                page.get_by_text("plots", exact=True).first.click()
                page.get_by_text("accuracy_vs_budget.png", exact=True).first.click()
                expect(page.locator("img[src^='blob:']").first).to_be_visible()  # the PNG
                page.screenshot(path=str(paths[0]))
                page.goto(f"{url}/#/experiments/{experiment}/models/{model.model_id}")
                expect(page.get_by_text("value_model", exact=True).first).to_be_visible()
                expect(page.get_by_text("Ready", exact=True).first).to_be_visible()
                expect(page.get_by_text("after/mse", exact=True).first).to_be_visible()
                page.screenshot(path=str(paths[1]))
            finally:
                browser.close()
    finally:
        stop_group(server)
    for path in paths:
        assert path.stat().st_size > 10_000
        _save(path)
    return paths
