"""Admission per provider under rate limits (agentfile/run/pacing.py), on a clock of its own."""

from __future__ import annotations

import threading
import time

import pytest

from agentfile.agents.base import RateLimit
from agentfile.run.pacing import FIRST_BACKOFF_S, Pacing, lane_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


RETRY = RateLimit("rate limit", retrying=True, wait_s=2.0)


def test_a_signal_halves_the_window_once_per_burst_and_successes_grow_it_back(
        clock: Clock) -> None:
    pacing = Pacing(8, clock)
    seats = [pacing.seat("claude", None, f"t{i}") for i in range(8)]
    assert pacing.windows() == {"claude": 8}
    for seat in seats[:5]:  # five CLIs refused at once: one congestion, one cut
        seat.signal(RETRY)
    assert pacing.windows() == {"claude": 4}
    clock.now += 1.5
    seats[5].signal(RETRY)
    assert pacing.windows() == {"claude": 2}
    for seat in seats:
        seat.release(succeeded=True)
    # Only the two attempts never refused count: 2 + 1/2 + 1/2.5 (the six that got through
    # only after the CLI's own retries are no sign of room).
    assert pacing.windows() == {"claude": 2}
    for seat in seats:
        seat.release(succeeded=True)
    assert pacing.windows()["claude"] in (4, 5)  # about one per window of clean successes
    for _ in range(40):
        seats[0].release(succeeded=True)
    assert pacing.windows() == {"claude": 8}  # never above -j


def test_a_lane_never_exceeds_the_agents_max_parallel_and_never_falls_below_one(
        clock: Clock) -> None:
    pacing = Pacing(8, clock)
    seat = pacing.seat("codex", "gpt-5", "a", ceiling=3)
    assert pacing.windows() == {"codex/gpt-5": 3}
    for _ in range(5):
        clock.now += 5
        seat.signal(RETRY)
    assert pacing.windows() == {"codex/gpt-5": 1}
    assert lane_key("codex", "gpt-5") == "codex/gpt-5" and lane_key("claude", None) == "claude"


def test_new_targets_are_held_while_the_lane_is_paused_full_or_has_waiters(
        clock: Clock) -> None:
    pacing = Pacing(4, clock)
    assert pacing.hold("claude", None) is None  # a lane nobody used holds nothing
    first = pacing.seat("claude", None, "a")
    first.signal(RateLimit("rate limit", wait_s=10.0))
    back = time.strftime("%H:%M:%S", time.localtime(clock.now + 10))
    assert pacing.hold("claude", None) == f"claude is rate limited: paused until {back}"
    clock.now += 11
    assert pacing.hold("claude", None) is None  # window 2, one running
    pacing.seat("claude", None, "b")
    assert pacing.hold("claude", None) == "claude is rate limited: 2 of its targets at once"
    first.release()
    waiter = pacing.seat("claude", None, "a", held=False)
    cancel = threading.Event()
    thread = threading.Thread(target=waiter.take, args=(cancel, None))
    waiter.lane.paused_until = clock.now + 60  # so that it waits
    thread.start()
    while not waiter.lane.waiting:
        thread.join(0.01)
    clock.now += 61
    assert pacing.hold("claude", None) == \
        "claude is rate limited: its targets that were waiting go first"
    cancel.set()
    thread.join(5)


def test_a_cli_sleeping_before_its_retry_steps_aside_when_the_window_is_full(
        clock: Clock) -> None:
    pacing = Pacing(4, clock)
    seats = [pacing.seat("claude", None, f"t{i}") for i in range(4)]
    assert not seats[0].step_aside()  # no signal: it is working, not sleeping
    for seat in seats:
        seat.signal(RETRY)  # window 2, four running, all sleeping 2 s
    asides = [seat.step_aside() for seat in seats]
    assert asides == [True, True, False, False]  # only as many as the window is short
    clock.now += 1.9  # within the margin of its retry: it goes on
    pacing.seat("claude", None, "e")
    assert not seats[2].step_aside()


def test_a_waiting_seat_is_taken_when_the_pause_ends_and_a_place_is_free() -> None:
    pacing = Pacing(2)
    running = pacing.seat("claude", None, "a")
    waiting = pacing.seat("claude", None, "b", held=False)
    waiting.signal(RateLimit("overloaded", wait_s=0.3))  # window 1, paused 0.3 s
    answers: list[str | None] = []
    thread = threading.Thread(target=lambda: answers.append(
        waiting.take(threading.Event(), None)))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # paused, then full: a waits for a's place
    running.release(succeeded=True)
    thread.join(5)
    assert answers == [None] and waiting.held


def test_patience_and_cancel_end_a_wait(clock: Clock) -> None:
    pacing = Pacing(2, clock)
    seat = pacing.seat("codex", None, "a", held=False)
    seat.signal(RateLimit("quota", resets_at=clock.now + 3600))
    assert seat.take(threading.Event(), 1800.0) == "patience"
    cancel = threading.Event()
    cancel.set()
    assert seat.take(cancel, None) == "interrupted"


def test_a_refusal_naming_no_time_pauses_for_agentfiles_own_growing_backoff(
        clock: Clock) -> None:
    pacing = Pacing(2, clock)
    seat = pacing.seat("gemini", None, "a")
    seat.signal(RateLimit("rate limit"))
    assert seat.paused_for() == FIRST_BACKOFF_S
    clock.now += 10
    seat.signal(RateLimit("rate limit"))
    assert seat.paused_for() == 2 * FIRST_BACKOFF_S
    notices = pacing.drain()
    assert [(n.target, n.provider, n.model, n.wait_s) for n in notices] == [
        ("a", "gemini", None, FIRST_BACKOFF_S), ("a", "gemini", None, 2 * FIRST_BACKOFF_S)]
    assert pacing.drain() == []
