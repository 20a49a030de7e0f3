"""The command line: subcommands, and the only place errors become messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__, paths
from agent.config import (
    Settings,
    data_paths,
    effective_values,
    load_settings,
    read_sources,
    template,
)
from agent.errors import AgentError, ConfigError, InstanceLockedError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poco-im-agent",
        description="Drive Poco agent sessions from Telegram and DingTalk.",
    )
    parser.add_argument("--version", action="version", version=f"poco-im-agent {__version__}")
    parser.add_argument("--env-file", type=Path, help="read configuration from this file too")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run headless in the foreground (default)")
    status = commands.add_parser("status", help="ask the running agent for its state")
    status.add_argument("--json", action="store_true", help="print the health JSON")
    pair = commands.add_parser("pair", help="manage which chats may use the bot")
    pair_commands = pair.add_subparsers(dest="pair_command", required=True)
    pair_commands.add_parser("list", help="pending pairing codes and allowed chats")
    approve = pair_commands.add_parser("approve", help="allow the chat that got this code")
    approve.add_argument("code")
    revoke = pair_commands.add_parser("revoke", help="forbid a chat again")
    revoke.add_argument("chat", metavar="PROVIDER:CHAT")
    config = commands.add_parser("config", help="configuration files")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("path", help="where the files live")
    config_commands.add_parser("show", help="effective configuration, secrets masked")
    config_commands.add_parser("init", help="write a commented template config file")
    commands.add_parser("tray", help="tray icon with the agent beside it (desktop default)")
    commands.add_parser("doctor", help="check config, backend, Telegram and DingTalk")
    auto = commands.add_parser("autostart", help="start the agent at login")
    auto.add_argument("action", choices=["on", "off", "status"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or default_command()
    try:
        if command == "config" and args.config_command == "path":
            return _config_path(args.env_file)
        if command == "config" and args.config_command == "init":
            return _config_init()
        if command == "tray":
            return _tray(args.env_file)
        if command == "doctor":
            return _doctor(args.env_file)
        if command == "autostart":
            return _autostart(args.action)
        settings = load_settings(env_file=args.env_file)
        if command == "run":
            return _run(settings)
        if command == "status":
            return _status(settings, as_json=args.json)
        if command == "pair":
            return _pair(settings, args)
        if command == "config":
            return _config_show(settings)
    except ConfigError as exc:
        print(f"poco-im-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except InstanceLockedError as exc:
        print(f"poco-im-agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except AgentError as exc:
        print(f"poco-im-agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED


def _run(settings: Settings) -> int:
    from agent.logs import setup_logging
    from agent.runtime import Runtime

    setup_logging(settings.log_level, paths.log_file(settings.data_dir), settings.secrets())
    runtime = Runtime(settings)
    asyncio.run(_run_until_signal(runtime))
    return EXIT_OK


async def _run_until_signal(runtime: object) -> None:
    from agent.runtime import Runtime

    assert isinstance(runtime, Runtime)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if runtime.stop_event.is_set():
            os._exit(EXIT_FAILED)  # a second Ctrl+C: stop waiting for in-flight work
        runtime.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal)
        except (NotImplementedError, RuntimeError):  # Windows: only SIGINT, via signal()
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(on_signal))
    await runtime.run()


def _agent_port(settings: Settings) -> int | None:
    if settings.http_port:
        return settings.http_port
    try:
        return int(paths.port_file(settings.data_dir).read_text().strip())
    except (OSError, ValueError):
        return None


def _status(settings: Settings, *, as_json: bool) -> int:
    import httpx

    port = _agent_port(settings)
    host = "127.0.0.1" if settings.http_host in {"0.0.0.0", "::", ""} else settings.http_host  # noqa: S104
    try:
        if port is None:
            raise httpx.ConnectError("no port file")
        health = httpx.get(f"http://{host}:{port}/api/v1/health", timeout=3).json()
    except (httpx.HTTPError, ValueError):
        print("poco-im-agent is not running" + ("" if port is None else f" (port {port})"))
        return EXIT_NOT_RUNNING
    if as_json:
        print(json.dumps(health, indent=2, ensure_ascii=False))
    else:
        print(f"poco-im-agent {health.get('version')}: {health.get('status')}")
        for name, provider in health.get("providers", {}).items():
            if provider.get("enabled"):
                detail = f" ({provider['detail']})" if provider.get("detail") else ""
                print(f"  {name}: {provider['state']}{detail}")
        print(f"  backend: {health.get('backend', {}).get('state')}")
        print(f"  outbox pending: {health.get('outbox_pending')}")
    return EXIT_OK if health.get("status") == "ok" else EXIT_FAILED


def _pair(settings: Settings, args: argparse.Namespace) -> int:
    from agent.core import access
    from agent.store import db

    db.open_database(settings.database_path)
    try:
        if args.pair_command == "list":
            for pairing in access.pending_pairings():
                print(
                    f"pending  {pairing.code}  {pairing.provider}:{pairing.chat_id}  "
                    f"{pairing.title}"
                )
            by_allowlist = access.allowlist_grants()
            for channel in access.allowed_channels():
                source = "  (IM_ALLOWLIST)" if channel.address in by_allowlist else ""
                print(f"allowed  {channel.address}  {channel.title}{source}")
            return EXIT_OK
        if args.pair_command == "approve":
            approved = access.approve(args.code, settings.lang)
            if approved is None:
                print(
                    f"no live pairing code {args.code!r} (codes expire after an hour)",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            print(f"approved {approved.address}")
            return EXIT_OK
        return _revoke(settings, args.chat)
    finally:
        db.close_database()


def _revoke(settings: Settings, address: str) -> int:
    """Forbid a chat; a running agent sees it before its next decision (it reads the store)."""
    from agent.core import access

    dropped = access.revoke(address)
    if dropped is None:
        print(f"{address} was not allowed", file=sys.stderr)
    else:
        print(f"revoked {address}; dropped {dropped}")
    if address in settings.allowlist:
        print(
            f"note: {address} is in IM_ALLOWLIST: remove it there, or it is allowed again "
            "at the next start",
            file=sys.stderr,
        )
    if settings.access_policy == "open":
        print("note: IM_ACCESS_POLICY=open lets every chat in", file=sys.stderr)
    return EXIT_FAILED if dropped is None else EXIT_OK


def _config_path(env_file: Path | None) -> int:
    """Where the files of *this* configuration live (IM_DATA_DIR, --env-file and all);
    only the two path variables are checked, so it helps with a config that fails."""
    data_dir, database_path = data_paths(read_sources(env_file=env_file))
    print(f"config file: {paths.user_config_file()}")
    if env_file is not None:
        print(f"env file:    {env_file}")
    print(f"data dir:    {data_dir}")
    print(f"database:    {database_path}")
    print(f"log file:    {paths.log_file(data_dir)}")
    return EXIT_OK


def _config_init() -> int:
    config_file = paths.user_config_file()
    if config_file.exists():
        print(f"{config_file} already exists; not overwritten")
        return EXIT_OK
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(template(), encoding="utf-8")
    # The file will hold tokens: readable by its owner only (where the OS has modes).
    config_file.chmod(0o600)
    print(f"wrote {config_file}")
    return EXIT_OK


def _config_show(settings: Settings) -> int:
    for name, value, source in effective_values(settings):
        print(f"{name}={value}" + ("" if source == "set" else "  # default"))
    return EXIT_OK


def desktop_available() -> bool:
    """A desktop session to show a tray icon in: macOS and Windows always; else X or Wayland."""
    if sys.platform not in {"darwin", "win32"} and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        import pystray  # noqa: F401  # fails without a usable backend/display
    except Exception:  # pystray raises more than ImportError when a display is unusable
        return False
    return True


def default_command() -> str:
    """What a bare `poco-im-agent` (or a double-clicked executable) does."""
    return "tray" if desktop_available() else "run"


def _tray(env_file: Path | None) -> int:
    from agent.logs import setup_logging
    from agent.tray import run_tray

    def load() -> Settings:
        # Logging follows each (re)load: new secrets get masked, a new data dir gets the log.
        settings = load_settings(env_file=env_file)
        setup_logging(settings.log_level, paths.log_file(settings.data_dir), settings.secrets())
        return settings

    setup_logging("INFO", paths.log_file(paths.default_data_dir()), [])
    run_tray(load, paths.user_config_file())
    return EXIT_OK


def _doctor(env_file: Path | None) -> int:
    from agent import doctor

    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as exc:
        print(doctor.format_check(doctor.config_failure(f"{exc.variable}: {exc.problem}", exc.fix)))
        return EXIT_FAILED
    checks = asyncio.run(doctor.run_checks(settings))
    for check in checks:
        print(doctor.format_check(check))
    return EXIT_OK if doctor.all_ok(checks) else EXIT_FAILED


def _autostart(action: str) -> int:
    from agent import autostart

    if action == "on":
        print(f"start at login: on ({autostart.enable()})")
    elif action == "off":
        removed = autostart.disable()
        print("start at login: off" + ("" if removed else " (it was not on)"))
    else:
        print(f"start at login: {autostart.describe()}")
    return EXIT_OK
