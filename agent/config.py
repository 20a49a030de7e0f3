"""Configuration: one table of variables, their sources in order, and the frozen `Settings`.

Sources, highest first: the process environment, `--env-file`, `./.env`, `agent.env` in
the user config dir, then the defaults below. Only this module reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from agent import paths
from agent.errors import ConfigError

Parser = Callable[[str, str], Any]


# --- value parsers: each takes (variable, raw) and raises ConfigError naming the variable ---


def parse_str(name: str, raw: str) -> str:
    return raw.strip()


def parse_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(
            name, f"{raw!r} is not an http(s) URL", "Write it as http://host:port or https://host."
        )
    return value


def parse_proxy_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https", "socks5", "socks5h"} or not parts.netloc:
        raise ConfigError(
            name, f"{raw!r} is not a proxy URL", "Use http://host:port or socks5://host:port."
        )
    return value


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(name, f"{raw!r} is not a yes/no value", "Use true or false.")


def parse_on_off(name: str, raw: str) -> bool:
    """`on` or `off` (and the yes/no spellings parse_bool takes); empty: on, the default."""
    value = raw.strip().lower()
    if value in {"on", "1", "true", "yes", ""}:
        return True
    if value in {"off", "0", "false", "no"}:
        return False
    raise ConfigError(name, f"{raw!r} is neither on nor off", "Use on or off.")


def _number_parser(kind: type, minimum: float, maximum: float) -> Parser:
    def parse(name: str, raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ConfigError(
                name, f"{raw!r} is not a number", f"Use a number between {minimum} and {maximum}."
            ) from None
        if not minimum <= value <= maximum:
            raise ConfigError(
                name, f"{value} is out of range", f"Use a number between {minimum} and {maximum}."
            )
        return value

    return parse


def _choice_parser(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        if value not in choices:
            raise ConfigError(name, f"{raw!r} is not allowed", f"Use one of: {', '.join(choices)}.")
        return value

    return parse


def parse_allowlist(name: str, raw: str) -> tuple[str, ...]:
    entries = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        provider, sep, chat = item.partition(":")
        if not sep or provider not in {"telegram", "dingtalk"} or not chat:
            raise ConfigError(
                name,
                f"{item!r} is not a chat",
                "Write telegram:<chat_id> or dingtalk:<conversation_id>, separated by commas.",
            )
        entries.append(f"{provider}:{chat}")
    return tuple(entries)


def parse_database_url(name: str, raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith("sqlite:///"):
        raise ConfigError(name, f"{raw!r} is not a SQLite URL", "Use sqlite:///path/to/im.db.")
    return value


interval = _number_parser(float, 0.05, 86400)


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    parse: Parser
    help: str
    secret: bool = False
    section: str = "general"


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "BACKEND_URL",
        "http://localhost:8000",
        parse_url,
        "Poco backend base URL.",
        section="backend",
    ),
    Variable("BACKEND_USER_ID", "default", parse_str, "Sent as X-User-Id.", section="backend"),
    Variable(
        "BACKEND_INTERNAL_TOKEN",
        "",
        parse_str,
        "The backend's INTERNAL_API_TOKEN, sent as X-Internal-Token (Poco from April 2026 "
        "answers 401 without it).",
        secret=True,
        section="backend",
    ),
    Variable(
        "FRONTEND_PUBLIC_URL",
        "http://localhost:3000",
        parse_url,
        "Links: <url>/<lang>/chat/<session_id>.",
        section="backend",
    ),
    Variable(
        "FRONTEND_DEFAULT_LANG",
        "zh",
        _choice_parser("zh", "en"),
        "Link language, and the default reply language.",
        section="backend",
    ),
    Variable(
        "POLL_USER_INPUT_INTERVAL_SECONDS",
        "2",
        interval,
        "How often pending input requests are checked while a run is active.",
        section="polling",
    ),
    Variable(
        "POLL_SESSION_MESSAGES_INTERVAL_SECONDS",
        "2",
        interval,
        "How often a running session's messages are fetched.",
        section="polling",
    ),
    Variable(
        "POLL_SESSIONS_RECENT_INTERVAL_SECONDS",
        "5",
        interval,
        "How often the newest sessions are listed to notice new runs.",
        section="polling",
    ),
    Variable(
        "POLL_SESSIONS_FULL_INTERVAL_SECONDS",
        "300",
        interval,
        "How often every followed session is re-checked.",
        section="polling",
    ),
    Variable(
        "POLL_HTTP_TIMEOUT_SECONDS",
        "10",
        _number_parser(float, 0.5, 600),
        "Timeout of one backend request.",
        section="polling",
    ),
    Variable(
        "IM_DATABASE_URL",
        "",
        parse_database_url,
        "SQLite file (default: <IM_DATA_DIR>/im.db).",
        section="agent",
    ),
    Variable("IM_DATA_DIR", "", parse_str, "Database, logs and lock file.", section="agent"),
    Variable(
        "IM_HTTP_HOST",
        "127.0.0.1",
        parse_str,
        "Local HTTP address (health, webhooks).",
        section="agent",
    ),
    Variable(
        "IM_HTTP_PORT",
        "8002",
        _number_parser(int, 0, 65535),
        "Local HTTP port; 0 picks a free one and writes it to <IM_DATA_DIR>/agent.port.",
        section="agent",
    ),
    Variable(
        "IM_LOG_LEVEL",
        "INFO",
        _choice_parser("DEBUG", "INFO", "WARNING", "ERROR"),
        "Log level.",
        section="agent",
    ),
    Variable(
        "IM_LANG",
        "",
        _choice_parser("", "zh", "en"),
        "Reply language: zh or en (default: FRONTEND_DEFAULT_LANG).",
        section="agent",
    ),
    Variable(
        "IM_ACCESS_POLICY",
        "pairing",
        _choice_parser("pairing", "allowlist", "open"),
        "Who may use the bot: pairing, allowlist or open.",
        section="agent",
    ),
    Variable(
        "IM_ALLOWLIST",
        "",
        parse_allowlist,
        "Comma list of telegram:<chat_id> / dingtalk:<conversation_id>.",
        section="agent",
    ),
    Variable(
        "IM_MAX_FILE_MB",
        "20",
        _number_parser(int, 1, 2000),
        "Largest file (MB) relayed from a chat into a task (Telegram hands bots up to 20).",
        section="agent",
    ),
    Variable(
        "IM_PROGRESS",
        "on",
        parse_on_off,
        "on: one progress message per run per chat, edited in place (with a Stop button); "
        "off: none.",
        section="agent",
    ),
    Variable(
        "TELEGRAM_BOT_TOKEN",
        "",
        parse_str,
        "From @BotFather; empty = Telegram off.",
        secret=True,
        section="telegram",
    ),
    Variable(
        "TELEGRAM_MODE",
        "polling",
        _choice_parser("polling", "webhook"),
        "polling (getUpdates, no public address) or webhook.",
        section="telegram",
    ),
    Variable(
        "TELEGRAM_API_BASE_URL",
        "https://api.telegram.org",
        parse_url,
        "Bot API server (for a self-hosted one).",
        section="telegram",
    ),
    Variable(
        "TELEGRAM_PROXY_URL",
        "",
        parse_proxy_url,
        "http:// or socks5:// proxy for Telegram traffic only.",
        secret=True,
        section="telegram",
    ),
    Variable(
        "TELEGRAM_POLL_TIMEOUT_SECONDS",
        "30",
        _number_parser(int, 0, 50),
        "getUpdates long-poll timeout.",
        section="telegram",
    ),
    Variable(
        "TELEGRAM_WEBHOOK_URL",
        "",
        parse_url,
        "Webhook mode: public HTTPS base URL.",
        section="telegram",
    ),
    Variable(
        "TELEGRAM_WEBHOOK_SECRET_TOKEN",
        "",
        parse_str,
        "Webhook mode: secret Telegram sends back in a header.",
        secret=True,
        section="telegram",
    ),
    Variable(
        "DINGTALK_ENABLED",
        "",
        parse_bool,
        "Default: true when DINGTALK_CLIENT_ID is set.",
        section="dingtalk",
    ),
    Variable(
        "DINGTALK_STREAM_ENABLED",
        "true",
        parse_bool,
        "true = Stream mode (no public address); false = webhook mode.",
        section="dingtalk",
    ),
    Variable(
        "DINGTALK_STREAM_SUBSCRIBE_EVENTS",
        "false",
        parse_bool,
        "Also subscribe to Stream events.",
        section="dingtalk",
    ),
    Variable("DINGTALK_CLIENT_ID", "", parse_str, "App appKey.", section="dingtalk"),
    Variable(
        "DINGTALK_CLIENT_SECRET", "", parse_str, "App appSecret.", secret=True, section="dingtalk"
    ),
    Variable("DINGTALK_ROBOT_CODE", "", parse_str, "Robot robotCode.", section="dingtalk"),
    Variable(
        "DINGTALK_OPEN_BASE_URL",
        "https://api.dingtalk.com",
        parse_url,
        "OpenAPI, Stream gateway and token base URL.",
        section="dingtalk",
    ),
    Variable(
        "DINGTALK_WEBHOOK_TOKEN",
        "",
        parse_str,
        "Webhook mode: expected token.",
        secret=True,
        section="dingtalk",
    ),
    Variable(
        "DINGTALK_WEBHOOK_URL",
        "",
        parse_url,
        "Outbound-only fallback group robot webhook.",
        secret=True,
        section="dingtalk",
    ),
    Variable(
        "DINGTALK_CARD_TEMPLATE_ID",
        "",
        parse_str,
        "Card template (Stream mode): prompts as cards with buttons, run progress as a "
        "streamed card; empty = text prompts, no progress.",
        section="dingtalk",
    ),
)

VARIABLES_BY_NAME = {variable.name: variable for variable in VARIABLES}


@dataclass(frozen=True)
class TelegramSettings:
    token: str
    mode: str
    api_base_url: str
    proxy_url: str
    poll_timeout: int
    webhook_url: str
    webhook_secret: str

    @property
    def enabled(self) -> bool:
        return bool(self.token)


@dataclass(frozen=True)
class DingTalkSettings:
    enabled: bool
    stream_enabled: bool
    subscribe_events: bool
    client_id: str
    client_secret: str
    robot_code: str
    open_base_url: str
    webhook_token: str
    webhook_url: str
    card_template_id: str = ""

    @property
    def cards_enabled(self) -> bool:
        """Prompts go out as interactive cards: a template, and Stream mode for the clicks."""
        return bool(self.enabled and self.stream_enabled and self.card_template_id)


@dataclass(frozen=True)
class PollSettings:
    user_input_interval: float
    session_messages_interval: float
    sessions_recent_interval: float
    sessions_full_interval: float
    http_timeout: float


@dataclass(frozen=True)
class BackendSettings:
    url: str
    user_id: str
    frontend_url: str
    frontend_lang: str
    timeout: float
    internal_token: str = ""


@dataclass(frozen=True)
class Settings:
    backend: BackendSettings
    poll: PollSettings
    telegram: TelegramSettings
    dingtalk: DingTalkSettings
    data_dir: Path
    database_path: Path
    http_host: str
    http_port: int
    log_level: str
    lang: str
    access_policy: str
    allowlist: tuple[str, ...]
    config_file: Path
    progress: bool = True
    raw: Mapping[str, str] = field(repr=False, default_factory=dict)
    max_file_mb: int = 20

    @property
    def any_provider_enabled(self) -> bool:
        return self.telegram.enabled or self.dingtalk.enabled

    def secrets(self) -> list[str]:
        """Every configured secret value, for the log filter."""
        return [self.raw[v.name] for v in VARIABLES if v.secret and self.raw.get(v.name)]


def read_sources(
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config_file: Path | None = None,
) -> dict[str, str]:
    """Merge the sources into one name → raw value map (known variables only)."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    config_file = paths.user_config_file() if config_file is None else config_file
    layers: list[Mapping[str, str | None]] = []
    if config_file.is_file():
        layers.append(dotenv_values(config_file))
    if (cwd / ".env").is_file():
        layers.append(dotenv_values(cwd / ".env"))
    if env_file is not None:
        if not env_file.is_file():
            raise ConfigError("--env-file", f"{env_file} does not exist", "Pass an existing file.")
        layers.append(dotenv_values(env_file))
    layers.append(environ)
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            if name in VARIABLES_BY_NAME and value is not None:
                merged[name] = value
    return merged


def data_paths(raw: Mapping[str, str]) -> tuple[Path, Path]:
    """The data dir and the database file these sources name (checked, nothing else is)."""
    names = ("IM_DATA_DIR", "IM_DATABASE_URL")
    data_value, db_url = (VARIABLES_BY_NAME[n].parse(n, raw.get(n, "")) for n in names)
    data_dir = Path(data_value).expanduser() if data_value else paths.default_data_dir()
    database_path = (
        Path(db_url.removeprefix("sqlite:///")).expanduser()
        if db_url
        else data_dir / paths.DATABASE_FILE_NAME
    )
    return data_dir, database_path


def build_settings(raw: Mapping[str, str], config_file: Path | None = None) -> Settings:
    values = {v.name: v.parse(v.name, raw.get(v.name, v.default)) for v in VARIABLES}
    data_dir, database_path = data_paths(raw)
    dingtalk_enabled = (
        values["DINGTALK_ENABLED"]
        if raw.get("DINGTALK_ENABLED", "").strip()
        else bool(values["DINGTALK_CLIENT_ID"])
    )
    telegram = TelegramSettings(
        token=values["TELEGRAM_BOT_TOKEN"],
        mode=values["TELEGRAM_MODE"],
        api_base_url=values["TELEGRAM_API_BASE_URL"],
        proxy_url=values["TELEGRAM_PROXY_URL"],
        poll_timeout=values["TELEGRAM_POLL_TIMEOUT_SECONDS"],
        webhook_url=values["TELEGRAM_WEBHOOK_URL"],
        webhook_secret=values["TELEGRAM_WEBHOOK_SECRET_TOKEN"],
    )
    dingtalk = DingTalkSettings(
        enabled=dingtalk_enabled,
        stream_enabled=values["DINGTALK_STREAM_ENABLED"],
        subscribe_events=values["DINGTALK_STREAM_SUBSCRIBE_EVENTS"],
        client_id=values["DINGTALK_CLIENT_ID"],
        client_secret=values["DINGTALK_CLIENT_SECRET"],
        robot_code=values["DINGTALK_ROBOT_CODE"],
        open_base_url=values["DINGTALK_OPEN_BASE_URL"],
        webhook_token=values["DINGTALK_WEBHOOK_TOKEN"],
        webhook_url=values["DINGTALK_WEBHOOK_URL"],
        card_template_id=values["DINGTALK_CARD_TEMPLATE_ID"],
    )
    _check_consistency(telegram, dingtalk)
    return Settings(
        backend=BackendSettings(
            url=values["BACKEND_URL"],
            user_id=values["BACKEND_USER_ID"] or "default",
            frontend_url=values["FRONTEND_PUBLIC_URL"],
            frontend_lang=values["FRONTEND_DEFAULT_LANG"],
            timeout=values["POLL_HTTP_TIMEOUT_SECONDS"],
            internal_token=values["BACKEND_INTERNAL_TOKEN"],
        ),
        poll=PollSettings(
            user_input_interval=values["POLL_USER_INPUT_INTERVAL_SECONDS"],
            session_messages_interval=values["POLL_SESSION_MESSAGES_INTERVAL_SECONDS"],
            sessions_recent_interval=values["POLL_SESSIONS_RECENT_INTERVAL_SECONDS"],
            sessions_full_interval=values["POLL_SESSIONS_FULL_INTERVAL_SECONDS"],
            http_timeout=values["POLL_HTTP_TIMEOUT_SECONDS"],
        ),
        telegram=telegram,
        dingtalk=dingtalk,
        data_dir=data_dir,
        database_path=database_path,
        http_host=values["IM_HTTP_HOST"] or "127.0.0.1",
        http_port=values["IM_HTTP_PORT"],
        log_level=values["IM_LOG_LEVEL"],
        lang=values["IM_LANG"] or values["FRONTEND_DEFAULT_LANG"],
        access_policy=values["IM_ACCESS_POLICY"],
        allowlist=values["IM_ALLOWLIST"],
        config_file=config_file or paths.user_config_file(),
        progress=values["IM_PROGRESS"],
        raw=dict(raw),
        max_file_mb=values["IM_MAX_FILE_MB"],
    )


def _check_consistency(telegram: TelegramSettings, dingtalk: DingTalkSettings) -> None:
    if telegram.enabled and telegram.mode == "webhook":
        if not telegram.webhook_secret:
            raise ConfigError(
                "TELEGRAM_WEBHOOK_SECRET_TOKEN",
                "webhook mode needs a secret",
                "Set it to a long random string, or use TELEGRAM_MODE=polling.",
            )
        if not telegram.webhook_url.startswith("https://"):
            raise ConfigError(
                "TELEGRAM_WEBHOOK_URL",
                "webhook mode needs the public HTTPS base URL",
                "Set it to https://your-domain, or use TELEGRAM_MODE=polling.",
            )
    if dingtalk.enabled and dingtalk.stream_enabled:
        for name, value in (
            ("DINGTALK_CLIENT_ID", dingtalk.client_id),
            ("DINGTALK_CLIENT_SECRET", dingtalk.client_secret),
        ):
            if not value:
                raise ConfigError(
                    name,
                    "DingTalk Stream mode needs the app credentials",
                    "Copy appKey/appSecret from the DingTalk developer console, "
                    "or set DINGTALK_ENABLED=false.",
                )


def load_settings(
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config_file: Path | None = None,
) -> Settings:
    config_file = paths.user_config_file() if config_file is None else config_file
    raw = read_sources(env_file, environ, cwd, config_file)
    return build_settings(raw, config_file)


def mask(value: str) -> str:
    if not value:
        return ""
    return "****" + value[-2:] if len(value) > 8 else "****"


def effective_values(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, shown value, source) for `config show`; secrets masked."""
    rows = []
    for variable in VARIABLES:
        raw = settings.raw.get(variable.name)
        value = variable.default if raw is None else raw
        shown = mask(value) if variable.secret else value
        rows.append((variable.name, shown, "default" if raw is None else "set"))
    return rows


def template() -> str:
    """A commented agent.env for `config init` and the first run."""
    lines = [
        "# poco-im-agent configuration. Uncomment and fill in what you need, then restart.",
        "# Telegram: talk to @BotFather, /newbot, paste the token below.",
        "# DingTalk: create an internal app with a robot, enable Stream mode, paste",
        "#   appKey/appSecret/robotCode below.",
        "",
    ]
    section = ""
    for variable in VARIABLES:
        if variable.section != section:
            section = variable.section
            lines += ["", f"# --- {section} ---"]
        lines.append(f"# {variable.help}")
        lines.append(f"# {variable.name}={variable.default}")
    return "\n".join(lines) + "\n"
