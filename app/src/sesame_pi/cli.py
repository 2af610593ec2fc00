"""`sesame-pi run / check / devices / status / token / login / settings / standin`.

Exit codes: 0 fine, 1 unexpected failure, 2 bad configuration or usage, 3 token problem,
4 hardware unavailable (no GPIO chip), 5 `check` found a problem, 6 `status` says unhealthy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ConfigError, load

EXIT_CONFIG = 2
EXIT_TOKEN = 3
EXIT_HARDWARE = 4
EXIT_CHECK = 5
EXIT_UNHEALTHY = 6
EXIT_INTERRUPTED = 130  # Ctrl-C where it means "cancel": a shell's 128 + SIGINT

# Flags that map one-to-one to config fields (flag dest == field name).
RUN_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--server", {"help": "WebSocket URL of the agent (wss://, or ws:// for a local server)"}),
    ("--token-file", {"dest": "token_file", "help": "file holding the ID token (JWT)"}),
    ("--ca-file", {"dest": "ca_file", "help": "extra CA certificate(s) to trust (PEM)"}),
    ("--character", {"help": "Maya or Miles"}),
    ("--button", {"help": "gpio (default), stdin (lines 'press'/'release'), or none"}),
    ("--button-pin", {"dest": "button_pin", "help": "BCM pin of the button (default 17)"}),
    (
        "--button-pull",
        {"dest": "button_pull", "help": "down (default), up (ReSpeaker HAT) or floating"},
    ),
    ("--led-pin", {"dest": "led_pin", "help": "BCM pin of a status LED (optional)"}),
    (
        "--input-device",
        {"dest": "input_device", "help": "microphone: 'default', a name or an index"},
    ),
    (
        "--output-device",
        {"dest": "output_device", "help": "speaker: 'default', a name or an index"},
    ),
    (
        "--log-file",
        {"dest": "log_file", "help": "JSON event log (rotated); 'none' for stdout only"},
    ),
    ("--log-level", {"dest": "log_level", "help": "DEBUG, INFO, WARNING or ERROR"}),
    ("--heartbeat-file", {"dest": "heartbeat_file", "help": "status file for `sesame-pi status`"}),
    (
        "--setup-page",
        {"dest": "setup_page", "help": "auto (while a token is needed; 5 s hold), always or off"},
    ),
    ("--setup-port", {"dest": "setup_port", "help": "the setup page's TCP port (default 8080)"}),
    ("--setup-bind", {"dest": "setup_bind", "help": "the setup page's address (default 0.0.0.0)"}),
)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default /etc/sesame-pi/config.toml)"
    )
    for flag, options in RUN_FLAGS:
        parser.add_argument(flag, default=None, **options)


def _port(text: str) -> int:
    """A TCP port for argparse: 0 (any free one) to 65535, said in words otherwise (a socket
    refused 99999 with an OverflowError and a traceback)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 0 and 65535")
    return port


def _config_from(args: argparse.Namespace) -> Config:
    flags = {}
    for flag, options in RUN_FLAGS:
        name = options.get("dest", flag.lstrip("-").replace("-", "_"))
        flags[name] = getattr(args, name, None)
    return load(getattr(args, "config", None), flags=flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sesame-pi",
        description="Push-button voice appliance for the Sesame voice agent.",
    )
    parser.add_argument("--version", action="version", version=f"sesame-pi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the appliance (press to call, hold 2 s to hang up)")
    _add_config_flags(run)

    check = commands.add_parser("check", help="check config, token and that the server answers")
    _add_config_flags(check)

    commands.add_parser("devices", help="list audio devices PortAudio can open")

    status = commands.add_parser("status", help="health from the heartbeat file (for HEALTHCHECK)")
    _add_config_flags(status)
    status.add_argument(
        "--max-age", type=float, default=30.0, help="seconds before a heartbeat is stale"
    )

    token = commands.add_parser("token", help="show the token's expiry (never the token itself)")
    _add_config_flags(token)

    login = commands.add_parser(
        "login", help="store the sign-in a browser holds (auth record or refresh token, stdin)"
    )
    _add_config_flags(login)
    login.add_argument("--from", dest="from_file", type=Path, help="read it from FILE, not stdin")
    login.add_argument("--api-key", dest="api_key", help="Firebase API key (for a bare token)")

    settings = commands.add_parser(
        "settings", help="list every setting: section, type, default, allowed values, help"
    )
    settings.add_argument("--json", action="store_true", help="as JSON, for machines")

    standin = commands.add_parser("standin", help="run a local Sesame-compatible server")
    standin.add_argument("--host", default="127.0.0.1")
    standin.add_argument("--port", type=_port, default=8765)
    standin.add_argument(
        "--tls", nargs=2, metavar=("CERT", "KEY"), help="serve wss:// with this cert"
    )
    standin.add_argument("--mode", default="echo", choices=("echo", "tone", "silence"))
    standin.add_argument("--expect-token", help="accept only this token (default: any)")
    standin.add_argument("--refuse-auth", action="store_true", help="answer every connect with 403")
    standin.add_argument("--drop-after", type=float, help="drop the socket N s into each call")
    standin.add_argument("--delay-ms", type=float, default=0.0, help="delay every frame we send")
    standin.add_argument("--junk", action="store_true", help="mix malformed frames into calls")
    standin.add_argument("--greeting-ms", type=int, default=400, help="agent greeting tone length")
    standin.add_argument(
        "--server-pings", action="store_true", help="send JSON pings to the client"
    )
    standin.add_argument(
        "--idle-close", type=float, metavar="S", help="close sockets that place no call after S s"
    )
    standin.add_argument(
        "--call-limit", type=float, metavar="S", help="end each call after S s (duration limit)"
    )
    return parser


def _fail(message: str, code: int) -> int:
    for line in message.splitlines() or [""]:  # a ConfigError: one problem per line
        print(f"sesame-pi: {line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "check": cmd_check,
        "devices": cmd_devices,
        "status": cmd_status,
        "token": cmd_token,
        "login": cmd_login,
        "settings": cmd_settings,
        "standin": cmd_standin,
    }
    if args.command not in ("run", "standin"):  # (those log as the app does)
        from .logs import command_logging

        command_logging()
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config_from(args)  # validate before importing the hardware layers
    from .arenas import tune_malloc

    tune_malloc()  # before any thread starts
    from .app import run_appliance

    return asyncio.run(run_appliance(cfg))


# ---------------------------------------------------------------- check / token / status / devices


def cmd_check(args: argparse.Namespace) -> int:
    from .checks import run_checks

    cfg = _config_from(args)
    return 0 if asyncio.run(run_checks(cfg)) else EXIT_CHECK


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import TokenError, TokenProvider

    cfg = _config_from(args)
    try:
        info = TokenProvider(cfg).load(set_aside=False)  # (a look: it moves no file)
    except TokenError as exc:
        return _fail(str(exc), EXIT_TOKEN)
    if info.expires_at is None and not cfg.token_file.exists():
        print(f"token file: {info.source}\nno ID token yet: the app refreshes to get one")
        return 0
    expires = info.expires_at.isoformat() if info.expires_at else "never (no exp claim)"
    left = f"{info.seconds_left / 60:.1f} min" if info.seconds_left is not None else "unknown"
    print(f"token file: {info.source}\nexpires:    {expires}\ntime left:  {left}")
    if info.anonymous:
        print("warning:    this is an anonymous account's token; the service refuses those")
    return 0


PASTE_PROMPT = "Paste the auth record (or a refresh token; it is not shown), then press Enter:"


def cmd_login(args: argparse.Namespace) -> int:
    from .login import LoginError, NoApiKey, login, record_text

    cfg = _config_from(args)
    try:
        try:
            if args.from_file:  # (saved as UTF-16 by a Windows editor too, as on the SD card)
                source = record_text(args.from_file, args.from_file.read_bytes())
            elif not sys.stdin.isatty():  # a file piped in: its bytes, decoded as a file's are
                source = record_text(Path("standard input"), sys.stdin.buffer.read())
            else:
                from .paste import read_paste

                source = read_paste(PASTE_PROMPT)
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot read {args.from_file or 'standard input'}: {exc}", EXIT_TOKEN)
        result = login(source, cfg, api_key=args.api_key)
    except NoApiKey as exc:
        return _fail(f"{exc}, or give the key with --api-key", EXIT_TOKEN)
    except LoginError as exc:
        return _fail(str(exc), EXIT_TOKEN)
    except KeyboardInterrupt:
        return _fail("login cancelled; nothing was changed", EXIT_INTERRUPTED)
    print(f"signed in:  {result.email or 'yes (the record names no email)'}")
    print(f"time left:  {result.seconds_left / 60:.1f} min (renewed by itself from now on)")
    print(f"stored in:  {result.token_file}, {result.refresh_token_file} (mode 0600)")
    if result.superseded_pending:
        print("replaced:   the first boot's auth record, still waiting for the network (removed)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .heartbeat import check

    cfg = _config_from(args)
    if cfg.heartbeat_file is None:
        return _fail(
            "no heartbeat file configured (--heartbeat-file or heartbeat_file)", EXIT_CONFIG
        )
    healthy, line = check(cfg.heartbeat_file, args.max_age)
    print(line)
    return 0 if healthy else EXIT_UNHEALTHY


def cmd_devices(_args: argparse.Namespace) -> int:
    from .audio import AudioDeviceError, format_devices, list_devices

    try:
        print(format_devices(list_devices()))
    except AudioDeviceError as exc:
        return _fail(str(exc), EXIT_HARDWARE)
    return 0


# ---------------------------------------------------------------- settings


def cmd_settings(args: argparse.Namespace) -> int:
    """The schema every setting is checked against, for people (or, with --json, for the setup
    page and scripts): generated, so it cannot disagree with what `run` accepts."""
    from .config import schema
    from .settings_schema import as_json, text

    if args.json:
        print(json.dumps(as_json(schema()), indent=2))
    else:
        print(text(schema()), end="")
    return 0


# ---------------------------------------------------------------- standin


def cmd_standin(args: argparse.Namespace) -> int:
    from .standin import Standin, StandinOptions, server_tls

    options = StandinOptions(
        mode=args.mode,
        expect_token=args.expect_token,
        refuse_auth=args.refuse_auth,
        drop_after_s=args.drop_after,
        delay_ms=args.delay_ms,
        junk=args.junk,
        greeting_ms=args.greeting_ms,
        server_pings=args.server_pings,
        idle_close_s=args.idle_close,
        call_limit_s=args.call_limit,
    )

    async def serve() -> None:
        standin = Standin(options, log_events=True)
        tls = server_tls(*args.tls) if args.tls else None
        await standin.start(args.host, args.port, tls)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        standin.log(
            "standin_stopped", calls=standin.record.calls, violations=len(standin.record.violations)
        )
        await standin.stop()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except OSError as exc:  # the port is taken, a TLS file is missing or not PEM
        return _fail(f"the stand-in cannot start: {exc}", EXIT_CONFIG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
