"""Unit tests of two engine internals of igata_core/pipeline.py: the ``_Handoff`` between
threads (take by runs, share, wait for ``least``, sticky ``wake``) and the self-tuning
``_LoadGate`` (its decision logic, driven deterministically through ``_tune``/``loaded``,
and its admission of load threads).

Timing assertions use generous bounds only: a take that must not wait returns in well under
half its timeout, a take that must wait takes at least a part of it.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable
from typing import Any

import pytest

from igata_core import pipeline
from igata_core.pipeline import _Handoff, _LoadGate

pytestmark = pytest.mark.timeout(30)


def _until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait (polling) until ``condition()``; fail after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


class _Taker(threading.Thread):
    """A consumer thread doing one ``take``; records what it got and how long it took."""

    def __init__(self, handoff: _Handoff, *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.handoff, self.args, self.kwargs = handoff, args, kwargs
        self.result: list[Any] | None = None
        self.elapsed = -1.0

    def run(self) -> None:
        started = time.monotonic()
        self.result = self.handoff.take(*self.args, **self.kwargs)
        self.elapsed = time.monotonic() - started


def _asleep(handoff: _Handoff, sleepers: int = 1) -> None:
    """Wait until ``sleepers`` consumers are asleep in ``take``."""
    _until(lambda: handoff._sleepers == sleepers)


# -- _Handoff ------------------------------------------------------------------------------


def test_handoff_take_returns_at_most_most_in_order():
    handoff = _Handoff()
    handoff.put(range(10))
    assert len(handoff) == 10
    assert handoff.take(3) == [0, 1, 2]
    assert len(handoff) == 7
    assert handoff.take(100) == [3, 4, 5, 6, 7, 8, 9]
    assert len(handoff) == 0


def test_handoff_take_without_timeout_does_not_wait():
    handoff = _Handoff()
    started = time.monotonic()
    assert handoff.take(5, least=3) == []
    handoff.put([1])
    assert handoff.take(5, least=3) == [1]  # fewer than least: no timeout, no wait
    assert time.monotonic() - started < 0.5


def test_handoff_take_share_takes_at_most_its_share_and_at_least_one():
    handoff = _Handoff()
    handoff.put(range(10))
    assert handoff.take(10, share=4) == [0, 1]  # 10 // 4
    assert handoff.take(10, share=4) == [2, 3]  # 8 // 4
    assert handoff.take(10, share=4) == [4]  # 6 // 4
    assert handoff.take(10, share=8) == [5]  # 5 // 8 == 0: still one
    assert handoff.take(1, share=1) == [6]  # most still bounds it
    assert handoff.take(10, share=2) == [7]  # 3 // 2
    assert handoff.take(10, share=2) == [8]  # 2 // 2
    assert handoff.take(10, share=2) == [9]  # 1 // 2 == 0: still one
    assert handoff.take(10, share=2) == []  # empty: nothing, not an error
    handoff.put(range(100))
    assert len(handoff.take(5, share=2)) == 5  # the share (50) is bounded by most


def test_handoff_consumer_is_woken_only_when_least_entries_are_there():
    handoff = _Handoff()
    taker = _Taker(handoff, 10, least=5, timeout=5.0)
    taker.start()
    _asleep(handoff)
    for entry in range(5):
        time.sleep(0.01)  # give a wrongly woken consumer the time to take what is there
        handoff.put([entry])
        if entry < 4:
            assert taker.is_alive(), f"woken with {entry + 1} of the 5 entries it waits for"
    taker.join(2.0)
    assert not taker.is_alive()
    assert taker.result == [0, 1, 2, 3, 4]  # all five in one take, not fewer
    assert len(handoff) == 0


def test_handoff_one_put_of_enough_entries_wakes_the_consumer():
    handoff = _Handoff()
    taker = _Taker(handoff, 3, least=3, timeout=5.0)
    taker.start()
    _asleep(handoff)
    handoff.put(range(7))
    taker.join(2.0)
    assert taker.result == [0, 1, 2]
    assert taker.elapsed < 2.5
    assert len(handoff) == 4


def test_handoff_take_returns_fewer_after_the_timeout():
    handoff = _Handoff()
    handoff.put(["a", "b"])
    started = time.monotonic()
    assert handoff.take(10, least=5, timeout=0.2) == ["a", "b"]
    assert time.monotonic() - started >= 0.1  # it did wait (most of) the timeout
    started = time.monotonic()
    assert handoff.take(10, least=1, timeout=0.2) == []
    assert time.monotonic() - started >= 0.1


def test_handoff_wake_wakes_a_sleeping_consumer_at_once():
    handoff = _Handoff()
    handoff.put(["a"])
    taker = _Taker(handoff, 10, least=5, timeout=0.8)
    taker.start()
    _asleep(handoff)
    handoff.wake()
    taker.join(2.0)
    assert taker.result == ["a"]  # what is there, fewer than least
    assert taker.elapsed < 0.4  # well before its timeout


def test_handoff_wake_wakes_every_sleeping_consumer():
    handoff = _Handoff()
    takers = [_Taker(handoff, 10, least=5, timeout=0.8) for _ in range(2)]
    for taker in takers:
        taker.start()
    _asleep(handoff, 2)
    handoff.wake()
    for taker in takers:
        taker.join(2.0)
        assert taker.result == []
        assert taker.elapsed < 0.4


def test_handoff_wake_is_sticky_for_the_next_take_only():
    handoff = _Handoff()
    handoff.wake()  # before the consumer looks: the wake-up must not be lost
    started = time.monotonic()
    assert handoff.take(10, least=5, timeout=0.8) == []
    assert time.monotonic() - started < 0.4
    # Seen once: the next take waits again (a permanent wake would make consumers spin).
    started = time.monotonic()
    assert handoff.take(10, least=5, timeout=0.2) == []
    assert time.monotonic() - started >= 0.1


def test_handoff_sticky_wake_returns_what_is_there():
    handoff = _Handoff()
    handoff.put([1, 2])
    handoff.wake()
    started = time.monotonic()
    assert handoff.take(10, least=5, timeout=0.8) == [1, 2]
    assert time.monotonic() - started < 0.4


def test_handoff_clear_empties():
    handoff = _Handoff()
    handoff.put(range(5))
    handoff.clear()
    assert len(handoff) == 0
    assert handoff.take(10) == []
    handoff.put(["after"])  # still usable
    assert handoff.take(10) == ["after"]


# -- _LoadGate: the decision logic -----------------------------------------------------------


def _slow_gate(most: int = 8) -> _LoadGate:
    """A gate past its first window's measure of per-load time (the halving path)."""
    gate = _LoadGate(most)
    gate._first = None
    return gate


def _first_window(gate: _LoadGate, seconds_per_load: list[float]) -> list[float]:
    """Feed the first window one load per call; returns the rates ``_tune`` was given."""
    assert len(seconds_per_load) == gate.WINDOW
    rates: list[float] = []
    tune = gate._tune

    def recording(rate: float) -> None:
        rates.append(rate)
        tune(rate)

    gate._tune = recording  # type: ignore[method-assign]
    for seconds in seconds_per_load:
        gate.loaded(1, seconds)
    return rates


def test_gate_starts_at_most():
    gate = _LoadGate(8)
    assert (gate.most, gate.limit) == (8, 8)
    assert (_LoadGate(0).most, _LoadGate(0).limit) == (1, 1)


def test_gate_fast_first_loads_go_straight_to_one():
    gate = _LoadGate(8)
    rates = _first_window(gate, [gate.FAST_LOAD / 10] * gate.WINDOW)
    assert len(rates) == 1 and rates[0] > 0
    assert gate.limit == 1
    assert gate._trial == (8, rates[0])
    assert gate._first is None  # measured in the first window only


def test_gate_lets_the_taking_thread_load_only_fast_loads_at_one_thread():
    gate = _LoadGate(8)
    assert not gate.inline()  # nothing measured yet
    _first_window(gate, [gate.FAST_LOAD / 10] * gate.WINDOW)
    assert gate.limit == 1 and gate.inline()
    gate.limit = 2  # a trial of two threads: they load, not the thread taking input
    assert not gate.inline()
    slow = _LoadGate(8, least=1)
    _first_window(slow, [slow.FAST_LOAD * 10] * slow.WINDOW)
    slow.limit = 1  # halved down to one thread, but the loads are slow: threads still load
    assert not slow.inline()


def test_gate_slow_first_loads_halve():
    gate = _LoadGate(8)
    rates = _first_window(gate, [gate.FAST_LOAD * 10] * gate.WINDOW)
    assert len(rates) == 1
    assert gate.limit == 4
    assert gate._trial == (8, rates[0])


def test_gate_first_window_uses_the_median_load_time():
    # Mostly fast loads and a few very slow ones: the mean is slow, the median is fast.
    gate = _LoadGate(8)
    fast, slow = gate.FAST_LOAD / 10, gate.FAST_LOAD * 100
    _first_window(gate, [slow] * 6 + [fast] * 58)
    assert gate.limit == 1
    # Mostly slow loads: halves.
    gate = _LoadGate(8)
    _first_window(gate, [fast] * 6 + [slow] * 58)
    assert gate.limit == 4
    # Exactly FAST_LOAD is not fast.
    gate = _LoadGate(8)
    _first_window(gate, [gate.FAST_LOAD] * gate.WINDOW)
    assert gate.limit == 4


def test_gate_first_window_time_is_per_load():
    gate = _LoadGate(8)
    # Runs of 16 loads costing 16 x (FAST_LOAD / 4): fast per load, though not per run.
    for _ in range(gate.WINDOW // 16):
        gate.loaded(16, 16 * gate.FAST_LOAD / 4)
    assert gate.limit == 1


def test_gate_fast_first_loads_end_the_first_window_early():
    gate = _LoadGate(8)
    rates = _first_window(gate, [gate.FAST_LOAD / 10] * gate.WINDOW)
    assert len(rates) == 1 and gate.limit == 1
    assert gate._count == gate.WINDOW - gate.FIRST_LOADS  # counted into the next window
    # Slow ones do not: the first window is a whole one, the trial halves.
    gate = _LoadGate(8)
    tuned: list[float] = []
    gate._tune = tuned.append  # type: ignore[method-assign]
    for _ in range(gate.WINDOW - 1):
        gate.loaded(1, gate.FAST_LOAD * 10)
    assert tuned == []
    gate.loaded(1, gate.FAST_LOAD * 10)
    assert len(tuned) == 1
    # Not with decode processes either: a load's thread time says nothing there.
    gate = _LoadGate(8, least=2, judge_loads=False)
    tuned = []
    gate._tune = tuned.append  # type: ignore[method-assign]
    for _ in range(gate.WINDOW - 1):
        gate.loaded(1, gate.FAST_LOAD / 10)
    assert tuned == []


def test_gate_loaded_tunes_once_per_window():
    gate = _LoadGate(8)
    rates: list[float] = []
    gate._tune = rates.append  # type: ignore[method-assign]
    gate.loaded(gate.WINDOW - 1, 1.0)  # slow loads: the first window is a whole one
    gate.loaded(0, 0.0)
    assert rates == []
    gate.loaded(1, 0.0)
    assert len(rates) == 1 and rates[0] > 0
    gate.loaded(gate.WINDOW + 10, 1.0)  # a long run ends a window; the count starts over
    assert len(rates) == 2
    gate.loaded(gate.WINDOW - 1, 1.0)
    assert len(rates) == 2


def test_gate_downward_trials_not_slower_are_kept_and_chained():
    gate = _slow_gate(8)
    gate._tune(100.0)
    assert gate.limit == 4 and gate._trial == (8, 100.0)
    gate._tune(95.0)  # not slower (>= 0.9x): kept, and the next halving starts at once
    assert gate.limit == 2 and gate._trial == (4, 95.0)
    gate._tune(200.0)  # faster: kept too
    assert gate.limit == 1 and gate._trial == (2, 200.0)
    gate._tune(190.0)  # kept at 1, the bound: no move, a pause, then the other way
    assert gate.limit == 1 and gate._trial is None
    assert gate._pause == gate.PAUSE and gate._down is False


def test_gate_chained_trial_is_measured_against_the_window_before_it():
    gate = _slow_gate(8)
    gate._tune(100.0)  # 8 -> 4
    gate._tune(200.0)  # kept: 4 -> 2, against 200/s
    assert gate._trial == (4, 200.0)
    gate._tune(170.0)  # faster than at 8, but slower than at 4 (< 180): back to 4
    assert gate.limit == 4 and gate._trial is None


def test_gate_slower_downward_trial_is_reverted_and_pauses():
    gate = _slow_gate(8)
    gate._tune(100.0)
    assert gate.limit == 4
    gate._tune(85.0)  # slower than 0.9x: back to 8
    assert gate.limit == 8 and gate._trial is None
    assert gate._pause == gate.PAUSE and gate._down is False
    for _ in range(gate.PAUSE):  # whatever the rate, nothing moves while paused
        gate._tune(1e9)
        assert gate.limit == 8 and gate._trial is None
    # Then the other direction: up, but 8 is the bound: no move, a pause (twice as long
    # after the failed trial), then down again.
    gate._tune(100.0)
    assert gate.limit == 8 and gate._trial is None
    assert gate._pause == 2 * gate.PAUSE and gate._down is True
    for _ in range(2 * gate.PAUSE):
        gate._tune(100.0)
    gate._tune(100.0)
    assert gate.limit == 4 and gate._trial == (8, 100.0)


def test_gate_failed_trials_back_off_and_a_kept_one_starts_over():
    gate = _slow_gate(8)
    pauses: list[int] = []
    for _ in range(7):
        gate._tune(100.0)  # 8 -> 4 (or at the bound 8 going up: a pause)
        while gate._trial is None:  # sit out the pauses at the bound
            assert gate.limit == 8
            pauses.append(gate._pause)
            for _ in range(gate._pause):
                gate._tune(100.0)
            gate._tune(100.0)
        assert gate.limit == 4
        gate._tune(50.0)  # slower: reverted
        assert gate.limit == 8
        pauses.append(gate._pause)
        for _ in range(gate._pause):
            gate._tune(100.0)
    # Each failure doubles the wait (the bound's pause follows the current one), up to
    # MAX_PAUSE.
    assert pauses[:4] == [16, 32, 32, 64]
    assert max(pauses) == gate.MAX_PAUSE and pauses[-1] == gate.MAX_PAUSE
    # A kept trial starts over: the next failure pauses PAUSE again.
    gate._tune(100.0)  # up at the bound: a pause
    for _ in range(gate._pause):
        gate._tune(100.0)
    gate._tune(100.0)
    assert gate.limit == 4
    gate._tune(100.0)  # as fast at 4: kept, and on to 2
    assert gate.limit == 2
    gate._tune(50.0)  # slower at 2: back to 4
    assert gate.limit == 4 and gate._pause == gate.PAUSE


def test_gate_tries_up_after_a_reverted_downward_trial():
    gate = _slow_gate(8)
    gate._tune(100.0)  # 8 -> 4
    gate._tune(100.0)  # kept: 4 -> 2
    gate._tune(50.0)  # slower: back to 4, pause, then up
    assert gate.limit == 4 and gate._down is False and gate._pause == gate.PAUSE
    for _ in range(gate.PAUSE):
        gate._tune(100.0)
    assert gate.limit == 4
    gate._tune(100.0)
    assert gate.limit == 8 and gate._trial == (4, 100.0)


def _gate_trying_up(before_rate: float = 100.0) -> _LoadGate:
    """A gate of most 8 in an upward trial from 2 to 4, measured against ``before_rate``."""
    gate = _slow_gate(8)
    gate.limit, gate._down = 2, False
    gate._tune(before_rate)
    assert gate.limit == 4 and gate._trial == (2, before_rate)
    return gate


def test_gate_upward_trial_kept_only_when_clearly_faster():
    gate = _gate_trying_up()
    gate._tune(105.0)  # faster, but not by 1.1x: back to 2, pause, then down
    assert gate.limit == 2 and gate._trial is None
    assert gate._pause == gate.PAUSE and gate._down is True

    gate = _gate_trying_up()
    gate._tune(100.0)  # as fast: not kept (it would be going down)
    assert gate.limit == 2

    gate = _gate_trying_up()
    gate._tune(111.0)  # clearly faster: kept, and the next doubling starts at once
    assert gate.limit == 8 and gate._trial == (4, 111.0)
    gate._tune(130.0)  # kept at 8, the bound: no move, a pause, then down
    assert gate.limit == 8 and gate._trial is None
    assert gate._pause == gate.PAUSE and gate._down is True


def test_gate_of_one_never_moves():
    gate = _LoadGate(1)
    _first_window(gate, [gate.FAST_LOAD / 10] * gate.WINDOW)  # fast: "go to 1" is no move
    assert gate.limit == 1 and gate._trial is None
    assert gate._pause == gate.PAUSE
    for rate in [100.0, 1e6, 1.0] * (2 * gate.PAUSE + 2):
        gate._tune(rate)
        assert gate.limit == 1 and gate._trial is None


def test_gate_fast_first_window_then_chains_to_the_bound():
    gate = _LoadGate(8)
    rates = _first_window(gate, [gate.FAST_LOAD / 10] * gate.WINDOW)
    assert gate.limit == 1
    gate._tune(rates[0])  # as fast at 1: kept; 1 is the bound: pause, then up
    assert gate.limit == 1 and gate._trial is None
    assert gate._pause == gate.PAUSE and gate._down is False
    # The fast path is for the first window only: later measures do not send it to 1.
    for _ in range(gate.PAUSE):
        gate._tune(100.0)
    gate._tune(100.0)
    assert gate.limit == 2 and gate._trial == (1, 100.0)


# The first window's clock starts at the first load, not when the gate is created: the
# run's set-up (decode processes, the sink, the source's first receive) would make its rate
# too low, and the first trial would be kept even when loading got much slower.
def test_gate_first_window_rate_counts_only_loading_time(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    gate = _LoadGate(8)  # created with the pipeline
    now[0] += 10.0  # start-up: the decode processes, the sink, the source's first receive

    def window(seconds_per_record: float) -> None:
        assert gate.enter(timeout=0.1)
        for _ in range(gate.WINDOW):
            now[0] += seconds_per_record
            gate.loaded(1, gate.FAST_LOAD * 10)  # slow loads: the halving path
        gate.leave()

    window(0.001)  # at 8: 1000 records/s
    assert gate.limit == 4
    window(0.002)  # at 4: half as fast; the trial must be reverted
    assert gate.limit == 8


# -- _LoadGate: admission ----------------------------------------------------------------------


def test_gate_enter_admits_at_most_limit():
    gate = _LoadGate(2)
    assert gate.enter(timeout=0.1)
    assert gate.enter(timeout=0.1)
    started = time.monotonic()
    assert gate.enter(timeout=0.2) is False  # a third one waits its timeout, then gives up
    assert time.monotonic() - started >= 0.1
    gate.leave()
    assert gate.enter(timeout=0.1)  # a place is free again
    gate.leave()
    gate.leave()
    assert gate._active == 0


def _waiting_enter(
    gate: _LoadGate, timeout: float
) -> tuple[threading.Thread, list[tuple[bool, float]]]:
    """A thread that calls ``gate.enter(timeout)``, started and already waiting; the list
    gets what enter returned and how long it took."""
    entered: list[tuple[bool, float]] = []

    def waiter() -> None:
        started = time.monotonic()
        entered.append((gate.enter(timeout=timeout), time.monotonic() - started))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    _until(lambda: gate._cond._waiters)  # type: ignore[attr-defined]
    return thread, entered


def test_gate_leave_lets_a_waiting_thread_in():
    gate = _LoadGate(1)
    assert gate.enter(timeout=0.1)
    thread, entered = _waiting_enter(gate, timeout=0.8)
    gate.leave()
    thread.join(2.0)
    assert entered and entered[0][0] is True
    assert entered[0][1] < 0.4  # at once, not after its timeout
    assert gate._active == 1


def test_gate_raised_limit_lets_waiting_threads_in():
    gate = _LoadGate(2)
    gate.limit = 1
    assert gate.enter(timeout=0.1)
    entered: list[bool] = []
    thread = threading.Thread(target=lambda: entered.append(gate.enter(timeout=0.8)))
    thread.daemon = True
    thread.start()
    _until(lambda: gate._cond._waiters)  # type: ignore[attr-defined]

    def tune_up(rate: float) -> None:
        gate.limit = 2

    gate._tune = tune_up  # type: ignore[method-assign]
    started = time.monotonic()
    gate.loaded(gate.WINDOW, 0.01)  # the end of a window: the limit went up
    thread.join(2.0)
    assert entered == [True]
    assert time.monotonic() - started < 0.4


# Threads waiting for a place are woken only when one can enter: with small files eight
# load threads wait behind a limit of one, and waking them all at every window's end (or
# at every leave while the limit is full) costs a thread switch each for nothing.
def test_gate_wakes_waiting_threads_only_when_a_place_is_free():
    gate = _LoadGate(3)
    gate.limit = 2
    assert gate.enter(timeout=0.1) and gate.enter(timeout=0.1)
    waits = [0]
    cond_wait = gate._cond.wait

    def counting_wait(timeout: float | None = None) -> bool:
        waits[0] += 1
        return cond_wait(timeout)

    gate._cond.wait = counting_wait  # type: ignore[method-assign]
    thread, entered = _waiting_enter(gate, timeout=3.0)
    assert waits[0] == 1
    gate._tune = lambda rate: None  # type: ignore[method-assign]  # the limit stays at 2
    gate.loaded(gate.WINDOW, 0.01)  # a window ends: no place freed
    gate.limit = 1  # lowered (by a trial): the first thread to leave frees no place
    gate.leave()
    time.sleep(0.2)
    assert waits[0] == 1 and not entered  # still in its first wait: never woken
    gate.leave()  # now a place is free under the limit: the waiting thread enters
    thread.join(2.0)
    assert entered and entered[0][0] is True and entered[0][1] < 1.0  # woken, not timed out


# At the end of a run the load threads waiting behind the limit must stop at once, not
# after their timeout: the run waits for them.
def test_gate_close_sends_waiting_threads_away_at_once():
    gate = _LoadGate(1)
    assert gate.enter(timeout=0.1)
    thread, results = _waiting_enter(gate, timeout=5.0)
    gate.close()
    thread.join(2.0)
    assert results and results[0][0] is False and results[0][1] < 1.0
    gate.leave()
    assert gate.enter(timeout=0.1) is False  # closed: nobody enters any more


def test_gate_over_when_more_are_active_than_the_limit():
    gate = _LoadGate(4)
    assert gate.enter(timeout=0.1) and gate.enter(timeout=0.1)
    assert gate.over() is False
    gate.limit = 2
    assert gate.over() is False  # as many as the limit: not over
    gate.limit = 1  # a downward trial
    assert gate.over() is True
    gate.leave()
    assert gate.over() is False
    gate.leave()


def test_gate_with_decode_processes_keeps_one_thread_per_process():
    # Each load thread has one run in flight in a decode process: fewer threads than
    # processes would leave processes idle; a load's thread time says nothing there.
    gate = _LoadGate(8, least=4, judge_loads=False)
    gate._first = [gate.FAST_LOAD / 100] * 10  # "fast": the thread only waited
    gate._tune(100.0)
    assert gate.limit == 4  # halved, not straight to one
    gate._tune(100.0)  # kept; the next halving stops at the floor
    assert gate.limit == 4 and gate._trial is None
