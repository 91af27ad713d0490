"""A worker that dies mid-reply and does not come back, seen in the page: the notice at once with the
root's countdown, then the failed reply kept (tokens, partial metrics, a history row finished
"error"), and the side panel of a degraded cluster. Its own cluster: the test kills a worker."""
import re

import pytest
import requests
from playwright.sync_api import expect

from . import pages
from . import workers
from .workers import crash_worker

RECOVERY_WAIT_S = 12  # short, but long enough to watch the countdown: then the reply gives up


@pytest.fixture(scope="module")
def fragile_cluster(tiny_model, logs_dir):
    cluster = workers.fragile_cluster(tiny_model, logs_dir, RECOVERY_WAIT_S)
    yield cluster
    cluster.stop()


@pytest.mark.browser
def test_worker_dying_mid_reply_is_said_at_once_and_the_failed_run_is_kept(fragile_cluster, page):
    cluster = fragile_cluster
    pages.open_page(page, cluster.url, workers=2)
    threads = page.locator('#model-info [data-row="Threads"]').inner_text()
    pages.fill_form(page, "Resilience is a property of systems", 1024)
    pages.watch_notice(page)
    page.click("#send")
    page.wait_for_function("() => Number(document.querySelector('#reply').dataset.tokens) >= 8", timeout=60_000)

    crash_worker(cluster, "worker-2")
    notice = page.locator("#reply-notice")
    # Said within a few seconds, long before the root gives up.
    expect(notice).to_have_attribute("data-kind", "worker-down", timeout=(RECOVERY_WAIT_S // 2) * 1000)
    expect(notice).to_contain_text("worker-2 is down")
    expect(notice).to_contain_text(f"up to {RECOVERY_WAIT_S} s")
    expect(page.locator("#reply-status")).to_contain_text("Waiting for worker-2")
    tokens_before = len(page.locator("#reply").text_content())

    assert pages.wait_finished(page, timeout_ms=(RECOVERY_WAIT_S + 30) * 1000) == "error"
    # The countdown ran down while the root waited.
    left = [int(s) for kind, _, s in pages.notice_log(page) if kind == "worker-down" and s is not None]
    assert len(set(left)) >= 3 and left == sorted(left, reverse=True) and left[0] <= RECOVERY_WAIT_S, left

    # The tokens, TTFT and the partial figures are kept, and so is the run.
    expect(notice).to_have_attribute("data-kind", "failed")
    expect(notice).to_contain_text('finish "error"')
    assert len(page.locator("#reply").text_content()) >= tokens_before > 0
    values = pages.metric_values(page)
    produced = int(page.locator("#reply").get_attribute("data-tokens"))
    assert values["completion_tokens"] == produced >= 8, values
    assert values["ttft_ms"] > 0 and values["ttlt_ms"] >= values["ttft_ms"], values
    expect(page.locator('#timeline [data-stage="worker-1"]')).to_have_count(1)
    expect(notice).to_contain_text("worker-2")
    cells = pages.history_cells(page)
    assert len(cells) == 1 and cells[0]["finish_reason"] == "error", cells
    rows = pages.parse_csv(pages.export(page, "#export-csv"))
    assert rows[0]["finish_reason"] == "error" and int(rows[0]["completion_tokens"]) == produced
    assert float(rows[0]["ttft_ms"]) > 0

    # The side panel of the cluster that lost a worker: said once, no stale load, threads kept.
    card = page.locator('#cluster [data-node="worker-2"]')
    expect(card).to_have_attribute("data-status", "down", timeout=10_000)
    expect(card.locator(".cpu")).to_have_text("— (down)")
    expect(card.locator(".mem")).to_have_text("— (down)")
    expect(card).to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator('#model-info [data-row="Threads"]')).to_have_text(threads)
    expect(page.locator("#health")).to_have_attribute("data-state", "degraded")
    text = pages.error_text(page)
    assert "loading" not in text and text.count("worker-2 is down") == 1, text
    pages.screenshot(page, "worker-failed.png")

    # The worker comes back: the root reloads it and the page says so.
    cluster.start_worker(1)
    expect(card).to_have_attribute("data-status", "ready", timeout=120_000)
    expect(page.locator("#health")).to_have_attribute("data-state", "ok", timeout=10_000)
    expect(card.locator(".cpu")).to_contain_text("%", timeout=10_000)
    assert requests.get(cluster.url + "/healthz", timeout=10).status_code == 200
