"""The sqs source against a moto server: receive, ack/nack, heartbeat, stop, idle, FIFO."""

from __future__ import annotations

import threading
import time

import pytest

from igata_core import ConfigurationError, ServiceUnavailable
from igata_sqs.clients import make_client
from igata_sqs.queue import QueueMissing, QueueRefused
from igata_sqs.source import SqsCsvSource, SqsSource

IMAGE = {"collection_id": "events:1", "image_id": "images:1", "s3_uri": "s3://images/1.jpg"}


def image(i):
    return {**IMAGE, "image_id": f"images:{i}", "s3_uri": f"s3://images/{i}.jpg"}


def test_envelope_per_message_with_items_attempt_and_final(queues, make_source):
    url = queues.create(max_receive=2)
    message_id = queues.send(url, [image(1), image(2)])
    source = make_source(url, retry_delay=0)
    envelopes = source.envelopes()
    first = next(envelopes)
    assert first.ref == f"sqs:{message_id}"
    assert [item.identity for item in first.items] == ["images:1", "images:2"]
    assert [item.uri for item in first.items] == ["s3://images/1.jpg", "s3://images/2.jpg"]
    assert (first.attempt, first.final, first.error) == (1, False, None)
    source.nack([first])
    second = next(envelopes)
    assert (second.ref, second.attempt, second.final) == (first.ref, 2, True)
    source.nack([second])
    # The next receive of a message over maxReceiveCount moves it to the dead-letter queue.
    assert queues.sqs.receive_message(QueueUrl=url).get("Messages") is None
    moved = queues.drain(queues.dead_letter[url])
    assert [m["MessageId"] for m in moved] == [message_id]


def test_without_redrive_policy_no_attempt_is_final(queues, make_source):
    url = queues.create()
    queues.send(url, [image(1)])
    source = make_source(url, retry_delay=0)
    envelopes = source.envelopes()
    for attempt in (1, 2, 3):
        envelope = next(envelopes)
        assert (envelope.attempt, envelope.final) == (attempt, False)
        source.nack([envelope])


def test_ack_deletes_only_the_acked_message(queues, make_source):
    url = queues.create(visibility=1)
    queues.send(url, [image(1)])
    queues.send(url, [image(2)])
    source = make_source(url)
    envelopes = source.envelopes()
    first, second = next(envelopes), next(envelopes)
    source.ack([first])
    assert source.wait_for_deletes(5)
    assert queues.counts(url) == (0, 1)
    source.close()  # second never settled: it comes back after its visibility timeout
    assert queues.wait_for(url, visible=1, timeout=5) == (1, 0)
    (back,) = queues.drain(url)
    assert f"sqs:{back['MessageId']}" == second.ref


def test_nack_makes_message_visible_after_backoff(queues, make_source):
    url = queues.create(visibility=30)
    queues.send(url, [image(1)])
    source = make_source(url, retry_delay=1)
    envelope = next(source.envelopes())
    source.nack([envelope])
    assert queues.counts(url) == (0, 1)
    assert queues.wait_for(url, visible=1, timeout=3) == (1, 0)


def test_retry_delay_doubles_with_receive_count_and_is_capped(queues, make_source):
    source = make_source(queues.create(), retry_delay=5, max_retry_delay=60)
    assert [source.retry_delay(count) for count in (1, 2, 3, 4, 5, 50)] == [5, 10, 20, 40, 60, 60]
    assert make_source(queues.create("other"), retry_delay=0).retry_delay(7) == 0
    final = make_source(queues.create("redriven", max_receive=3), retry_delay=5)
    # The final attempt goes back at once: its next receive moves it to the dead-letter queue.
    assert [final.retry_delay(count) for count in (1, 2, 3)] == [5, 10, 0]


def test_malformed_body_is_an_envelope_error_naming_the_message(queues, make_source):
    url = queues.create()
    message_id = queues.send(url, "not json at all")
    source = make_source(url)
    envelope = next(source.envelopes())
    assert envelope.items == []
    assert envelope.error.startswith(
        f"sqs: message {message_id} (queue requests): body is not JSON"
    )
    source.nack([envelope])
    assert queues.counts(url) == (0, 1), "a malformed message is retried, never deleted"


def test_mixed_good_and_bad_requests_in_one_message(queues, make_source):
    url = queues.create()
    bad = {k: v for k, v in image(2).items() if k != "s3_uri"}
    queues.send(url, [image(1), bad, {**image(3), "s3_uri": "file:///etc/passwd"}])
    envelope = next(make_source(url).envelopes())
    assert [item.error is None for item in envelope.items] == [True, False, False]
    assert "lacks required field 's3_uri'" in envelope.items[1].error
    assert "scheme 'file'" in envelope.items[2].error


def test_csv_source_reads_file_requests(queues, make_source):
    url = queues.create()
    queues.send(url, {"collection_id": "c", "file_id": "f-1", "s3_uri": "s3://data/f.csv"})
    (item,) = next(make_source(url, cls=SqsCsvSource).envelopes()).items
    assert (item.identity, item.decoder, item.uri) == ("f-1", "csv", "s3://data/f.csv")


def test_stop_hands_back_messages_not_yet_taken(queues, make_source):
    url = queues.create(visibility=30)
    for i in range(5):
        queues.send(url, [image(i)])
    source = make_source(url)
    envelopes = source.envelopes()
    taken = next(envelopes)
    source.stop()
    # The four received but not handed to the engine are visible again at once.
    assert queues.wait_for(url, visible=4, timeout=2) == (4, 1)
    assert list(envelopes) == []
    source.ack([taken])
    assert source.wait_for_deletes(5)
    assert queues.counts(url) == (4, 0)


def test_stop_interrupts_a_long_poll(queues, make_source):
    url = queues.create(visibility=30)
    source = make_source(url, wait_time_seconds=20)
    ended = threading.Event()

    def pull():
        for _ in source.envelopes():
            pass
        ended.set()

    threading.Thread(target=pull, daemon=True).start()
    time.sleep(0.5)
    started = time.monotonic()
    source.stop()
    assert ended.wait(2), "envelopes() must end soon after stop() despite a 20 s long poll"
    assert time.monotonic() - started < 1.0
    # A message caught by the abandoned poll is handed back at once, not after 30 s.
    queues.send(url, [image(1)])
    assert queues.wait_for(url, visible=1, timeout=3) == (1, 0)


def test_max_messages_stops_and_hands_back_the_rest(queues, make_source):
    url = queues.create(visibility=30)
    for i in range(5):
        queues.send(url, [image(i)])
    source = make_source(url, max_messages=3)
    assert len(list(source.envelopes())) == 3
    assert queues.counts(url) == (2, 3)


def test_idle_timeout_on_an_empty_queue(queues, make_source):
    source = make_source(queues.create(), idle_timeout=1, wait_time_seconds=20)
    started = time.monotonic()
    assert list(source.envelopes()) == []
    assert 1.0 <= time.monotonic() - started < 3.0


def test_idle_timeout_waits_for_messages_in_flight_elsewhere(queues, make_source):
    url = queues.create(visibility=2)
    queues.send(url, [image(1)])
    # Another worker holds the message; it may fail and the message come back.
    held = queues.sqs.receive_message(QueueUrl=url, VisibilityTimeout=2)["Messages"]
    assert held
    source = make_source(url, idle_timeout=1)
    started = time.monotonic()
    got = []
    for envelope in source.envelopes():
        got.append(envelope)
        source.ack([envelope])
    assert len(got) == 1 and got[0].attempt == 2
    assert time.monotonic() - started >= 1.5
    assert queues.counts(url) == (0, 0)


def test_idle_timeout_waits_for_own_unsettled_messages(queues, make_source):
    url = queues.create(visibility=30)
    queues.send(url, [image(1)])
    source = make_source(url, idle_timeout=1)
    envelopes = source.envelopes()
    taken = next(envelopes)
    ended = threading.Event()

    def drain():
        for _ in envelopes:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    # The held message may still fail and come back: the worker is not idle yet.
    assert not ended.wait(2)
    source.ack([taken])
    assert ended.wait(3)


def test_heartbeat_keeps_a_slow_message_invisible(queues, make_source):
    url = queues.create(visibility=2)
    queues.send(url, [image(1)])
    source = make_source(url)
    envelope = next(source.envelopes())
    for _ in range(9):  # 4.5 s, over two visibility timeouts
        time.sleep(0.5)
        assert queues.sqs.receive_message(QueueUrl=url).get("Messages") is None
    source.ack([envelope])
    assert source.wait_for_deletes(5)
    assert queues.counts(url) == (0, 0)


def test_processing_budget_lets_a_hung_message_reappear(queues, make_source):
    url = queues.create(visibility=1)
    queues.send(url, [image(1)])
    source = make_source(url, max_processing_seconds=1)
    next(source.envelopes())
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        messages = queues.sqs.receive_message(QueueUrl=url, VisibilityTimeout=30).get("Messages")
        if messages:
            break
        time.sleep(0.2)
    assert messages, "a message over its processing budget must be delivered again"


def test_heartbeat_and_ack_use_the_newest_receipt_handle(queues, make_source, recorder):
    url = queues.create(visibility=1)
    first_id = queues.send(url, [image(1)])
    source = make_source(url)
    calls = recorder(source.queue.client)
    source.queue.client = calls
    envelopes = source.envelopes()
    first = next(envelopes)
    (old_handle,) = [
        m["ReceiptHandle"]
        for name, _, result in calls.events
        if name == "receive_message"
        for m in result.get("Messages", [])
    ]
    # The message comes back while this worker still holds it (e.g. a lapsed lease).
    queues.sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=old_handle, VisibilityTimeout=0
    )
    queues.send(url, [image(2)])
    second = next(envelopes)
    assert second.ref != first.ref, "the redelivered copy must not be processed twice"
    handles = [
        m["ReceiptHandle"]
        for name, _, result in calls.events
        if name == "receive_message"
        for m in result.get("Messages", [])
        if m["MessageId"] == first_id
    ]
    assert len(handles) == 2 and handles[0] == old_handle
    new_handle = handles[1]

    def extended_with_new_handle():
        return any(
            entry["ReceiptHandle"] == new_handle
            for name, kwargs, _ in list(calls.events)
            if name == "change_message_visibility_batch"
            for entry in kwargs["Entries"]
        )

    deadline = time.monotonic() + 5  # a heartbeat round comes every 0.25 s
    while not extended_with_new_handle():
        assert time.monotonic() < deadline, "the heartbeat never extended the message"
        time.sleep(0.05)
    source.ack([first])
    assert source.wait_for_deletes(5)
    redelivered_at = next(
        i
        for i, (name, _, result) in enumerate(calls.events)
        if name == "receive_message"
        and any(m["ReceiptHandle"] == new_handle for m in result.get("Messages", []))
    )
    used = [
        (name, entry["ReceiptHandle"])
        for name, kwargs, _ in calls.events[redelivered_at:]
        if name in ("change_message_visibility_batch", "delete_message_batch")
        for entry in kwargs["Entries"]
        if entry["ReceiptHandle"] in (old_handle, new_handle)
    ]
    assert ("change_message_visibility_batch", new_handle) in used, used
    assert ("delete_message_batch", new_handle) in used, used
    assert all(handle == new_handle for _, handle in used), used
    source.ack([second])


def test_fifo_acks_wait_for_earlier_messages_of_the_group(queues, make_source):
    url = queues.create("ordered", fifo=True, visibility=30)
    for i in range(3):
        queues.send(url, [image(i)], MessageGroupId="a", MessageDeduplicationId=f"a{i}")
    queues.send(url, [image(9)], MessageGroupId="b", MessageDeduplicationId="b9")
    source = make_source(url, retry_delay=0)
    envelopes = source.envelopes()
    got = [next(envelopes) for _ in range(4)]
    by_image = {e.items[0].identity: e for e in got}
    a0, a1, a2, b9 = (by_image[f"images:{i}"] for i in (0, 1, 2, 9))
    source.ack([a2, a1, b9])
    assert source.wait_for_deletes(5)
    # b9 is alone in its group: deleted; a1 and a2 wait for a0.
    assert queues.counts(url) == (0, 3)
    source.nack([a0])
    # a0 failed: a1 and a2 must not be deleted before it; the group comes back in order.
    again = [next(envelopes) for _ in range(3)]
    assert [e.items[0].identity for e in again] == ["images:0", "images:1", "images:2"]
    assert again[0].attempt == 2
    source.ack(again[1:])
    assert source.wait_for_deletes(5)
    assert queues.counts(url) == (0, 3)
    source.ack(again[:1])
    assert source.wait_for_deletes(5)
    assert queues.counts(url) == (0, 0)


def test_missing_queue_is_a_configuration_error_on_open(queues, aws):
    url = queues.create()
    source = SqsSource({"queue_url": url.replace("requests", "nope")})
    started = time.monotonic()
    with pytest.raises(QueueMissing, match=r"queue .*/nope does not exist") as caught:
        source.open()
    assert isinstance(caught.value, ConfigurationError)
    assert "check the queue URL" in str(caught.value)
    assert time.monotonic() - started < 5
    source.close()


@pytest.mark.parametrize(
    "code", ["AccessDenied", "InvalidClientTokenId", "KmsAccessDenied", "QueueDoesNotExist"]
)
def test_refused_receive_is_a_configuration_error_at_once(
    queues, make_source, faulty, client_error, code
):
    url = queues.create()
    source = make_source(url, unavailable_after=60)
    source.queue.client = faulty(
        source.queue.client, receive_message=[client_error(code, "ReceiveMessage")]
    )
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=code):
        next(source.envelopes())
    assert time.monotonic() - started < 2, "no retries for a configuration error"


def test_throttled_receive_is_retried(queues, make_source, faulty, client_error):
    url = queues.create()
    queues.send(url, [image(1)])
    source = make_source(url, unavailable_after=60)
    source.queue.client = faulty(
        source.queue.client,
        receive_message=[client_error("RequestThrottled", "ReceiveMessage", status=429)],
    )
    envelope = next(source.envelopes())
    assert envelope.items[0].identity == "images:1"


def test_queue_deleted_while_running_stops_with_a_configuration_error(queues, make_source):
    url = queues.create()
    source = make_source(url, unavailable_after=60)
    queues.sqs.delete_queue(QueueUrl=url)
    started = time.monotonic()
    with pytest.raises(QueueMissing):
        next(source.envelopes())
    assert time.monotonic() - started < 5


def test_refused_delete_stops_the_source(queues, make_source, faulty, client_error):
    """No permission to delete (sqs:DeleteMessage): every message would be processed again
    and again; the source stops the run (exit 2) instead."""
    url = queues.create(visibility=30)
    queues.send(url, [image(1)])
    source = make_source(url)
    source.queue.client = faulty(
        source.queue.client,
        delete_message_batch=[client_error("AccessDenied", "DeleteMessageBatch", status=403)],
    )
    envelopes = source.envelopes()
    source.ack([next(envelopes)])
    assert source.wait_for_deletes(5)
    with pytest.raises(QueueRefused, match=r"delete on queue .* refused.*AccessDenied"):
        next(envelopes)


def test_release_makes_messages_visible_at_once_without_a_failure(queues, make_source, recorder):
    url = queues.create(visibility=30, max_receive=5)
    for i in range(3):
        queues.send(url, [image(i)])
    source = make_source(url, retry_delay=60, receive_batch_size=3)
    calls = recorder(source.queue.client)
    source.queue.client = calls
    envelopes = source.envelopes()
    taken = [next(envelopes) for _ in range(3)]
    source.release(taken[:2])
    assert queues.counts(url) == (2, 1), "released messages are visible at once"
    (change,) = [kwargs for name, kwargs, _ in calls.events if "visibility" in name]
    handles = {
        m["MessageId"]: m["ReceiptHandle"]
        for name, _, result in calls.events
        if name == "receive_message"
        for m in result.get("Messages", [])
    }
    assert sorted(
        (e["ReceiptHandle"], e["VisibilityTimeout"]) for e in change["Entries"]
    ) == sorted((handles[envelope.handle], 0) for envelope in taken[:2])
    assert len(source.leases) == 1, "released leases are forgotten"
    assert source.notices.unpublished == 0
    source.ack([taken[2]])
    assert source.wait_for_deletes(5)
    source.close()
    back = queues.drain(url)
    assert sorted(f"sqs:{m['MessageId']}" for m in back) == sorted(e.ref for e in taken[:2])


def test_unreachable_endpoint_is_service_unavailable(queues, make_source, closed_port_url):
    url = queues.create()
    source = SqsSource({"queue_url": url, "endpoint_url": closed_port_url})
    with pytest.raises(ServiceUnavailable, match="cannot read the attributes"):
        source.open()
    source.close()
    source = make_source(url, unavailable_after=0)
    source.queue.client = make_client("sqs", endpoint_url=closed_port_url, max_attempts=1)
    with pytest.raises(ServiceUnavailable, match="cannot receive from queue requests"):
        next(source.envelopes())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"queue_url": "requests"}, "is not a queue URL"),
        ({"queue_url": "http://x/q", "wait_time_seconds": 21}, "wait_time_seconds must be 0-20"),
        ({"queue_url": "http://x/q", "max_retry_delay": 50000}, "at most 43200"),
        ({"queue_url": "http://x/q", "uri_fields": []}, "uri_fields"),
    ],
)
def test_bad_options_fail_before_any_io(options, message):
    with pytest.raises(ValueError, match=message):
        SqsSource(options)


def test_receives_no_more_messages_than_the_engine_can_start_soon(queues, aws):
    """Workers sharing a short queue split it: a worker holds about its prefetch window."""
    from igata_core import RunContext

    url = queues.create()
    queues.send(url, [image(i) for i in range(10)])  # 10 requests a message
    source = SqsSource({"queue_url": url, "wait_time_seconds": 1}, RunContext(prefetch=20))
    source.open()
    try:
        wanted: list[int] = []
        receive = source.queue.receive

        def recording_receive(want, *args, **kwargs):
            wanted.append(want)
            return receive(want, *args, **kwargs)

        source.queue.receive = recording_receive
        envelopes = source.envelopes()
        source.ack([next(envelopes)])
        for m in range(1, 7):
            queues.send(url, [image(10 * m + i) for i in range(10)])
        for _ in range(6):
            source.ack([next(envelopes)])
    finally:
        source.close()
    # Nothing seen yet: one request a message is assumed (20 -> 10 messages); once messages
    # of 10 requests were seen, 20 / 10 = 2 messages a receive.
    assert wanted[0] == 10
    assert len(wanted) >= 4 and all(want == 2 for want in wanted[1:]), wanted


def test_receive_batch_size_fixes_the_receive_size(queues):
    url = queues.create()
    with pytest.raises(ValueError, match="receive_batch_size must be 0-10"):
        SqsSource({"queue_url": url, "receive_batch_size": 11})
    source = SqsSource({"queue_url": url, "receive_batch_size": 3})
    assert source._receive_size() == 3
