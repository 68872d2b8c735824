"""Config errors caught at load, each naming the file, the line, the key and the reason.

Every case here once started a gateway that then failed requests (or crashed with a
traceback); now ``load_settings`` or ``Runtime(settings)`` (what both ``freshet serve``
and ``freshet check`` build before starting anything) refuses it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.api.runtime import Runtime
from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings

DET = "  - {id: det, type: deterministic, knowledge_cutoff: 2024-06-01}\n"


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "freshet.yaml"
    path.write_text(text)
    return str(path)


def _load(tmp_path: Path, text: str) -> Settings:
    return load_settings(_write(tmp_path, text), env={"FRESHET_DATA_DIR": str(tmp_path)})


def _refused(tmp_path: Path, text: str) -> ConfigError:
    """The error of loading and building ``text``, as serve and check do."""
    with pytest.raises(ConfigError) as info:
        Runtime(_load(tmp_path, text))
    return info.value


def _where(exc: ConfigError) -> tuple[str | None, int | None, str | None]:
    return Path(exc.file).name if exc.file else None, getattr(exc, "line", None), exc.key


def test_an_impossible_date_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    text = "backends:\n  - id: a\n    type: deterministic\n    knowledge_cutoff: 2025-13-45\n"
    exc = _refused(tmp_path, text)
    assert _where(exc) == ("freshet.yaml", 4, "backends[0].knowledge_cutoff")
    assert "2025-13-45" in exc.reason
    assert "line 4, key backends[0].knowledge_cutoff" in exc.message


def test_knowledge_cutoff_is_required_unless_unknown(tmp_path: Path) -> None:
    exc = _refused(tmp_path, "backends:\n  - id: a\n    type: deterministic\n")
    assert _where(exc) == ("freshet.yaml", 2, "backends[0]")
    assert "missing required key 'knowledge_cutoff'" in exc.reason
    assert "unknown" in exc.reason
    settings = _load(
        tmp_path, "backends: [{id: a, type: deterministic, knowledge_cutoff: unknown}]"
    )
    assert settings.backends[0].knowledge_cutoff is None
    settings = _load(tmp_path, "backends:\n" + DET)
    assert settings.backends[0].knowledge_cutoff == dt.date(2024, 6, 1)


def test_a_misspelt_cutoff_is_named(tmp_path: Path) -> None:
    exc = _refused(tmp_path, "backends: [{id: a, type: deterministic, knowlege_cutoff: unknown}]")
    assert "is `knowlege_cutoff` a misspelling of it?" in exc.reason


@pytest.mark.parametrize(
    ("text", "key", "line", "hint"),
    [
        ("backnds:\n" + DET, "backnds", 1, "did you mean `backends`?"),
        ("backends:\n" + DET + "server:\n  prot: 9000\n", "server.prot", 4, "`port`"),
        ("backends:\n" + DET + "routing: {max_atempts: 2}\n", "routing.max_atempts", 3, None),
        (
            "backends:\n" + DET + "server:\n  connections:\n    keep_alive: 3\n",
            "server.connections.keep_alive",
            5,
            "did you mean `keep_alive_s`?",
        ),
        (
            "backends:\n" + DET + "health: {ejection: 3}\n",
            "health.ejection",
            3,
            "did you mean `ejection_s`?",
        ),
        (
            "backends:\n"
            "  - id: det\n    type: deterministic\n    knowledge_cutoff: unknown\n"
            "    tokens_per_sec: 5\n",
            "backends[0].tokens_per_sec",
            5,
            "did you mean `tokens_per_s`?",
        ),
        (
            "backends:\n" + DET + "groups: {auto: [dte]}\n",
            "groups.auto",
            3,
            "did you mean `det`?",
        ),
    ],
)
def test_a_misspelt_key_says_what_it_resembles(
    tmp_path: Path, text: str, key: str, line: int, hint: str | None
) -> None:
    exc = _refused(tmp_path, text)
    assert _where(exc) == ("freshet.yaml", line, key)
    assert (hint or "did you mean `max_attempts`?") in exc.reason


def test_an_unknown_backend_type_suggests_the_nearest(tmp_path: Path) -> None:
    text = "backends:\n  - id: gpu\n    type: vlm\n    knowledge_cutoff: unknown\n    urls: [x]\n"
    exc = _refused(tmp_path, text)
    assert _where(exc) == ("freshet.yaml", 3, "backends[0].type")
    assert "unknown backend type 'vlm'; did you mean `vllm`?" in exc.reason


@pytest.mark.parametrize("value", [0, -1, "many"])
def test_max_attempts_must_be_at_least_one(tmp_path: Path, value: object) -> None:
    exc = _refused(tmp_path, f"backends:\n{DET}routing:\n  max_attempts: {value}\n")
    assert _where(exc) == ("freshet.yaml", 4, "routing.max_attempts")


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "backends:\n" + DET + "groups:\n  auto: [det\nrouting: {}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    exc = info.value
    assert exc.file == path
    assert getattr(exc, "line", None) == 5
    assert "<unicode string>" not in exc.message
    assert exc.message.startswith(f"{path}, line 5: invalid YAML")


def test_an_unknown_time_zone_is_refused_at_load(tmp_path: Path) -> None:
    text = "backends:\n" + DET + "prices:\n  kwh_usd: 0.1\n  timezone: Mars/Olympus\n"
    exc = _refused(tmp_path, text)
    assert _where(exc) == ("freshet.yaml", 5, "prices.timezone")
    assert "unknown time zone 'Mars/Olympus'" in exc.reason
    ok = _load(tmp_path, "backends:\n" + DET + "prices: {timezone: Europe/Paris}\n")
    Runtime(ok)


@pytest.mark.parametrize(
    ("prices", "key", "reason"),
    [
        ("{kwh_usd: cheap}", "prices.kwh_usd", "Expected `float`"),
        ("{kwh_usd: -0.1}", "prices.kwh_usd", ">= 0"),
        ("{pue: 0.5}", "prices.pue", ">= 1"),
        ("{tariffs: [{start: '25:00', end: '06:00', kwh_usd: 0.1}]}", "prices.tariffs[0]", "25:00"),
        ("{kwh_ucd: 0.1}", "prices.kwh_ucd", "did you mean `kwh_usd`?"),
        ("{policy: cheapest}", "prices.policy", "cheapest"),
    ],
)
def test_prices_name_the_file_and_key(tmp_path: Path, prices: str, key: str, reason: str) -> None:
    exc = _refused(tmp_path, f"backends:\n{DET}prices: {prices}\n")
    assert _where(exc) == ("freshet.yaml", 3, key)
    assert reason in exc.reason


def test_a_twin_that_does_not_exist_is_refused_at_load(tmp_path: Path) -> None:
    text = (
        "backends:\n"
        + DET
        + "  - id: asic\n    type: asic-sim\n    knowledge_cutoff: 2023-12-01\n    twin: ghost\n"
    )
    exc = _refused(tmp_path, text)
    assert _where(exc) == ("freshet.yaml", 6, "backends[1].twin")
    assert "no backend with id 'ghost'" in exc.reason


def test_the_embedded_default_and_every_range_default_pass(tmp_path: Path) -> None:
    settings = load_settings(env={"FRESHET_DATA_DIR": str(tmp_path)})
    assert settings.routing.max_attempts == 3
    assert settings.lines == {}
