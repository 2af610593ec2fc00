"""Wires the parts together for `sesame-pi run` and owns their lifetime (start, signals, close)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import urllib.parse

from . import __version__, netcheck
from .audio import AudioDeviceError, AudioEngine
from .auth import TokenError, TokenProvider
from .button import ButtonUnavailable, make_button
from .config import Config, misspelt_environment
from .feedback import Feedback
from .heap import settle_after_start
from .heartbeat import Heartbeat
from .link import Link
from .login import LoginSuperseded, pending_auth_path, settle_pending
from .logs import event, setup_logging
from .session import Session
from .setup_page import SetupPage
from .stall import LoopStallGuard
from .tasks import TaskSet

EXIT_TOKEN = 3
EXIT_HARDWARE = 4


def _say(message: str) -> None:
    print(f"sesame-pi: {message}", file=sys.stderr)


async def _sign_in_pending(cfg: Config, session: Session) -> None:
    """The first boot's sign-in, shown as such (not as a token a person must give) until it is
    over: signed in, or refused."""
    session.signing_in()
    stored = False
    try:
        stored = await settle_pending(cfg) is not None
    except LoginSuperseded:
        stored = True  # by the login by hand that came first
    finally:
        session.sign_in_over(stored)


async def run_appliance(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    setup_logging(cfg)
    server = urllib.parse.urlsplit(cfg.server)
    event(
        "app_started",
        version=__version__,
        server=f"{server.scheme}://{server.netloc}{server.path}",
        character=cfg.character,
        button=cfg.button,
        button_pin=cfg.button_pin,
        input_device=cfg.input_device,
        output_device=cfg.output_device,
    )
    for variable, meant in misspelt_environment():
        event(
            "config_variable_ignored",
            logging.WARNING,
            variable=variable,
            action=f"no such setting: did you mean {meant}?",
        )
    # An auth record the SD card's first boot left for us: signed in with in the background (it
    # waits for the network), so the button, LED, earcons and heartbeat are up meanwhile; the
    # link picks the stored token up when it lands.
    pending = pending_auth_path(cfg)
    signing_in = pending.exists()
    tokens = TokenProvider(cfg)
    try:
        info = tokens.load()
    except TokenError as exc:
        if signing_in:
            event("token_from_pending_login", file=str(pending))
            _say(f"signing in with {pending} as soon as the network is up")
        else:
            event("token_error", logging.ERROR, detail=str(exc))
            _say(str(exc))
            if cfg.setup_page == "off":
                return EXIT_TOKEN
            # The setup page can take a token: wait for one (NEEDS_TOKEN) instead of exiting.
            port = cfg.setup_port
            _say(f"waiting for a token: open the setup page on port {port} of this device")
    else:
        event("token_ok", seconds_left=info.seconds_left, anonymous=info.anonymous)

    loop = asyncio.get_running_loop()

    def device_error(message: str) -> None:
        session.audio_device_error(message)  # bound below; the engine reports only once running

    def device_wedged(reason: str) -> None:
        guard.restart(reason)  # bound below, before any call can reopen a device

    # The parts first, then the session they report to.
    # (`loop_stall_exit_s = 0`: the app never exits by itself, and the wedge's line says to
    # restart it by hand)
    wedged = device_wedged if cfg.loop_stall_exit_s else None
    audio = AudioEngine(cfg, loop, on_device_error=device_error, on_wedged=wedged)
    feedback = Feedback(cfg, play_earcon=audio.play_earcon)
    heartbeat = Heartbeat(cfg.heartbeat_file) if cfg.heartbeat_file else None
    link = Link(cfg, tokens)
    session = Session(cfg, link=link, audio=audio, feedback=feedback, heartbeat=heartbeat)
    try:
        button = make_button(cfg, session, loop)
    except ButtonUnavailable as exc:
        event("button_unavailable", logging.ERROR, detail=str(exc))
        _say(str(exc))
        feedback.close()
        audio.close()
        return EXIT_HARDWARE

    setup = SetupPage(cfg, session, tokens, feedback) if cfg.setup_page != "off" else None
    background = TaskSet()
    stop_asked = asyncio.Event()

    def on_signal(name: str) -> None:
        if not stop_asked.is_set():
            stop_asked.set()
            event("signal", signal=name)
            background.spawn(session.stop(), "stop")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    guard = LoopStallGuard(loop, exit_after_s=cfg.loop_stall_exit_s)
    guard.start()
    background.spawn(tokens.watch(), "token-watch")
    background.spawn(netcheck.watch(session.network_changed), "network-watch")
    if signing_in:
        background.spawn(_sign_in_pending(cfg, session), "pending-login")
    if setup is not None:
        background.spawn(setup.run(), "setup-page")
    button.start()
    reader = getattr(button, "run", None)
    if reader is not None:
        background.spawn(reader(), "button-reader")
    try:
        await asyncio.to_thread(audio.probe)
    except AudioDeviceError as exc:
        session.audio_device_error(str(exc))
    settle_after_start()  # what start-up made, out of the collector's way (see `heap`)
    try:
        await session.run()
    finally:
        await background.close()
        guard.stop()  # closing the devices below may take a while, and that is no hang
        button.close()
        feedback.close()
        audio.close()
        event("app_stopped", calls=session.calls_placed, resumed=session.calls_resumed)
    return 0
