"""Tests for routebook.config: flags > ROUTEBOOK_* env > TOML file > defaults, and clear errors.

The autouse `clean_environ` fixture (tests/conftest.py) removes stray ROUTEBOOK_* variables.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from routebook.config import ENV_PREFIX, Settings, load_settings
from routebook.errors import ConfigError


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routebook.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert type(settings) is Settings
    assert settings.port == 50051
    assert settings.host == "127.0.0.1"
    assert settings.k == 10
    assert settings.quality_target == 0.8
    assert settings.routes_dir == Path("routes")
    assert settings.database_url == "sqlite:///routebook.db"


def test_precedence_flag_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(tmp_path, "k = 20\nhost = '0.0.0.0'\nworkers = 3\n")
    monkeypatch.setenv("ROUTEBOOK_K", "30")
    monkeypatch.setenv("ROUTEBOOK_HOST", "10.0.0.1")

    settings = load_settings({"k": 40}, config_file=config)
    assert settings.k == 40  # flag beats env and file
    assert settings.host == "10.0.0.1"  # env beats file
    assert settings.workers == 3  # file beats default
    assert settings.port == 50051  # default


def test_each_layer_falls_through_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(tmp_path, "k = 20\n")
    monkeypatch.setenv("ROUTEBOOK_K", "30")
    assert load_settings({"k": 40}, config_file=config).k == 40
    assert load_settings({}, config_file=config).k == 30
    monkeypatch.delenv("ROUTEBOOK_K")
    assert load_settings({}, config_file=config).k == 20
    assert load_settings({}).k == 10


def test_flags_set_to_none_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBOOK_PORT", "6000")
    settings = load_settings({"port": None, "host": None})
    assert settings.port == 6000
    assert settings.host == "127.0.0.1"


def test_config_file_path_may_be_a_string(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "default_namespace = 'team-a'\n")
    assert load_settings(config_file=str(config)).default_namespace == "team-a"


def test_env_values_are_converted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTEBOOK_ROUTES_DIR", str(tmp_path))
    monkeypatch.setenv("ROUTEBOOK_QUALITY_TARGET", "0.65")
    monkeypatch.setenv("ROUTEBOOK_GRACE_SECONDS", "2.5")
    settings = load_settings()
    assert settings.routes_dir == tmp_path
    assert isinstance(settings.routes_dir, Path)
    assert settings.quality_target == 0.65
    assert settings.grace_seconds == 2.5


def test_unrelated_prefixed_env_vars_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test suite itself keeps ROUTEBOOK_TEST_POSTGRES_URL in the environment.
    monkeypatch.setenv("ROUTEBOOK_TEST_POSTGRES_URL", "postgresql+psycopg://x@y/z")
    monkeypatch.setenv("ROUTEBOOK_NOT_A_SETTING", "1")
    assert load_settings().database_url == "sqlite:///routebook.db"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_bad_flag_value_names_key_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"port": 70000}, flag_names={"port": "--port"})
    message = str(info.value)
    assert "'port'" in message
    assert "70000" in message
    assert "(from flag --port)" in message and f"{ENV_PREFIX}PORT" not in message


def test_a_bad_value_from_the_environment_names_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every error said "flag --k or ROUTEBOOK_K", and `serve --k` does not exist: a setting
    has a flag only where a command defines one. The message names where the value came from."""
    monkeypatch.setenv("ROUTEBOOK_K", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "(from ROUTEBOOK_K)" in message and "--k" not in message


def test_a_bad_value_from_the_file_names_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "k = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    message = str(info.value)
    assert f"(from {config})" in message
    assert "--k" not in message and "ROUTEBOOK_K" not in message


def test_serve_names_its_own_flag_and_none_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from routebook import cli

    result = CliRunner().invoke(cli.main, ["serve", "--port", "70000"])
    assert result.exit_code == 1
    assert "setting 'port' = 70000 (from flag --port)" in result.output
    monkeypatch.setenv("ROUTEBOOK_WORKERS", "0")
    result = CliRunner().invoke(cli.main, ["serve"])
    assert "(from ROUTEBOOK_WORKERS)" in result.output and "--workers" not in result.output


def test_a_typo_in_the_file_names_the_file_and_the_closest_setting(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "qualty_target = 0.99\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    message = str(info.value)
    assert f"'qualty_target' (from {config}) is not a setting" in message
    assert "did you mean 'quality_target'?" in message
    assert "--qualty-target" not in message and "ROUTEBOOK_QUALTY_TARGET" not in message


def test_a_mistyped_variable_is_warned_about_naming_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A TOML typo is refused, but the environment source reads only the names it knows, so
    ROUTEBOOK_QUALTY_TARGET=0.99 left quality_target at 0.8 without a word."""
    monkeypatch.setenv("ROUTEBOOK_QUALTY_TARGET", "0.99")
    for name in ("ROUTEBOOK_CONFIG", "ROUTEBOOK_API_KEY", "ROUTEBOOK_CACHE_DIR", "ROUTEBOOK_K"):
        monkeypatch.setenv(name, "7" if name == "ROUTEBOOK_K" else "x")
    with caplog.at_level(logging.WARNING, logger="routebook.config"):
        assert load_settings().quality_target == 0.8
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "environment variable ROUTEBOOK_QUALTY_TARGET is not a routebook setting and is "
        "ignored; did you mean ROUTEBOOK_QUALITY_TARGET? (`routebook settings` lists them)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="routebook.config"):
        load_settings()  # once per process, not at every load
    assert not caplog.records


def test_a_candidate_file_read_without_the_environment_warns_of_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ROUTEBOOK_SHADOW_TYPO", "1")
    with caplog.at_level(logging.WARNING, logger="routebook.config"):
        load_settings(environment=False)
    assert not caplog.records


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Templates write `ROUTEBOOK_X=` for "not set": an empty metrics port failed to parse, an
    empty shadow_config became the folder ".", and an empty snapshot_dir wrote snapshots into
    the working folder."""
    config = write_toml(tmp_path, "workers = 3\n")
    for name in ("METRICS_PORT", "SHADOW_CONFIG", "SNAPSHOT_DIR", "ROUTES_DIR", "WORKERS", "HOST"):
        monkeypatch.setenv(ENV_PREFIX + name, "")
    settings = load_settings(config_file=config)
    default = load_settings(environment=False)
    assert settings.metrics_port is None and settings.shadow_config is None
    assert settings.snapshot_dir == default.snapshot_dir
    assert settings.routes_dir == default.routes_dir and settings.host == default.host
    assert settings.workers == 3  # the file's value, not a refused ""


def test_an_empty_decision_log_still_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """For decision_log, empty is a documented value ("nowhere"), not "unset"."""
    monkeypatch.setenv("ROUTEBOOK_DECISION_LOG", "")
    assert load_settings().decision_log == ""
    config = write_toml(tmp_path, 'decision_log = "decisions.log"\n')
    assert load_settings(config_file=config).decision_log == ""  # env over file
    assert load_settings({"decision_log": "-"}).decision_log == "-"  # flag over env


@pytest.mark.parametrize("key", ["cooldown_seconds", "failure_window_seconds"])
def test_windows_too_long_for_date_arithmetic_are_refused(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({key: 1e12})
    assert f"'{key}'" in str(info.value) and "less than or equal" in str(info.value)


def test_bad_env_value_names_key_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBOOK_QUALITY_TARGET", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "quality_target" in message
    assert "'lots'" in message
    assert "ROUTEBOOK_QUALITY_TARGET" in message


def test_bad_file_value_names_key_and_value(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "similarity_floor = 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    message = str(info.value)
    assert "similarity_floor" in message
    assert "1.5" in message


def test_several_bad_values_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"k": 0, "workers": 0})
    message = str(info.value)
    assert "'k'" in message and "'workers'" in message


def test_a_bad_value_hidden_by_a_higher_layer_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROUTEBOOK_PORT", "not-a-port")
    assert load_settings({"port": 7000}).port == 7000


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(config_file=missing)
    assert str(missing) in str(info.value)


def test_config_file_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path)


def test_unknown_key_in_the_config_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "k = 5\nneighbour_count = 12\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    assert "neighbour_count" in str(info.value)


def test_unknown_flag() -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_settings({"colour": "blue"})


def test_every_setting_is_documented() -> None:
    assert Settings.model_fields, "Settings has no fields"
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name!r} has no description"
        assert field.description.strip(), f"setting {name!r} has a blank description"


def test_a_disabled_head_weighs_nothing_in_the_decision_rule() -> None:
    """eval, the gate and shadow mode read the rule from settings: with head_enabled off they
    must measure the rule the server runs, which has no head."""
    from routebook.wiring import decision_params

    on = decision_params(load_settings({"head_strength": 10, "route_head_strength": 2}))
    off = decision_params(
        load_settings({"head_strength": 10, "route_head_strength": 2, "head_enabled": False})
    )
    assert (on.head_strength, on.route_head_strength) == (10.0, 2.0)
    assert (off.head_strength, off.route_head_strength) == (0.0, 0.0)
    assert replace(off, head_strength=10.0, route_head_strength=2.0) == on


def test_a_candidate_file_is_read_without_the_live_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shadow mode's candidate (and the gate's sides) is the file: a server configured by
    ROUTEBOOK_* variables used to shadow itself, its environment beating the file's values."""
    from routebook.wiring import shadow_candidate

    candidate = write_toml(tmp_path, "k = 25\nquality_target = 0.6\n")
    monkeypatch.setenv("ROUTEBOOK_K", "10")
    monkeypatch.setenv("ROUTEBOOK_QUALITY_TARGET", "0.9")
    live = load_settings({"shadow_config": candidate})
    assert (live.k, live.quality_target) == (10, 0.9)
    shadow = shadow_candidate(live)
    assert shadow is not None
    assert (shadow.k, shadow.params.quality_target) == (25, 0.6)


def test_an_environment_value_that_is_not_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROUTEBOOK_ROUTER_API_KEYS", "default=key-1")
    with pytest.raises(ConfigError, match=r"router_api_keys.*are JSON"):
        load_settings({})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prior_strength", float("inf")),
        ("head_strength", float("inf")),
        ("quality_target", float("nan")),
        ("head_check_seconds", 1e10),  # Event.wait overflowed and its thread died
        ("follow_interval_seconds", float("inf")),
    ],
)
def test_infinite_and_unwaitable_values_are_refused(key: str, value: float) -> None:
    """`prior_strength = inf` passed and made every estimate NaN: every query went to the
    strongest model."""
    with pytest.raises(ConfigError) as info:
        load_settings({key: value})
    assert f"'{key}'" in str(info.value)
