"""The Dagster UI as a user drives it: headless Chromium (Debian's `chromium`, through Playwright's
sync API) against dagster-webserver and dagster-daemon on 127.0.0.1 (tests/services/browser.py),
on a fresh instance whose store already holds two small synthetic logs.

A user creates a dataset in the launchpad, sees its cost before any sampling, builds it, sees its
preview and passed checks; a bad launchpad value is refused before launch; a log dropped into the
store is ingested by the drive-log sensor with no action from the user.

Screenshots of every step and the servers' logs go to $JADD_ARTIFACTS/browser, or else to
$TMPDIR/jadd-browser-artifacts/<UTC time>/ (outside pytest's temporary folders, which other
pytest sessions rotate away); the test prints the folder. On a failure it adds the page's URL, a screenshot and
the end of the webserver's and the daemon's logs. The runs launched from the launchpad execute
in process (`execution: in_process`): a run worker per step would cost a code-location import each
on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from jadd_dagster.defs.automation import SENSOR_INTERVAL_ENV
from jadd_dagster.sim import make_logs
from services.browser import chromium_path, start_dagster_ui

pytestmark = pytest.mark.browser

DATASET = "browser-test"
# What the user types into the launchpad (a dataset of every scene in the store, at the logs' size).
DATASET_CONFIG = "ops:\n  dataset_plan:\n    config:\n      description: built in the browser test\n"
IN_PROCESS = "execution:\n  config:\n    in_process: {}\n"
BAD_VALUE = "      keyframe_hz: 7\n"  # a rate the sampling does not offer (2, 5, 10 or 30 Hz)
BAD_NAME = "../evil"  # a dataset name that would climb out of datasets/ in the store
RUN_TIMEOUT_S = 600
UI_TIMEOUT_MS = 60_000
# The daemon ticks the drive-log, partition-keys and automation-condition sensors every 10 s instead of
# every 30-60 s (their production interval): still the daemon's real ticks, a minute or two sooner in
# all; not every 5 s (the daemon's loop), since each automation tick costs CPU the runs need on 2 cores.
SENSOR_INTERVAL_S = 10


@pytest.fixture(scope="module")
def artifacts() -> Path:
    base = os.environ.get("JADD_ARTIFACTS")
    folder = (Path(base) / "browser" if base else
              Path(tempfile.gettempdir()) / "jadd-browser-artifacts" / time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"\nbrowser test: screenshots and server logs in {folder}")
    return folder


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.fail("Debian's chromium is not installed: ./scripts/test installs it with apt when run as root; "
                    "else `apt-get install chromium`, or set JADD_CHROMIUM to a Chromium binary", pytrace=False)
    return path


@pytest.fixture(scope="module")
def store_logs(tmp_path_factory):
    """Three one-scene logs: two in the store from the start, one held back to be dropped in later."""
    root = tmp_path_factory.mktemp("browser")
    started = time.monotonic()
    logs = make_logs(root / "logs", n_logs=3, minutes=0.4, seed=21, channels=("CAM_FRONT",), image_size=(160, 90))
    jadd_home = root / "jadd"
    for log in logs[:2]:
        shutil.copytree(log, jadd_home / "store" / "logs" / log.name)
    print(f"browser test: {len(logs)} logs written in {time.monotonic() - started:.0f} s")
    return {"root": root, "jadd_home": jadd_home, "initial": [p.name for p in logs[:2]], "new": logs[2]}


@pytest.fixture(scope="module")
def ui(chromium, store_logs, artifacts):
    root = store_logs["root"]

    def terminated(signum, frame):  # `timeout` sends SIGTERM: stop the servers on the way out
        raise SystemExit(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        started = time.monotonic()
        with start_dagster_ui(store_logs["jadd_home"], root / "dagster_home", artifacts,
                              extra_env={SENSOR_INTERVAL_ENV: str(SENSOR_INTERVAL_S)}) as running:
            print(f"browser test: Dagster UI at {running.url}, ready in {time.monotonic() - started:.0f} s")
            yield running
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class Session:
    """One browser page on the UI, with numbered screenshots and failure diagnostics."""

    def __init__(self, browser, ui, artifacts: Path, name: str):
        self.ui, self.artifacts, self.name, self.count = ui, artifacts, name, 0
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(UI_TIMEOUT_MS)
        # Dagster's first-visit "Join the Dagster community" modal pops up a second after a page
        # loads and closes any open menu: marked seen for the instance (what its "Skip" does), and
        # "Skip" whenever it shows all the same.
        ui.graphql("mutation { setNuxSeen }")
        self.page.add_locator_handler(self.page.get_by_role("button", name="Skip"), lambda skip: skip.click())
        # Opening a launchpad before the scene catalog exists: Dagster warns that dataset_plan's
        # upstream asset is not materialized yet (true, and harmless for a launch that is refused).
        unmaterialized = self.page.get_by_role("dialog").filter(has_text="have not been materialized yet")
        self.page.add_locator_handler(unmaterialized, lambda d: d.get_by_role("button", name="Confirm").click())

    def shot(self, what: str) -> Path:
        self.count += 1
        path = self.artifacts / f"{self.name}-{self.count:02d}-{what}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    @contextlib.contextmanager
    def step(self, what: str):
        """A step of the story: a screenshot when it is done; on failure the URL, a screenshot and the
        servers' logs are added to the error."""
        started = time.monotonic()
        try:
            yield
        except BaseException as error:
            with contextlib.suppress(Exception):
                shot = self.shot(f"FAILED-{what}")
            detail = (f"step '{what}' failed after {time.monotonic() - started:.0f} s at {self.page.url}\n"
                      f"screenshot: {locals().get('shot', '(none)')}\n{self.ui.log_tail()}")
            print(detail)
            raise AssertionError(f"{detail}\n{type(error).__name__}: {error}") from error
        self.shot(what)
        print(f"browser test: {what} ({time.monotonic() - started:.0f} s)")

    def goto(self, path: str) -> None:
        self.page.goto(self.ui.url + path)

    def button(self, text: str):
        """A button by its label (Dagster names its buttons with their icon first: 'materialization Materialize')."""
        return self.page.get_by_role("button", name=re.compile(rf"(^|\s){re.escape(text)}$"))

    def open_launchpad(self, page_path: str, materialize_label: str):
        """The launchpad from an asset or lineage page: the menu next to its Materialize button."""
        self.goto(page_path)
        self.button(materialize_label).wait_for()
        launchpad = self.page.get_by_role("dialog").filter(has_text="Launchpad")
        for attempt in range(3):  # a modal popping up (first visit) can swallow the click on the menu
            self.page.get_by_role("button", name="arrow_drop_down", exact=True).first.click()
            self.page.get_by_role("menuitem", name=re.compile("Open launchpad")).click()
            with contextlib.suppress(PlaywrightTimeout):
                launchpad.locator(".CodeMirror").wait_for(timeout=20_000)
                return launchpad
            self.page.keyboard.press("Escape")
        launchpad.locator(".CodeMirror").wait_for()
        return launchpad

    def add_partition(self, launchpad, name: str) -> None:
        """'Add new partition' in the launchpad: the key becomes a `datasets` partition."""
        launchpad.get_by_role("button", name="Add new partition").click()
        dialog = self.page.get_by_role("dialog").filter(has_text="Add a partition")
        dialog.get_by_role("textbox").fill(name)
        dialog.get_by_role("button", name="Save").click()
        dialog.wait_for(state="hidden")

    def choose_partition(self, launchpad, name: str) -> None:
        box = launchpad.get_by_role("combobox", name="Partition")
        box.click()
        box.fill(name)
        self.page.get_by_role("menuitem", name=name, exact=True).click()
        launchpad.get_by_text(f"partition: {name}").wait_for()

    def type_config(self, launchpad, text: str) -> None:
        """Replace the launchpad's YAML as a user pasting it would (no editor auto-indent)."""
        launchpad.locator(".CodeMirror").click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.insert_text(text)

    def launch(self, launchpad) -> str:
        """Click the launchpad's Materialize; the UI opens the run's page. Returns the run id."""
        launchpad.get_by_text("No errors").wait_for()
        launchpad.get_by_role("button", name=re.compile(r"Materialize$")).click()
        self.page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        return self.page.url.rstrip("/").split("/runs/")[1].split("?")[0]

    def see_run_succeed(self, run_id: str) -> None:
        self.ui.wait_for_run(run_id, RUN_TIMEOUT_S)
        self.goto(f"/runs/{run_id}")
        self.page.get_by_text("Success", exact=True).first.wait_for()

    def metadata_value(self, key: str) -> str:
        """The value shown beside a metadata key in the asset page's metadata table."""
        row = self.page.locator("tr").filter(has=self.page.get_by_text(key, exact=True)).first
        row.wait_for()
        # Cells: the key, on some pages the event's time, the value.
        cells = [cell.inner_text().strip() for cell in row.locator(":scope > td").all()][1:]
        values = [c for c in cells if c and not re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}, \d{1,2}:\d{2} [AP]M", c)]
        return values[-1] if values else ""

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(request, browser, ui, artifacts):
    opened = Session(browser, ui, artifacts, request.node.name.removeprefix("test_")[:40])
    yield opened
    opened.close()


def test_a_bad_launchpad_value_is_refused_before_launch(session):
    s = session
    with s.step("launchpad-accepts-a-good-spec"):
        launchpad = s.open_launchpad("/assets/dataset_plan", "Materialize…")
        s.add_partition(launchpad, "launchpad-check")
        s.choose_partition(launchpad, "launchpad-check")
        s.type_config(launchpad, DATASET_CONFIG + IN_PROCESS)
        launchpad.get_by_text("No errors").wait_for()
        assert launchpad.get_by_role("button", name=re.compile(r"Materialize$")).is_enabled()
    for typed in (BAD_VALUE, BAD_VALUE.replace("7", "'7'")):  # as a number and as a string
        with s.step(f"launchpad-refuses-{typed.strip().replace(':', '').replace(' ', '-')}"):
            s.type_config(launchpad, DATASET_CONFIG + typed + IN_PROCESS)
            # The error names the field's path; the editor's own lines never read "config:keyframe_hz".
            launchpad.get_by_text(re.compile(r"config:keyframe_hz")).first.wait_for(timeout=15_000)
            assert launchpad.get_by_text("No errors").count() == 0
            assert not launchpad.get_by_role("button", name=re.compile(r"Materialize$")).is_enabled(), \
                "the launchpad shows the error but still lets the run launch"
    assert not s.ui.runs_of_partition("launchpad-check"), "a run was launched with the bad value"

    with s.step("a-bad-dataset-name-never-stays-a-partition"):
        # Dagster's 'Add partition' takes any text; the partition-keys sensor removes a key that
        # breaks the naming rules at its next tick (SENSOR_INTERVAL_S here), with no action from the user.
        s.add_partition(launchpad, BAD_NAME)
        deadline = time.monotonic() + RUN_TIMEOUT_S / 2
        while BAD_NAME in s.ui.partition_keys("dataset_plan"):
            assert time.monotonic() < deadline, f"{BAD_NAME!r} is still a datasets partition"
            time.sleep(3)
        s.goto("/assets/dataset_plan?view=partitions")
        s.page.get_by_text("launchpad-check", exact=True).first.wait_for()
        assert s.page.get_by_text(BAD_NAME, exact=True).count() == 0


def test_a_dataset_is_built_from_the_ui_and_a_new_log_is_ingested_by_the_sensor(session, ui, store_logs):
    s, page = session, session.page
    with s.step("sensor-ingested-the-logs-and-the-catalog-followed"):
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for log_id in store_logs["initial"]:
            while not ui.runs_of_partition(log_id):
                assert time.monotonic() < deadline, f"the drive-log sensor never requested a run for {log_id}"
                time.sleep(2)
            for run in ui.runs_of_partition(log_id):
                ui.wait_for_run(run["runId"], deadline - time.monotonic())
        while (ui.latest_metadata("scene_catalog") or {}).get("logs") != len(store_logs["initial"]):
            assert time.monotonic() < deadline, f"the scene catalog never listed the logs: {ui.latest_metadata('scene_catalog')}"
            time.sleep(3)
        s.goto("/assets/scene_catalog")
        assert s.metadata_value("logs") == str(len(store_logs["initial"]))

    # The sensor has evaluated the store; a log dropped now must be found by a later tick, with no
    # action from the user. It appears whole: copied beside the store, then renamed into logs/.
    new = store_logs["new"]
    staged = store_logs["jadd_home"] / f".upload-{new.name}"
    shutil.copytree(new, staged)
    os.rename(staged, store_logs["jadd_home"] / "store" / "logs" / new.name)
    dropped = time.monotonic()

    with s.step("dataset-partition-created-and-planned"):
        launchpad = s.open_launchpad("/assets/dataset_plan", "Materialize…")
        s.add_partition(launchpad, DATASET)
        s.choose_partition(launchpad, DATASET)
        s.type_config(launchpad, DATASET_CONFIG + IN_PROCESS)
        s.see_run_succeed(s.launch(launchpad))

    with s.step("cost-shown-before-sampling"):
        s.goto(f"/assets/dataset_plan?view=partitions&partition={DATASET}")
        cost = s.metadata_value("estimated_cost_usd")
        assert float(cost) > 0, cost
        assert "sampling" in s.metadata_value("cost_estimate")  # the estimate's breakdown table
        assert s.metadata_value("scenes") == str(len(store_logs["initial"]))
        assert ui.latest_metadata("dataset_frames", DATASET) is None, "frames were sampled before the plan was seen"

    with s.step("dataset-built"):
        launchpad = s.open_launchpad('/asset-groups~group%3A"dataset"', "Materialize all…")
        s.choose_partition(launchpad, DATASET)
        s.type_config(launchpad, DATASET_CONFIG + IN_PROCESS)
        for asset in ("dataset_plan", "dataset_frames", "dataset_labels", "jadd_dataset", "dataset_registry"):
            assert launchpad.get_by_role("button", name=asset, exact=True).count() == 1, f"{asset} is not in the run"
        s.see_run_succeed(s.launch(launchpad))

    with s.step("preview-shown-without-a-click"):
        s.goto(f"/assets/jadd_dataset?view=partitions&partition={DATASET}")
        assert s.metadata_value("scenes") == str(len(store_logs["initial"]))
        row = page.locator("tr").filter(has=page.get_by_text("preview", exact=True)).first
        preview = row.locator("img").first  # in place, not behind "[Show Markdown]"
        preview.wait_for(state="visible", timeout=15_000)
        preview.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle(), timeout=30_000)
        width = preview.evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width >= 320 and preview.bounding_box()["width"] >= 320, (width, preview.bounding_box())

    with s.step("checks-passed"):
        s.goto(f"/assets/jadd_dataset?view=checks&partition={DATASET}")
        for check in ("frame_counts_match_rates", "nuscenes_invariants_hold", "devkit_loads_every_version"):
            page.get_by_text(check, exact=True).first.wait_for()
        page.get_by_text("Succeeded", exact=True).nth(2).wait_for()
        assert page.get_by_text(re.compile(r"^(Failed|Execution failed)$")).count() == 0

    with s.step("new-log-ingested-by-the-sensor"):
        deadline = dropped + RUN_TIMEOUT_S
        while not ui.runs_of_partition(new.name):
            assert time.monotonic() < deadline, f"the drive-log sensor never requested a run for the new log {new.name}"
            time.sleep(2)
        for run in ui.runs_of_partition(new.name):
            ui.wait_for_run(run["runId"], max(60, deadline - time.monotonic()))
        print(f"browser test: the new log was ingested {time.monotonic() - dropped:.0f} s after it was dropped")
        s.goto(f"/assets/scene_index?view=partitions&partition={new.name}")
        page.get_by_text("Latest materialization").first.wait_for()
        s.goto(f"/locations/{ui.location}/sensors/drive_log_sensor")
        page.get_by_text(re.compile(r"1 partitions? created")).first.wait_for()  # the tick that found it
