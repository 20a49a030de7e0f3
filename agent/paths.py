"""Where poco-im-agent keeps its files (platformdirs), and the port file."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "poco-im-agent"
CONFIG_FILE_NAME = "agent.env"
DATABASE_FILE_NAME = "im.db"
LOCK_FILE_NAME = "agent.lock"
PORT_FILE_NAME = "agent.port"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def user_config_file() -> Path:
    return user_config_dir() / CONFIG_FILE_NAME


def log_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


def log_file(data_dir: Path) -> Path:
    return log_dir(data_dir) / "agent.log"


def lock_file(data_dir: Path) -> Path:
    return data_dir / LOCK_FILE_NAME


def port_file(data_dir: Path) -> Path:
    return data_dir / PORT_FILE_NAME
