"""A worker restarted mid-reply, seen in the page: "worker-2 is down" while the root waits, then
"worker-2 restarted; replayed N tokens; S waiting", and the waiting as its own segment of "Where the
time went". Its own cluster: the test kills and restarts a worker."""
import json

import pytest
from playwright.sync_api import expect

from . import pages
from . import workers
from .workers import crash_worker

RECOVERY_WAIT_S = 120  # long: a restarted worker has time to start and reload its slice on a busy laptop


@pytest.fixture(scope="module")
def restartable_cluster(tiny_model, logs_dir):
    cluster = workers.fragile_cluster(tiny_model, logs_dir, RECOVERY_WAIT_S)
    yield cluster
    cluster.stop()


@pytest.mark.browser
def test_recovered_reply_says_so_and_shows_the_wait(restartable_cluster, page):
    cluster = restartable_cluster
    pages.open_page(page, cluster.url, workers=2)
    pages.fill_form(page, "Resilience is a property of systems", 160)
    pages.watch_notice(page)
    page.click("#send")
    page.wait_for_function("() => Number(document.querySelector('#reply').dataset.tokens) >= 8", timeout=60_000)
    crash_worker(cluster, "worker-2")
    notice = page.locator("#reply-notice")
    expect(notice).to_have_attribute("data-kind", "worker-down", timeout=10_000)
    cluster.start_worker(1)

    assert pages.wait_finished(page, timeout_ms=(RECOVERY_WAIT_S + 60) * 1000) == "done"
    expect(notice).to_have_attribute("data-kind", "recovered")
    expect(notice).to_contain_text("worker-2 restarted; replayed")
    assert [kind for kind, _, _ in pages.notice_log(page)][:1] == ["worker-down"]
    assert pages.metric_values(page)["completion_tokens"] == 160

    metrics = json.loads(pages.export(page, "#export-json"))[-1]["metrics"]
    assert metrics["recoveries"] == 1 and metrics["recovery_wait_ms"] > 0
    expect(page.locator("#reply-status")).to_contain_text("Recovered from 1 worker failure")
    waited = page.locator('#timeline [data-stage="recovery"]')
    expect(waited).to_have_count(1)
    assert float(waited.get_attribute("data-recovery-ms")) == pytest.approx(metrics["recovery_wait_ms"])
    expect(waited.locator(".seg-recovery")).to_have_count(1)
    # "root and the rest" is the server's figure, not the wait folded into it.
    root = page.locator('#timeline [data-stage="root"]')
    assert float(root.get_attribute("data-other-ms")) == pytest.approx(metrics["root_other_ms"])
    assert metrics["root_other_ms"] < metrics["recovery_wait_ms"]
    expect(page.locator("#timeline .timeline-summary")).to_contain_text("waiting for a worker to return")
    rows = pages.parse_csv(pages.export(page, "#export-csv"))
    assert rows[0]["finish_reason"] == "length" and float(rows[0]["recovery_wait_ms"]) == pytest.approx(metrics["recovery_wait_ms"])
    pages.screenshot(page, "worker-recovered.png")
