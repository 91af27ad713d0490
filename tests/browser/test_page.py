"""The page, driven in headless chromium against a real cluster.

`local_cluster` (tests/conftest.py): root + 2 workers on a tiny synthetic model, `.url`.
`compose_cluster` (the docker tests): the Compose stack on http://127.0.0.1:3001, `.url`.
"""
import json
import math
import re
import time

import pytest
import requests

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
    expect(page.locator('#model-info [data-row="Parallelism"]')).to_have_text("pipeline (a run of layers per worker)")
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
def test_degraded_cluster_says_once_which_worker_is_down(local_cluster, page):
    """A running cluster that lost a worker: /healthz `degraded` and the worker down in /api/cluster
    (both bent in flight). The banner names the worker once, never as "still loading"; the dead
    worker's card shows no stale load; its threads stay in the model panel."""
    def worker_down(route):
        body = route.fetch().json()
        body["workers"][1].update(status="down", error="connection refused")
        route.fulfill(json=body)

    pages.open_page(page, local_cluster.url, workers=2)
    expect(page.locator('#cluster [data-node="worker-2"]')).to_have_attribute("data-cpu", re.compile(r"\d"))
    threads = page.locator('#model-info [data-row="Threads"]').inner_text()
    assert re.search(r"workers \d+, \d+", threads), threads
    name = page.locator('#cluster [data-node="worker-2"] .node-name').inner_text()
    page.route("**/api/cluster", worker_down)
    page.route("**/healthz", lambda route: route.fulfill(
        status=503, json={"status": "degraded", "reason": f"{name} is down: connection refused"}))
    expect(page.locator("#health")).to_have_attribute("data-state", "degraded")
    expect(page.locator("#error")).to_contain_text(f"{name} is down: connection refused")
    text = pages.error_text(page)
    assert text.count(f"{name} is down") == 1, text
    assert "loading" not in text, text
    card = page.locator('#cluster [data-node="worker-2"]')
    expect(card).to_have_attribute("data-status", "down")
    expect(card.locator(".cpu")).to_have_text("— (down)")
    expect(card.locator(".mem")).to_have_text("— (down)")
    assert card.get_attribute("data-cpu") is None
    expect(card).to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator('#model-info [data-row="Threads"]')).to_have_text(threads)
    # The root itself still runs.
    expect(page.locator('#cluster [data-node="root"]')).to_have_attribute("data-status", "ready")
    page.unroute("**/api/cluster")
    page.unroute("**/healthz")
    expect(page.locator("#error")).to_have_text("")
    expect(card.locator(".cpu")).to_contain_text("%")


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


def saved_run(run: int, ttft_ms: float, ttlt_ms: float, finish: str = "length", **extra) -> dict:
    """A history record as the page stores it (frontend/js/history.js), for seeding the page."""
    return {"run": run, "started_at": "2026-11-26T00:00:00.000Z", "request_id": f"r{run}", "mode": "raw",
            "max_tokens": 1024, "temperature": None, "top_p": None, "top_k": None, "seed": None,
            "finish_reason": finish, "prompt_tokens": 9, "completion_tokens": 1024, "ttft_ms": ttft_ms,
            "ttlt_ms": ttlt_ms, "prompt": f"Run {run}", "text": "", "metrics": None, **extra}


UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000}


def assert_inside_and_apart(labels: list[dict]) -> None:
    """Every tick label inside its chart's canvas, and no two labels overlapping."""
    for label in labels:
        assert label["chart_left"] - 0.5 <= label["left"] and label["right"] <= label["chart_right"] + 0.5, label
        assert label["chart_top"] - 0.5 <= label["top"] and label["bottom"] <= label["chart_bottom"] + 0.5, label
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            apart = (a["right"] <= b["left"] + 0.5 or b["right"] <= a["left"] + 0.5
                     or a["bottom"] <= b["top"] + 0.5 or b["bottom"] <= a["top"] + 0.5)
            assert apart, (a["text"], b["text"], a, b)


@pytest.mark.browser
@pytest.mark.parametrize("ttlt_ms, unit", [(12.3, "ms"), (950.0, "ms"), (28_000.0, "s"), (136_000.0, "s"),
                                           (3_600_000.0, "min")])
def test_history_chart_axis_reads_whole_numbers_at_any_magnitude(local_cluster, page, ttlt_ms, unit):
    """Issue: a 28 s TTLT read against "0, 2500, 5000, 7500, 0000 ms": the labels lost their leading
    digits to the canvas edge. Every label must be whole, in a unit that fits, and inside the chart."""
    runs = [saved_run(1, ttlt_ms / 20, ttlt_ms / 2), saved_run(2, ttlt_ms / 10, ttlt_ms), saved_run(3, 1.0, ttlt_ms / 3)]
    pages.seed_history(page, runs)
    pages.open_page(page, local_cluster.url)
    expect(page.locator("#history tbody tr")).to_have_count(3)
    labels = pages.tick_labels(page, "#history-chart", "y")
    assert len(labels) >= 3, labels
    for label in labels:
        match = re.fullmatch(r"(\d+(?:\.\d+)?) (ms|s|min)", label["text"])
        assert match, label
        assert match[2] == unit, label
        # The text says the value the grid line stands for: nothing was cut off its front.
        assert float(match[1]) * UNIT_MS[match[2]] == pytest.approx(label["value"]), label
        assert label["chart_left"] <= label["left"] and label["right"] <= label["chart_right"], label
        assert label["chart_top"] <= label["top"] and label["bottom"] <= label["chart_bottom"], label
    values = [label["value"] for label in labels]
    assert values[0] == 0 and values == sorted(values) and values[-1] >= ttlt_ms, values
    # Labels do not overlap each other.
    tops = sorted((label["top"], label["bottom"]) for label in labels)
    assert all(a[1] <= b[0] + 0.5 for a, b in zip(tops, tops[1:])), tops
    runs_axis = pages.tick_labels(page, "#history-chart", "x")
    assert [label["text"] for label in runs_axis] == ["#1", "#2", "#3"]
    assert_inside_and_apart(labels + runs_axis)


@pytest.mark.browser
def test_history_table_fits_its_card_at_1280x800(local_cluster, page):
    """Issue: the table was wider than its card and cut the right-hand columns mid-number."""
    page.set_viewport_size({"width": 1280, "height": 800})
    big = {"prompt_tokens": 1000, "completion_tokens": 1024, "tpot_ms": 1234.56, "decode_tok_s": 1234.5,
           "injected_latency_ms": 987_654.3, "transport_ms": 123_456.7, "compute_ms": 2_345_678.9,
           "recovery_wait_ms": 120_000.5}
    runs = [saved_run(i, 12_345.6 * i, 999_999.9 * i, "error" if i == 3 else "length", **big,
                      prompt="Once upon a time, in a cluster far away, " * 5) for i in range(1, 8)]
    pages.seed_history(page, runs)
    pages.open_page(page, local_cluster.url)
    expect(page.locator("#history tbody tr")).to_have_count(7)
    overflow = page.evaluate(
        """() => {
             const table = document.querySelector('#history');
             const card = table.closest('.card').getBoundingClientRect();
             const wrap = table.parentElement;
             const bad = [];
             for (const cell of table.querySelectorAll('th, td')) {
               const b = cell.getBoundingClientRect();
               if (b.left < card.left || b.right > card.right) bad.push(['outside', cell.textContent, b.right, card.right]);
               if (!cell.classList.contains('prompt-cell') && cell.scrollWidth > cell.clientWidth)
                 bad.push(['clipped', cell.textContent, cell.scrollWidth, cell.clientWidth]);
             }
             if (wrap.scrollWidth > wrap.clientWidth) bad.push(['scrolls', wrap.scrollWidth, wrap.clientWidth]);
             return bad;
           }"""
    )
    assert overflow == []
    # The figures are whole in the cells: TTLT of run 7 is 6999999.3 ms, shown without decimals.
    cells = pages.history_cells(page)
    assert cells[6]["ttlt_ms"] == "6999999"
    assert cells[2]["finish_reason"] == "error"
    pages.screenshot(page, "history-1280.png")


@pytest.mark.browser
def test_container_charts_have_a_scale_a_time_span_and_a_larger_view(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    expect(page.locator("#stats-samples")).not_to_have_text("0", timeout=10_000)
    expect(page.locator("#stats-samples")).not_to_have_text("1", timeout=10_000)
    for node in ("root", "worker-1", "worker-2"):
        base = f'#cluster [data-node="{node}"]'
        cpu = [label["text"] for label in pages.tick_labels(page, f"{base} .cpu-spark", "y")]
        mem = [label["text"] for label in pages.tick_labels(page, f"{base} .mem-spark", "y")]
        span = [label["text"] for label in pages.tick_labels(page, f"{base} .cpu-spark", "x")]
        assert cpu[0] == "0%" and cpu[-1].endswith("%") and float(cpu[-1][:-1]) >= 100, cpu
        assert all(re.fullmatch(r"\d+(\.\d+)? (B|KiB|MiB|GiB)", text) for text in mem), mem
        mem_top = pages.tick_labels(page, f"{base} .mem-spark", "y")[-1]["value"]
        assert mem_top >= float(page.locator(base).get_attribute("data-mem")) * 0.5, (mem, mem_top)
        assert span == ["−60 s", "now"], span
        for chart in (f"{base} .cpu-spark", f"{base} .mem-spark"):
            assert_inside_and_apart(pages.tick_labels(page, chart, "y") + pages.tick_labels(page, chart, "x"))

    page.click('#cluster [data-node="worker-1"] .spark-button[data-kind="mem"]')
    dialog = page.locator("#stat-view")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("data-node", "worker-1")
    expect(page.locator("#stat-view-title")).to_contain_text("memory")
    big_y = pages.tick_labels(page, "#stat-view-chart", "y")
    big_x = [label["text"] for label in pages.tick_labels(page, "#stat-view-chart", "x")]
    assert len(big_y) >= 3 and all(re.fullmatch(r"\d+(\.\d+)? (B|KiB|MiB|GiB)", label["text"]) for label in big_y), big_y
    assert big_x == ["−60 s", "−45 s", "−30 s", "−15 s", "now"], big_x
    assert_inside_and_apart(big_y + pages.tick_labels(page, "#stat-view-chart", "x"))
    box = dialog.locator("canvas").bounding_box()
    assert box["width"] >= 400 and box["height"] >= 200, box
    pages.screenshot(page, "stat-view.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


@pytest.mark.browser
def test_prompt_token_count_is_shown_before_sending(local_cluster, page):
    """The count comes from the server's tokenizer, and is the prompt_tokens the reply then reports."""
    pages.open_page(page, local_cluster.url, workers=2)
    prompt = "one two three"
    expected = requests.post(local_cluster.url + "/api/tokenize", json={"prompt": prompt, "chat": False}, timeout=10).json()
    page.click("#prompt")
    page.keyboard.type(prompt)
    counter = page.locator("#prompt-tokens")
    expect(counter).to_have_attribute("data-tokens", str(expected["prompt_tokens"]))
    expect(counter).to_contain_text(f"{expected['prompt_tokens']} tokens")
    page.check("#mode-chat")
    chat = requests.post(local_cluster.url + "/api/tokenize", json={"prompt": prompt, "chat": True}, timeout=10).json()
    expect(counter).to_have_attribute("data-tokens", str(chat["prompt_tokens"]))
    page.check("#mode-raw")
    expect(counter).to_have_attribute("data-tokens", str(expected["prompt_tokens"]))
    assert pages.generate(page, prompt, 3) == "done"
    assert pages.metric_values(page)["prompt_tokens"] == expected["prompt_tokens"]
    page.fill("#prompt", "")
    expect(counter).to_have_text("")


@pytest.mark.browser
def test_no_request_fails_while_the_page_loads_and_runs_a_reply(local_cluster, page):
    """Issue: a 404 for /favicon.ico on every load. Every request of a plain session must succeed."""
    failed = []
    page.on("response", lambda r: r.status >= 400 and failed.append((r.status, r.url)))
    page.on("requestfailed", lambda r: failed.append((r.failure, r.url)))
    pages.open_page(page, local_cluster.url, workers=2)
    page.click("#prompt")
    page.keyboard.type("Hello there")
    expect(page.locator("#prompt-tokens")).to_have_attribute("data-state", "ok")
    assert pages.generate(page, "Hello there", 8) == "done"
    time.sleep(1.5)  # a poll or two after the reply
    assert failed == []
    # The page names its icon (else browsers ask for /favicon.ico), and the icon is there. Headless
    # chromium fetches icons only sometimes, so the page's own link is followed here.
    icon = page.evaluate("""async () => { const href = document.querySelector('link[rel="icon"]').href;
                                          const r = await fetch(href); return [href, r.status, r.headers.get('content-type')]; }""")
    assert icon[0] == local_cluster.url + "/static/favicon.svg" and icon[1] == 200, icon
    assert icon[2].startswith("image/svg+xml"), icon


@pytest.mark.browser
def test_timeline_uses_the_server_figures_and_lists_every_link(local_cluster, page):
    pages.open_page(page, local_cluster.url, workers=2)
    assert pages.generate(page, "The capital of France is", 16) == "done"
    metrics = json.loads(pages.export(page, "#export-json"))[-1]["metrics"]
    root = page.locator('#timeline [data-stage="root"]')
    assert float(root.get_attribute("data-other-ms")) == pytest.approx(metrics["root_other_ms"])
    expect(page.locator('#timeline [data-stage="recovery"]')).to_have_count(0)  # nothing failed
    # A pipeline reply has no sync part: no sync segments, rows, tiles, columns or per-worker table.
    assert metrics["parallelism"] == "pipeline" and metrics["syncs"] == 0
    expect(page.locator('#timeline .seg[data-kind^="sync"]')).to_have_count(0)
    expect(page.locator('#timeline [data-stage="syncs"]')).to_have_count(0)
    expect(page.locator("#timeline .timeline-summary")).not_to_contain_text("sync")
    expect(page.locator("#worker-table")).to_have_count(0)
    expect(page.locator('#metrics [data-metric^="sync"]').first).to_be_hidden()
    expect(page.locator('#history th[data-col^="sync"], #history th[data-col="parallelism"]')).to_have_count(0)
    links = page.locator("#link-table tbody tr")
    assert [links.nth(i).get_attribute("data-link") for i in range(links.count())] == ["link-1", "link-2", "link-out"]
    expected = [s["link_in"] for s in metrics["stages"]] + [metrics["link_out"]]
    for i, link in enumerate(expected):
        row = links.nth(i)
        assert int(row.get_attribute("data-bytes")) == link["bytes"] > 0
        assert float(row.get_attribute("data-injected-ms")) == pytest.approx(link["injected_ms"])
        assert float(row.get_attribute("data-transport-ms")) == pytest.approx(link["transport_ms"])
    expect(links.nth(0).locator("th")).to_have_text("root → worker-1")
    expect(links.nth(2).locator("th")).to_have_text("worker-2 → root")
    # The bars and the table sit side by side on a wide screen.
    bars = page.locator(".timeline-bars").bounding_box()
    table = page.locator("#link-table").bounding_box()
    assert table["x"] >= bars["x"] + bars["width"] - 1, (bars, table)


def page_call(page, module: str, expression: str):
    """Evaluate `expression` with the page's ES module /static/js/<module> bound as `m`."""
    return page.evaluate(f"async () => {{ const m = await import('/static/js/{module}'); return {expression}; }}")


@pytest.mark.browser
def test_the_page_decisions_give_exact_answers(local_cluster, page):
    """The pure functions behind the charts, the banner and the reply notices, with exact values."""
    pages.open_page(page, local_cluster.url)
    axis = lambda ms: page_call(page, "axes.js", f"m.timeAxis({ms}).ticks.map((t) => t.text)")  # noqa: E731
    assert axis(12.3) == ["0 ms", "5 ms", "10 ms", "15 ms"]
    assert axis(950) == ["0 ms", "250 ms", "500 ms", "750 ms", "1000 ms"]
    assert axis(28_000) == ["0 s", "10 s", "20 s", "30 s"]
    assert axis(136_000) == ["0 s", "50 s", "100 s", "150 s"]
    assert axis(3_600_000) == ["0 min", "20 min", "40 min", "60 min"]
    assert page_call(page, "axes.js", "m.bytesAxis(180 * 1024 ** 2).ticks.map((t) => t.text)") == ["0 MiB", "100 MiB", "200 MiB"]
    assert page_call(page, "axes.js", "m.percentAxis(37).ticks.map((t) => t.text)") == ["0%", "50%", "100%"]

    down = {"workers": [{"name": "worker-1", "status": "ready"}, {"name": "worker-3", "status": "down", "error": "connection refused"}]}
    problems = lambda health, cluster: page_call(  # noqa: E731
        page, "cluster.js", f"m.clusterProblems({json.dumps(health)}, {json.dumps(cluster)})")
    degraded = {"status": 503, "body": {"status": "degraded", "reason": "worker-3 is down: connection refused"}}
    assert problems(degraded, down) == [
        "worker-3 is down: connection refused.",
        "New replies wait until the chain is whole again; a restarted worker is reloaded on its own."]
    loading = {"status": 503, "body": {"status": "loading", "reason": "worker-3 is down: connection refused"}}
    assert problems(loading, down) == ["The cluster is still loading: worker-3 is down: connection refused"]
    assert problems({"status": 200, "body": {"status": "ok"}}, down) == ["worker-3 is down: connection refused"]
    assert problems({"status": 200, "body": {"status": "ok"}}, {"workers": []}) == []
    failed = {"status": 503, "body": {"status": "failed", "reason": "placement refused"}}
    assert problems(failed, None) == ["The cluster failed to start: placement refused"]

    waiting = {"worker": "worker-2", "message": "worker-2 is down", "waitS": 30, "since": 0, "tokensSoFar": 8}
    assert page_call(page, "reply.js", f"m.waitingText({json.dumps(waiting)}, 6200)") == {
        "left": 24, "text": "worker-2 is down. The root is waiting up to 30 s for it to come back, then replays the reply: "
                            "24 s left. 8 tokens so far."}
    assert page_call(page, "reply.js", f"m.waitingText({json.dumps(waiting)}, 31000)")["text"].endswith("giving up. 8 tokens so far.")
    recovered = [{"worker": "worker-3", "replayed_tokens": 8, "waited_ms": 24_300}]
    assert page_call(page, "reply.js", f"m.recoveredText({json.dumps(recovered)})") == \
        "worker-3 restarted; replayed 8 tokens; 24 s waiting."


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
