// The page at /: sends the review to POST /predict?explain=true and shows the label, P(positive) as a bar and the
// review with each word tinted by its weight. User text only ever enters the page as DOM text nodes.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const review = $("review");
  const keyBox = $("key-box");
  const keyInput = $("api-key");
  const button = $("analyse");
  const errorBox = $("error");
  const result = $("result");
  const KEY_STORE = "sentiment-api-key";
  const POSITIVE = "22, 163, 74";
  const NEGATIVE = "220, 38, 38";

  keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
  keyBox.open = keyInput.value !== "";

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  async function errorMessage(response) {
    // Every API error is {"error": {"code", "message", "request_id"}}; anything else (a proxy's page) is summarised.
    let body = null;
    try {
      body = await response.json();
    } catch (_) { /* not JSON */ }
    const error = body && body.error;
    let message = error && error.message ? error.message : `the server answered HTTP ${response.status}`;
    if (response.status === 401) {
      message += keyInput.value.trim() ? " (check the API key below the review)" : " (enter the API key below the review)";
      keyBox.open = true;
      keyInput.focus();
    }
    if (error && error.request_id) message += ` [request id ${error.request_id}]`;
    return message;
  }

  function tint(element, weight, largest) {
    const strength = Math.min(1, Math.abs(weight) / largest);
    const alpha = 0.08 + 0.72 * strength;
    element.style.backgroundColor = `rgba(${weight >= 0 ? POSITIVE : NEGATIVE}, ${alpha.toFixed(3)})`;
    if (alpha > 0.55) element.style.color = "#fff";
  }

  function wordSpan(word, largest) {
    const span = document.createElement("span");
    span.className = "w " + (word.weight >= 0 ? "pos" : "neg");
    span.textContent = word.text;
    span.dataset.weight = String(word.weight);
    span.title = `${word.weight >= 0 ? "+" : ""}${word.weight.toFixed(4)} to P(positive)`;
    tint(span, word.weight, largest);
    return span;
  }

  function render(text, prediction) {
    const p = prediction.probabilities.positive;
    const label = $("label");
    label.textContent = prediction.label;
    label.className = "label " + prediction.label;
    $("confidence").textContent = `${(100 * p).toFixed(1)}% positive · ${(100 * (1 - p)).toFixed(1)}% negative`;
    $("bar-positive").style.width = `${(100 * p).toFixed(2)}%`;
    $("bar").setAttribute("aria-valuenow", (100 * p).toFixed(1));

    // Offsets count Unicode code points (Python string indices), so slice the code points, not UTF-16 units.
    const chars = Array.from(text);
    const explanation = prediction.explanation;
    const words = explanation.words.map((w) => ({ ...w, text: chars.slice(w.start, w.end).join("") }));
    const largest = Math.max(1e-6, ...words.map((w) => Math.abs(w.weight)));
    const nodes = [];
    let at = 0;
    for (const word of words) {
      if (word.start > at) nodes.push(document.createTextNode(chars.slice(at, word.start).join("")));
      nodes.push(wordSpan(word, largest));
      at = word.end;
    }
    if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join("")));
    $("highlighted").replaceChildren(...nodes);

    const strongest = [...words].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 6)
      .filter((w) => Math.abs(w.weight) > 0);
    const top = $("top-words");
    top.replaceChildren(document.createTextNode(strongest.length ? "Strongest: " : "No word changes the score."));
    for (const word of strongest) top.append(wordSpan(word, largest));

    let meta = `${prediction.tokens} tokens · model ${prediction.model_version}`;
    if (explanation.explained_words < explanation.total_words) {
      meta = `Only the first ${explanation.explained_words} of ${explanation.total_words} words were weighed ` +
        `(SENTIMENT_MAX_EXPLAIN_WORDS); the rest are shown plain. ` + meta;
    }
    $("meta").textContent = meta;
    result.hidden = false;
  }

  async function analyse() {
    const text = review.value;
    if (!text.trim()) {
      showError("Paste a review first.");
      review.focus();
      return;
    }
    const headers = { "content-type": "application/json" };
    const key = keyInput.value.trim();
    if (key) headers.authorization = `Bearer ${key}`;
    sessionStorage.setItem(KEY_STORE, key);
    errorBox.hidden = true;
    button.disabled = true;
    button.textContent = "Analysing…";
    try {
      const response = await fetch("/predict?explain=true", { method: "POST", headers, body: JSON.stringify({ text }) });
      if (!response.ok) {
        showError(await errorMessage(response));
        return;
      }
      render(text, await response.json());
    } catch (err) {
      showError(`Could not reach the server: ${err.message}`);
    } finally {
      button.disabled = false;
      button.textContent = "Analyse";
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    analyse();
  });
  review.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      analyse();
    }
  });
})();
