"""Logging to stderr and a rotating file, with every configured secret masked."""

from __future__ import annotations

import io
import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from agent import paths

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 2_000_000
BACKUPS = 5
# Telegram tokens also hide inside URLs (`/bot<token>/getUpdates`) that libraries log.
_TELEGRAM_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
# Credentials that are not configured but handed out at run time travel in URL queries:
# DingTalk's Stream `?ticket=`, a sessionWebhook's `?session=`, a robot's `?access_token=`.
# Library errors quote such URLs (aiohttp's handshake and timeout errors do).
_URL_CREDENTIAL = re.compile(
    r"([?&](?:ticket|session|access_?token|token|sign|signature|secret)=)[^&#\s'\"<>]+",
    re.IGNORECASE,
)


def mask_url_credentials(text: str) -> str:
    """`…?ticket=abc&x=1` → `…?ticket=****&x=1`, for every credential-like query value."""
    return _URL_CREDENTIAL.sub(r"\1****", text)


class SecretFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "****")
        return mask_url_credentials(_TELEGRAM_TOKEN.sub("****", text))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True


class PrivateFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file is the owner's only (chat addresses, pairing codes)."""

    def _open(self) -> io.TextIOWrapper:
        paths.create_private_file(Path(self.baseFilename))  # also after each rollover
        return super()._open()


def private_log_files(log_file: Path) -> None:
    """Tighten the log dir, the log and its backups (written by an older version)."""
    paths.private_dir(log_file.parent)
    for path in (log_file, *(Path(f"{log_file}.{n}") for n in range(1, BACKUPS + 1))):
        paths.private_file(path)


def setup_logging(level: str, log_file: Path | None, secrets: Iterable[str]) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    secret_filter = SecretFilter(secrets)
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        private_log_files(log_file)
        handlers.append(
            PrivateFileHandler(log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        )
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(secret_filter)
        root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Telegram URLs carry the token; peewee logs
    # SQL parameters at DEBUG (message texts, DingTalk sessionWebhook URLs).
    for noisy in ("httpx", "httpcore", "telegram", "dingtalk_stream", "aiohttp.access", "peewee"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
