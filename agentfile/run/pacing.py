"""How many of a provider's attempts run at once when the provider pushes back, like TCP.

Each provider (and model: a fallback model has limits of its own) has a lane with a window:
the attempts that may run at once. A rate-limit signal halves it (once per burst of signals,
as TCP halves once per round trip), each attempt that succeeds without being refused on its way
grows it by 1/window (one per window of clean successes, as TCP grows on acknowledgements
without loss: an attempt that got through only after the CLI's own retries is no sign of
room), and it never exceeds -j or the agent's `max_parallel`. When the provider named a time
(a retry-after, a quota's reset) the lane is paused until then; when it named none, agentfile
waits on its own, twice as long each time. While the window is smaller than what
runs, an attempt whose CLI sits out a retry-after steps aside (its session is resumed later).

The scheduler asks `hold` before starting an agent target and takes its first seat; the
target's worker thread gives the seat back after each attempt and, for the next one, waits for
it in `Seat.take` (agent targets always have a thread of their own). The scheduler drains the
notices into `rate_limited` events.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agentfile.agents.base import RateLimit

CUT_SPACING_S = 1.0  # signals this close to a cut are the same congestion: one cut for them
FIRST_BACKOFF_S = 2.0  # agentfile's own wait when the provider gave up without naming one
LAST_BACKOFF_S = 300.0
STEP_ASIDE_MARGIN_S = 0.5  # a CLI this close to its retry goes on rather than stepping aside
POLL_S = 0.5  # a waiting seat looks at its cancel event this often


@dataclass(frozen=True)
class Notice:
    """A rate-limit signal, for the scheduler to report (a `rate_limited` event)."""

    provider: str
    model: str | None
    target: str
    limit: RateLimit
    wait_s: float  # how long the lane is paused from now (0: not paused)
    window: int  # the lane's window after the signal


@dataclass
class Lane:
    provider: str
    model: str | None
    ceiling: int
    window: float
    active: int = 0
    waiting: int = 0
    paused_until: float = 0.0
    last_cut: float = -math.inf
    backoff_s: float = FIRST_BACKOFF_S

    @property
    def room(self) -> int:
        return max(int(self.window), 1)

    @property
    def key(self) -> str:
        return lane_key(self.provider, self.model)


def lane_key(provider: str, model: str | None) -> str:
    """How a lane is named: `claude/claude-sonnet-4-5`, or the provider alone."""
    return f"{provider}/{model}" if model else provider


class Pacing:
    """Every lane of a build, behind one lock; used from the scheduler and worker threads."""

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.time) -> None:
        self.ceiling = max(ceiling, 1)
        self.clock = clock
        self.changed = threading.Condition()
        self.lanes: dict[str, Lane] = {}
        self.notices: list[Notice] = []

    def _lane(self, provider: str, model: str | None, ceiling: int | None) -> Lane:
        key = lane_key(provider, model)
        lane = self.lanes.get(key)
        if lane is None:
            top = min(ceiling or self.ceiling, self.ceiling)
            lane = self.lanes[key] = Lane(provider, model, top, float(top))
        return lane

    def hold(self, provider: str, model: str | None) -> str | None:
        """Why a new target of this lane may not start now, or None."""
        with self.changed:
            lane = self.lanes.get(lane_key(provider, model))
            if lane is None:
                return None
            key = lane.key
            # Said the same way while it holds (a `waiting` event each time it changes).
            if lane.paused_until > self.clock():
                back = time.strftime("%H:%M:%S", time.localtime(lane.paused_until))
                return f"{key} is rate limited: paused until {back}"
            if lane.waiting:
                return f"{key} is rate limited: its targets that were waiting go first"
            if lane.active >= lane.room:
                return f"{key} is rate limited: {lane.room} of its targets at once"
            return None

    def seat(self, provider: str, model: str | None, target: str, *,
             ceiling: int | None = None, held: bool = True) -> Seat:
        """A target's place in a lane: taken now (the scheduler just admitted it), or not."""
        with self.changed:
            lane = self._lane(provider, model, ceiling)
            if held:
                lane.active += 1
            return Seat(self, lane, target, held)

    def held(self, provider: str, model: str | None, target: str, limit: RateLimit) -> None:
        """A refusal agentfile's relay held on to (agents/relay.py): reported, but no cut:
        the relay paces that provider's requests itself, and the CLI never saw it."""
        with self.changed:
            lane = self.lanes.get(lane_key(provider, model))
            window = lane.room if lane is not None else self.ceiling
            self.notices.append(Notice(provider, model, target, limit, limit.wait_s or 0.0,
                                       window))

    def drain(self) -> list[Notice]:
        with self.changed:
            notices, self.notices = self.notices, []
        return notices

    def windows(self) -> dict[str, int]:
        with self.changed:
            return {key: lane.room for key, lane in self.lanes.items()}


class Seat:
    """One target's place in its lane, across its attempts."""

    def __init__(self, pacing: Pacing, lane: Lane, target: str, held: bool) -> None:
        self.pacing = pacing
        self.lane = lane
        self.target = target
        self.held = held
        self.retry_until = 0.0  # the CLI sleeps until then before retrying on its own
        self.refused = False  # this attempt was refused at least once

    def signal(self, limit: RateLimit) -> None:
        """The CLI said the provider refused: cut the window, pause the lane, report it."""
        pacing, lane = self.pacing, self.lane
        with pacing.changed:
            self.refused = True
            now = pacing.clock()
            until = limit.until(now)
            if until is None and not limit.retrying:
                until = now + lane.backoff_s  # it gave up and named no time: wait on our own
                lane.backoff_s = min(lane.backoff_s * 2, LAST_BACKOFF_S)
            if until is not None:
                lane.paused_until = max(lane.paused_until, until)
                if limit.retrying:
                    self.retry_until = until
            if now - lane.last_cut >= CUT_SPACING_S:
                lane.window = max(lane.window / 2, 1.0)
                lane.last_cut = now
            pacing.notices.append(Notice(lane.provider, lane.model, self.target, limit,
                                         max(lane.paused_until - now, 0.0), lane.room))

    def step_aside(self) -> bool:
        """Asked while the attempt runs: True when the window is smaller than what runs and
        this CLI is only sleeping before a retry, so it should stop and wait its turn (its
        seat is given back at once, so that one target, not all, steps aside)."""
        pacing, lane = self.pacing, self.lane
        with pacing.changed:
            if not self.held or pacing.clock() >= self.retry_until - STEP_ASIDE_MARGIN_S:
                return False
            if lane.active <= lane.room:
                return False
            lane.active -= 1
            self.held = False
            pacing.changed.notify_all()
            return True

    def release(self, *, succeeded: bool = False) -> None:
        """An attempt ended: its place is free; a success never refused grows the window."""
        pacing, lane = self.pacing, self.lane
        with pacing.changed:
            if self.held:
                lane.active -= 1
                self.held = False
            self.retry_until = 0.0
            refused, self.refused = self.refused, False
            if succeeded and not refused:
                lane.window = min(lane.window + 1 / lane.window, float(lane.ceiling))
                lane.backoff_s = FIRST_BACKOFF_S
            pacing.changed.notify_all()

    def paused_for(self) -> float:
        with self.pacing.changed:
            return max(self.lane.paused_until - self.pacing.clock(), 0.0)

    def resumes_at(self) -> float:
        """Epoch seconds when the lane's pause ends (the past when it is not paused)."""
        with self.pacing.changed:
            return self.lane.paused_until

    def take(self, cancel: threading.Event, patience_s: float | None) -> str | None:
        """Wait for a place (blocking: a worker thread's); None once taken, else why not:
        "interrupted", or "patience" when the lane stays paused past it."""
        pacing, lane = self.pacing, self.lane
        with pacing.changed:
            if self.held:
                return None
            start = pacing.clock()
            lane.waiting += 1
            try:
                while True:
                    if cancel.is_set():
                        return "interrupted"
                    now = pacing.clock()
                    if patience_s is not None and lane.paused_until > start + patience_s:
                        return "patience"
                    if lane.paused_until <= now and lane.active < lane.room:
                        lane.active += 1
                        self.held = True
                        return None
                    pause = lane.paused_until - now
                    pacing.changed.wait(min(pause, POLL_S) if pause > 0 else POLL_S)
            finally:
                lane.waiting -= 1
