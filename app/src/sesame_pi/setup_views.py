"""The setup page's HTML: plain pages with inline CSS, no scripts, no external assets.

Every value is escaped here. Nothing passed in is a token: the web layer hands over the status
(state, time left, counters) and per-browser form secrets (CSRF tokens), never credentials.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

CSS = """
:root { color-scheme: light; --ink: #1d232a; --muted: #5b6570; --line: #d9dee3;
        --good: #1f7a4d; --bad: #b3261e; --warn: #8a5a00; --accent: #2457a6; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f8; color: var(--ink);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { background: #fff; border-bottom: 1px solid var(--line); }
header div, main { max-width: 46rem; margin: 0 auto; padding: 0.9rem 1.2rem; }
header h1 { font-size: 1.15rem; margin: 0; }
header span { color: var(--muted); font-size: 0.9rem; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
          padding: 1rem 1.2rem; margin: 0 0 1rem; }
h2 { font-size: 1rem; margin: 0 0 0.6rem; }
dl { display: grid; grid-template-columns: 9.5rem 1fr; gap: 0.3rem 1rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; }
.good { color: var(--good); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.notice { border-left: 4px solid var(--accent); }
.notice.bad { border-left-color: var(--bad); font-weight: 400; color: var(--ink); }
.code { font: 600 2.4rem/1.2 ui-monospace, "DejaVu Sans Mono", monospace; letter-spacing: 0.3rem;
        margin: 0.4rem 0 0.8rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
th, td { text-align: left; padding: 0.3rem 0.5rem 0.3rem 0; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 500; }
textarea { width: 100%; min-height: 6.5rem; font: 0.85rem ui-monospace, monospace;
           padding: 0.5rem; border: 1px solid var(--line); border-radius: 6px; }
input[type=text] { font: 600 1.1rem ui-monospace, monospace; letter-spacing: 0.15rem;
                   padding: 0.35rem 0.5rem; width: 9rem; border: 1px solid var(--line);
                   border-radius: 6px; }
button { font: inherit; padding: 0.45rem 1rem; border-radius: 6px; border: 1px solid var(--accent);
         background: var(--accent); color: #fff; cursor: pointer; }
button.quiet { background: #fff; color: var(--accent); }
form.inline { display: inline; }
pre { background: #f4f6f8; border: 1px solid var(--line); border-radius: 6px; padding: 0.6rem;
      overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap; word-break: break-all; }
.muted { color: var(--muted); font-size: 0.9rem; }
summary { cursor: pointer; color: var(--accent); margin-bottom: 0.6rem; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole document around `body` (already escaped HTML)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · sesame-pi</title><style>{CSS}</style></head><body>"
        "<header><div><h1>sesame-pi setup</h1><span>the device's own page, on your network"
        "</span></div></header>"
        f"<main>{body}</main></body></html>"
    )


def notice(text: str | None, bad: bool = False) -> str:
    if not text:
        return ""
    kind = "notice bad" if bad else "notice"
    return f'<section class="{kind}" id=notice role=status>{_e(text)}</section>'


def unpaired(message: str | None = None, bad: bool = False) -> str:
    """What a browser that is not paired sees: nothing of the device, only how to pair."""
    body = notice(message, bad) + (
        "<section id=unpaired><h2>This browser is not paired</h2>"
        "<p>To see and change this device, pair this browser first. You will be shown a short "
        "code; then hold the device's button for 5 seconds (not during a call) until the "
        "doorbell sounds, and press it once while the code shows, within a minute.</p>"
        '<form method=post action="/pair/start"><button id=start-pairing type=submit>'
        "Pair this browser</button></form></section>"
    )
    return page("Pair this browser", body)


def pairing(
    code: str, csrf: str, seconds_left: float, message: str | None = None, hold_first: bool = True
) -> str:
    """The code, and the steps: the 5 s hold unless it came already, one press, then continue.
    Only a press after the hold pairs, also while a token is needed: any other is a person's
    (a call, or a try at one) and must not confirm whoever waits (see pairing.SetupWindow)."""
    hold = (
        "<strong>Hold the device's button for 5 seconds</strong> (not during a call) until "
        "the doorbell sounds (keep holding through what may come before it: a call that starts "
        "and ends, or two low notes), then <strong>press it once</strong>"
        if hold_first
        else "<strong>Press the device's button once</strong>"
    )
    body = notice(message, bad=bool(message)) + (
        "<section id=pairing><h2>Pair this browser</h2>"
        "<p>Your pairing code:</p>"
        f'<p class=code id=pairing-code aria-label="pairing code">{_e(code)}</p>'
        f"<p id=pairing-step>{hold} (a short press; it will not start a call), within "
        f"{max(0, round(seconds_left))} seconds, then select Continue.</p>"
        '<form method=post action="/pair/finish">'
        f'<input type=hidden name=csrf value="{_e(csrf)}">'
        "<label class=muted for=code>Code</label> "
        f'<input type=text id=code name=code value="{_e(code)}" autocomplete=off '
        "spellcheck=false maxlength=12> "
        "<button id=finish-pairing type=submit>Continue</button></form>"
        "<p class=muted>If someone else tries to pair at the same moment, neither is paired: "
        'start again. <a href="/">Start over</a></p></section>'
    )
    return page("Pair this browser", body)


def refused(title: str, message: str) -> str:
    return page(title, notice(message, bad=True) + '<p><a href="/">Back to the start</a></p>')


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0, round(now - ts))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_left_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds <= 0:
        return "expired"
    if seconds < 120:
        return f"{round(seconds)} s"
    return f"{seconds / 60:.0f} min"


def _token_rows(token: dict[str, Any]) -> str:
    left = token.get("seconds_left")
    if not token.get("present"):
        state = "<span class=bad id=token-left>no token yet</span>"
    elif left is not None and left <= 0:
        state = "<span class=bad id=token-left>expired</span>"
    else:
        cls = "good" if left is None or left > 600 else "warn"
        state = f"<span class={cls} id=token-left>{_e(time_left_text(left))} left</span>"
    refresh = (
        "<span class=good id=token-refresh>on (the device renews it by itself)</span>"
        if token.get("refresh")
        else "<span class=warn id=token-refresh>off: hand over the browser's record below</span>"
    )
    rows = f"<dt>ID token</dt><dd>{state}</dd><dt>Refresh</dt><dd>{refresh}</dd>"
    if token.get("account"):
        rows += f"<dt>Account</dt><dd id=token-account>{_e(token['account'])}</dd>"
    return rows


def _calls_table(calls: list[dict[str, Any]], now: float) -> str:
    if not calls:
        return "<p class=muted id=calls-none>No calls since the app started.</p>"
    rows = []
    for call in reversed(calls):
        counters = ", ".join(f"{_e(k)} {_e(v)}" for k, v in call.get("counters", {}).items())
        rows.append(
            f"<tr><td>{_e(_ago(call.get('ended_at'), now))}</td>"
            f"<td>{_e(call.get('duration_s', 0))} s</td><td>{_e(call.get('reason', ''))}</td>"
            f"<td class=muted>{counters or '-'}</td></tr>"
        )
    return (
        "<table id=calls><tr><th>ended</th><th>length</th><th>why</th><th>counters</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def status(
    st: dict[str, Any],
    csrf: str,
    now: float,
    message: str | None = None,
    bad: bool = False,
    snippet: str | None = None,
) -> str:
    """The paired browser's page: status, the token hand-over form, a test sound."""
    state = st["state"]
    state_cls = (
        "good"
        if state in ("idle", "live")
        else "bad"
        if state in ("needs_token", "device_error")
        else "warn"
    )
    link = st["link"]
    link_text = (
        "<span class=good id=link>up</span>"
        if link["up"]
        else "<span class=bad id=link>down</span>"
    )
    devices = st["devices"]
    problem = devices.get("problem")
    audio = (
        f"<span class=bad id=audio>{_e(problem)}</span>"
        if problem
        else "<span class=good id=audio>ok</span>"
    )
    hidden = f'<input type=hidden name=csrf value="{_e(csrf)}">'
    guide = (
        "<p class=muted>In a desktop browser, sign in at the Sesame web app, open the developer "
        "console there and run the snippet below; it copies your sign-in record to the "
        "clipboard. Paste it here.</p>"
        f"<details><summary>The console snippet</summary><pre id=snippet>{_e(snippet)}</pre>"
        "</details>"
        if snippet
        else "<p class=muted>Sign in at the Sesame web app in a desktop browser and copy its "
        'auth-user record (see "Get your token" in the README), or a bare refresh token.</p>'
    )
    setup = st["setup"]
    window = (
        f"open for {round(setup['open_s_left'] / 60)} more min"
        if setup.get("open_s_left")
        else "open while a token is needed"
        if setup["mode"] == "auto"
        else setup["mode"]
    )
    body = notice(message, bad) + (
        "<section id=status><h2>Device</h2><dl>"
        f"<dt>Name</dt><dd>{_e(st.get('host', ''))}</dd>"
        f"<dt>State</dt><dd><span class={state_cls} id=state>{_e(state)}</span></dd>"
        f"<dt>Link</dt><dd>{link_text} <span class=muted>· {_e(link['connects'])} connects, "
        f"{_e(link['reconnects'])} reconnects</span></dd>"
        f"{_token_rows(st['token'])}"
        f"<dt>Microphone</dt><dd>{_e(devices['input'])}</dd>"
        f"<dt>Speaker</dt><dd>{_e(devices['output'])}</dd>"
        f"<dt>Audio</dt><dd>{audio}</dd>"
        f"<dt>Button</dt><dd>{_e(devices['button'])} <span class=muted>· last press "
        f"{_e(_ago(devices.get('last_press'), now))}</span></dd>"
        f"<dt>This page</dt><dd>{_e(window)} <span class=muted>· "
        f"{_e(setup['paired_browsers'])} paired browser(s)</span></dd>"
        "</dl></section>"
        f"<section><h2>Last calls</h2>{_calls_table(st['calls'], now)}</section>"
        "<section id=login><h2>Hand over your sign-in</h2>"
        f"{guide}"
        '<form method=post action="/login">'
        f"{hidden}"
        "<textarea id=record name=record autocomplete=off spellcheck=false "
        'placeholder="Paste the record (JSON) or a refresh token"></textarea>'
        "<p><button id=login-submit type=submit>Hand over</button></p></form></section>"
        "<section><h2>Actions</h2>"
        '<form class=inline method=post action="/test-sound">'
        f"{hidden}<button id=test-sound type=submit class=quiet>Play a test sound</button></form>"
        ' <form class=inline method=post action="/unpair">'
        f"{hidden}<button id=unpair type=submit class=quiet>Forget this browser</button></form>"
        "</section>"
    )
    return page("Status", body)
