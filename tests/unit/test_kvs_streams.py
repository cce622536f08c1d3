"""POST /api/kvs/streams' body parser: every field checked, one ValueError naming it; fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.sources.edges.kvs_streams import KvsStreamRequest, parse_stream_request

ARN = "arn:aws:kinesisvideo:eu-west-2:111111111111:stream/connect-contact-d111f871/1571360125131"
CONTACT = "d111f871-5fe7-40b1-b5f7-6b67060de0c2"


def test_the_lambdas_body_is_read_and_contact_id_defaults_to_the_call_id():
    body = {"call_id": CONTACT, "stream_arn": ARN, "start_fragment": "9134385233318153150216",
            "start_timestamp": 1571360125.131}  # fmt: skip
    assert parse_stream_request(body) == KvsStreamRequest(
        stream_arn=ARN,
        call_id=CONTACT,
        contact_id=CONTACT,
        start_fragment="9134385233318153150216",
        start_timestamp=1571360125.131,
    )
    assert (
        parse_stream_request({"call_id": "c", "stream_arn": ARN, "contact_id": ""}).contact_id
        is None
    )
    assert (
        parse_stream_request({"call_id": "c", "stream_arn": ARN, "contact_id": "x"}).contact_id
        == "x"
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"stream_arn": ARN + "\n"}, "stream_arn"),
        ({"stream_arn": "arn:aws:kinesis:eu-west-2:1:stream/x"}, "stream_arn"),
        ({"call_id": ""}, "call_id"),
        ({"call_id": "x" * 257}, "call_id"),
        ({"call_id": "a\x00b"}, "call_id"),
        ({"contact_id": 5}, "contact_id"),
        ({"start_fragment": "12a"}, "start_fragment"),
        ({"start_fragment": "1" * 129}, "start_fragment"),
        ({"start_timestamp": True}, "start_timestamp"),
        ({"start_timestamp": float("nan")}, "start_timestamp"),
        ({"start_timestamp": 1571360125131}, "start_timestamp"),  # milliseconds, not seconds
        ({"StreamARN": ARN}, "unknown key 'StreamARN'"),
    ],
)
def test_a_wrong_field_is_named(change, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_stream_request({"call_id": CONTACT, "stream_arn": ARN, **change})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(["stream_arn", "call_id", "contact_id", "start_fragment", "start_timestamp"])


@given(st.one_of(JSON, st.dictionaries(KEYS, JSON | st.just(ARN), max_size=5)))
def test_any_json_is_a_request_or_one_value_error(body):
    try:
        request = parse_stream_request(body)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert request.stream_arn == ARN and request.call_id
