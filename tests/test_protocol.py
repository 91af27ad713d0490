"""The contract between root and workers: round trips, and malformed input refused with the field named."""
import pytest

from common.placement import Shard
from common.protocol import (Ack, LoadAssignment, ProtocolError, StageRecord, StepError, StepHeader, WorkerHealth,
                             reply_from_dict)

RECORD = StageRecord("worker-1", (0, 2), recv_ns=10, sent_ns=20, delay_ms=1.5, compute_ms=3.0, bytes_in=100)
ASSIGNMENT = LoadAssignment("worker-1", 0, Shard(0, 2), "float32", "/models/m", "worker-2:5101")


@pytest.mark.parametrize("message", [
    ASSIGNMENT,
    RECORD,
    StepHeader("r-1", 7, 3, (1.0, 2.0, 0.0)),
    StepHeader("r-1", 7, 3, (1.0, 2.0), (RECORD,)),
    Ack(),
    StepError(504, "slow", worker="worker-1", failed_next="worker-2:5101"),
    StepError(429, "full"),
    WorkerHealth("ready", None, 2, 42, ASSIGNMENT, {"cpus": 1.0}, {"cpu_percent": 3.0}),
    WorkerHealth("empty", None, 1, 1, None),
])
def test_round_trip(message):
    assert type(message).from_dict(message.to_dict()) == message


def test_a_hop_answer_is_an_ack_or_an_error():
    assert reply_from_dict(Ack().to_dict()) == Ack()
    assert reply_from_dict(StepError(502, "gone").to_dict()) == StepError(502, "gone")


def test_a_header_gains_one_record_per_worker_passed():
    header = StepHeader("r", 0, 0, (0.0, 0.0))
    assert header.passed(RECORD).stages == (RECORD,) and header.stages == ()


@pytest.mark.parametrize("cls,body,field", [
    (LoadAssignment, {**ASSIGNMENT.to_dict(), "start": -1}, "load.start"),
    (LoadAssignment, {**ASSIGNMENT.to_dict(), "end": 0}, "empty"),
    (LoadAssignment, {**ASSIGNMENT.to_dict(), "next_address": "http://x"}, "next_address"),
    (LoadAssignment, {**ASSIGNMENT.to_dict(), "next_address": "x:99999"}, "next_address"),
    (LoadAssignment, {**ASSIGNMENT.to_dict(), "index": True}, "load.index"),
    (LoadAssignment, {k: v for k, v in ASSIGNMENT.to_dict().items() if k != "dtype"}, "load.dtype"),
    (LoadAssignment, [], "must be a JSON object"),
    (StepHeader, {"request_id": "../x", "step": 0, "start_pos": 0, "delays_ms": [0]}, "request_id"),
    (StepHeader, {"request_id": "x", "step": -1, "start_pos": 0, "delays_ms": [0]}, "step.step"),
    (StepHeader, {"request_id": "x", "step": 0, "start_pos": 2**31, "delays_ms": [0]}, "start_pos"),
    (StepHeader, {"request_id": "x", "step": 0, "start_pos": 0, "delays_ms": []}, "delays_ms"),
    (StepHeader, {"request_id": "x", "step": 0, "start_pos": 0, "delays_ms": [True]}, "delays_ms"),
    (StepHeader, {"request_id": "x", "step": 0, "start_pos": 0, "delays_ms": [0], "stages": [{}]}, "stage.layers"),
    (StepHeader, {"request_id": "x", "step": 0, "start_pos": 0, "delays_ms": [0], "stages": [RECORD.to_dict()] * 1025},
     "at most 1024"),
    (StageRecord, {**RECORD.to_dict(), "layers": [0]}, "stage.layers"),
    (StageRecord, {**RECORD.to_dict(), "delay_ms": -1}, "stage.delay_ms"),
    (StepError, {"error": {"status": 200, "message": "x"}}, "400-599"),
    (StepError, {"error": "boom"}, "reply.error"),
    (Ack, {"ack": False}, "ack"),
    (WorkerHealth, {"status": "sleeping", "threads": 1, "pid": 1}, "healthz.status"),
])
def test_malformed_messages_are_refused_with_the_field_named(cls, body, field):
    with pytest.raises(ProtocolError, match=field.replace(".", r"\.")):
        cls.from_dict(body)
