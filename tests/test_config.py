"""Settings: defaults, environment parsing, and one-line errors naming the bad variable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import model
from app.config import Settings, SettingsError, get_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults():
    s = get_settings()
    assert s.model_dir == model.DEFAULT_ARTIFACT
    assert s.device == "auto"
    assert s.max_text_chars == 20000  # IMDB reviews reach ~14k characters
    assert s.api_key is None and s.cors_origins == [] and s.uncertain_below is None
    assert s.max_batch_texts <= s.max_queue


def test_environment_is_read_with_the_prefix(monkeypatch):
    monkeypatch.setenv("SENTIMENT_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("sentiment_max_wait_ms", "0")
    monkeypatch.setenv("SENTIMENT_DEVICE", " CUDA:1 ")
    monkeypatch.setenv("SENTIMENT_LOG_JSON", "true")
    monkeypatch.setenv("SENTIMENT_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SENTIMENT_API_KEY", "s3cret-key")
    monkeypatch.setenv("SENTIMENT_UNCERTAIN_BELOW", "0.7")
    s = get_settings()
    assert (s.max_batch_size, s.max_wait_ms, s.device, s.log_json) == (16, 0, "cuda:1", True)
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.api_key.get_secret_value() == "s3cret-key"
    assert "s3cret" not in repr(s)
    assert s.uncertain_below == 0.7


def test_empty_optional_variables_mean_unset(monkeypatch):
    for name in ("API_KEY", "TORCH_THREADS", "UNCERTAIN_BELOW", "CORS_ORIGINS"):
        monkeypatch.setenv("SENTIMENT_" + name, "")
    s = get_settings()
    assert s.api_key is None and s.torch_threads is None and s.uncertain_below is None and s.cors_origins == []


def test_keyword_overrides_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("SENTIMENT_MAX_QUEUE", "10")
    assert get_settings(max_queue=500).max_queue == 500


@pytest.mark.parametrize("name, value, expected", [
    ("MAX_BATCH_SIZE", "0", r"SENTIMENT_MAX_BATCH_SIZE='0': .*greater than or equal to 1"),
    ("MAX_WAIT_MS", "soon", r"SENTIMENT_MAX_WAIT_MS='soon': .*valid number"),
    ("DEVICE", "tpu", r"SENTIMENT_DEVICE='tpu': use auto, cpu, cuda or cuda:N"),
    ("LSTM_DTYPE", "half", r"SENTIMENT_LSTM_DTYPE='half': .*'auto', 'float32' or 'bfloat16'"),
    ("LOG_LEVEL", "loud", r"SENTIMENT_LOG_LEVEL='loud'"),
    ("UNCERTAIN_BELOW", "0.3", r"SENTIMENT_UNCERTAIN_BELOW='0.3': .*greater than 0.5"),
    ("REQUEST_TIMEOUT_S", "0", r"SENTIMENT_REQUEST_TIMEOUT_S='0'"),
    ("MAX_BODY_BYTES", "-1", r"SENTIMENT_MAX_BODY_BYTES='-1'"),
    ("LOG_JSON", "perhaps", r"SENTIMENT_LOG_JSON='perhaps': .*boolean"),
    ("MAX_QUEUE", "10", r"SENTIMENT_MAX_BATCH_TEXTS=64 is larger than SENTIMENT_MAX_QUEUE=10"),
    ("PROCESSES", "0", r"SENTIMENT_PROCESSES='0': use auto or a whole number from 1 to 64$"),
    ("TORCH_WORKERS", "two", r"SENTIMENT_TORCH_WORKERS='two': use auto or a whole number from 1 to 64$"),
    ("MAX_BATCH", "8", r"SENTIMENT_MAX_BATCH is not a setting \(did you mean SENTIMENT_MAX_BATCH_SIZE\?\)"),
])
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv("SENTIMENT_" + name, value)
    with pytest.raises(SettingsError) as error:
        get_settings()
    message = str(error.value)
    assert message.startswith("invalid setting: ")
    assert re.search(expected, message), message
    assert "\n" not in message


def test_the_api_key_never_appears_in_an_error(monkeypatch):
    monkeypatch.setenv("SENTIMENT_API_KEY", "hunter2-but-long")
    monkeypatch.setenv("SENTIMENT_MAX_BATCH_SIZE", "-5")
    with pytest.raises(SettingsError) as error:
        get_settings()
    assert "hunter2" not in str(error.value)


def test_settings_can_be_built_directly_for_tests():
    s = Settings(model_dir="/somewhere", max_batch_size=2)
    assert str(s.model_dir) == "/somewhere" and s.max_batch_size == 2


def test_importing_the_app_reads_no_settings():
    # A broken environment must not break `import app.main`: settings are read when an app is created.
    env = {"SENTIMENT_MAX_BATCH_SIZE": "broken", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", "import app.main, app.api.predict"], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_readme_settings_table_is_generated_from_the_settings_help():
    """Each setting is documented once, in its description; the README's table is generated from them."""
    from app.config import readme_with_table, settings_table

    readme = (ROOT / "README.md").read_text()
    assert readme_with_table(readme) == readme, "run: python -m app.config --write README.md"
    for name in Settings.model_fields:
        assert f"`SENTIMENT_{name.upper()}`" in settings_table()
