"""The session's states: shared by the session (which decides) and feedback (which shows them)."""

from enum import StrEnum


class State(StrEnum):
    """Where the appliance is. Values appear in log lines and the heartbeat file."""

    STARTING = "starting"  # before the first link attempt
    IDLE = "idle"  # warm link, waiting for a press
    OFFLINE = "offline"  # idle, but the link is down and being retried
    CONNECTING = "connecting"  # press seen, call being placed
    LIVE = "live"  # full-duplex call
    ENDING = "ending"  # call_disconnect sent, waiting for the response
    RECONNECTING = "reconnecting"  # link lost mid-call; resuming by itself
    NEEDS_TOKEN = "needs_token"  # auth refused or token expired; a person must act
    SIGNING_IN = "signing_in"  # no token yet; the setup's sign-in waits for the network
    DEVICE_ERROR = "device_error"  # microphone or speaker missing; retrying to open it
    CALL_LIMIT = "call_limit"  # idle, after the service ended a call at its duration limit
    STOPPING = "stopping"  # shutting down on SIGTERM/SIGINT


class Earcon(StrEnum):
    """Short generated tones the person hears."""

    CALL_START = "call_start"  # press accepted, placing the call
    LIVE = "live"  # the agent is on the line
    END = "end"  # the call ended
    ERROR = "error"  # something needs attention
    LIMIT = "limit"  # the service ended the call at its duration limit
    SETUP = "setup"  # the setup page opened (the 5 s hold)
    READY = "ready"  # ready for a press: first after start, and again once signed in
