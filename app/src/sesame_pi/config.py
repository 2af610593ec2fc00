"""One typed configuration from a TOML file, SESAME_PI_* environment variables and flags.

Precedence: flags > environment > file > defaults. Every value is validated here, once, so the rest
of the program can trust it. Each field declares its section, help and allowed values in a Spec
(settings_schema), and validation reads them: every bad value becomes a sentence a person can act
on, and all of them come in one ConfigError, so a config needs one round of fixing, not one per key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import ipaddress
import os
import stat
import tempfile
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any

from . import textfile
from .settings_schema import Setting, by_section, setting

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
OUTPUT_MODES = ("auto", "writer", "callback")
CAPTURE_RATES = (8000, 16000, 24000, 48000)
# BCM numbers of the Raspberry Pi 40-pin header's GPIO lines.
GPIO_PINS = range(0, 28)
_PIN_LOW, _PIN_HIGH = GPIO_PINS.start, GPIO_PINS.stop - 1
_NOT_A_PIN = "{name} {value} is not a GPIO pin (0-27)"


class ConfigError(ValueError):
    """Configuration values a person has to fix: one sentence each, saying which and how.

    `problems` holds the sentences; the message is them, one per line (one problem: just it).
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# ---------------------------------------------------------------- rules a range cannot say


def _url_problem(problem: str, value: str, schemes: tuple[str, ...]) -> str | None:
    """`problem` (with the parser's reason, when it has one) unless `value` is a URL with one of
    `schemes`, a host and a port that is a number in range."""
    try:
        url = urllib.parse.urlsplit(value)
        _ = url.port  # a port out of range or not a number raises only when asked for
    except ValueError as exc:
        return f"{problem} ({exc})"
    # (a space or a fragment passed, and every connect or refresh then failed as "offline")
    if any(c.isspace() or not c.isprintable() for c in value):
        return f"{problem} (it holds a space or a control character)"
    if url.fragment or value.endswith("#"):
        return f"{problem} (a #fragment is never sent to a server)"
    if url.scheme in schemes and url.hostname:
        return None
    return problem


def _server_url(cfg: Config) -> str | None:
    problem = f"server {cfg.server!r} is not a ws:// or wss:// URL"
    return _url_problem(problem, cfg.server, ("wss", "ws"))


def _header_text(name: str) -> Callable[[Config], str | None]:
    """A check for a setting sent as an HTTP header: no control characters (a line break would
    be refused by the handshake on every attempt, as if the network had failed)."""

    def check(cfg: Config) -> str | None:
        value = getattr(cfg, name)
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            return f"{name} must be one line of text without control characters"
        return None

    return check


def _iana_zone(cfg: Config) -> str | None:
    if cfg.timezone == "UTC":
        return None  # the default: no zone database to open (zoneinfo costs 0.3 MB at start)
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(cfg.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"timezone {cfg.timezone!r} is not an IANA zone such as Europe/Berlin"
    return None


def _ca_file_exists(cfg: Config) -> str | None:
    if cfg.ca_file is None:
        return None
    if not cfg.ca_file.is_file():
        return f"ca_file {cfg.ca_file} does not exist or is not a file"
    import ssl  # (here: the settings check needs it only when a CA file is given)

    try:
        ssl.create_default_context().load_verify_locations(cafile=str(cfg.ca_file))
    except (ssl.SSLError, OSError, ValueError):
        return f"ca_file {cfg.ca_file} holds no PEM certificate"
    return None


def _whole_blocks(cfg: Config) -> str | None:
    if cfg.frame_ms % 10 == 0:
        return None
    return f"frame_ms {cfg.frame_ms} must be a multiple of 10 (the canceller takes 10 ms blocks)"


def _token_endpoint_url(cfg: Config) -> str | None:
    """https://, or http:// to this machine only: a refresh token is lasting access to the
    account, and a typo'd or hand-edited http:// setting sent it in clear, without a word."""
    problem = f"token_endpoint {cfg.token_endpoint!r} is not an https:// (or http://) URL"
    found = _url_problem(problem, cfg.token_endpoint, ("https", "http"))
    if found is not None:
        return found
    url = urllib.parse.urlsplit(cfg.token_endpoint)
    if url.scheme == "http" and not _loopback(url.hostname or ""):
        return (
            f"token_endpoint {cfg.token_endpoint!r} would send the refresh token unencrypted: "
            "use https:// (http:// is for a test server on this machine: 127.0.0.1, ::1, localhost)"
        )
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _backoff_order(cfg: Config) -> str | None:
    if cfg.backoff_initial_s <= cfg.backoff_max_s:
        return None
    return (
        f"backoff_initial_s {cfg.backoff_initial_s} must not exceed "
        f"backoff_max_s {cfg.backoff_max_s}"
    )


def _jitter_room(cfg: Config) -> str | None:
    if cfg.jitter_max_ms >= cfg.prebuffer_ms + cfg.frame_ms:
        return None
    return (
        f"jitter_max_ms {cfg.jitter_max_ms} must be at least prebuffer_ms + frame_ms "
        f"({cfg.prebuffer_ms + cfg.frame_ms})"
    )


def _led_not_button(cfg: Config) -> str | None:
    if cfg.led_pin is None or cfg.led_pin != cfg.button_pin or cfg.button != "gpio":
        return None  # (a stdin or no button leaves button_pin unused: the LED may have it)
    return "led_pin and button_pin must be different pins"


def _ip_address(cfg: Config) -> str | None:
    try:
        ipaddress.ip_address(cfg.setup_bind)
    except ValueError:
        return f"setup_bind {cfg.setup_bind!r} is not an IP address (0.0.0.0 for every interface)"
    return None


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


# ---------------------------------------------------------------- the settings


@dataclass(frozen=True)
class Config:
    """Everything the appliance can be told. Field names are the TOML keys and env suffixes."""

    # The service
    server: str = setting(
        DEFAULT_SERVER,
        "service",
        "the agent's WebSocket; `ws://` is accepted for local servers",
        allowed="a `ws://` or `wss://` URL",
        check=_server_url,
    )
    character: str = setting("Maya", "service", "the agent's voice", choices=CHARACTERS)
    client_name: str = setting(
        "Consumer-Web-App", "service", "sent as `client_name` (older clients: `RP-Web`)"
    )
    origin: str = setting(
        "https://app.sesame.com",
        "service",
        "the `Origin` header",
        allowed="one line of text",
        check=_header_text("origin"),
    )
    user_agent: str = setting(
        DEFAULT_USER_AGENT,
        "service",
        "the `User-Agent` header and `client_metadata.user_agent`",
        shown_default="a desktop Chrome string",
        allowed="one line of text",
        check=_header_text("user_agent"),
    )
    timezone: str = setting(
        "UTC",
        "service",
        "IANA zone sent in `usercontext` and `client_location_state`",
        allowed="an IANA zone such as `Europe/Berlin`",
        check=_iana_zone,
    )
    language: str = setting("en-US", "service", "`client_metadata.language`")
    ca_file: Path | None = setting(
        None,
        "service",
        "extra CA certificates (PEM) to trust; verification is never switched off",
        allowed="an existing file",
        check=_ca_file_exists,
    )
    reconnect_flag: bool = setting(
        False,
        "service",
        "the `reconnect` flag on a resumed call's `call_connect` (its meaning is undocumented)",
    )
    # Auth
    token_file: Path = setting(
        Path("/etc/sesame-pi/token"), "auth", "the Firebase ID token (JWT), mode 0600"
    )
    refresh_token_file: Path | None = setting(
        None,
        "auth",
        "the Firebase refresh token; with an API key, refresh is on",
        shown_default="`refresh_token` beside `token_file`",
    )
    firebase_api_key: str = setting(
        "",
        "auth",
        "the web app's public Firebase API key, for a refresh token provided without a login "
        "(the key `sesame-pi login` stores beside `token_file` comes first; never in this repo)",
        shown_default="empty",
        shown=False,
    )
    token_endpoint: str = setting(
        "https://securetoken.googleapis.com/v1/token",
        "auth",
        "where refreshes go (Firebase's secure-token endpoint)",
        allowed="an `https://` URL (`http://` only to this machine, for tests)",
        check=_token_endpoint_url,
    )
    refresh_before_s: float = setting(
        300.0,
        "auth",
        "refresh this long before `exp` (an ID token lives an hour)",
        low=0,
        high=3000,
    )
    expiry_warn_s: float = setting(
        600.0,
        "auth",
        "log `token_expiring` this long before `exp` (without renewal, or after it failed)",
        low=0,
    )
    # Link timing
    ping_interval_s: float = setting(
        0.5, "link", "JSON ping period during a call (as the web app)", low=0.05, high=60
    )
    idle_ping_interval_s: float = setting(
        5.0, "link", "WebSocket keepalive period while idle", low=0.5, high=300
    )
    ping_misses_allowed: int = setting(
        6, "link", "unanswered pings before the link counts as dead", low=1, high=100
    )
    handshake_timeout_s: float = setting(
        10.0,
        "link",
        "connect, `initialize` and `call_connect_response` timeout",
        low=0,
        low_open=True,
    )
    disconnect_timeout_s: float = setting(
        3.0, "link", "how long to wait for `call_disconnect_response`", low=0, low_open=True
    )
    backoff_initial_s: float = setting(
        0.25,
        "link",
        "the first reconnect delay (exponential, jittered; capped at 1.5 s while a call "
        "waits to resume)",
        low=0,
        low_open=True,
        allowed="at most `backoff_max_s`",
        check=_backoff_order,
        reads=("backoff_max_s",),
    )
    backoff_max_s: float = setting(
        30.0, "link", "the longest reconnect delay", low=0, low_open=True, high=3600
    )
    healthy_after_s: float = setting(
        30.0, "link", "a connection that lived this long resets the backoff", low=0
    )
    auth_retry_per_minute: int = setting(
        3,
        "link",
        "attempts per minute after an auth refusal, and only with a new token",
        low=1,
        high=10,
    )
    call_resume_window_s: float = setting(
        120.0,
        "link",
        "how long a dropped call keeps trying to resume (from its first drop, while each resumed "
        "part lasts less than `healthy_after_s`)",
        low=0,
    )
    redial_on_limit: bool = setting(
        False,
        "link",
        "when the service ends a call at its length limit, place a new call by itself (three "
        "times after a press at most)",
    )
    max_frame_bytes: int = setting(1_048_576, "link", "larger server frames are refused", low=4096)
    # Audio
    input_device: str = setting(
        "default",
        "audio",
        "microphone: `default`, part of a device name, or an index (`sesame-pi devices`)",
    )
    output_device: str = setting(
        "default",
        "audio",
        "speaker: `default`, part of a device name, or an index (`sesame-pi devices`)",
    )
    capture_rate: int = setting(
        16000, "audio", "microphone rate declared in `call_connect`", choices=CAPTURE_RATES
    )
    frame_ms: int = setting(
        20,
        "audio",
        "uplink frame length: one `audio` message per frame",
        low=10,
        high=60,
        allowed="a multiple of 10 (the echo canceller takes 10 ms blocks)",
        check=_whole_blocks,
    )
    capture_period_ms: int = setting(
        20,
        "audio",
        "microphone callback period, at most a frame; periods are joined into frames, so a"
        " shorter one only wakes the app more often: a frame is complete at the same moment",
        low=5,
        high=64,
    )
    output_period_ms: int = setting(
        10,
        "audio",
        "speaker period; the writer keeps `device_target_ms` in the device (at least two)."
        " Callback mode buffers two"
        ' as well, and when "auto" chooses it (a sound server) takes at least 20: 10 made'
        " PortAudio fall into underflow storms through the ALSA pulse plugin",
        low=5,
        high=64,
    )
    output_channels: int = setting(
        1,
        "audio",
        "channels the speaker opens with; the audio role sets the shared output's own count (2) "
        "so ALSA needs no channel converter (its route plugin can abort the app after an "
        "underrun); the app writes the agent on each",
        low=1,
        high=2,
    )
    prebuffer_ms: int = setting(
        60,
        "audio",
        "playback prebuffer before the agent's audio starts (in writer mode, only until the"
        " link's lateness is measured: the first call after start); grows after an underrun, and"
        " a standing excess the network never used is trimmed from quiet audio",
        low=0,
        high=1000,
    )
    output_mode: str = setting(
        "auto",
        "audio",
        "`writer`: one thread with blocking writes tops the device up to `device_target_ms` and"
        " no further, with a playout target learnt from the link's lateness (the lowest"
        " latency); `callback`: PortAudio calls for audio and keeps the device's whole buffer"
        " full; `auto`: tries the speaker once (a fraction of a second of silence at start) and"
        " takes the writer where the device's fill level is what it holds (a card, dmix),"
        " callback behind a sound server that reads ahead of it (PulseAudio, PipeWire; see"
        ' "Writer mode" in the README)',
        choices=OUTPUT_MODES,
    )
    device_target_ms: int = setting(
        25,
        "audio",
        "writer mode: how much audio the device may hold (at least two periods; the default,"
        " two 10 ms periods and 5 ms, leaves room for a writer that wakes late: see"
        ' "Underruns" in the README); a period'
        " more after each time the device ran dry with audio waiting (up to 60 ms), a period"
        " less after 10 s without (twice as long after each leaner target that ran dry sooner,"
        " up to 160 s)",
        low=5,
        high=200,
    )
    jitter_max_ms: int = setting(
        2000,
        "audio",
        "playback buffer bound; beyond it the oldest audio is dropped and counted",
        allowed="at least `prebuffer_ms` + `frame_ms`",
        check=_jitter_room,
        reads=("prebuffer_ms", "frame_ms"),
    )
    mute_mic_while_playing: bool = setting(
        False,
        "audio",
        "half duplex: duck the microphone 30 dB while the agent is audibly speaking (its "
        "level, with a 250 ms hangover), not while audio is merely buffered; for boxes "
        "where the canceller cannot keep up",
    )
    echo_cancel: str = setting(
        "auto",
        "audio",
        "echo canceller between the microphone and the uplink: `auto` (WebRTC AEC3 where "
        "its wheel exists: x86_64, aarch64; else speexdsp), `webrtc`, `speex` or `off` "
        '(see "Echo")',
        choices=ECHO_ENGINES,
    )
    echo_max_delay_ms: int = setting(
        500,
        "audio",
        "the longest speaker-to-microphone delay the canceller searches for, beyond what"
        " PortAudio's time stamps say",
        low=50,
        high=1000,
    )
    device_grace_s: float = setting(
        10.0,
        "audio",
        "a sound device that stalls or errors mid-call is reopened and the call goes on "
        "(the uplink sends silence meanwhile); only one still gone after this long ends "
        "the call; `0` ends it at once, and values below 2.5 s act as 2.5 s (the time to see a "
        "device gone and reopen it once)",
        low=0,
        high=300,
    )
    # Button, LED, earcons
    button: str = setting(
        "gpio",
        "button",
        "`gpio`, `stdin` (lines `press`/`release`) or `none`",
        choices=BUTTON_KINDS,
    )
    button_pin: int = setting(
        17, "button", "BCM pin of the button", message=_NOT_A_PIN, low=_PIN_LOW, high=_PIN_HIGH
    )
    button_pull: str = setting(
        "down",
        "button",
        "`down` (pressed = high), `up` (ReSpeaker 2-Mic HAT, pressed = low) or `floating`",
        choices=PULLS,
    )
    bounce_ms: int = setting(50, "button", "debounce", low=0, high=500)
    # (under the 5 s setup hold: a call must end first, as the setup hold opens the page only
    # out of a call; at 5 s or more the page could never be opened by the button)
    hold_s: float = setting(2.0, "button", "hold time that ends a call", low=0.5, high=4.5)
    led_pin: int | None = setting(
        None,
        "button",
        "BCM pin of a status LED",
        allowed="not `button_pin`",
        check=_led_not_button,
        reads=("button_pin", "button"),
        message=_NOT_A_PIN,
        low=_PIN_LOW,
        high=_PIN_HIGH,
    )
    earcons: bool = setting(True, "button", "short tones for call start, live, end and error")
    earcon_volume: float = setting(
        0.3, "button", "the earcons' loudness (1 is full scale)", low=0, high=1
    )
    # Logging and health
    log_file: Path | None = setting(
        Path("/var/log/sesame-pi/events.jsonl"), "logging", "JSON event log; `none` for stdout only"
    )
    log_level: str = setting(
        "INFO", "logging", "how much the log says", choices=LOG_LEVELS, normalise=_upper
    )
    log_max_bytes: int = setting(
        5_000_000, "logging", "the event log's size that starts a new file", low=10_000
    )
    log_backups: int = setting(3, "logging", "rotated event logs kept", low=1, high=100)
    heartbeat_file: Path | None = setting(None, "logging", "status file read by `sesame-pi status`")
    loop_stall_exit_s: float = setting(
        60.0,
        "logging",
        "the app logs where it is stuck once its event loop stops for 5 s, and exits (code 70,"
        " for Docker or systemd to restart it) once it has stopped this long, or once a sound"
        " device's reopen or the speaker's last write has been stuck 30 s; `0` never exits",
        low=0,
        high=3600,
    )
    # Setup page (the LAN page for pairing a browser and handing over a token)
    setup_page: str = setting(
        "auto",
        "setup",
        "the LAN setup page: `auto` (while no working token, and 15 min after a 5 s hold),"
        " `always` or `off` (then a missing token exits 3)",
        choices=SETUP_MODES,
    )
    setup_port: int = setting(
        8080,
        "setup",
        "the setup page's TCP port (`0` picks a free one)",
        low=0,
        high=65535,
        message="{name} {value} is not a TCP port (0 picks a free one)",
    )
    setup_bind: str = setting(
        "0.0.0.0",
        "setup",
        "the address the setup page listens on (`0.0.0.0`: every interface)",
        allowed="an IP address",
        check=_ip_address,
    )
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return validate(dataclasses.replace(self, **changes))


@functools.cache
def schema() -> tuple[Setting, ...]:
    """Every setting, in declaration order (the README's, `sesame-pi settings`' and the file's)."""
    found = (Setting.of(item) for item in fields(Config))
    return tuple(item for item in found if item is not None)


def _settings() -> dict[str, Setting]:
    return {item.name: item for item in schema()}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, or say plainly why not."""
    item = _settings()[name]
    if raw is None:
        if item.optional:
            return None
        raise ConfigError(f"{name} needs a value")
    if isinstance(raw, str) and item.optional and raw.strip().lower() in ("", "none", "off"):
        return None
    try:
        return _converted(item.base, raw)
    except (TypeError, ValueError):
        raise ConfigError(item.type_problem(raw)) from None


def _converted(base: str, raw: Any) -> Any:
    """`raw` as a `base` value; TypeError or ValueError when it is not one."""
    if base == "Path":
        if not isinstance(raw, str | PurePath):  # (TOML's false would become a file "False")
            raise TypeError
        if not str(raw).strip():  # (`SESAME_PI_TOKEN_FILE=` in a .env: Path("") is ".")
            raise ValueError
        return Path(str(raw)).expanduser()
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if base in ("int", "float") and isinstance(raw, bool):
        raise ValueError
    if base == "int":
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError  # 17.9 is no pin number: refused, not cut to 17
        if isinstance(raw, str):
            text = raw.strip()
            try:
                return int(text, 0)  # 0x11, 0o21 and 17 alike
            except ValueError:
                return int(text, 10)  # and 017, which base 0 refuses
        return int(raw)
    if base == "float":
        return float(raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise TypeError  # a TOML list is no device name (['USB']), nor true a client name
    return str(raw)


def _coerced(raw_values: Mapping[str, Any], found: list[str]) -> dict[str, Any]:
    """The values that coerce; a sentence in `found` for each that does not."""
    values: dict[str, Any] = {}
    for name, raw in raw_values.items():
        try:
            values[name] = _coerce(name, raw)
        except ConfigError as exc:
            found.extend(exc.problems)
    return values


def _checked(raw_values: Mapping[str, Any], found: list[str]) -> Config:
    """The Config `raw_values` make, or a ConfigError with every problem, `found` ones first."""
    values = _coerced(raw_values, found)
    cfg, invalid = problems(Config(**values), already_bad=set(raw_values) - set(values))
    if found or invalid:
        raise ConfigError(*found, *invalid)
    return cfg


def problems(cfg: Config, already_bad: Iterable[str] = ()) -> tuple[Config, list[str]]:
    """`cfg` with values normalised (log_level in capitals), and a sentence per bad value.

    A rule across fields runs only when the fields it reads passed their own rules (nor are in
    `already_bad`): one wrong value is one sentence, not one plus its echoes.
    """
    settings = schema()
    found = {item.name: item.problem(getattr(cfg, item.name)) for item in settings}
    bad = {name for name, problem in found.items() if problem} | set(already_bad)
    normalised = {
        item.name: item.spec.normalise(getattr(cfg, item.name))
        for item in settings
        if item.spec.normalise is not None and item.name not in bad
    }
    cfg = dataclasses.replace(cfg, **normalised)
    for item in settings:
        check = item.spec.check
        if check is not None and not bad.intersection((item.name, *item.spec.reads)):
            found[item.name] = check(cfg)
    return cfg, [problem for problem in found.values() if problem]


def validate(cfg: Config) -> Config:
    """Check every value against what the hardware and the service accept; all problems at once."""
    checked, found = problems(cfg)
    if found:
        raise ConfigError(*found)
    return checked


def read_toml(path: Path) -> dict[str, Any]:
    """Read the config file; flatten [sections] so `[audio] frame_ms` and `frame_ms` both work."""
    try:
        # (Notepad's byte order mark is no "invalid statement at line 1")
        data = tomllib.loads(textfile.read(path))
    except textfile.NotText as exc:
        raise ConfigError(f"config file {path} {exc}; {textfile.SAVE_AS}") from None
    except tomllib.TOMLDecodeError as exc:
        hint = ""
        if "Cannot overwrite a value" in str(exc) and isinstance(_top_level_button(path), str):
            hint = "; `button = ...` and the [button] section are one key: move it into [button]"
        raise ConfigError(f"config file {path} is not valid TOML: {exc}{hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        for name, setting_value in value.items() if isinstance(value, dict) else [(key, value)]:
            if name in flat:  # `button_pin` at the top and in [button]: which was meant?
                raise ConfigError(f"config file {path}: {name!r} is set twice; keep one")
            flat[name] = setting_value
    return flat


def _top_level_button(path: Path) -> str | None:
    """The line setting `button` above every section, if the file has one (for a hint)."""
    with contextlib.suppress(OSError, textfile.NotText):
        for line in textfile.read(path).splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                return None
            if stripped.replace(" ", "").startswith("button="):
                return stripped
    return None


def _may_exist(path: Path) -> bool:
    """Whether to read the default config file: it exists, or it cannot be looked at (Python
    3.11 raises on a directory it may not enter; reading then says so in words)."""
    try:
        return path.exists()
    except OSError:
        return True


def _known(values: Mapping[str, Any], where: str, found: list[str]) -> Iterable[tuple[str, Any]]:
    """The known settings among `values`; a sentence in `found` for each unknown one."""
    known = _settings()
    for name, value in values.items():
        if name in known:
            yield name, value
        else:
            close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            found.append(f"{where}unknown setting {name!r}{hint}")


def _from_sources(
    path: Path, read_file: bool, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The raw values, later sources winning, and a sentence for each unknown key."""
    found: list[str] = []
    merged: dict[str, Any] = {}
    if read_file:
        merged.update(_known(read_toml(path), f"config file {path}: ", found))
    for item in schema():
        if item.env in environ:
            merged[item.name] = environ[item.env]
    given = {name: value for name, value in flags.items() if value is not None}
    merged.update(_known(given, "", found))
    return merged, found


def misspelt_environment(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(variable, the setting's variable it is close to) for each SESAME_PI_ variable that is no
    setting but nearly one: a file's unknown key is an error, and a misspelt variable was
    ignored without a word. (Build and test variables share the prefix: only near misses.)"""
    environ = os.environ if environ is None else environ
    known = {item.env for item in schema()}
    taken = known | {f"{ENV_PREFIX}CONFIG"}
    found = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in taken:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.9)
            if close:
                found.append((name, close[0]))
    return found


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < file < environment < flags into one validated Config.

    Every problem (an unknown key, a value of the wrong type, one out of range) is gathered into
    one ConfigError; an unreadable or malformed file stops at once, since nothing in it is known.
    """
    environ = os.environ if environ is None else environ
    explicit_file = config_file is not None or f"{ENV_PREFIX}CONFIG" in environ
    path = config_file or Path(environ.get(f"{ENV_PREFIX}CONFIG", str(DEFAULT_CONFIG_FILE)))
    raw, found = _from_sources(path, explicit_file or _may_exist(path), environ, flags or {})
    return _checked(raw, found)


# ---------------------------------------------------------------- saving


def save(changes: Mapping[str, Any], path: Path = DEFAULT_CONFIG_FILE) -> Config:
    """Apply `changes` to the config file, all or nothing, and return the file's Config.

    The file's settings and the changes are validated together first, so a refused value leaves the
    file as it was. The new text goes to a temporary file beside it, is synced, and is renamed over
    the old one: a power cut leaves the old file or the new, never half of one. The file keeps its
    mode (0644 when new); its comments and layout do not survive (it is rewritten by section).
    An environment variable or flag still overrides what is saved here.
    """
    path = path.resolve()
    raw = read_toml(path) if path.exists() else {}
    raw.update(changes)
    found: list[str] = []
    known = dict(_known(raw, f"config file {path}: ", found))
    cfg = _checked(known, found)
    _write_atomically(path, toml_text({name: getattr(cfg, name) for name in known}))
    return cfg


def toml_text(values: Mapping[str, Any]) -> str:
    """`values` as a TOML file with one table per section, in the schema's order.

    An optional setting set to None is written as "none" (what `_coerce` reads back as None) when
    its default is something else, and left out when None is the default.
    """
    lines = ["# sesame-pi settings (`sesame-pi settings` lists them all)"]
    for section, items in by_section(schema()):
        chosen = [item for item in items if item.name in values]
        body = [_toml_line(item, values[item.name]) for item in chosen]
        body = [line for line in body if line]
        if body:
            lines += ["", f"[{section}]", *body]
    return "\n".join(lines) + "\n"


def _toml_line(item: Setting, value: Any) -> str:
    if value is None:
        return "" if item.default is None else f"{item.name} = {_toml_value('none')}"
    return f"{item.name} = {_toml_value(value)}"


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_value(value: Any) -> str:
    """One scalar as TOML: a bool, an integer, a float, or a basic string (a path as its text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + "".join(_toml_char(char) for char in str(value)) + '"'


def _toml_char(char: str) -> str:
    if char in _TOML_ESCAPES:
        return _TOML_ESCAPES[char]
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"\\u{ord(char):04x}"
    return char


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` by rename, after the bytes reach the disk; no temp file left.

    A failure (a full disk, a read-only directory) is a ConfigError, with the old file untouched.
    """
    try:
        _replace(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror}") from None


def _replace(path: Path, text: str) -> None:
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            _keep_mode_and_owner(handle.fileno(), old)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _sync_directory(path.parent)


def _keep_mode_and_owner(fd: int, old: os.stat_result | None) -> None:
    """The old file's mode and owner (mkstemp makes 0600 files owned by us), or 0644."""
    os.fchmod(fd, stat.S_IMODE(old.st_mode) if old is not None else 0o644)
    if old is not None:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, old.st_uid, old.st_gid)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (some file systems need the directory synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
