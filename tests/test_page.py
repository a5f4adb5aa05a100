"""The page at `/`: served by the app with only its own assets, kept out of the API schema, and in headless Chromium
a pasted review shows the label, the probability bar and the highlighted words (a screenshot is kept)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored; CI can upload it
# Emoji outside the BMP before the words: the page must slice by code points, as the API's offsets count them.
# Mixed on purpose: the smoke model is sure of reviews with only positive words, and the bar must not be full.
REVIEW = ("🎬🍿 A wonderful film, I loved it!\n\nBut the plot was dull, boring and stupid in the middle, and the ending "
          "is brilliant. 👍🏽")
# Markup in a review is text: if the page ever used innerHTML it would become elements (and run the handler).
HOSTILE = 'Great <img src=x onerror="window.__pwned=1"><b>bold</b> &amp; boring <script>window.__pwned=2</script>'


def test_the_page_and_its_assets_come_from_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.findall(r"""(?:src|href)=["'](?:https?:)?//""", page.text)
    assets = re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", page.text)
    assert {"/static/page/app.js", "/static/page/style.css"} <= set(assets)
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert "innerHTML" not in client.get("/static/page/app.js").text
    assert "/" not in client.get("/openapi.json").json()["paths"]


# -- in a browser ----------------------------------------------------------------------------------------------------


def analyse(browser, text: str, key: str | None = None):
    from selenium.webdriver.common.by import By

    review = browser.find_element(By.ID, "review")
    review.clear()
    # send_keys cannot type characters outside the BMP (ChromeDriver), so the text is set as a user paste would.
    browser.execute_script("arguments[0].value = arguments[1]", review, text)
    if key is not None:
        browser.find_element(By.CSS_SELECTOR, "#key-box summary").click()
        browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "analyse").click()


def wait_for(browser, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def outside_urls(browser, base: str) -> list[str]:
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [u for u in urls if not u.startswith(base)]


@pytest.mark.slow
def test_a_pasted_review_shows_label_bar_and_highlighted_words(browser, live_server):
    from selenium.webdriver.common.by import By

    browser.set_window_size(1100, 1250)
    browser.get(live_server.url + "/")
    analyse(browser, REVIEW)
    wait_for(browser, lambda d: d.find_element(By.ID, "result").is_displayed())

    label = browser.find_element(By.ID, "label").text.strip().lower()
    assert label in ("positive", "negative", "uncertain")
    bar = browser.find_element(By.ID, "bar-positive")
    track = browser.find_element(By.ID, "bar")
    share = bar.size["width"] / track.size["width"]
    reported = float(track.get_attribute("aria-valuenow")) / 100
    assert abs(share - reported) < 0.02 and 0 < reported < 1, (share, reported)
    assert (label == "positive") == (reported >= 0.5)

    highlighted = browser.find_element(By.ID, "highlighted")
    # The review is shown whole and unchanged (text nodes between the word spans).
    assert browser.execute_script("return arguments[0].textContent", highlighted) == REVIEW
    spans = highlighted.find_elements(By.CSS_SELECTOR, "span.w")
    words = [s.text for s in spans]
    for word in ("wonderful", "loved", "dull", "brilliant", "🎬🍿", "👍🏽"):
        assert word in words, (word, words)  # offsets mapped to the right characters, emoji or not
    colours = {s.get_attribute("class"): s.value_of_css_property("background-color") for s in spans}
    assert {"w pos", "w neg"} <= set(colours), colours
    weights = {s.text: float(s.get_attribute("data-weight")) for s in spans}
    assert weights["wonderful"] > 0 and weights["dull"] < 0, weights

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "page.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot of the page: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert not outside_urls(browser, live_server.url)
    assert browser.find_element(By.ID, "error").is_displayed() is False


@pytest.mark.slow
def test_markup_in_a_review_stays_text(browser, live_server):
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/")
    analyse(browser, HOSTILE)
    wait_for(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    highlighted = browser.find_element(By.ID, "highlighted")
    assert browser.execute_script("return arguments[0].textContent", highlighted) == HOSTILE
    assert not highlighted.find_elements(By.CSS_SELECTOR, "img, b, script")
    assert browser.execute_script("return window.__pwned") is None


@pytest.mark.slow
def test_api_key_mode_shows_the_api_error_then_works_with_the_key(browser, start_server):
    from selenium.webdriver.common.by import By

    key = "page-test-key-0123456789"
    server = start_server(SENTIMENT_API_KEY=key, SENTIMENT_LOG_LEVEL="warning")
    server.wait_ready()
    browser.get(server.url + "/")  # the page itself needs no key
    analyse(browser, "A wonderful film.")
    error = browser.find_element(By.ID, "error")
    wait_for(browser, lambda d: error.is_displayed())
    assert "API key" in error.text and "request id" in error.text, error.text
    assert browser.find_element(By.ID, "api-key").is_displayed()  # the key field was opened for it
    assert not browser.find_element(By.ID, "result").is_displayed()

    browser.find_element(By.ID, "api-key").send_keys("wrong")
    browser.find_element(By.ID, "analyse").click()
    wait_for(browser, lambda d: "wrong" in error.text)  # the API's own message for a wrong key

    browser.find_element(By.ID, "api-key").clear()
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "analyse").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    assert not error.is_displayed()
    assert browser.find_element(By.ID, "highlighted").find_elements(By.CSS_SELECTOR, "span.w")
