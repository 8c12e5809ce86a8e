"""Mistakes in calling the client are refused before anything is sent, with a message that
says what to do: nothing is silently dropped and no bare KeyError escapes."""

from __future__ import annotations

import pytest

from routebook.client import RouterClient, decide_request


def test_a_ready_request_with_keyword_fields_is_refused() -> None:
    """The keywords used to be dropped: `tenant` was silently '' and the tier never applied."""
    with RouterClient("127.0.0.1:9") as client, pytest.raises(TypeError) as caught:
        client.decide(decide_request("hi"), tenant="demo-free", session_id="s")
    assert "session_id, tenant" in str(caught.value)
    assert "set them on the request" in str(caught.value)


def test_an_unknown_failure_kind_names_the_valid_ones() -> None:
    with RouterClient("127.0.0.1:9") as client, pytest.raises(ValueError) as caught:
        client.record_outcome(model="small", decision_id="d", failure="rate-limited")
    assert str(caught.value) == (
        "failure kind 'rate-limited': use one of "
        "rate_limited, server_error, timeout, content_filter"
    )
