"""The local executor: every target on this machine, as agentfile has always run them.

A plain command in the user's checkout runs as steps in the reactor, in the scheduler's thread;
the others (agents, worktrees, branches, dir(), tmux) in worker threads, which report back
through a queue and wake the reactor, where the scheduler waits.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

from agentfile.isolation.place import Places
from agentfile.run.reactor import Reactor, available
from agentfile.run.runner import Job, TargetResult


class LocalExecutor:
    def __init__(self, places: Places, *, jobs: int) -> None:
        self.places = places
        # Workers are reused: a thread per target would cost more than a no-op target.
        self.pool = ThreadPoolExecutor(max_workers=max(jobs, 1),
                                       thread_name_prefix="agentfile-target")
        # Runs plain commands in the scheduler's thread; also where it waits for the workers.
        self.reactor: Reactor[TargetResult] = Reactor(self.pool)
        self.inline = available()
        self.finished: queue.Queue[tuple[str, TargetResult]] = queue.Queue()

    def submit(self, job: Job) -> None:
        steps = self.places.steps(job) if self.inline else None
        if steps is not None:
            self.reactor.add(job.target.name, steps)
        else:
            self.pool.submit(self._work, job)

    def deliver(self, name: str, result: TargetResult) -> None:
        """A target finished in another thread: its result, for the next `wait`."""
        self.finished.put((name, result))
        self.reactor.wake()

    def wait(self, timeout: float) -> list[tuple[str, TargetResult]]:
        done = self.reactor.wait(timeout)
        while True:
            try:
                done.append(self.finished.get_nowait())
            except queue.Empty:
                return done

    def wake(self) -> None:
        self.reactor.wake()

    def notices(self) -> list[tuple[str, dict[str, object]]]:
        return []  # nothing happens here that the scheduler does not see itself

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.reactor.close()

    def _work(self, job: Job) -> None:
        """A worker thread: run the target in its place, report back."""
        self.deliver(job.target.name, self.places.run(job))
