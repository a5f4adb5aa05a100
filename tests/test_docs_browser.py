"""Headless Chromium on /docs: "Try it out" on POST /predict, Execute, and the answer appears. Also /redoc renders.
Everything the pages load must come from the server itself (the docs work with no internet)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow

# Swagger UI's element for POST /predict (tag "predict", FastAPI's operation id "predict_predict_post").
OPERATION = "#operations-predict-predict_predict_post"


# ReDoc's footer shows Redocly's logo from their CDN; offline the image fails and ReDoc hides it (onError), so it
# is the one outside URL allowed. Everything the pages need comes from the server.
DECORATIVE = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}


def outside_urls(driver, base: str) -> list[str]:
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [u for u in urls if not u.startswith(base) and u not in DECORATIVE]


def test_swagger_ui_try_it_out_on_predict_shows_the_answer(browser, live_server, tmp_path: Path):
    wait = WebDriverWait(browser, 60)
    browser.get(f"{live_server.url}/docs")
    operation = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, OPERATION)))
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{OPERATION} .try-out__btn"))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{OPERATION} button.execute"))).click()
    answer = f"{OPERATION} .live-responses-table tbody"
    status = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"{answer} .response-col_status")))
    body = browser.find_element(By.CSS_SELECTOR, f"{answer} .response-col_description pre")
    wait.until(lambda _: '"label"' in body.text)
    screenshot = tmp_path / "docs-try-it-out.png"
    browser.save_screenshot(str(screenshot))
    assert status.text.strip().startswith("200"), status.text
    assert '"probabilities"' in body.text and '"model_version"' in body.text, body.text
    assert screenshot.stat().st_size > 10_000
    assert not outside_urls(browser, live_server.url)


def test_redoc_renders_the_api(browser, live_server, tmp_path: Path):
    browser.get(f"{live_server.url}/redoc")
    WebDriverWait(browser, 60).until(lambda d: "Classify the sentiment of one review" in d.page_source)
    browser.save_screenshot(str(tmp_path / "redoc.png"))
    assert not outside_urls(browser, live_server.url)
