"""The page, driven in headless chromium against a real cluster.

`local_cluster` (tests/conftest.py): root + 2 workers on a tiny synthetic model, `.url`.
`compose_cluster` (the docker tests): the Compose stack on http://127.0.0.1:3001, `.url`.
"""
import json
import math
import time

import pytest

from playwright.sync_api import expect

from . import pages

LONG_PROMPT = "Once upon a time, in a cluster far away,"


# ---------------------------------------------------------------------------------------------
# Against the local cluster (root + 2 workers, tiny synthetic model)

@pytest.mark.browser
def test_cluster_panel_shows_root_two_workers_and_synthetic_banner(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    nodes = page.locator("#cluster [data-node]")
    assert [nodes.nth(i).get_attribute("data-node") for i in range(nodes.count())] == ["root", "worker-1", "worker-2"]
    # Each worker shows its slice of layers; the slices together are the model, in order.
    expect(page.locator('#cluster [data-node="worker-1"] .node-layers')).to_contain_text("layers 0–")
    # The placement's memory estimate beside the measured memory (issue: uneven devices)
    expect(page.locator('#cluster [data-node="worker-2"] .node-meta')).to_contain_text("needs ≈")
    expect(page.locator('#cluster [data-node="worker-2"] .mem')).to_contain_text("est.")
    expect(page.locator("#synthetic-banner")).to_be_visible()
    expect(page.locator("#synthetic-banner")).to_contain_text("random")
    expect(page.locator("#model-info")).to_contain_text("Dtype")
    expect(page.locator("#model-info")).to_contain_text("ms per hop")
    expect(page.locator("#error")).to_have_text("")


@pytest.mark.browser
def test_reply_streams_token_by_token(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    pages.fill_form(page, LONG_PROMPT, 200)
    pages.watch_reply(page)
    page.focus("#prompt")
    page.keyboard.press("Enter")  # Enter sends
    expect(page.locator("#stop")).to_be_visible()
    assert pages.wait_finished(page) == "done"

    log = pages.reply_log(page)
    streaming = [length for length, state, stop_visible in log if state == "streaming" and stop_visible and length > 0]
    # Text was on screen, and grew, while the reply was still streaming with Stop offered.
    assert len(set(streaming)) >= 3, log[:20]
    final_length = len(page.locator("#reply").text_content())
    assert final_length >= max(streaming) > min(streaming) > 0
    assert pages.metric_values(page)["completion_tokens"] == 200
    expect(page.locator("#send")).to_be_enabled()


@pytest.mark.browser
def test_shift_enter_adds_a_newline_and_does_not_send(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    page.click("#prompt")
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#prompt") == "first line\nsecond line"
    assert page.locator("#reply").get_attribute("data-state") == "idle"


@pytest.mark.browser
def test_every_metric_is_a_number_and_the_timeline_has_every_stage(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    assert pages.generate(page, "The capital of France is", 32) == "done"

    values = pages.metric_values(page)
    for key in pages.MAIN_METRICS:
        assert values[key] is not None and math.isfinite(values[key]), (key, values)
    assert values["completion_tokens"] == 32
    assert 0 < values["ttft_ms"] <= values["ttlt_ms"]
    assert values["decode_tok_s"] > 0 and values["tpot_ms"] > 0
    assert values["injected_latency_ms"] >= 0

    timeline = page.locator("#timeline")
    for stage in ("worker-1", "worker-2", "link-out"):
        row = timeline.locator(f'[data-stage="{stage}"]')
        expect(row).to_have_count(1)
        assert float(row.get_attribute("data-transport-ms")) >= 0
    assert float(timeline.locator('[data-stage="worker-1"]').get_attribute("data-compute-ms")) > 0
    assert timeline.locator(".seg").count() >= 4
    expect(page.locator("#reply-status")).to_contain_text("Done")
    path = pages.screenshot(page)
    assert path.stat().st_size > 10_000


@pytest.mark.browser
def test_container_panel_updates_every_second(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    expect(page.locator("#stats-samples")).not_to_have_text("0", timeout=10_000)
    first = pages.stats_samples(page)
    before = pages.node_stats(page)
    time.sleep(3)
    after = pages.node_stats(page)
    assert pages.stats_samples(page) >= first + 2
    for node in ("root", "worker-1", "worker-2"):
        assert after[node]["samples"] > before[node]["samples"], (node, before[node], after[node])
        assert after[node]["cpu"] is not None and after[node]["cpu"] >= 0
        assert after[node]["mem"] is not None and after[node]["mem"] > 0
        assert "%" in after[node]["cpu_text"] and "B" in after[node]["mem_text"]


@pytest.mark.browser
def test_stop_cancels_a_long_generation_on_the_server(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    pages.fill_form(page, LONG_PROMPT, 1024)
    page.click("#send")
    page.wait_for_function("() => document.querySelector('#reply').textContent.length > 0", timeout=60_000)
    request_id = page.locator("#reply").get_attribute("data-request-id")
    assert request_id

    started = time.monotonic()
    page.click("#stop")
    assert pages.wait_finished(page, timeout_ms=10_000) == "stopped"
    assert time.monotonic() - started < 5.0
    expect(page.locator("#reply-status")).to_contain_text("Stopped")
    assert page.locator("#reply").get_attribute("data-finish-reason") == "cancelled"
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_hidden()
    tokens = pages.metric_values(page)["completion_tokens"]
    assert tokens is None or tokens < 1024
    # The server has dropped the request: cancelling it again is a 404.
    assert pages.wait_request_gone(local_cluster.url, request_id) == 404


@pytest.mark.browser
@pytest.mark.parametrize("bad", ["0", "5000"])
def test_invalid_max_tokens_is_refused_with_a_clear_message(local_cluster, page, bad):
    pages.open_page(page, local_cluster.url, workers=2)
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "/api/generate" in r.url else None)
    pages.fill_form(page, "Hello", bad, ignore_eos=False)
    page.click("#send")
    expect(page.locator("#error")).to_contain_text("Max tokens must be a whole number from 1 to 1024")
    expect(page.locator("#error")).to_contain_text(bad)
    expect(page.locator("#max-tokens")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#max-tokens-error")).to_be_visible()
    # The page is not frozen: Send works again, no Stop, and nothing went to the server.
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_hidden()
    assert sent == []
    # Fixing the field clears the message and a run goes through.
    assert pages.generate(page, "Hello", 4, ignore_eos=True) == "done"
    expect(page.locator("#error")).to_have_text("")
    assert pages.metric_values(page)["completion_tokens"] == 4


@pytest.mark.browser
def test_server_rejection_is_shown(local_cluster, page):
    """A limit the page leaves to the server (temperature 0..5): its 400 message reaches the user."""
    pages.open_page(page, local_cluster.url, workers=2)
    state = pages.generate(page, "Hello", 4, temperature=9)
    assert state == "error"
    expect(page.locator("#error")).to_contain_text("400")
    expect(page.locator("#error")).to_contain_text("temperature")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_hidden()


@pytest.mark.browser
def test_network_failure_is_shown_and_the_page_recovers(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    page.route("**/api/generate", lambda route: route.abort("connectionrefused"))
    assert pages.generate(page, "Hello", 4) == "error"
    expect(page.locator("#error")).to_contain_text("Network error")
    expect(page.locator("#send")).to_be_enabled()
    page.unroute("**/api/generate")
    assert pages.generate(page, "Hello", 4) == "done"
    expect(page.locator("#error")).to_have_text("")


@pytest.mark.browser
def test_worker_down_and_loading_are_shown(local_cluster, page):
    """The cluster's own answers, bent in flight: a worker reported down, then /healthz 503."""
    def worker_down(route):
        body = route.fetch().json()
        body["workers"][1].update(status="down", error="connection refused")
        route.fulfill(json=body)

    pages.open_page(page, local_cluster.url, workers=2)
    name = page.locator('#cluster [data-node="worker-2"] .node-name').inner_text()
    page.route("**/api/cluster", worker_down)
    expect(page.locator("#error")).to_contain_text(f"{name} is down: connection refused")
    expect(page.locator('#cluster [data-node="worker-2"]')).to_have_attribute("data-status", "down")
    page.unroute("**/api/cluster")
    expect(page.locator("#error")).to_have_text("")

    page.route("**/healthz", lambda route: route.fulfill(
        status=503, json={"status": "loading", "reason": "worker-2 is loading its layers"}))
    expect(page.locator("#error")).to_contain_text("still loading: worker-2 is loading its layers")
    page.unroute("**/healthz")
    expect(page.locator("#error")).to_have_text("")


@pytest.mark.browser
def test_unreachable_root_is_shown_and_the_page_recovers(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    for pattern in ("**/healthz", "**/api/cluster", "**/api/stats"):
        page.route(pattern, lambda route: route.abort("connectionrefused"))
    expect(page.locator("#error")).to_contain_text("Cannot reach the root service")
    expect(page.locator("#health")).to_have_attribute("data-state", "down")
    expect(page.locator('#cluster [data-node="worker-1"]')).to_have_attribute("data-status", "unreachable")
    for pattern in ("**/healthz", "**/api/cluster", "**/api/stats"):
        page.unroute(pattern)
    expect(page.locator("#error")).to_have_text("")
    expect(page.locator('#cluster [data-node="worker-1"]')).to_have_attribute("data-status", "ready")


@pytest.mark.browser
def test_history_gets_a_row_per_run_and_exports(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    expect(page.locator("#export-csv")).to_be_disabled()
    for n in (3, 5):
        assert pages.generate(page, f"Run with {n} tokens", n) == "done"
    expect(page.locator("#history tbody tr")).to_have_count(2)

    rows = pages.parse_csv(pages.export(page, "#export-csv"))
    assert [row["run"] for row in rows] == ["1", "2"]
    assert [row["completion_tokens"] for row in rows] == ["3", "5"]
    for row in rows:
        assert float(row["ttft_ms"]) <= float(row["ttlt_ms"])
        assert row["finish_reason"] == "length"
    assert rows[0]["prompt"] == "Run with 3 tokens"

    runs = json.loads(pages.export(page, "#export-json"))
    assert len(runs) == 2 and runs[1]["metrics"]["completion_tokens"] == 5
    assert len(runs[1]["metrics"]["stages"]) == 2


# ---------------------------------------------------------------------------------------------
# Against the Docker Compose stack: the same checks through any base URL

@pytest.mark.docker
def test_compose_page(compose_cluster, page):
    pages.open_page(page, compose_cluster.url)
    workers = page.locator('#cluster [data-node^="worker-"]')
    assert workers.count() >= 1

    assert pages.generate(page, "The capital of France is", 16) == "done"
    values = pages.metric_values(page)
    for key in pages.MAIN_METRICS:
        assert values[key] is not None and math.isfinite(values[key]), (key, values)
    assert values["completion_tokens"] == 16
    expect(page.locator("#timeline [data-stage='worker-1']")).to_have_count(1)
    expect(page.locator("#history tbody tr")).to_have_count(1)

    first = pages.stats_samples(page)
    time.sleep(3)
    assert pages.stats_samples(page) >= first + 2
    for node, stats in pages.node_stats(page).items():
        assert stats["cpu"] is not None and stats["mem"] is not None and stats["mem"] > 0, (node, stats)
    pages.screenshot(page, "compose-page.png")
