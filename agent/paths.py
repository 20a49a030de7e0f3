"""Where poco-im-agent keeps its files (platformdirs), the port file, and their modes.

The data dir holds chat texts, DingTalk session webhooks and (in the log) pairing codes:
it is the owner's only (0700, files 0600) where the OS has modes.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

APP_NAME = "poco-im-agent"
CONFIG_FILE_NAME = "agent.env"
DATABASE_FILE_NAME = "im.db"
LOCK_FILE_NAME = "agent.lock"
PORT_FILE_NAME = "agent.port"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


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


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create `path` and its missing parents as 0700; with `tighten`, also take group and
    others' rights from an existing one."""
    for folder in reversed([p for p in (path, *path.parents) if not p.exists()]):
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    if tighten:
        _tighten(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Take group and others' rights from an existing file (absent: nothing to do)."""
    _tighten(path, PRIVATE_FILE_MODE)


def create_private_file(path: Path) -> None:
    """Create an empty file as 0600 unless it exists (then tighten it)."""
    if os.name == "posix":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE))
    private_file(path)


def _tighten(path: Path, mode: int) -> None:
    if os.name != "posix":
        return  # Windows: ACLs of the user profile already keep others out
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    current = stat.S_IMODE(status.st_mode)
    if not current & ~mode:
        return
    if status.st_uid != os.getuid() or current & stat.S_ISVTX:
        # A shared folder such as /tmp: changing it would break others; say so instead.
        log.warning(
            "%s is readable by others (mode %o); keep poco-im-agent's files private", path, current
        )
        return
    path.chmod(current & mode)
