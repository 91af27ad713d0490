"""The page on a modelled-compute cluster (COMPUTE=modelled): the plain banner says the tokens are not real,
and the synthetic model's banner (which says the timings are real) gives way to it."""
import pytest
from playwright.sync_api import expect

from ..conftest import start_cluster
from . import pages

BANNER = "Modelled compute: tokens are not real; times come from the device profiles"


@pytest.fixture(scope="module")
def modelled_cluster(tiny_model, logs_dir):
    cluster = start_cluster(tiny_model, logs_dir, workers=2, latency_ms="1,3",
                            extra_env={"COMPUTE": "modelled", "DEVICES": "rpi5", "ROOT_DEVICE": "rpi5"})
    yield cluster
    cluster.stop()


@pytest.mark.browser
def test_modelled_compute_is_said_plainly(modelled_cluster, page):
    pages.open_page(page, modelled_cluster.url, workers=2)
    expect(page.locator("#modelled-banner")).to_be_visible()
    expect(page.locator("#modelled-banner")).to_contain_text(BANNER)
    expect(page.locator("#synthetic-banner")).to_be_hidden()
    expect(page.locator('#model-info [data-row="Compute"]')).to_contain_text("modelled, not real tokens")
    assert pages.generate(page, "The capital of France is", 4) == "done"
    expect(page.locator("#reply")).to_have_attribute("data-tokens", "4")
