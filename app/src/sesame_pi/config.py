"""One typed configuration from a TOML file, SESAME_PI_* environment variables and flags.

Precedence: flags > environment > file > defaults. Every value is validated here, once, so the rest
of the program can trust it; a bad value becomes a ConfigError with a sentence a person can act on.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_FILE = Path("/etc/sesame-pi/config.toml")
DEFAULT_SERVER = "wss://sesameai.app/agent-service-0/v1/connect"
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux aarch64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
ENV_PREFIX = "SESAME_PI_"
CHARACTERS = ("Maya", "Miles")
BUTTON_KINDS = ("gpio", "stdin", "none")
PULLS = ("down", "up", "floating")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SETUP_MODES = ("auto", "always", "off")
ECHO_ENGINES = ("auto", "webrtc", "speex", "off")
OUTPUT_MODES = ("writer", "callback")
# BCM numbers of the Raspberry Pi 40-pin header's GPIO lines.
GPIO_PINS = range(0, 28)


class ConfigError(ValueError):
    """A configuration value a person has to fix; the message says which and how."""


@dataclass(frozen=True)
class Config:
    """Everything the appliance can be told. Field names are the TOML keys and env suffixes."""

    # The service
    server: str = DEFAULT_SERVER
    character: str = "Maya"
    client_name: str = "Consumer-Web-App"
    origin: str = "https://app.sesame.com"
    user_agent: str = DEFAULT_USER_AGENT
    timezone: str = "UTC"
    language: str = "en-US"
    ca_file: Path | None = None
    reconnect_flag: bool = False
    # Auth
    token_file: Path = Path("/etc/sesame-pi/token")
    refresh_token_file: Path | None = None  # None: `refresh_token` beside token_file
    firebase_api_key: str = ""  # empty: the `firebase_api_key` file `sesame-pi login` stores
    token_endpoint: str = "https://securetoken.googleapis.com/v1/token"
    refresh_before_s: float = 300.0
    expiry_warn_s: float = 600.0
    # Link timing
    ping_interval_s: float = 0.5
    idle_ping_interval_s: float = 5.0
    ping_misses_allowed: int = 6
    handshake_timeout_s: float = 10.0
    disconnect_timeout_s: float = 3.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 30.0
    healthy_after_s: float = 30.0
    auth_retry_per_minute: int = 3
    call_resume_window_s: float = 120.0
    redial_on_limit: bool = False  # place a new call when the service ends one at its limit
    max_frame_bytes: int = 1_048_576
    # Audio
    input_device: str = "default"
    output_device: str = "default"
    capture_rate: int = 16000
    frame_ms: int = 20
    capture_period_ms: int = 10  # microphone callback period; periods are joined into frames
    output_period_ms: int = 20  # speaker period; 10 xruns via the pulse plugin in callback mode
    prebuffer_ms: int = 60
    output_mode: str = "callback"  # or "writer": blocking writes that keep the device lean
    device_target_ms: int = 20  # the writer tops the device up to this much audio
    jitter_max_ms: int = 2000
    mute_mic_while_playing: bool = False  # half duplex: duck the mic while the agent speaks
    echo_cancel: str = "auto"
    echo_max_delay_ms: int = 500
    device_grace_s: float = 10.0  # a device gone this long mid-call ends it; 0: at once
    # Button, LED, earcons
    button: str = "gpio"
    button_pin: int = 17
    button_pull: str = "down"
    bounce_ms: int = 50
    hold_s: float = 2.0
    led_pin: int | None = None
    earcons: bool = True
    earcon_volume: float = 0.3
    # Logging and health
    log_file: Path | None = Path("/var/log/sesame-pi/events.jsonl")
    log_level: str = "INFO"
    log_max_bytes: int = 5_000_000
    log_backups: int = 3
    heartbeat_file: Path | None = None
    # Setup page (the LAN page for pairing a browser and handing over a token)
    setup_page: str = "auto"  # auto: while no working token, and 15 min after a 5 s hold
    setup_port: int = 8080
    setup_bind: str = "0.0.0.0"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return validate(dataclasses.replace(self, **changes))


_PATH_FIELDS = {"ca_file", "token_file", "refresh_token_file", "log_file", "heartbeat_file"}
_OPTIONAL = {"ca_file", "refresh_token_file", "log_file", "heartbeat_file", "led_pin"}


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Config) if f.name != "extra"}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, or say plainly why not."""
    kind = _field_types()[name]
    if raw is None:
        if name in _OPTIONAL:
            return None
        raise ConfigError(f"{name} needs a value")
    if isinstance(raw, str) and name in _OPTIONAL and raw.strip().lower() in ("", "none", "off"):
        return None
    try:
        if name in _PATH_FIELDS:
            return Path(str(raw)).expanduser()
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind.startswith("int"):
            if isinstance(raw, bool):
                raise ValueError
            return int(str(raw).strip(), 0) if isinstance(raw, str) else int(raw)
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        want = kind.split(" ")[0]
        raise ConfigError(f"{name} must be a {want}, got {raw!r}") from None


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Config) -> Config:
    """Check every value against what the hardware and the service accept."""
    url = urllib.parse.urlsplit(cfg.server)
    _check(
        url.scheme in ("wss", "ws") and bool(url.hostname),
        f"server {cfg.server!r} is not a ws:// or wss:// URL",
    )
    _check(cfg.character in CHARACTERS, f"character {cfg.character!r} is not one of Maya, Miles")
    try:
        zoneinfo.ZoneInfo(cfg.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"timezone {cfg.timezone!r} is not an IANA zone such as Europe/Berlin"
        ) from None
    _check(cfg.button in BUTTON_KINDS, f"button {cfg.button!r} is not one of gpio, stdin, none")
    _check(cfg.button_pin in GPIO_PINS, f"button_pin {cfg.button_pin} is not a GPIO pin (0-27)")
    _check(
        cfg.led_pin is None or cfg.led_pin in GPIO_PINS,
        f"led_pin {cfg.led_pin} is not a GPIO pin (0-27)",
    )
    _check(cfg.led_pin != cfg.button_pin, "led_pin and button_pin must be different pins")
    _check(
        cfg.button_pull in PULLS,
        f"button_pull {cfg.button_pull!r} is not one of down, up, floating",
    )
    _check(0 <= cfg.bounce_ms <= 500, f"bounce_ms {cfg.bounce_ms} must be between 0 and 500")
    _check(0.5 <= cfg.hold_s <= 10, f"hold_s {cfg.hold_s} must be between 0.5 and 10 seconds")
    _check(
        cfg.capture_rate in (8000, 16000, 24000, 48000),
        f"capture_rate {cfg.capture_rate} is not 8000, 16000, 24000 or 48000",
    )
    _check(5 <= cfg.frame_ms <= 64, f"frame_ms {cfg.frame_ms} must be between 5 and 64")
    for name in ("capture_period_ms", "output_period_ms"):
        value = getattr(cfg, name)
        _check(5 <= value <= 64, f"{name} {value} must be between 5 and 64")
    _check(
        0 <= cfg.prebuffer_ms <= 1000, f"prebuffer_ms {cfg.prebuffer_ms} must be between 0 and 1000"
    )
    _check(
        cfg.jitter_max_ms >= cfg.prebuffer_ms + cfg.frame_ms,
        f"jitter_max_ms {cfg.jitter_max_ms} must exceed prebuffer_ms + frame_ms",
    )
    _check(
        cfg.output_mode in OUTPUT_MODES,
        f"output_mode {cfg.output_mode!r} is not one of writer, callback",
    )
    _check(
        5 <= cfg.device_target_ms <= 200,
        f"device_target_ms {cfg.device_target_ms} must be between 5 and 200",
    )
    _check(
        cfg.echo_cancel in ECHO_ENGINES,
        f"echo_cancel {cfg.echo_cancel!r} is not one of auto, webrtc, speex, off",
    )
    _check(
        50 <= cfg.echo_max_delay_ms <= 1000,
        f"echo_max_delay_ms {cfg.echo_max_delay_ms} must be between 50 and 1000",
    )
    _check(
        0.0 <= cfg.device_grace_s <= 300,
        f"device_grace_s {cfg.device_grace_s} must be between 0 and 300 seconds",
    )
    _check(
        0.0 <= cfg.earcon_volume <= 1.0,
        f"earcon_volume {cfg.earcon_volume} must be between 0 and 1",
    )
    _check(0.05 <= cfg.ping_interval_s <= 60, "ping_interval_s must be between 0.05 and 60")
    _check(
        0.5 <= cfg.idle_ping_interval_s <= 300, "idle_ping_interval_s must be between 0.5 and 300"
    )
    _check(1 <= cfg.ping_misses_allowed <= 100, "ping_misses_allowed must be between 1 and 100")
    _check(
        0 < cfg.backoff_initial_s <= cfg.backoff_max_s,
        "backoff_initial_s must be > 0 and <= backoff_max_s",
    )
    _check(cfg.backoff_max_s <= 3600, "backoff_max_s must be at most 3600")
    _check(1 <= cfg.auth_retry_per_minute <= 10, "auth_retry_per_minute must be between 1 and 10")
    _check(
        cfg.handshake_timeout_s > 0 and cfg.disconnect_timeout_s > 0, "timeouts must be positive"
    )
    _check(cfg.max_frame_bytes >= 4096, "max_frame_bytes must be at least 4096")
    _check(
        cfg.log_level.upper() in LOG_LEVELS,
        f"log_level {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}",
    )
    _check(
        cfg.log_max_bytes >= 10_000 and cfg.log_backups >= 1,
        "log_max_bytes >= 10000 and log_backups >= 1",
    )
    _check(
        cfg.ca_file is None or cfg.ca_file.is_file(),
        f"ca_file {cfg.ca_file} does not exist or is not a file",
    )
    _check(
        cfg.setup_page in SETUP_MODES,
        f"setup_page {cfg.setup_page!r} is not one of {', '.join(SETUP_MODES)}",
    )
    _check(
        0 <= cfg.setup_port <= 65535,
        f"setup_port {cfg.setup_port} is not a TCP port (0 picks a free one)",
    )
    try:
        ipaddress.ip_address(cfg.setup_bind)
    except ValueError:
        raise ConfigError(
            f"setup_bind {cfg.setup_bind!r} is not an IP address (0.0.0.0 for every interface)"
        ) from None
    return dataclasses.replace(cfg, log_level=cfg.log_level.upper())


def read_toml(path: Path) -> dict[str, Any]:
    """Read the config file; flatten [sections] so `[audio] frame_ms` and `frame_ms` both work."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < file < environment < flags into one validated Config."""
    environ = os.environ if environ is None else environ
    known = _field_types()
    explicit_file = config_file is not None or f"{ENV_PREFIX}CONFIG" in environ
    path = config_file or Path(environ.get(f"{ENV_PREFIX}CONFIG", str(DEFAULT_CONFIG_FILE)))
    merged: dict[str, Any] = {}
    if path.exists() or explicit_file:
        for key, value in read_toml(path).items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            merged[key] = value
    for name in known:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            merged[name] = environ[env_name]
    for name, value in (flags or {}).items():
        if value is not None:
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}")
            merged[name] = value
    values = {name: _coerce(name, raw) for name, raw in merged.items()}
    return validate(Config(**values))
