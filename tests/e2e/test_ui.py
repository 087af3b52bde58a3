"""The status page GET /ui in headless Chromium: real gunicorn, real `dramatiq actors`, real Postgres.

Needs Debian's `chromium` and `chromium-driver` packages (`sudo apt-get install chromium
chromium-driver`); without them these tests fail, saying so. The finished-job screenshot goes
to the test's temporary folder, or to UI_SCREENSHOT when set (`UI_SCREENSHOT=docs/status-page.png`
refreshes the one docs/operating.md shows); the upload form's, to UI_UPLOAD_SCREENSHOT
(`UI_UPLOAD_SCREENSHOT=docs/upload-form.png`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from service.edges.rest.ui import PAGE, TUS_SCRIPT
from tests.conftest import ROOT, Databases, query, until
from tests.e2e.conftest import Stack, free_port, make_stack, stop, wait_for_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "sudo apt-get install chromium chromium-driver"
BIG_ROWS = 300_000  # with 5,000-row chunks: 60 chunks, counted over a few seconds
SCRIPT_CELL = "<script>window.__pwned=1</script>"
IMG_CELL = "<img src=x onerror=window.__pwned=1>"
FINAL = ("succeeded", "failed", "cancelled", "undone")
# Where a page could turn data into markup or run it.
HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function")


@pytest.fixture(scope="module")
def stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The e2e stack (acme, globex, tokens, one worker process) with small chunks, so progress is visible."""
    yield from make_stack(databases, tmp_path_factory, CHUNK_ROWS="5000")


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> str:
    """A real gunicorn serving the API and the page."""
    return stack.gunicorn()[1]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser saves downloads."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium at 1280x800, driven by Debian's chromedriver; a failure (never a skip) without them."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"the status page test needs Chromium: {', '.join(missing)} missing; install with `{INSTALL}`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        viewport = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", viewport)
        yield driver
    finally:
        driver.quit()


# -- helpers ------------------------------------------------------------------------------


def http(base_url: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One JSON call to the API: (status, parsed body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def enqueue(base_url: str, token: str, customer: str, path: Path) -> str:
    """Enqueue a users import of a file in the blob area; its job id."""
    body = {"customer_id": customer, "product_type": "users", "blob_uri": path.as_uri()}
    status, answer = http(base_url, "POST", "/enqueue", token, body)
    assert status == 202, answer
    return str(answer["job_id"])


def wait_final(base_url: str, token: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the API until the job ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = http(base_url, "GET", f"/jobs/{job_id}", token)
        assert status == 200, job
        if job["status"] in FINAL:
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


def big_users_csv(stack: Stack, rows: int = BIG_ROWS) -> Path:
    """A users file of `rows` rows, every 1,000th with a bad email (so it has rejects and log lines)."""
    path = stack.blob_root / "acme" / f"users-{rows}.csv"
    if not path.exists():
        lines = ["external_id,email,first_name,last_name,role,age"]
        roles = ("student", "teacher", "admin")
        for n in range(1, rows + 1):
            email = "not-an-email" if n % 1000 == 0 else f"user{n}@example.com"
            lines.append(f"u{n:07d},{email},Ada{n % 97},Lovelace{n % 89},{roles[n % 3]},{18 + n % 60}")
        path.write_text("\n".join(lines) + "\n")
    return path


def wait(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], timeout: float = 30) -> Any:
    """Wait until condition(driver) is truthy; its value. The page re-renders a running job's
    details as it polls, so an element found a moment ago may be gone: that is asked again."""
    stale = (StaleElementReferenceException,)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=stale).until(condition)


def click(driver: webdriver.Chrome, label: str) -> None:
    """Click the detail panel's button with this label, finding it again if a re-render replaced it."""

    def clicked(d: webdriver.Chrome) -> bool:
        button(d, label).click()
        return True

    wait(driver, clicked)


def open_page(driver: webdriver.Chrome, base_url: str, token: str) -> None:
    """Load /ui afresh, type the token and use it."""
    driver.get(base_url + "/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.get(base_url + "/ui")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def row_state(driver: webdriver.Chrome, job_id: str) -> Any:
    """What the jobs table shows for a job (a dict: status text, bar value and classes, fill width, label), or None."""
    return driver.execute_script(
        """const tr = document.querySelector(`tr[data-job-id="${arguments[0]}"]`);
        if (!tr) return null;
        const bar = tr.querySelector('[role=progressbar]');
        return {status: tr.querySelector('.status').textContent, value: bar.getAttribute('aria-valuenow'),
                rows: bar.dataset.rows, open: bar.classList.contains('open'),
                width: bar.firstChild.style.width, label: tr.querySelector('.barlabel').textContent};""",
        job_id,
    )


def watch_row(driver: webdriver.Chrome, job_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every distinct state the job's row shows, until it shows a final status."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = row_state(driver, job_id)
        if state is not None and (not seen or state != seen[-1]):
            seen.append(state)
        if state is not None and state["status"] in FINAL:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the page never showed job {job_id} ending; it showed {seen[-5:]}")


def select_job(driver: webdriver.Chrome, job_id: str) -> None:
    """Click the job's row and wait for its details."""
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]'))
    driver.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]').click()
    wait(driver, lambda d: job_id in d.find_element(By.ID, "detail").text)


def button(driver: webdriver.Chrome, label: str) -> Any:
    """The detail panel's button with this label."""
    return driver.find_element(By.XPATH, f'//section[@id="detail"]//button[normalize-space()="{label}"]')


def page_errors(driver: webdriver.Chrome) -> list[str]:
    """Console lines that mean a script error or a Content-Security-Policy violation."""
    lines = [entry["message"] for entry in driver.get_log("browser")]
    return [line for line in lines if re.search(r"Uncaught|Content Security Policy|Refused to", line)]


# -- tests --------------------------------------------------------------------------------


def test_the_page_has_no_html_sinks_and_no_external_assets() -> None:
    source = PAGE.read_text()
    for sink in HTML_SINKS:
        assert sink not in source, f"service/ui.html uses {sink}: build DOM with createElement/textContent"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", source), "an external asset"
    assert "<link" not in source and "@import" not in source


def test_the_page_is_served_with_a_strict_content_security_policy(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/ui", timeout=30) as answer:
        policy = answer.headers["Content-Security-Policy"]
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy  # nothing from elsewhere


def test_a_missing_or_bad_token_shows_the_api_message(browser: webdriver.Chrome, base_url: str) -> None:
    open_page(browser, base_url, "")
    wait(browser, lambda d: "needs" in d.find_element(By.ID, "notice").text)
    assert (
        browser.find_element(By.ID, "notice").text
        == "This server needs an API token: missing bearer token (Authorization: Bearer <token>)"
    )
    open_page(browser, base_url, "tok-not-configured")
    wait(browser, lambda d: "refused" in d.find_element(By.ID, "notice").text)
    assert browser.find_element(By.ID, "notice").text == "The token was refused: unknown bearer token"
    assert browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr") == []
    assert browser.execute_script("return sessionStorage.getItem('import-ui-token')") == "tok-not-configured"
    browser.find_element(By.ID, "forget").click()
    assert browser.execute_script("return sessionStorage.getItem('import-ui-token')") is None
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    assert page_errors(browser) == []


def test_markup_in_a_file_is_shown_as_text_and_never_runs(
    browser: webdriver.Chrome, base_url: str, stack: Stack, downloads: Path
) -> None:
    # The markup is in a header (an unknown column: a warning line, a rejects.csv column), in cells
    # (an invalid email: an error line with the value, a reject) and in the file's own name.
    header = f"external_id,email,first_name,{IMG_CELL}"
    rows = [f"x1,{SCRIPT_CELL},{IMG_CELL},{SCRIPT_CELL}", f'x2,ok@example.com,"{SCRIPT_CELL}",{IMG_CELL}']
    path = stack.blob("globex", f"{IMG_CELL}.csv", "\n".join([header, *rows]) + "\n")
    job_id = enqueue(base_url, "tok-globex", "globex", path)
    job = wait_final(base_url, "tok-globex", job_id)
    assert (job["status"], job["rows_valid"], job["rows_invalid"]) == ("succeeded", 1, 1), job

    open_page(browser, base_url, "tok-globex")
    wait(browser, lambda d: row_state(d, job_id))
    select_job(browser, job_id)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#logs tbody tr"))
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#rejects tbody tr"))
    pwned = "return typeof window.__pwned"
    assert browser.execute_script(pwned) == "undefined", "markup from the file ran in the page"
    detail = browser.find_element(By.ID, "detail")
    logs = browser.find_element(By.ID, "logs").text
    rejects = browser.find_element(By.ID, "rejects").text
    assert IMG_CELL in logs, logs  # the unknown column's warning names it
    assert SCRIPT_CELL in logs, logs  # the invalid email's error quotes it
    assert SCRIPT_CELL in rejects and IMG_CELL in rejects, rejects
    assert f"{IMG_CELL}.csv" in detail.text
    assert f"{IMG_CELL}.csv" in browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]').text
    # Nothing became an element: no img or script beyond the page's own one.
    assert browser.execute_script("return document.images.length") == 0
    scripts = browser.execute_script("return [...document.scripts].map(s => s.getAttribute('src'))")
    assert scripts == ["/ui/tus.min.js", None]  # the vendored tus client and the page's own

    click(browser, "Download rejects.csv")
    saved = downloads / f"rejects-{job_id}.csv"
    wait(browser, lambda d: saved.exists() and saved.stat().st_size > 0)
    text = saved.read_text()
    assert SCRIPT_CELL in text and IMG_CELL in text, text

    time.sleep(1.5)  # a poll or two more re-render everything
    assert browser.execute_script(pwned) == "undefined", "markup from the file ran in the page"
    assert page_errors(browser) == []


def test_a_running_job_s_bar_moves_and_ends_succeeded(
    browser: webdriver.Chrome, base_url: str, stack: Stack, tmp_path: Path
) -> None:
    path = big_users_csv(stack)
    open_page(browser, base_url, "tok-acme")
    wait(browser, lambda d: "No jobs yet" in d.find_element(By.ID, "notice").text)

    # The bar is the job's progress: chunks validated of all its chunks (60 of 5,000 rows).
    job_id = enqueue(base_url, "tok-acme", "acme", path)
    browser.find_element(By.ID, "refresh").click()
    seen = watch_row(browser, job_id)
    running = [state for state in seen if state["status"] == "running" and not state["open"]]
    values = [int(state["value"]) for state in running]
    assert len(set(values)) >= 2 and max(values) < 100, seen
    assert values == sorted(values), seen  # it never goes back
    assert all(state["width"] == f"{state['value']}%" and "chunks)" in state["label"] for state in running), seen
    assert len({state["rows"] for state in running}) >= 2, seen
    final = seen[-1]
    assert (final["status"], final["value"], final["width"], final["rows"]) == ("succeeded", "100", "100%", "300000")
    second = job_id

    select_job(browser, second)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#logs tbody tr")) > 10)
    detail = browser.find_element(By.ID, "detail").text
    assert "Status\nsucceeded" in detail and "300,000 read: 299,700 valid, 300 invalid, 299,700 inserted" in detail
    assert "email" in browser.find_element(By.ID, "logs").text
    assert button(browser, "Cancel").is_enabled() is False
    assert all(button(browser, label).is_enabled() for label in ("Undo", "Replay rejects", "Download rejects.csv"))
    # The screenshot shows the feeds section too: a feed that imported its file, and a paused one.
    imported = feeds_for_the_screenshot(base_url, stack)
    browser.find_element(By.ID, "refresh").click()
    wait(browser, lambda d: (feed_row(d, imported) or {}).get("last_counts") == "found 1 / enqueued 1")
    # docs/operating.md's screenshot is taken again with UI_SCREENSHOT=docs/status-page.png; by
    # default it goes under the test's temporary folder (a test run leaves the tree clean).
    shot = (
        Path(os.environ["UI_SCREENSHOT"]).resolve() if os.environ.get("UI_SCREENSHOT") else tmp_path / "status-page.png"
    )
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert page_errors(browser) == []


def test_a_running_job_can_be_cancelled_from_the_page(browser: webdriver.Chrome, base_url: str, stack: Stack) -> None:
    path = big_users_csv(stack, 3 * BIG_ROWS)
    open_page(browser, base_url, "tok-acme")
    job_id = enqueue(base_url, "tok-acme", "acme", path)
    browser.find_element(By.ID, "refresh").click()
    wait(browser, lambda d: (row_state(d, job_id) or {}).get("status") == "running")
    select_job(browser, job_id)
    wait(browser, lambda d: button(d, "Cancel").is_enabled())
    assert wait(browser, lambda d: not button(d, "Undo").is_enabled())
    click(browser, "Cancel")
    try:
        WebDriverWait(browser, 5).until(expected_conditions.alert_is_present()).accept()
    except TimeoutException:
        raise AssertionError("Cancel asked for no confirmation") from None
    wait(browser, lambda d: "cancel: the job is now cancelled" in d.find_element(By.ID, "action-msg").text)
    wait(browser, lambda d: (row_state(d, job_id) or {}).get("status") == "cancelled")
    wait(browser, lambda d: "Status\ncancelled" in d.find_element(By.ID, "detail").text)
    assert wait(browser, lambda d: not button(d, "Cancel").is_enabled())
    assert wait_final(base_url, "tok-acme", job_id)["status"] == "cancelled"

    # A refused change shows the API's own message: undo of a cancelled job.
    browser.execute_script("window.confirm = () => true")
    status, answer = http(base_url, "POST", f"/jobs/{job_id}/undo", "tok-acme")
    assert status == 409
    browser.execute_script("arguments[0].disabled = false; arguments[0].click()", button(browser, "Undo"))
    wait(browser, lambda d: "undo refused (409)" in d.find_element(By.ID, "action-msg").text)
    assert answer["error"]["message"] in browser.find_element(By.ID, "action-msg").text
    assert page_errors(browser) == []


def filter_to(driver: webdriver.Chrome, text: str) -> None:
    """Type text into the jobs filter box (replacing what it held)."""
    box = driver.find_element(By.ID, "filter")
    box.send_keys(Keys.CONTROL, "a")  # typed over, as a person does (clear() fires no input event)
    box.send_keys(text or Keys.BACKSPACE)


def listed(driver: webdriver.Chrome) -> list[str]:
    """The job ids of the rows the table shows, top to bottom."""
    return list(
        driver.execute_script("return [...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId)")
    )


def test_the_list_shows_short_ids_and_finds_a_job_by_id_prefix_or_file_name(
    browser: webdriver.Chrome, base_url: str, stack: Stack
) -> None:
    first = enqueue(base_url, "tok-globex", "globex", stack.blob("globex", "roster-north.csv"))
    second = enqueue(base_url, "tok-globex", "globex", stack.blob("globex", "roster-south.csv"))
    for job_id in (first, second):
        wait_final(base_url, "tok-globex", job_id)
    # 49 later jobs push `first` (not `second`) out of the 50 most recent the page lists.
    later = [enqueue(base_url, "tok-globex", "globex", stack.blob("globex", f"later-{n}.csv")) for n in range(49)]
    wait_final(base_url, "tok-globex", later[-1])

    open_page(browser, base_url, "tok-globex")
    wait(browser, lambda d: row_state(d, second))
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{second}"]')
    assert row.find_elements(By.TAG_NAME, "td")[0].text == second[:8]
    assert first not in listed(browser)

    filter_to(browser, second[:8])
    wait(browser, lambda d: listed(d) == [second])
    filter_to(browser, "SOUTH")  # part of a file name, any case
    wait(browser, lambda d: listed(d) == [second])
    filter_to(browser, first[:8])  # a prefix of a job the page has not loaded: it says what to do
    wait(browser, lambda d: listed(d) == [] and "paste the whole id" in d.find_element(By.ID, "filter-msg").text)
    filter_to(browser, first)  # the whole id: looked up, shown and selectable
    wait(browser, lambda d: listed(d) == [first])
    select_job(browser, first)
    assert "roster-north.csv" in browser.find_element(By.ID, "detail").text
    filter_to(browser, "00000000-0000-0000-0000-000000000000")
    wait(browser, lambda d: listed(d) == [] and "no such job" in d.find_element(By.ID, "filter-msg").text)
    filter_to(browser, "")
    wait(browser, lambda d: len(listed(d)) == 50)
    assert page_errors(browser) == []


# -- feeds (SPEC 20) ----------------------------------------------------------------------

SETTLED = time.time() - 60  # files older than a feed run's settle time (5 s)


def feed_folder(stack: Stack, name: str, files: dict[str, str] | None = None) -> tuple[Path, str]:
    """A folder of acme's blob area with these files (written long enough ago to be settled); (its path, its URI)."""
    folder = stack.blob_root / "acme" / name
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, text in (files or {}).items():
        (folder / file_name).write_text(text)
        os.utime(folder / file_name, (SETTLED, SETTLED))
    return folder, folder.as_uri() + "/"


def create_feed(base_url: str, prefix: str, **fields: Any) -> dict[str, Any]:
    """POST /feeds for acme's users: the feed's view."""
    body = {"customer_id": "acme", "product_type": "users", "prefix_uri": prefix, **fields}
    body.setdefault("schedule", {"every_seconds": 3600})
    status, feed = http(base_url, "POST", "/feeds", "tok-acme", body)
    assert status == 201, feed
    return dict(feed)


def feed_row(driver: webdriver.Chrome, feed_id: str) -> Any:
    """What the feeds table shows for a feed (a dict of its cells' texts and the state's badges), or None."""
    return driver.execute_script(
        """const tr = document.querySelector(`#feed-list tr.feed[data-feed-id="${arguments[0]}"]`);
        if (!tr) return null;
        const [feed, prefix, schedule, state, last, next] = tr.children;
        return {id: feed.querySelector('.mono').textContent, customer: feed.querySelector('.sub').textContent,
                prefix: prefix.firstChild.textContent, prefix_title: prefix.title,
                pattern: prefix.querySelector('.pattern').textContent, schedule: schedule.textContent,
                badges: [...state.querySelectorAll('.badge')].map(b => b.textContent), state: state.textContent,
                last_run: last.firstChild.textContent, last_counts: last.querySelector('.sub').textContent,
                next_run: next.textContent, open: tr.classList.contains('open')};""",
        feed_id,
    )


def open_feed(driver: webdriver.Chrome, feed_id: str) -> None:
    """Click the feed's row and wait for its files' counts."""

    def clicked(d: webdriver.Chrome) -> bool:
        d.find_element(By.CSS_SELECTOR, f'#feed-list tr.feed[data-feed-id="{feed_id}"]').click()
        return True

    wait(driver, clicked)
    wait(driver, lambda d: d.find_elements(By.ID, "feed-fields"))


def feed_click(driver: webdriver.Chrome, label: str) -> None:
    """Click the opened feed's button with this label, finding it again if a poll re-rendered it."""

    def clicked(d: webdriver.Chrome) -> bool:
        d.find_element(By.XPATH, f'//section[@id="feeds"]//button[normalize-space()="{label}"]').click()
        return True

    wait(driver, clicked)


def feed_text(driver: webdriver.Chrome, element_id: str) -> str:
    """The text of an element of the opened feed ('' while it is not shown)."""
    found = driver.find_elements(By.ID, element_id)
    return str(found[0].text) if found else ""


def feeds_for_the_screenshot(base_url: str, stack: Stack) -> str:
    """Two feeds of acme: one whose nightly file was imported (its id: the screenshot opens it), one paused."""
    users = "external_id,email,first_name\n" + "".join(f"n{i},n{i}@example.com,Ada{i}\n" for i in range(40))
    _, nightly = feed_folder(stack, "exports/nightly", {"users-2026-12-01.csv": users})
    imported = create_feed(base_url, nightly, pattern="users-*.csv", schedule={"cron": "0 2 * * *"})
    status, answer = http(base_url, "POST", f"/feeds/{imported['feed_id']}/run", "tok-acme")
    assert status in (200, 409), answer  # 409: the workers' sweep is running it already

    def done() -> bool:
        return http(base_url, "GET", f"/feeds/{imported['feed_id']}", "tok-acme")[1]["files"]["imported"] == 1

    until(done, timeout=120, interval=0.2)
    _, partners = feed_folder(stack, "exports/partners")
    create_feed(base_url, partners, schedule={"every_seconds": 900}, paused=True)
    return str(imported["feed_id"])


def test_feeds_are_listed_with_their_schedule_and_state(browser: webdriver.Chrome, base_url: str, stack: Stack) -> None:
    _, nightly = feed_folder(stack, "ui-nightly", {"a.csv": "external_id,email\nn1,n1@example.com\n"})
    waiting = create_feed(base_url, nightly, pattern="*.csv", schedule={"cron": "0 3 * * *"}, paused=True)
    _, quiet = feed_folder(stack, "ui-quiet")
    late = create_feed(base_url, quiet, expect_every_hours=0.001)  # 3.6 s: late after a sweep or two

    open_page(browser, base_url, "tok-acme")
    row = wait(browser, lambda d: feed_row(d, waiting["feed_id"]))
    assert row == {
        "id": waiting["feed_id"][:8],
        "customer": "acme · users",
        "prefix": "…/acme/ui-nightly/",  # a long prefix's last folders, the whole of it in the title
        "prefix_title": nightly,
        "pattern": "*.csv",
        "schedule": "cron 0 3 * * *",
        "badges": ["paused"],
        "state": "paused",
        "last_run": "never",
        "last_counts": "",
        "next_run": "",  # a paused feed runs only when asked
        "open": False,
    }, row
    # The workers' sweep ran the other feed (nothing there) and then found it late.
    shown = wait(browser, lambda d: (lambda r: r if "late" in r["badges"] else None)(feed_row(d, late["feed_id"])), 60)
    assert shown["badges"] == ["late"] and shown["schedule"] == "every 1 h", shown
    assert shown["last_counts"] == "found 0 / enqueued 0" and shown["last_run"] and shown["next_run"], shown
    status, view = http(base_url, "GET", f"/feeds/{late['feed_id']}", "tok-acme")
    assert status == 200 and view["late"] and view["last_run"]["found"] == 0, view

    open_feed(browser, waiting["feed_id"])
    fields = feed_text(browser, "feed-fields")
    assert f"Prefix\n{nightly}\nPattern\n*.csv\nSchedule\ncron 0 3 * * * (UTC)\n" in fields, fields
    assert "Files\n0 seen, 0 imported, 0 failed, 0 pending\nAfter success\nkeep the file\nLate alarm\nnone" in fields
    assert "Latest files: none yet" in str(browser.find_element(By.ID, "feeds").get_attribute("textContent"))
    assert feed_row(browser, waiting["feed_id"])["open"] is True
    # Another customer's token sees none of acme's feeds.
    open_page(browser, base_url, "tok-globex")
    wait(browser, lambda d: d.find_element(By.ID, "updated").text)
    assert feed_row(browser, waiting["feed_id"]) is None and feed_row(browser, late["feed_id"]) is None
    assert page_errors(browser) == []


def test_run_now_from_the_page_imports_the_file_and_shows_the_counts(
    browser: webdriver.Chrome, base_url: str, stack: Stack
) -> None:
    users = "external_id,email\nr1,r1@example.com\nr2,r2@example.com\nr3,r3@example.com\n"
    _, prefix = feed_folder(stack, "ui-run", {"people.csv": users})
    feed = create_feed(base_url, prefix, paused=True)  # paused: only Run now runs it, not the workers' sweep
    open_page(browser, base_url, "tok-acme")
    open_feed(browser, feed["feed_id"])
    feed_click(browser, "Run now")
    wait(browser, lambda d: feed_text(d, "feed-said") == "Run now: found 1, enqueued 1.")
    wait(browser, lambda d: feed_row(d, feed["feed_id"])["last_counts"] == "found 1 / enqueued 1")
    wait(browser, lambda d: "1 seen, 1 imported, 0 failed, 0 pending" in feed_text(d, "feed-fields"), 120)
    status, view = http(base_url, "GET", f"/feeds/{feed['feed_id']}", "tok-acme")
    assert status == 200 and view["files"] == {"seen": 1, "imported": 1, "failed": 0, "pending": 0}, view
    (file,) = view["recent"]
    wait(browser, lambda d: "succeeded" in feed_text(d, "feed-files"))
    cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#feed-files tbody td")]
    assert cells[0] == "people.csv" and cells[3] == file["job_id"][:8] and cells[4] == "succeeded", cells
    # A click on the file's job shows it in the job details.
    browser.find_element(By.CSS_SELECTOR, f'#feed-files button[data-job-id="{file["job_id"]}"]').click()
    wait(browser, lambda d: file["job_id"] in d.find_element(By.ID, "detail").text)
    assert "Status\nsucceeded" in browser.find_element(By.ID, "detail").text
    assert wait_final(base_url, "tok-acme", file["job_id"])["rows_inserted"] == 3

    # A run that stops says why, in the message and as the feed's error badge: here the folder
    # became a link out of acme's area.
    broken, broken_prefix = feed_folder(stack, "ui-broken")
    stopped = create_feed(base_url, broken_prefix, paused=True)
    broken.rmdir()
    broken.symlink_to(stack.blob_root / "globex", target_is_directory=True)
    open_feed(browser, stopped["feed_id"])
    feed_click(browser, "Run now")
    wait(browser, lambda d: "the run stopped: " in feed_text(d, "feed-said"))
    status, view = http(base_url, "GET", f"/feeds/{stopped['feed_id']}", "tok-acme")
    error = view["last_run"]["error"]
    assert error and feed_text(browser, "feed-said") == f"Run now: found 0, enqueued 0; the run stopped: {error}."
    row = wait(browser, lambda d: (lambda r: r if "error" in r["badges"] else None)(feed_row(d, stopped["feed_id"])))
    assert row["badges"] == ["paused", "error"] and row["state"] == f"pausederror{error}", row
    assert f"Last run's error\n{error}" in feed_text(browser, "feed-fields")
    assert page_errors(browser) == []


def test_pause_and_resume_from_the_page(browser: webdriver.Chrome, base_url: str, stack: Stack) -> None:
    _, prefix = feed_folder(stack, "ui-pause")
    feed = create_feed(base_url, prefix)
    open_page(browser, base_url, "tok-acme")
    open_feed(browser, feed["feed_id"])
    assert feed_row(browser, feed["feed_id"])["badges"] == ["active"]
    feed_click(browser, "Pause")
    wait(browser, lambda d: feed_text(d, "feed-said").startswith("Paused: no scheduled run"))
    status, view = http(base_url, "GET", f"/feeds/{feed['feed_id']}", "tok-acme")
    assert status == 200 and view["paused"] is True and view["next_run_at"] is None, view
    row = wait(browser, lambda d: (lambda r: r if r["badges"] == ["paused"] else None)(feed_row(d, feed["feed_id"])))
    assert row["next_run"] == "", row
    feed_click(browser, "Resume")
    wait(browser, lambda d: feed_text(d, "feed-said").startswith("Resumed: the next run is at "))
    status, view = http(base_url, "GET", f"/feeds/{feed['feed_id']}", "tok-acme")
    assert status == 200 and view["paused"] is False and view["next_run_at"], view
    row = wait(browser, lambda d: (lambda r: r if r["badges"] == ["active"] else None)(feed_row(d, feed["feed_id"])))
    assert row["next_run"], row
    assert browser.find_elements(By.XPATH, '//section[@id="feeds"]//button[normalize-space()="Pause"]')
    assert page_errors(browser) == []


def test_markup_in_a_feed_is_shown_as_text_and_never_runs(
    browser: webdriver.Chrome, base_url: str, stack: Stack
) -> None:
    # The markup is in the folder's name (so in prefix_uri), in the pattern and in a file's name.
    name = f"{IMG_CELL}.csv"
    _, prefix = feed_folder(stack, IMG_CELL, {name: "external_id,email\nm1,m1@example.com\n"})
    feed = create_feed(base_url, prefix, pattern=f"{IMG_CELL}*", paused=True)
    status, run = http(base_url, "POST", f"/feeds/{feed['feed_id']}/run", "tok-acme")
    assert status == 200 and run["enqueued"] == 1, run

    open_page(browser, base_url, "tok-acme")
    open_feed(browser, feed["feed_id"])
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#feed-files tbody tr"))
    row = feed_row(browser, feed["feed_id"])
    shown = unquote(prefix)  # the page shows prefix_uri decoded: the markup as typed
    assert row["prefix"] == "…" + shown[-21:] and row["prefix_title"] == prefix, row  # one long name: its end
    assert row["pattern"] == f"{IMG_CELL}*", row
    assert f"Prefix\n{shown}\nPattern\n{IMG_CELL}*\nSchedule\nevery 1 h\n" in feed_text(browser, "feed-fields")
    assert browser.find_element(By.CSS_SELECTOR, "#feed-files tbody td").text == name
    time.sleep(1.5)  # a poll or two more re-render everything
    assert browser.execute_script("return typeof window.__pwned") == "undefined", "markup from a feed ran in the page"
    assert browser.execute_script("return document.images.length") == 0
    assert page_errors(browser) == []


# -- the upload form (SPEC 19) ------------------------------------------------------------

UPLOAD_BYTES = 50 * 1024 * 1024  # ten of the page's 5 MiB requests
CHUNK_BYTES = 5 * 1024 * 1024
UPLOAD_RATE = 6 * 1024 * 1024  # bytes/s: the browser's upload, slowed so the cut lands mid-file
UPLOAD_NAME = "people to upload.csv"
# The upload servers' access lines: which request, its answer, and the bytes a PATCH carried.
ACCESS_FORMAT = "access %(m)s %(U)s %(s)s offset=%({upload-offset}i)s length=%({content-length}i)s"
ACCESS_LINE = re.compile(r"access (\w+) (\S+) (\d{3}) offset=(\S+) length=(\S+)")


def users_upload(folder: Path, prefix: str, size: int) -> tuple[Path, int]:
    """A users CSV of at least `size` bytes, keys `<prefix>0000001`...; (its path, its rows).
    Wide rows (long names): fewer rows for the bytes, so the import stays quick."""
    first, last = "Augusta Ada Byron King Countess of Lovelace ", "Lovelace-Byron-King of Ockham and Horsley Towers "
    lines = ["external_id,email,first_name,last_name,role,age\n"]
    total, n = len(lines[0]), 0
    while total < size:
        n += 1
        line = f"{prefix}{n:07d},{prefix}{n}@example.com,{first}{n % 97},{last}{n % 89},student,{18 + n % 60}\n"
        lines.append(line)
        total += len(line)
    path = folder / UPLOAD_NAME
    path.write_text("".join(lines))
    return path, n


def upload_server(stack: Stack, port: int, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    """gunicorn on this port (the same one again after a restart), its access lines into log."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [gunicorn, "-b", f"127.0.0.1:{port}", "-w", "2", "--access-logfile", "-"]
    command += ["--access-logformat", ACCESS_FORMAT, "service.rest:app"]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            env=dict(stack.env, **settings),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.processes.append(process)
    wait_for_port(port, process)
    return process


def requests_in(log: Path) -> list[tuple[str, str, int, int | None, int | None]]:
    """(method, path, status, Upload-Offset, Content-Length) of every request a server's log shows."""

    def number(text: str) -> int | None:
        return None if text == "-" else int(text)

    return [
        (method, path, int(status), number(offset), number(length))
        for method, path, status, offset, length in ACCESS_LINE.findall(log.read_text())
    ]


def throttle(driver: webdriver.Chrome, upload_bytes_per_second: int | None) -> None:
    """Slow the browser's uploads to this rate (None: full speed again)."""
    driver.execute_cdp_cmd("Network.enable", {})
    rate = upload_bytes_per_second or -1
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": rate}
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)


def upload_bar(driver: webdriver.Chrome) -> dict[str, Any]:
    """What the upload form's bar shows: percent, bytes (as the page counts them), label, classes."""
    return dict(
        driver.execute_script(
            """const bar = document.getElementById('upload-bar');
            return {percent: Number(bar.getAttribute('aria-valuenow')), bytes: Number(bar.dataset.bytes),
                    label: document.getElementById('upload-label').textContent, classes: bar.className,
                    width: bar.firstElementChild.style.width};"""
        )
    )


def watch_bar_until(
    driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], timeout: float
) -> list[dict[str, Any]]:
    """Every state of the upload bar until condition(driver) holds."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(upload_bar(driver))
        if condition(driver):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the upload did not end within {timeout} s: {upload_message(driver)!r}, bar {seen[-1]}")


def upload_message(driver: webdriver.Chrome) -> str:
    """The upload form's message line."""
    return str(driver.find_element(By.ID, "upload-msg").text)


def choose_and_upload(driver: webdriver.Chrome, path: Path, customer: str = "", mode: str = "append") -> None:
    """Give the form a file (as a person choosing it does), a customer and a mode, and press Upload."""
    driver.find_element(By.ID, "upload-file").send_keys(str(path))
    wait(driver, lambda d: path.name in d.find_element(By.ID, "drop-text").text)
    driver.find_element(By.ID, "upload-customer").send_keys(customer)
    Select(driver.find_element(By.ID, "upload-mode")).select_by_value(mode)
    driver.find_element(By.ID, "upload-start").click()


def test_the_vendored_tus_client_is_served_as_javascript_and_is_the_file_its_readme_names(base_url: str) -> None:
    readme = TUS_SCRIPT.with_name("README.md").read_text()
    recorded = re.search(r"sha256 of `tus\.min\.js`: `([0-9a-f]{64})`", readme)
    assert recorded, "static/README.md names no sha256 of tus.min.js"
    assert hashlib.sha256(TUS_SCRIPT.read_bytes()).hexdigest() == recorded[1]
    assert TUS_SCRIPT.with_name("tus-js-client.LICENSE").read_text().startswith("The MIT License")
    with urllib.request.urlopen(base_url + "/ui/tus.min.js", timeout=30) as answer:
        assert answer.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "public, max-age=3600"
        assert answer.read() == TUS_SCRIPT.read_bytes()
    with urllib.request.urlopen(base_url + "/ui", timeout=30) as answer:
        policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline';" in policy and "unsafe-eval" not in policy
    source = TUS_SCRIPT.read_text()
    assert not [sink for sink in HTML_SINKS if sink in source]  # it builds no markup and evaluates no text


def test_an_upload_cut_off_halfway_resumes_where_the_server_stopped_and_is_imported(
    browser: webdriver.Chrome, stack: Stack, tmp_path: Path
) -> None:
    source, rows = users_upload(tmp_path, "up", UPLOAD_BYTES)
    size = source.stat().st_size
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    before, after = tmp_path / "before-the-cut.log", tmp_path / "after-the-cut.log"
    first = upload_server(stack, port, before)
    open_page(browser, base, "tok-acme")
    wait(browser, lambda d: d.find_element(By.ID, "updated").text)  # the job list is loaded
    throttle(browser, UPLOAD_RATE)
    try:
        choose_and_upload(browser, source, mode="upsert")
        # The cut: the whole server killed (no goodbye to the browser) while the bar is mid-file.
        at_cut = wait(browser, lambda d: (lambda bar: bar if 40 <= bar["percent"] <= 80 else None)(upload_bar(d)))
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        stored = query(
            stack.app_dsn, "SELECT id, received, length FROM import_uploads WHERE filename = %s", (UPLOAD_NAME,)
        )
        assert len(stored) == 1 and stored[0][2] == size, stored
        upload_id, received_at_cut = str(stored[0][0]), stored[0][1]
        assert 0 < received_at_cut < size, (received_at_cut, at_cut)
        # The page sees the drop and keeps trying by itself (tus retryDelays) ...
        wait(browser, lambda d: "Upload interrupted" in upload_message(d), timeout=30)
        assert "trying again" in upload_message(browser)
        wait(browser, lambda d: "(attempt 3 of" in upload_message(d))  # ... and two tries found no server
        upload_server(stack, port, after)  # the same port: the page's own address
        shown = watch_bar_until(browser, lambda d: "Uploaded" in upload_message(d), timeout=120)
    finally:
        throttle(browser, None)
    # The bar went on from the stored offset: it never fell back below it, nor to zero.
    assert min(bar["bytes"] for bar in shown) >= received_at_cut, shown[:3]

    # After the restart the browser asked where the server stopped, then sent only the rest.
    resumed = requests_in(after)
    assert not [r for r in resumed if r[0] == "POST" and r[1] == "/uploads"], resumed  # no new upload
    assert ("HEAD", f"/uploads/{upload_id}", 200, None, None) in resumed, resumed
    patches = [r for r in resumed if r[0] == "PATCH"]
    assert patches and all(r[1] == f"/uploads/{upload_id}" and r[2] == 204 for r in patches), patches
    assert patches[0][3] == received_at_cut, (patches[0], received_at_cut)  # from the stored offset, not 0
    resent = sum(r[4] or 0 for r in patches)
    assert resent == size - received_at_cut < size, (resent, size, received_at_cut)
    before_cut = [r for r in requests_in(before) if r[0] == "PATCH"]
    assert before_cut and before_cut[0][3] == 0, before_cut  # the first server took the start of the file
    print(
        f"cut at {at_cut['percent']}% ({at_cut['bytes']:,} bytes shown); the server had stored {received_at_cut:,} "
        f"of {size:,}; after the restart {resent:,} bytes were sent ({100 * resent / size:.1f}% of the file)"
    )

    # The file the server finished is the file the browser read.
    stored_file = stack.blob_root / "acme" / "uploads" / f"{upload_id}-{UPLOAD_NAME}"
    assert hashlib.sha256(stored_file.read_bytes()).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    assert query(stack.app_dsn, "SELECT received FROM import_uploads WHERE id = %s", (upload_id,)) == [(size,)]
    bar = upload_bar(browser)
    assert (bar["percent"], bar["bytes"], bar["width"]) == (100, size, "100%") and "done" in bar["classes"], bar

    # The job the page enqueued: in the list, with the upload's own file name, the chosen mode, every row.
    status, listing = http(base, "GET", "/jobs?limit=50", "tok-acme")
    assert status == 200, listing
    (job,) = [job for job in listing["jobs"] if (job["upload"] or {}).get("id") == upload_id]
    assert job["upload"] == {"id": upload_id, "filename": UPLOAD_NAME} and job["options"]["mode"] == "upsert"
    assert f"job {job['job_id'][:8]} imports it as users (upsert)" in upload_message(browser)
    seen = watch_row(browser, job["job_id"], timeout=180)
    assert (seen[-1]["status"], seen[-1]["rows"]) == ("succeeded", str(rows)), seen
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job["job_id"]}"]')
    assert UPLOAD_NAME in row.text
    done = wait_final(base, "tok-acme", job["job_id"])
    assert (done["status"], done["rows_inserted"], done["rows_invalid"]) == ("succeeded", rows, 0), done
    wait(browser, lambda d: "Status\nsucceeded" in d.find_element(By.ID, "detail").text)  # the new job is selected
    detail = browser.find_element(By.ID, "detail").text
    assert f"Upload\n{upload_id} ({UPLOAD_NAME})\nMode\nupsert\nRows" in detail, detail
    shot = (
        Path(os.environ["UI_UPLOAD_SCREENSHOT"]).resolve()
        if os.environ.get("UI_UPLOAD_SCREENSHOT")
        else tmp_path / "upload-form.png"
    )
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert page_errors(browser) == []


def test_an_upload_left_by_a_reload_resumes_when_the_same_file_is_chosen_again(
    browser: webdriver.Chrome, stack: Stack, tmp_path: Path
) -> None:
    source, rows = users_upload(tmp_path, "re", 4 * CHUNK_BYTES)
    size = source.stat().st_size
    port = free_port()
    log = tmp_path / "reload.log"
    upload_server(stack, port, log)
    base = f"http://127.0.0.1:{port}"
    open_page(browser, base, "tok-acme")
    throttle(browser, UPLOAD_RATE)
    try:
        choose_and_upload(browser, source)
        wait(browser, lambda d: upload_bar(d)["percent"] >= 40)
        browser.refresh()  # the page (and its upload) gone; the token stays for the tab
        wait(browser, lambda d: d.find_element(By.ID, "updated").text)
        choose_and_upload(browser, source)
        wait(browser, lambda d: "Resuming an earlier upload" in upload_message(d))
        wait(browser, lambda d: "Uploaded" in upload_message(d), timeout=60)
    finally:
        throttle(browser, None)
    seen = requests_in(log)
    assert [r[0] for r in seen].count("POST") == 2, seen  # one upload created, one job enqueued
    head = next(n for n, r in enumerate(seen) if r[0] == "HEAD")
    after = [r for r in seen[head:] if r[0] == "PATCH" and r[2] == 204]
    assert after and (after[0][3] or 0) > 0, seen  # the reloaded page went on from the stored offset
    ends = [(r[3] or 0) + (r[4] or 0) for r in after]
    assert [r[3] for r in after[1:]] + [size] == ends, after  # each request where the last one ended, to the end
    (upload_id,) = {r[1].rsplit("/", 1)[1] for r in after}
    stored = stack.blob_root / "acme" / "uploads" / f"{upload_id}-{UPLOAD_NAME}"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    status, listing = http(base, "GET", "/jobs?limit=50", "tok-acme")
    (job,) = [job for job in listing["jobs"] if (job["upload"] or {}).get("id") == upload_id]
    done = wait_final(base, "tok-acme", job["job_id"])
    assert (done["status"], done["rows_inserted"]) == ("succeeded", rows), done
    # Its address was kept only until the upload ended: the same file again is a new upload.
    assert browser.execute_script("return Object.keys(localStorage).filter(k => k.startsWith('tus::'))") == []


def test_a_refused_upload_shows_the_server_s_message(
    browser: webdriver.Chrome, base_url: str, stack: Stack, tmp_path: Path
) -> None:
    source = tmp_path / f"{IMG_CELL}.csv"  # its name is shown as text, never as markup
    source.write_text("external_id,email\nr1,r1@example.com\n" * 100)
    # A token of one customer naming another: 403, in the server's words.
    open_page(browser, base_url, "tok-globex")
    choose_and_upload(browser, source, customer="acme")
    wait(browser, lambda d: "refused" in upload_message(d))
    assert browser.find_element(By.ID, "drop-text").text == f"{IMG_CELL}.csv (3.6 KB)"
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert upload_message(browser) == "Upload refused (403): this token may not act for customer 'acme'"
    assert "failed" in upload_bar(browser)["classes"]
    assert browser.find_element(By.ID, "upload-start").is_enabled()

    # A file over max_file_bytes: 413, the limit named.
    port = free_port()
    small = upload_server(stack, port, tmp_path / "small-limit.log", MAX_FILE_BYTES="1000")
    try:
        open_page(browser, f"http://127.0.0.1:{port}", "tok-acme")
        choose_and_upload(browser, source)
        wait(browser, lambda d: "refused" in upload_message(d))
        said = upload_message(browser)
        assert said.startswith("Upload refused (413): ") and "max_file_bytes" in said, said
        assert f"({source.stat().st_size:,} bytes)" in said, said
    finally:
        stop(small)
    # A form without a file or token says so before anything is sent.
    open_page(browser, base_url, "tok-acme")
    browser.find_element(By.ID, "upload-start").click()
    assert upload_message(browser) == "Choose a file first, or drop one on the box."
    assert page_errors(browser) == []
