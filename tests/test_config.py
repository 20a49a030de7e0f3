"""Configuration: sources in order, every bad value names its variable, the README lists all."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import VARIABLES, build_settings, load_settings, mask, template
from agent.errors import ConfigError


def load(tmp_path: Path, environ: dict[str, str], **kwargs: object):
    return load_settings(environ=environ, cwd=tmp_path, config_file=tmp_path / "none.env", **kwargs)


def test_defaults_follow_the_guide(tmp_path: Path) -> None:
    settings = load(tmp_path, {})
    assert settings.backend.url == "http://localhost:8000"
    assert settings.backend.user_id == "default"
    assert settings.backend.frontend_url == "http://localhost:3000"
    assert settings.lang == "zh"
    assert settings.poll.user_input_interval == 2
    assert settings.poll.sessions_full_interval == 300
    assert settings.telegram.mode == "polling"
    assert settings.telegram.poll_timeout == 30
    assert settings.http_host == "127.0.0.1" and settings.http_port == 8002
    assert settings.access_policy == "pairing"
    assert not settings.telegram.enabled and not settings.dingtalk.enabled
    assert settings.database_path == settings.data_dir / "im.db"


def test_sources_in_order(tmp_path: Path) -> None:
    user = tmp_path / "user.env"
    user.write_text("BACKEND_URL=http://user:1\nBACKEND_USER_ID=from-user\nIM_LANG=en\n")
    (tmp_path / ".env").write_text("BACKEND_URL=http://dotenv:2\nBACKEND_USER_ID=from-dotenv\n")
    extra = tmp_path / "extra.env"
    extra.write_text("BACKEND_URL=http://extra:3\n")
    settings = load_settings(
        env_file=extra,
        environ={"BACKEND_USER_ID": "from-env"},
        cwd=tmp_path,
        config_file=user,
    )
    assert settings.backend.url == "http://extra:3"
    assert settings.backend.user_id == "from-env"
    assert settings.lang == "en"


def test_dingtalk_enabled_follows_client_id(tmp_path: Path) -> None:
    settings = load(tmp_path, {"DINGTALK_CLIENT_ID": "id", "DINGTALK_CLIENT_SECRET": "s"})
    assert settings.dingtalk.enabled
    settings = load(tmp_path, {"DINGTALK_CLIENT_ID": "id", "DINGTALK_ENABLED": "false"})
    assert not settings.dingtalk.enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_USER_INPUT_INTERVAL_SECONDS", "two"),
        ("POLL_HTTP_TIMEOUT_SECONDS", "-1"),
        ("IM_HTTP_PORT", "70000"),
        ("TELEGRAM_MODE", "push"),
        ("BACKEND_URL", "localhost:8000"),
        ("FRONTEND_PUBLIC_URL", "ftp://x"),
        ("TELEGRAM_PROXY_URL", "proxy.local:8080"),
        ("IM_ACCESS_POLICY", "everyone"),
        ("IM_ALLOWLIST", "telegram"),
        ("DINGTALK_STREAM_ENABLED", "maybe"),
        ("IM_LANG", "fr"),
        ("IM_DATABASE_URL", "postgres://x"),
        ("TELEGRAM_POLL_TIMEOUT_SECONDS", "100"),
        ("IM_PROGRESS", "sometimes"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, {name: value})
    assert caught.value.variable == name
    assert name in str(caught.value)
    assert caught.value.fix


@pytest.mark.parametrize(
    ("value", "expected"), [("", True), ("on", True), ("ON", True), ("off", False), ("no", False)]
)
def test_progress_is_on_unless_turned_off(value: str, expected: bool) -> None:
    assert build_settings({"IM_PROGRESS": value}).progress is expected
    assert build_settings({}).progress is True


def test_webhook_mode_needs_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            tmp_path,
            {
                "TELEGRAM_BOT_TOKEN": "1:x",
                "TELEGRAM_MODE": "webhook",
                "TELEGRAM_WEBHOOK_URL": "https://example.org",
            },
        )
    assert caught.value.variable == "TELEGRAM_WEBHOOK_SECRET_TOKEN"


def test_stream_mode_needs_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, {"DINGTALK_CLIENT_ID": "id"})
    assert caught.value.variable == "DINGTALK_CLIENT_SECRET"


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, {}, env_file=tmp_path / "missing.env")


def test_secrets_are_listed_and_masked() -> None:
    settings = build_settings({"TELEGRAM_BOT_TOKEN": "123456:ABCDEFGHIJKLMNOP"})
    assert "123456:ABCDEFGHIJKLMNOP" in settings.secrets()
    assert "ABCDEFGH" not in mask("123456:ABCDEFGHIJKLMNOP")


def test_template_and_readme_list_every_variable() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    text = template()
    for variable in VARIABLES:
        assert f"# {variable.name}=" in text
        assert f"`{variable.name}`" in readme, f"README does not document {variable.name}"
