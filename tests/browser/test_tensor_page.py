"""The page on a tensor-parallel cluster: "Where the time went" splits compute from synchronisation.

`tensor_cluster`: root + 2 workers on the tiny synthetic model, PARALLELISM=tensor, a little latency
so that the syncs' injected delay is visible. The pipeline side (no sync part) is checked in
test_page.py's timeline test, on `local_cluster`.
"""
import json

import pytest
from playwright.sync_api import expect

from ..conftest import start_cluster
from . import pages

TOKENS = 6  # enough for decode figures (per sync p50), few enough to stay fast


@pytest.fixture(scope="module")
def tensor_cluster(tiny_model, logs_dir):
    # The mesh (the workers trade their partials); the page shows a star's reply the same way.
    cluster = start_cluster(tiny_model, logs_dir, workers=2, latency_ms="1,3", parallelism="tensor",
                            extra_env={"SYNC_TOPOLOGY": "mesh"})
    yield cluster
    cluster.stop()


def ms_text(ms: float) -> str:
    """As the page writes a figure in its tables and tiles: one decimal, then the unit."""
    return f"{ms:.1f} ms"


@pytest.mark.browser
def test_tensor_reply_shows_compute_against_synchronisation(tensor_cluster, page):
    pages.open_page(page, tensor_cluster.url, workers=2)
    expect(page.locator('#model-info [data-row="Parallelism"]')).to_have_text(
        "tensor (a share of every layer), syncs worker to worker (mesh)")
    assert pages.generate(page, "The capital of France is", TOKENS) == "done"
    metrics = json.loads(pages.export(page, "#export-json"))[-1]["metrics"]
    sync = metrics["sync"]
    assert metrics["parallelism"] == "tensor" and metrics["syncs"] == TOKENS * 2 * 4  # 4 layers, a step per token
    assert sync["injected_ms"] > 0

    # The critical path: compute (the slowest worker per step) against the syncs, then the links and the rest.
    timeline = page.locator("#timeline")
    rows = timeline.locator(".timeline-row")
    assert [rows.nth(i).get_attribute("data-stage") for i in range(rows.count())] == [
        "compute", "syncs", "links", "root", "worker-1", "worker-2"]
    compute = timeline.locator('[data-stage="compute"]')
    assert float(compute.get_attribute("data-compute-ms")) == pytest.approx(metrics["compute_ms"])
    syncs = timeline.locator('[data-stage="syncs"]')
    assert float(syncs.get_attribute("data-sync-injected-ms")) == pytest.approx(sync["injected_ms"])
    assert float(syncs.get_attribute("data-sync-transport-ms")) == pytest.approx(sync["transport_ms"])
    expect(syncs.locator(".seg-sync-injected")).to_have_attribute(
        "title", f"Sync injected latency: {ms_text(sync['injected_ms'])}")
    expect(syncs.locator("small")).to_contain_text(f"{metrics['syncs']} syncs")
    links = timeline.locator('[data-stage="links"]')
    assert float(links.get_attribute("data-injected-ms")) == pytest.approx(
        metrics["injected_latency_ms"] - sync["injected_ms"])
    # The rows on the critical path add up to the reply (root_other_ms is TTLT minus the rest).
    along = sum(float(v) for row in ("compute", "syncs", "links", "root")
                for v in page.eval_on_selector(f'#timeline [data-stage="{row}"]',
                                               "(li) => Object.entries(li.dataset).filter(([k]) => k.endsWith('Ms')).map(([, v]) => v)"))
    assert along == pytest.approx(metrics["ttlt_ms"], rel=1e-6)
    expect(timeline.locator(".timeline-summary")).to_contain_text("sync injected latency")
    expect(timeline.locator('[data-summary="compute"]')).to_have_attribute("data-ms", str(metrics["compute_ms"]))

    # Each worker beside the others: its own compute and its time in syncs, in the bars and the table.
    for i, stage in enumerate(metrics["stages"]):
        bar = timeline.locator(f'[data-stage="worker-{i + 1}"]')
        assert float(bar.get_attribute("data-compute-ms")) == pytest.approx(stage["compute_ms"])
        assert float(bar.get_attribute("data-sync-ms")) == pytest.approx(stage["sync_ms"])
        cells = page.locator(f'#worker-table tr[data-worker="{stage["name"]}"] td')
        expect(cells).to_have_text([ms_text(stage["compute_ms"]), ms_text(stage["sync_ms"])])

    # The link table: the broadcast to each worker, worker-1's output home, and the syncs with their bytes.
    table = page.locator("#link-table tbody tr")
    assert [table.nth(i).get_attribute("data-link") for i in range(table.count())] == ["link-1", "link-2", "link-out", "syncs"]
    expect(table.nth(1).locator("th")).to_have_text("root → worker-2")
    expect(table.nth(2).locator("th")).to_have_text("worker-1 → root")
    expect(table.nth(3).locator("td").first).to_have_text(ms_text(sync["injected_ms"]))
    assert int(table.nth(3).get_attribute("data-bytes")) == sync["bytes"] > 0

    # The tiles and the history carry the sync figures too (one table drives both, and the CSV).
    values = pages.metric_values(page)
    assert values["syncs"] == metrics["syncs"]
    assert values["sync_injected_ms"] == round(sync["injected_ms"], 1)
    assert values["sync_p50_ms"] == round(sync["per_sync_ms"]["p50"], 2)
    expect(page.locator('#metrics [data-metric="sync_transport_ms"]')).to_be_visible()
    cells = pages.history_cells(page)[-1]
    assert cells["parallelism"] == "tensor" and cells["syncs"] == str(metrics["syncs"])
    assert cells["sync_injected_ms"] == f"{sync['injected_ms']:.1f}"
    row = pages.parse_csv(pages.export(page, "#export-csv"))[-1]
    assert (row["parallelism"], int(row["syncs"])) == ("tensor", metrics["syncs"])
    assert float(row["sync_injected_ms"]) == pytest.approx(sync["injected_ms"])
    assert int(row["sync_bytes"]) == sync["bytes"]
    pages.screenshot(page, "tensor-timeline.png")


@pytest.mark.browser
def test_the_metric_table_decides_what_a_reply_shows(tensor_cluster, page):
    """metrics.js's pure functions, with exact answers: nested paths, tensor-only tiles and columns."""
    pages.open_page(page, tensor_cluster.url)

    def call(expression: str):
        return page.evaluate(f"async () => {{ const m = await import('/static/js/metrics.js'); return {expression}; }}")

    metrics = {"parallelism": "tensor", "syncs": 16, "itl_ms": {"p50": 1.5},
               "sync": {"injected_ms": 40.25, "transport_ms": 5, "bytes": 1000, "per_sync_ms": {"p50": 2.5, "p90": None}}}
    fields = call(f"m.metricFields({json.dumps(metrics)})")
    assert (fields["sync_injected_ms"], fields["sync_bytes"], fields["sync_p50_ms"], fields["sync_p90_ms"]) == (40.25, 1000, 2.5, None)
    assert (fields["itl_p50_ms"], fields["itl_p90_ms"], fields["parallelism"], fields["syncs"]) == (1.5, None, "tensor", 16)
    assert call("m.metricValue({}, 'sync_injected_ms')") is None
    assert call("[m.shownFor('syncs', 'tensor'), m.shownFor('syncs', 'pipeline'), m.shownFor('ttft_ms', 'pipeline')]") == [
        True, False, True]
    pipeline_columns = call("m.historyColumns([{parallelism: 'pipeline'}, {}]).map((c) => c[0])")
    assert "syncs" not in pipeline_columns and "parallelism" not in pipeline_columns
    assert call("m.historyColumns([{parallelism: 'pipeline'}, {parallelism: 'tensor'}]).map((c) => c[0])")[-3:] == [
        "parallelism", "syncs", "sync_injected_ms"]
    csv = call("m.CSV_COLUMNS")
    assert csv[-1] == "prompt" and {"parallelism", "syncs", "sync_transport_ms", "sync_bytes", "sync_p90_ms"} <= set(csv)
