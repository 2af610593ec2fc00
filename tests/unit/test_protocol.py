"""The decoder and encoders: exact wire shapes, and no crash on anything a server could send."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesame_pi import protocol as p

SESSION = "6f1c-session"


def test_call_connect_uses_character_and_declares_our_rate() -> None:
    settings_ = p.CallSettings(16000, "Miles", "Consumer-Web-App", "UA/1.0", "en-US")
    body = json.loads(p.call_connect(p.Envelope(SESSION), settings_, "rid-1"))
    assert body["type"] == "call_connect"
    assert body["session_id"] == SESSION
    assert body["call_id"] is None
    assert body["request_id"] == "rid-1"
    content = body["content"]
    assert content["settings"] == {"character": "Miles"}
    assert "preset" not in content["settings"]
    assert content["sample_rate"] == 16000 and isinstance(content["sample_rate"], int)
    assert content["audio_codec"] == "none"
    assert content["reconnect"] is False
    assert content["client_name"] == "Consumer-Web-App"


def test_call_connect_names_a_default_input_and_output_device_as_browsers_do() -> None:
    settings_ = p.CallSettings(16000, "Maya", "Consumer-Web-App", "UA/1.0", "en-US")
    body = json.loads(p.call_connect(p.Envelope(SESSION), settings_, "rid-1"))
    metadata = body["content"]["client_metadata"]
    assert metadata["language"] == "en-US" and metadata["user_agent"] == "UA/1.0"
    devices = metadata["media_devices"]
    assert sorted(device["kind"] for device in devices) == ["audioinput", "audiooutput"]
    for device in devices:
        assert set(device) == {"deviceId", "kind", "label", "groupId"}
        assert device["deviceId"] == "default"
        assert all(isinstance(value, str) and value for value in device.values())


def test_call_id_goes_back_with_the_json_type_it_came_with() -> None:
    answer = p.decode(
        json.dumps(
            {
                "type": "call_connect_response",
                "call_id": 4711,
                "content": {"sample_rate": 24000},
            }
        )
    )
    assert isinstance(answer, p.CallConnectResponse)
    ping = json.loads(p.ping(p.Envelope(SESSION, answer.call_id), "r"))
    assert ping["call_id"] == 4711 and isinstance(ping["call_id"], int)
    assert ping["content"] == "ping"
    as_string = p.decode(json.dumps({"type": "call_connect_response", "call_id": "77"}))
    assert isinstance(as_string, p.CallConnectResponse)
    assert json.loads(p.ping(p.Envelope(SESSION, as_string.call_id), "r"))["call_id"] == "77"


def test_call_connect_response_reads_call_id_from_content_and_defaults_rate() -> None:
    answer = p.decode(json.dumps({"type": "call_connect_response", "content": {"call_id": 9}}))
    assert answer == p.CallConnectResponse(9, 24000, "none", None)


def test_audio_and_location_state_carry_no_request_id() -> None:
    audio = json.loads(p.audio(p.Envelope(SESSION, 5), b"\x01\x00\x02\x00"))
    assert "request_id" not in audio
    assert base64.b64decode(audio["content"]["audio_data"]) == b"\x01\x00\x02\x00"
    location = json.loads(p.client_location_state(p.Envelope(SESSION, 5), "Europe/Berlin"))
    assert "request_id" not in location and location["call_id"] is None
    assert location["content"] == {
        "latitude": 0,
        "longitude": 0,
        "address": "",
        "timezone": "Europe/Berlin",
    }


def test_initialize_session_id_from_top_level_or_content() -> None:
    assert p.decode('{"type":"initialize","session_id":"a"}') == p.Initialize("a")
    assert p.decode('{"type":"initialize","content":{"session_id":"b"}}') == p.Initialize("b")


def test_error_and_server_disconnect_are_data() -> None:
    err = p.decode(
        json.dumps(
            {
                "type": "error",
                "request_id": "r1",
                "content": {
                    "code": 5000,
                    "message": "Preset name was not found.",
                    "close_connection": True,
                },
            }
        )
    )
    assert err == p.Error(5000, "Preset name was not found.", "", True, "r1")
    hangup = p.decode(
        '{"type":"call_disconnect","content":{"reason":"call_duration_limit_exceeded"}}'
    )
    assert hangup == p.CallDisconnect("call_duration_limit_exceeded", None)


def test_json_in_a_binary_frame_is_accepted() -> None:
    pcm = b"\x10\x00" * 4
    frame = json.dumps(
        {"type": "audio", "content": {"audio_data": base64.b64encode(pcm).decode()}}
    ).encode()
    assert p.decode(frame) == p.Audio(pcm)


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("not json", "not_json"),
        ("[1,2]", "not_object"),
        ('{"content":{}}', "missing_type"),
        ('{"type":"audio","content":{"audio_data":"%%%"}}', "bad_base64"),
        ('{"type":"audio","content":{"audio_data":"AAEC"}}', "odd_pcm"),
        ('{"type":"audio","content":{}}', "missing_field"),
        ('{"type":"initialize"}', "missing_field"),
        (b"\xff\xfe", "not_json"),
    ],
)
def test_bad_frames_raise_frame_error_with_a_countable_kind(frame: str | bytes, kind: str) -> None:
    with pytest.raises(p.FrameError) as info:
        p.decode(frame)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ('{"type":"call_connect_response","request_id":"r1","content":{}}', "without call_id"),
        (
            '{"type":"call_connect_response","request_id":"r1","call_id":1,'
            '"content":{"sample_rate":"fast"}}',
            "sample_rate 'fast'",
        ),
        ('{"type":"call_connect_response","request_id":"r1","content":[1]}', "not an object"),
    ],
)
def test_an_unusable_call_answer_is_still_an_answer(frame: str, detail: str) -> None:
    """It answers a request that is waiting: refused as a frame, it left the placement to wait
    out the handshake timeout for an answer that had come."""
    answer = p.decode(frame)
    assert isinstance(answer, p.BadAnswer) and answer.request_id == "r1"
    assert detail in answer.detail


def test_unknown_and_ignored_types_never_raise() -> None:
    assert p.decode('{"type":"brand_new_thing"}') == p.Unknown("brand_new_thing")
    assert p.decode('{"type":"webrtc_offer","content":{}}') == p.Ignored("webrtc_offer")
    assert p.decode('{"type":"chat","content":{"messages":[{"role":"agent"}]}}') == p.Chat(1)


def test_oversize_audio_is_refused_before_decoding() -> None:
    big = base64.b64encode(bytes(10_000)).decode()
    with pytest.raises(p.FrameError) as info:
        p.decode(
            json.dumps({"type": "audio", "content": {"audio_data": big}}),
            max_audio_bytes=4096,
        )
    assert info.value.kind == "oversize"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
types = st.sampled_from(
    [
        "audio",
        "initialize",
        "call_connect_response",
        "ping",
        "ping_response",
        "error",
        "chat",
        "call_disconnect",
        "call_disconnect_response",
        "webrtc_config",
        "mystery",
    ]
)
envelopes = st.fixed_dictionaries(
    {"type": types},
    optional={
        "session_id": json_values,
        "call_id": json_values,
        "request_id": json_values,
        "content": json_values
        | st.fixed_dictionaries(
            {"audio_data": st.text(max_size=40)},
            optional={"sample_rate": json_values, "call_id": json_values},
        ),
    },
)


@settings(max_examples=400, deadline=None)
@given(envelopes)
def test_decoder_survives_any_envelope(message: dict[str, object]) -> None:
    try:
        decoded = p.decode(json.dumps(message))
    except p.FrameError as exc:
        assert exc.kind
    else:
        assert decoded is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_decoder_survives_arbitrary_bytes_and_text(frame: bytes | str) -> None:
    try:
        p.decode(frame)
    except p.FrameError as exc:
        assert exc.kind in {
            "not_json",
            "not_object",
            "missing_type",
            "missing_field",
            "bad_base64",
            "odd_pcm",
            "bad_field",
            "oversize",
        }


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0))
def test_audio_round_trips(pcm: bytes) -> None:
    frame = p.audio(p.Envelope(SESSION, 1), pcm)
    body = json.loads(frame)
    body["type"] = "audio"
    assert p.decode(json.dumps(body)) == p.Audio(pcm)
