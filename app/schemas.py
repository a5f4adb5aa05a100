"""Request and response bodies. Their Field limits, descriptions and examples are the OpenAPI document.

The request models are built per app (`request_models`) because their limits come from the settings: the schema
then states the very limits the server enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool
from pydantic.json_schema import SkipJsonSchema

EXAMPLE_TEXT = "A moving, beautifully acted film. I loved every minute of it."
EXAMPLE_TEXTS = [EXAMPLE_TEXT, "Dull, predictable and far too long. A waste of an evening."]
EXPLAIN_DESCRIPTION = ("Also return, per text, how much each word moved P(positive) (`explanation`, by "
                       "occlusion). Costs one extra forward-pass row per word, up to SENTIMENT_MAX_EXPLAIN_WORDS "
                       "words per text. `?explain=true` and `\"explain\": true` in the body are the same; either "
                       "one asks for it.")


# At least one character that is not whitespace in Python's sense (str.isspace, what `_check_text` enforces), spelt
# out: the schema's regex dialect (ECMAScript) has a different \s, without \x1c-\x1f and \x85 but with \ufeff.
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _check_text(text: str) -> str:
    # (Unpaired UTF-16 surrogates such as a lone "\ud800" escape are refused by pydantic itself: not characters.)
    if text.isspace():
        raise ValueError("is blank: send some words")
    return text


def request_models(max_text_chars: int, max_batch_texts: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(TextRequest, TextsRequest) with the configured limits. Each says which texts it carries (`batch()`) and
    how their results are answered (`reply(results)`): one result, or `{"results": [...]}` in order."""
    text_type = Annotated[
        str,
        Field(min_length=1, max_length=max_text_chars,
              json_schema_extra={"pattern": NOT_BLANK}),
        AfterValidator(_check_text),
    ]

    class TextRequest(BaseModel):
        """One text to classify."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": EXAMPLE_TEXT}]})
        text: text_type = Field(description=f"The review: any Unicode, 1 to {max_text_chars} characters, not "
                                            f"only whitespace.", examples=[EXAMPLE_TEXT])
        explain: StrictBool = Field(False, description=EXPLAIN_DESCRIPTION, examples=[True])

        def batch(self) -> list[str]:
            return [self.text]

        def reply(self, results: list[dict]) -> dict:
            return results[0]

    class TextsRequest(BaseModel):
        """Several texts to classify in one request; results come back in the same order."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": EXAMPLE_TEXTS}]})
        texts: list[text_type] = Field(min_length=1, max_length=max_batch_texts,
                                       description=f"1 to {max_batch_texts} reviews, each like `text`.",
                                       examples=[EXAMPLE_TEXTS])
        explain: StrictBool = Field(False, description=EXPLAIN_DESCRIPTION, examples=[True])

        def batch(self) -> list[str]:
            return self.texts

        def reply(self, results: list[dict]) -> dict:
            return {"results": results}

    return TextRequest, TextsRequest


class Probabilities(BaseModel):
    positive: float = Field(ge=0, le=1, description="Calibrated probability that the review is positive.",
                            examples=[0.97])
    negative: float = Field(ge=0, le=1, description="1 - positive.", examples=[0.03])


class WordWeight(BaseModel):
    word: str = Field(description="The word as it appears in the text (`text[start:end]`).", examples=["loved"])
    start: int = Field(ge=0, description="Offset of its first character in the original text, counted in Unicode "
                                         "code points (Python string indices; in JavaScript index "
                                         "`Array.from(text)`, not the UTF-16 string).", examples=[36])
    end: int = Field(ge=0, description="Offset just past its last character, counted like `start`.", examples=[41])
    weight: float = Field(ge=-1, le=1, description="P(positive) of the text minus P(positive) of the text without "
                                                   "this word: > 0 pushed the review towards positive, < 0 towards "
                                                   "negative.", examples=[0.21])


class Explanation(BaseModel):
    """Which words pushed the score up or down, measured by occlusion."""

    method: Literal["occlusion"] = Field(
        description="Occlusion: each word is removed in turn and the model is run again. A weight is exactly the "
                    "change in P(positive) the word causes, so the explanation is faithful to the model by "
                    "construction (gradient methods such as integrated gradients approximate this and can credit "
                    "words whose removal changes nothing).", examples=["occlusion"])
    words: list[WordWeight] = Field(description="Every explained word (punctuation runs count as words), in text "
                                                "order.")
    explained_words: int = Field(ge=0, description="Words weighed: the first SENTIMENT_MAX_EXPLAIN_WORDS of the "
                                                   "text.", examples=[12])
    total_words: int = Field(ge=0, description="Words in the text; those past `explained_words` get no weight.",
                             examples=[12])


class Prediction(BaseModel):
    """The sentiment of one text."""

    label: Literal["positive", "negative", "uncertain"] = Field(
        description="The more probable class; \"uncertain\" only when SENTIMENT_UNCERTAIN_BELOW is set and the top "
                    "probability is below it.", examples=["positive"])
    probabilities: Probabilities = Field(description="P(positive) and P(negative); they sum to 1.")
    tokens: int = Field(ge=0, description="Tokens the model read (all of the text).", examples=[15])
    truncated: bool = Field(description="Whether the text was cut or windowed before the model read it. The "
                                        "model reads whole reviews, so this is false.", examples=[False])
    model_version: str = Field(description="Version of the model that answered.", examples=["3.4.0"])
    # Absent (not null) unless asked for, hence no `null` in the schema.
    explanation: Explanation | SkipJsonSchema[None] = Field(
        None, description="Only when the request asked for it (`?explain=true` or `\"explain\": true`).")


class BatchPrediction(BaseModel):
    """One result per text of a `texts` request, in the same order."""

    results: list[Prediction] = Field(description="One result per input text, in input order.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code.", examples=["invalid_request"])
    message: str = Field(description="What went wrong and what to change.",
                         examples=["text is blank: send some words"])
    request_id: str | None = Field(description="The x-request-id of the request; quote it when reporting a "
                                               "problem.", examples=["3f2c1a9e0b7d4c55"])


class ErrorResponse(BaseModel):
    """Every error has this shape."""

    error: ErrorDetail = Field(description="What went wrong.")


class Health(BaseModel):
    status: Literal["alive", "ready"] = Field(examples=["ready"])


class Batching(BaseModel):
    max_batch_size: int = Field(description="Most texts per forward pass.", examples=[64])
    max_batch_tokens: int = Field(description="Most padded tokens per forward pass.", examples=[32768])
    max_wait_ms: float = Field(description="Longest wait for a batch to fill on an idle model.", examples=[2.0])
    batch_window: int = Field(description="Oldest queued texts sorted by length, a round at a time, before they "
                              "are cut into batches (1: arrival order).", examples=[256])
    refill_ms: float = Field(description="Longest wait, after a batch, for the callers it answered to send their "
                             "next texts (at most a tenth of that pass; 0: none).", examples=[3.0])
    max_queue: int = Field(description="Most texts waiting; beyond it requests get 429.", examples=[1024])


class Limits(BaseModel):
    max_text_chars: int = Field(description="Longest text accepted, in characters.", examples=[20000])
    max_batch_texts: int = Field(description="Most texts in one request.", examples=[64])
    max_body_bytes: int = Field(description="Largest request body in bytes.", examples=[2097152])
    max_tokens: int | None = Field(description="Longest text in tokens; null: no limit (whole reviews are read).",
                                   examples=[None])
    request_timeout_s: float = Field(description="Deadline per request in seconds.", examples=[30.0])
    max_explain_texts: int = Field(description="Most texts in one request with `explain`; such requests are also "
                                   "refused at once (413, or 429 when others are ahead) when their explanations "
                                   "could not finish within the deadline.", examples=[16])
    max_explain_words: int = Field(description="Most words per text weighed by `explain`.", examples=[256])


class ModelCard(BaseModel):
    """What answers `/predict`: the model's own card plus how this server runs it."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["imdb-lstm"])
    version: str = Field(examples=["3.4.0"])
    labels: list[str] = Field(examples=[["negative", "positive"]])
    architecture: dict[str, Any] = Field(description="Network hyper-parameters.",
                                         examples=[{"embed_dim": 128, "hidden_dim": 128, "bidirectional": True}])
    temperature: float = Field(description="Calibration temperature applied to the logits.", examples=[1.2])
    device: str = Field(description="Where the forward pass runs.", examples=["cpu"])
    lstm_dtype: str = Field(description="Number format of the LSTM's weights and arithmetic "
                                        "(`SENTIMENT_LSTM_DTYPE`).", examples=["bfloat16"])
    metrics: dict[str, Any] = Field(description="Training data, validation and test metrics, calibration.")
    truncation: str = Field(description="How long texts are handled.", examples=["none: the whole review is read"])
    uncertain_below: float | None = Field(description="Threshold under which a result is labelled \"uncertain\" "
                                                      "(null: never).", examples=[None])
    batching: Batching = Field(description="How requests are gathered into forward passes.")
    limits: Limits = Field(description="Largest requests accepted.")
