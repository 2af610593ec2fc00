"""App bugs the fault tests found, one sentence each: the reasons of their strict xfails.

Each names where the fault is and how it shows, so whoever fixes it can find it; when fixed, the
strict xfail turns into a failure that says "remove me".
"""

SILENT_LINK = (
    "app bug: Link._ping_loop awaits each ping's send; once TCP's send buffer is full (a peer that "
    "stopped acknowledging while the uplink streams audio) websockets' send() waits in drain() "
    "forever, so the missed-ping check never runs again; websockets' keepalive ping is stuck the "
    "same way. The call stays 'live' and silent until TCP gives up (~15 min). "
    "Reproduced in-process by test_link_backpressure.py."
)
PREBUFFER_NOT_SUMMARISED = (
    "app bug: Session._finish_call stops the audio (AudioEngine.stop_call drops the jitter "
    "buffer) before it logs call_ended, so audio.prebuffer_ms/buffered_ms never reach the summary"
)
STARTING_NOT_OFFLINE = (
    "app bug: when the first connect fails, Link never calls listener.link_down (only "
    "link_retry is logged) and Session leaves STARTING only on link_up, so an appliance that "
    "boots without a reachable service stays 'starting' (LED off, heartbeat healthy) instead of "
    "'offline' until someone presses the button"
)
TYPE_NAMES_UNBOUNDED = (
    "app bug: Link._dispatch counts every unknown or webrtc_* message type by name "
    "(LinkStats.ignored[kind] += 1, link.py) with no bound, so a server sending new type names "
    "grows memory without limit, and every link_down/call_ended line carries the whole dict"
)
OVERSIZE_MISNAMED = (
    "app bug: Link._receive looks for close code 1009 in exc.rcvd, but websockets fails "
    "the connection itself (exc.sent is 1009, exc.rcvd is None), so the reason 'oversize frame "
    "refused' is never logged; link_down says 'closed: sent 1009 (message too big) ...'"
)
DEVICE_CALL_NOT_SUMMARISED = (
    "app bug: Session._device_failed ends the call with the service (end_call('error')) "
    "but never logs call_ended, so a call lost to a device leaves no summary (reason, duration, "
    "audio counters incl. device_failures) in the event log"
)
