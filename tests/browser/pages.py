"""Page-driving helpers shared by the browser tests, against any base URL (local or compose cluster).

They read the page only through its stable ids and data attributes:
#prompt #prompt-tokens[data-tokens] #max-tokens #send #stop #reply[data-state][data-tokens]
#reply-notice[data-kind] #metrics [data-metric] #timeline [data-stage] #link-table [data-link]
#cluster [data-node] #stats-samples #error #history #history-chart .tick[data-axis] #stat-view
#export-csv #export-json #synthetic-banner.
"""
import csv
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect

HISTORY_KEY = "ddllm.history.v1"  # the page's sessionStorage key (frontend/js/history.js)
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"

# The six numbers shown under every reply (keys of the server's `metrics`).
MAIN_METRICS = ("ttft_ms", "ttlt_ms", "completion_tokens", "decode_tok_s", "tpot_ms", "injected_latency_ms")

LOAD_TIMEOUT_MS = 120_000   # a cold cluster may still be loading its slices
REPLY_TIMEOUT_MS = 180_000  # a whole reply on a 2-core laptop, with injected latency


def open_page(page: Page, base_url: str, workers: int | None = None) -> None:
    """Open the page and wait until the side panel shows a ready cluster (root + `workers` workers)."""
    page.goto(base_url)
    expect(page.locator("#health")).to_have_attribute("data-state", "ok", timeout=LOAD_TIMEOUT_MS)
    root = page.locator('#cluster [data-node="root"]')
    expect(root).to_have_attribute("data-status", "ready", timeout=LOAD_TIMEOUT_MS)
    if workers is not None:
        expect(page.locator("#cluster [data-node]")).to_have_count(1 + workers, timeout=LOAD_TIMEOUT_MS)
        for i in range(1, workers + 1):
            node = page.locator(f'#cluster [data-node="worker-{i}"]')
            expect(node).to_have_attribute("data-status", "ready", timeout=LOAD_TIMEOUT_MS)


def fill_form(page: Page, prompt: str, max_tokens, *, ignore_eos: bool = True, temperature=None) -> None:
    """Type a prompt and the settings. ignore_eos keeps a random model from stopping early."""
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    if ignore_eos or temperature is not None:
        details = page.locator("#sampling")
        if details.get_attribute("open") is None:
            details.locator("summary").click()
    if ignore_eos:
        page.check("#ignore-eos")
    if temperature is not None:
        page.fill("#temperature", str(temperature))


def run_number(page: Page) -> int:
    """The number of the last run the page started (#reply[data-run]); 0 before the first."""
    return int(page.locator("#reply").get_attribute("data-run") or 0)


def wait_finished(page: Page, timeout_ms: int = REPLY_TIMEOUT_MS, after_run: int = 0) -> str:
    """Wait until a run numbered above `after_run` has left the streaming state and the Stop button
    is gone; return the reply's final state ("done", "stopped" or "error")."""
    page.wait_for_function(
        "(after) => { const r = document.querySelector('#reply');"
        " return Number(r.dataset.run || 0) > after && r.dataset.state !== 'streaming'"
        " && document.querySelector('#stop').hidden; }",
        arg=after_run,
        timeout=timeout_ms,
    )
    return page.locator("#reply").get_attribute("data-state")


def generate(page: Page, prompt: str, max_tokens, **form) -> str:
    """One whole run through the page; returns the final reply state ("done" unless something broke)."""
    fill_form(page, prompt, max_tokens, **form)
    before = run_number(page)
    page.click("#send")
    return wait_finished(page, after_run=before)


def metric_values(page: Page) -> dict:
    """{key: float or None} for every [data-metric] under #metrics."""
    cells = page.locator("#metrics [data-metric]")
    values = {}
    for i in range(cells.count()):
        cell = cells.nth(i)
        text = cell.inner_text().strip()
        try:
            values[cell.get_attribute("data-metric")] = float(text)
        except ValueError:
            values[cell.get_attribute("data-metric")] = None
    return values


def node_stats(page: Page) -> dict:
    """{node: {status, cpu, mem, cpu_text, mem_text, samples}} from the cluster panel."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#cluster [data-node]')].map((n) => [
             n.dataset.node, {status: n.dataset.status,
                              cpu: n.dataset.cpu === undefined ? null : Number(n.dataset.cpu),
                              mem: n.dataset.mem === undefined ? null : Number(n.dataset.mem),
                              cpu_text: n.querySelector('.cpu').textContent,
                              mem_text: n.querySelector('.mem').textContent,
                              samples: Number(n.dataset.samples || 0)}]))"""
    )


def stats_samples(page: Page) -> int:
    return int(page.inner_text("#stats-samples"))


def watch_reply(page: Page) -> None:
    """Start logging every change of #reply: [text length, state, Stop visible] per mutation."""
    page.evaluate(
        """() => {
             const reply = document.querySelector('#reply');
             const stop = document.querySelector('#stop');
             window.__replyLog = [];
             const log = () => window.__replyLog.push([reply.textContent.length, reply.dataset.state, !stop.hidden]);
             new MutationObserver(log).observe(reply, {childList: true, characterData: true, subtree: true, attributes: true});
           }"""
    )


def reply_log(page: Page) -> list:
    return page.evaluate("() => window.__replyLog")


def error_text(page: Page) -> str:
    return page.locator("#error").inner_text().strip()


def cancel_status(base_url: str, request_id: str) -> int:
    """HTTP status of POST /api/requests/<id>/cancel: 404 once the server has forgotten the request."""
    req = urllib.request.Request(f"{base_url}/api/requests/{request_id}/cancel", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def wait_request_gone(base_url: str, request_id: str, timeout_s: float = 10.0) -> int:
    """Poll the cancel endpoint until it answers 404; return the last status seen."""
    deadline = time.monotonic() + timeout_s
    status = cancel_status(base_url, request_id)
    while status != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = cancel_status(base_url, request_id)
    return status


def export(page: Page, button: str) -> str:
    """Click an export button and return the downloaded file's text."""
    with page.expect_download() as info:
        page.click(button)
    return Path(info.value.path()).read_text(encoding="utf-8")


def parse_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def parse_json(text: str):
    return json.loads(text)


def screenshot(page: Page, name: str = "page.png") -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def seed_history(page: Page, records: list[dict]) -> None:
    """Store `records` as the tab's saved runs before the page's scripts run (call before open_page)."""
    key, value = json.dumps(HISTORY_KEY), json.dumps(json.dumps(records))
    page.add_init_script(f"if (!sessionStorage.getItem({key})) sessionStorage.setItem({key}, {value});")


def tick_labels(page: Page, chart: str, axis: str = "y") -> list[dict]:
    """[{text, value, left, right, top, bottom}] of a chart's tick labels, with the box of its canvas
    as chart_* keys (page coordinates)."""
    return page.evaluate(
        """([chart, axis]) => {
             const wrap = document.querySelector(chart);
             const c = wrap.querySelector('canvas').getBoundingClientRect();
             return [...wrap.querySelectorAll(`.tick[data-axis="${axis}"]`)].map((t) => {
               const b = t.getBoundingClientRect();
               return {text: t.textContent, value: t.dataset.value === undefined ? null : Number(t.dataset.value),
                       left: b.left, right: b.right, top: b.top, bottom: b.bottom,
                       scroll_width: t.scrollWidth, client_width: t.clientWidth,
                       chart_left: c.left, chart_right: c.right, chart_top: c.top, chart_bottom: c.bottom};
             });
           }""",
        [chart, axis],
    )


def watch_notice(page: Page) -> None:
    """Start logging every [data-kind, text] #reply-notice shows."""
    page.evaluate(
        """() => {
             const box = document.querySelector('#reply-notice');
             window.__noticeLog = [];
             const log = () => { if (!box.hidden) window.__noticeLog.push([box.dataset.kind, box.textContent,
                                                                            box.dataset.remainingS ?? null]); };
             new MutationObserver(log).observe(box, {childList: true, characterData: true, subtree: true, attributes: true});
           }"""
    )


def notice_log(page: Page) -> list:
    return page.evaluate("() => window.__noticeLog")


def history_cells(page: Page) -> list[dict]:
    """[{column key: cell text}] per row of the history table."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#history tbody tr')].map((tr) => Object.fromEntries(
             [...tr.querySelectorAll('td')].map((td) => [td.dataset.col, td.textContent])))"""
    )
