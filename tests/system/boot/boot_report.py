#!/usr/bin/python3
"""Test only (tests/system/test_boot.py): what this boot of the card did, as JSON lines.

Runs in the guest after the app's unit and writes to a virtio-serial port the host reads. It
waits until the app's container is healthy and idle with its link up. On the first boot it then
presses the button the app offers where there is no GPIO button (`button = "stdin"`: lines on the
app's standard input, typed through Docker's attach endpoint), waits for the call to go live,
holds the button to end it. Then it reports ("report") the units, their order, the token file, the
container's users and capabilities, whether the token appears anywhere in the journal or the
logs, and memory in use, and powers the machine off. Standard library only: the card's own
python3 runs it.
"""

import hashlib
import json
import socket
import subprocess
import time
import traceback
from datetime import datetime
from pathlib import Path

PORT = Path("/dev/virtio-ports/sesame.report")
EVENTS = Path("/var/log/sesame-pi/events.jsonl")
TOKEN = Path("/etc/sesame-pi/token")
BOOTS = Path("/var/lib/sesame-pi-boot-test/boots")
APP = "sesame-pi-sesame-pi-1"  # compose project sesame-pi, service sesame-pi
STANDIN = "boot-standin"
UNITS = (
    "sesame-pi-firstboot.service",
    "sesame-pi-image-load.service",
    "sesame-pi.service",
    "docker.service",
    "sesame-pi-boot-standin.service",
)
UNIT_FIELDS = (
    "ActiveState", "Result", "ConditionResult", "ExecMainStatus",
    "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
)  # fmt: skip
APP_STATE = ("Status", "ExitCode", "OOMKilled", "Error", "StartedAt", "FinishedAt")
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
HEALTHY_WITHIN_S = 900
LIVE_WITHIN_S = 300
ENDED_WITHIN_S = 120
# The call summary's audio figures the host prints: how the emulated CPU kept up.
CALL_AUDIO = (
    "frames_captured", "frames_shed", "frames_dropped", "input_overflows", "output_underflows",
    "echo_frames", "echo_ref_stale", "echo_ref_underflows", "underruns",
)  # fmt: skip
# In writer mode (what "auto" takes on the card's dmix): what the writer kept.
WRITER_AUDIO = ("device_kicks", "device_target_ms", "device_held_ms", "playout_target_ms")


def send(kind: str, **fields: object) -> None:
    line = json.dumps({"kind": kind, "uptime": uptime(), **fields}) + "\n"
    with PORT.open("a") as port:
        port.write(line)


def sh(*args: str, timeout: float = 120, with_stderr: bool = False) -> str:
    err = subprocess.STDOUT if with_stderr else subprocess.PIPE
    try:
        done = subprocess.run(
            args, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({args[0]}: {exc})"
    return done.stdout


def booted_at() -> float:
    """Wall-clock time of power-on: the event log's time stamps are wall-clock."""
    return time.time() - uptime()


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def events() -> list[dict]:
    """This boot's lines of the app's event log (the log itself outlives boots)."""
    since = booted_at()
    found = []
    try:
        text = EVENTS.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            if datetime.fromisoformat(entry["ts"]).timestamp() >= since:
                found.append(entry)
        except (ValueError, KeyError, TypeError):
            continue
    return found


def wait_for(check, within_s: float, step_s: float = 1.0):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step_s)
    return None


def container_state(name: str) -> dict:
    text = sh("docker", "inspect", "--format", "{{json .}}", name)
    try:
        return json.loads(text)
    except ValueError:
        return {}


def health(name: str) -> str:
    return ((container_state(name).get("State") or {}).get("Health") or {}).get("Status", "")


def type_on_button(line: str) -> None:
    """A line on the app's stdin button, through Docker's attach endpoint (`docker attach`'s own
    API call; the compose override keeps the app's stdin open). A bare line is a short press."""
    cid = container_state(APP)["Id"]
    request = (
        f"POST /containers/{cid}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: docker\r\n"
        "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect("/run/docker.sock")
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("the engine closed the attach request")
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode()
        if " 101 " not in status and " 200 " not in status:
            raise OSError(f"attach answered {status}")
        sock.sendall(line.encode() + b"\n")
        time.sleep(1)  # let the engine copy it before the connection goes


def first_event(name: str):
    return next((f for f in events() if f.get("event") == name), None)


def seconds_since_boot(ts: str) -> float:
    """An event's ISO time stamp as seconds after power-on (the kernel's clock started then)."""
    return round(datetime.fromisoformat(ts).timestamp() - booted_at(), 1)


def idle_with_link(seen: list[dict]) -> dict | None:
    """The first moment the app was idle with its link up: ready for a press."""
    idle = link = None
    for found in seen:
        if found.get("event") == "state_changed" and found.get("state") == "idle":
            idle = idle or found
        if found.get("event") == "link_up":
            link = link or found
    if idle and link and health(APP) == "healthy":
        return max(idle, link, key=lambda f: f["ts"])
    return None


def ready_or_progress():
    """idle_with_link, saying every half minute what the app is doing meanwhile."""
    said = time.monotonic()

    def check() -> dict | None:
        nonlocal said
        seen = events()
        ready = idle_with_link(seen)
        if ready is None and time.monotonic() - said > 30:
            said = time.monotonic()
            state = container_state(APP).get("State") or {}
            units = {u: sh("systemctl", "is-active", u).strip() for u in UNITS}
            app_unit = sh("journalctl", "-b", "-u", "sesame-pi", "-n", "6", "-o", "cat")
            send("waiting", container=state.get("Status"), health=health(APP), units=units,
                 events=[f.get("event") for f in seen[-4:]], app_unit=app_unit)  # fmt: skip
        return ready

    return check


def cgroup_of(name: str) -> Path | None:
    """The container's cgroup, from its first process (a walk of /sys/fs/cgroup can miss it
    while transient groups come and go). A container that is restarting has none for a moment:
    a few tries a second apart, and the restart check names the restart."""
    for _ in range(5):
        pid = (container_state(name).get("State") or {}).get("Pid")
        try:
            line = Path(f"/proc/{pid}/cgroup").read_text().splitlines()[0]  # 0::/system.slice/..
        except (OSError, IndexError):
            line = ""
        group = Path("/sys/fs/cgroup") / line.partition("::")[2].lstrip("/")
        if pid and line and (group / "cgroup.procs").exists():
            return group
        time.sleep(1)
    return None


def processes(group: Path | None) -> list[dict]:
    """Each process in a container: its user ids, capability sets and resident memory."""
    found: list[dict] = []
    if group is None:
        return found
    try:
        pids = (group / "cgroup.procs").read_text().split()
    except OSError:  # the container stopped meanwhile: the report's app state says why
        return found
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        found.append({
            "name": fields["Name"].strip(),
            "uids": [int(u) for u in fields["Uid"].split()],
            "gids": [int(g) for g in fields["Gid"].split()],
            "caps": {k: fields[k].strip() for k in CAP_SETS},
            "rss_kb": int(fields.get("VmRSS", "0 kB").split()[0]),
        })  # fmt: skip
    return found


def memory() -> dict:
    """`free -m`'s Mem row, the app container's charge and RSS, and the stand-in's charge."""
    row = next(line for line in sh("free", "-m").splitlines() if line.startswith("Mem:"))
    total, used, _free, _shared, cache, available = (int(v) for v in row.split()[1:7])
    app, standin = cgroup_of(APP), cgroup_of(STANDIN)

    def charge(group: Path | None) -> float | None:
        if group is None:
            return None
        try:
            return round(int((group / "memory.current").read_text()) / 2**20, 1)
        except OSError:  # the container stopped meanwhile
            return None

    app_procs = processes(app)
    state = container_state(APP).get("State") or {}
    return {
        "app_status": state.get("Status"), "app_started_at": state.get("StartedAt"),
        "total_mb": total, "used_mb": used, "available_mb": available, "cache_mb": cache,
        "app_container_mb": charge(app), "standin_container_mb": charge(standin),
        "app_rss_mb": round(sum(p["rss_kb"] for p in app_procs) / 1024, 1),
    }  # fmt: skip


def pcm_fields(path: Path) -> dict:
    """A /proc/asound `status` or `hw_params` file as {name: first word of its value}."""
    fields = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition(":")
        if sep and value.split():
            fields[name.strip()] = value.split()[0]
    return fields


def opened_card() -> dict:
    """The sound card's periods and buffer as the shipped asound.conf opened them during the
    call (dmix for the speaker, dsnoop for the microphone): the kernel's hw_params of each
    running direction. (Its `delay` says nothing here: dmix runs the card free, with silence
    filling, and keeps its own pointers in user space.)"""
    found: dict = {}
    for direction, pattern in (("playback", "card*/pcm*p/sub*"), ("capture", "card*/pcm*c/sub*")):
        for sub in sorted(Path("/proc/asound").glob(pattern)):
            if pcm_fields(sub / "status").get("state") != "RUNNING":
                continue
            params = pcm_fields(sub / "hw_params")
            found[direction] = {
                "pcm": str(sub.relative_to("/proc/asound")),
                "rate": int(params.get("rate", 0)),
                "period_frames": int(params.get("period_size", 0)),
                "buffer_frames": int(params.get("buffer_size", 0)),
            }
            break
    return found


def exit_codes(name: str) -> list:
    """The exit code of each time the container stopped during this boot (Docker's `die`
    events; after a restart its state says 0 again)."""
    lines = sh(
        "docker", "events", "--since", str(int(booted_at())), "--until", str(int(time.time())),
        "--filter", f"container={name}", "--filter", "event=die", "--format", "{{json .}}",
    ).splitlines()  # fmt: skip
    found = []
    for line in lines:
        try:
            found.append(json.loads(line)["Actor"]["Attributes"].get("exitCode"))
        except (ValueError, KeyError, TypeError):
            found.append(line)
    return found


def units() -> dict:
    found = {}
    for unit in UNITS:
        text = sh("systemctl", "show", unit, *(f"--property={f}" for f in UNIT_FIELDS))
        found[unit] = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return found


def token_report() -> dict:
    try:
        raw = TOKEN.read_bytes()
        token = raw.decode().strip()
        info = TOKEN.stat()
    except OSError as exc:
        return {"error": str(exc)}
    owner = sh("stat", "-c", "%U:%G", str(TOKEN)).strip()
    secrets = [token] + [part for part in token.split(".")[1:2] if len(part) > 16]

    def hits(text: str) -> int:
        return sum(text.count(secret) for secret in secrets)

    journal = sh("journalctl", "--no-pager", "-o", "json", timeout=300)
    return {
        "sha256": hashlib.sha256(token.encode()).hexdigest(), "has_cr": b"\r" in raw,
        "mode": oct(info.st_mode & 0o777), "uid": info.st_uid, "gid": info.st_gid, "owner": owner,
        "journal_lines": len(journal.splitlines()),
        "in_journal": hits(journal),
        "in_container_logs": hits(sh("docker", "logs", APP, timeout=120)),
        "in_event_log": hits(EVENTS.read_text(errors="replace") if EVENTS.exists() else ""),
        "in_unit_files": hits(sh("systemctl", "cat", *UNITS)),
    }  # fmt: skip


def main() -> None:
    wait_for(PORT.exists, 120)  # udev makes the port's name link early in boot
    BOOTS.parent.mkdir(parents=True, exist_ok=True)
    boot = int(BOOTS.read_text()) + 1 if BOOTS.exists() else 1
    BOOTS.write_text(f"{boot}\n")
    send("started", boot=boot)
    ready = wait_for(ready_or_progress(), HEALTHY_WITHIN_S, 2.0)
    report: dict = {"boot": boot, "healthy": health(APP), "app": {}, "memory": {}}
    if ready is None:
        report["error"] = (
            f"the app was not healthy and idle with its link up in {HEALTHY_WITHIN_S} s"
        )
    else:
        report["idle_at_s"] = seconds_since_boot(ready["ts"])
        report["memory"]["idle"] = memory()
        if boot == 1:
            send("pressing")
            type_on_button("")
            call = wait_for(lambda: first_event("call_live"), LIVE_WITHIN_S, 0.5)
            if call is None:
                report["error"] = f"no call went live within {LIVE_WITHIN_S} s of the press"
            else:
                report["call_live_at_s"] = seconds_since_boot(call["ts"])
                time.sleep(10)  # into the call: audio both ways
                report["opened_card"] = opened_card()
                report["memory"]["call"] = memory()
                report["in_call"] = [f.get("event") for f in events() if f["ts"] > call["ts"]]
                held_at = time.time()
                type_on_button("hold")
                ended = wait_for(lambda: first_event("call_ended"), ENDED_WITHIN_S, 0.5)
                report["call_ended"] = ended is not None
                if ended is not None:
                    ended_at = datetime.fromisoformat(ended["ts"]).timestamp()
                    report["hold_to_ended_s"] = round(ended_at - held_at, 1)
                    audio = ended.get("audio") or {}
                    report["call_audio"] = {k: audio.get(k, 0) for k in CALL_AUDIO}
                    report["call_audio"].update({k: audio[k] for k in WRITER_AUDIO if k in audio})
                opened = first_event("audio_opened") or {}
                report["echo_engine"] = opened.get("echo_engine")
                report["output_mode"] = {
                    "opened": opened.get("output_mode"),
                    "period_ms": opened.get("output_period_ms"),
                    "chosen": first_event("output_mode_chosen"),
                }
                report["portaudio_latency_ms"] = {
                    k: opened.get(f"{k}_latency_ms") for k in ("input", "output")
                }
                report["after_hold"] = [f.get("event") for f in events() if f["ts"] > call["ts"]]
    seen = events()
    report["events"] = sorted({str(f.get("event")) for f in seen})
    report["errors"] = [f for f in seen if f.get("level") in ("ERROR", "CRITICAL")][:20]
    state = container_state(APP)
    report["app"] = {
        "user": (state.get("Config") or {}).get("User"),
        "privileged": (state.get("HostConfig") or {}).get("Privileged"),
        "cap_drop": (state.get("HostConfig") or {}).get("CapDrop"),
        "mounts_rw": {m.get("Destination"): m.get("RW") for m in state.get("Mounts") or []},
        "restarts": state.get("RestartCount"),
        "state": {k: (state.get("State") or {}).get(k) for k in APP_STATE},
        "log_tail": sh("docker", "logs", "--tail", "30", APP, with_stderr=True).splitlines(),
        "exits": exit_codes(APP),
        "processes": processes(cgroup_of(APP)),
    }
    report["units"] = units()
    failed = sh("systemctl", "list-units", "--failed", "--plain", "--no-legend").splitlines()
    report["failed_units"] = [line.split()[0] for line in failed if line.strip()]
    report["system_state"] = sh("systemctl", "is-system-running").strip()
    report["firstboot_log"] = sh(
        "journalctl", "-b", "-u", "sesame-pi-firstboot", "-o", "cat"
    ).splitlines()
    report["card_log"] = sh("journalctl", "-b", "-u", "sesame-pi-mixer", "-o", "cat").splitlines()
    report["image_load_log"] = sh(
        "journalctl", "-b", "-u", "sesame-pi-image-load", "-o", "cat"
    ).splitlines()
    report["images"] = sh(
        "docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
    ).splitlines()
    report["token"] = token_report()
    kernel_log = sh("journalctl", "-k", "-b", "-o", "cat")
    report["oom_kills"] = kernel_log.count("Out of memory") + kernel_log.count("oom-kill:")
    report["fatal_signals"] = [
        line for line in kernel_log.splitlines()
        if any(word in line for word in ("fatal signal", "segfault", "undefined instruction"))
    ][:10]  # fmt: skip
    report["blame"] = sh("systemd-analyze", "blame").splitlines()[:12]
    report["disk"] = sh("df", "-m", "/").splitlines()[-1:]
    send("report", **report)
    sh("systemctl", "poweroff", "--no-block")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # the host must hear of it rather than time out
        send("crashed", error=repr(exc), where=traceback.format_exc()[-2000:])
        sh("systemctl", "poweroff", "--no-block")
        raise
