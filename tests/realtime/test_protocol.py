"""The protocol module, its documentation and the shared fixtures agree."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime import protocol
from realtime.state import fold

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
DOC = (ROOT / "docs" / "protocol.md").read_text()


def doc_section_names(heading: str) -> set[str]:
    part = DOC.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^### `([^`]+)`", part, flags=re.M))


def test_doc_lists_exactly_the_events_of_the_code():
    assert doc_section_names("Events (server → browser)") == set(protocol.EVENTS)


def test_doc_lists_exactly_the_commands_of_the_code():
    assert doc_section_names("Commands (browser → server)") == set(protocol.COMMANDS)


def test_doc_lists_every_close_code_and_error_code():
    for code in protocol.CLOSE_CODES:
        assert f"| {code} |" in DOC
    for code in protocol.ERROR_CODES:
        assert f"`{code}`" in DOC


def test_every_seed_event_is_defined():
    assert set(protocol.SEED_EVENTS) <= set(protocol.LOGGED_EVENTS)


def test_fixture_for_every_event_and_each_validates():
    files = sorted((FIXTURES / "events").glob("*.json"))
    names = set()
    for path in files:
        frame = json.loads(path.read_text())
        assert "type" not in frame
        protocol.validate_event(frame)
        names.add(frame["event"])
    assert names == set(protocol.EVENTS)


def test_scenarios_fold_to_their_expected_state():
    scenarios = sorted((FIXTURES / "scenarios").glob("*.json"))
    assert len(scenarios) >= 3
    for path in scenarios:
        scenario = json.loads(path.read_text())
        initial = scenario["snapshot"]["state"] if scenario.get("snapshot") else None
        for frame in scenario["events"]:
            protocol.validate_event(frame)
        logged = [e for e in scenario["events"] if e["seq"] is not None]
        assert fold(logged, initial) == scenario["expected_state"], path.name


def test_envelope_has_ms_utc_timestamp():
    frame = json.loads(protocol.encode(event="execution:paused", session_id="s", seq=1))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["timestamp"])
    assert set(frame) == {"event", "data", "timestamp", "node_id", "seq", "session_id"}


def test_batch_frame_holds_the_same_envelopes():
    inner = [protocol.encode(event="execution:paused", session_id="s", seq=i) for i in (1, 2, 3)]
    batch = json.loads(protocol.encode_batch("s", inner))
    protocol.validate_event(batch)
    assert [e["seq"] for e in batch["data"]["events"]] == [1, 2, 3]
    assert batch["data"]["events"][0] == json.loads(inner[0])


def test_unknown_event_cannot_be_built():
    with pytest.raises(ValueError):
        protocol.envelope(event="type", session_id="s")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        json_values.map(json.dumps),
        st.fixed_dictionaries(
            {"cmd": st.sampled_from([*protocol.COMMANDS, "x", ""]) | st.text(max_size=20)},
            optional={"data": json_values, "id": json_values},
        ).map(json.dumps),
    )
)
def test_parse_command_only_ever_raises_protocol_errors(frame):
    try:
        command = protocol.parse_command(frame)
    except protocol.ProtocolError as exc:
        assert exc.code in protocol.ERROR_CODES
    else:
        assert command.cmd in protocol.COMMANDS
        assert isinstance(command.data, dict)
