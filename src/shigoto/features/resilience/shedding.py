"""Load shedding on one node, as a plain object fed with the time: CoDel on how long jobs
waited in their queue, and a cap on the jobs running at once, by priority.

    shedder = Shedder(LoadShedding())
    if shedder.sheds(priority=job.priority, waited=queue_wait, running=n, now=monotonic()):
        ...   # snooze it: the node is overloaded and the job can wait

CoDel (controlled delay, RFC 8289) looks at each job's sojourn: the seconds from when it
was due to its start. While that stays below `target`, nothing is shed. Once it has stayed
above `target` for a whole `interval`, CoDel enters its dropping state and sheds one job,
then the next after `interval / sqrt(count)` — more and more often while the wait stays
high — and leaves the state as soon as a job's wait falls below `target`.

Priority decides who is shed: 10 and above never; 5-9 (level 1), 0-4 (level 2) and below
0 (level 3) are shed while CoDel drops, or once the running jobs reach their level's share
of `max_in_flight` (90%, 80%, 70% by default), and every level but 0 at `max_in_flight`.
"""

from __future__ import annotations

import math

from shigoto.features.resilience.options import LoadShedding


def level(priority: int) -> int:
    """0 (never shed) for priority 10 and above, 1 for 5-9, 2 for 0-4, 3 below 0."""
    if priority >= 10:
        return 0
    if priority >= 5:
        return 1
    return 2 if priority >= 0 else 3


class CoDel:
    """RFC 8289's control law, on sojourn times given with the moment they were seen."""

    def __init__(self, target: float, interval: float) -> None:
        self.target = target
        self.interval = interval
        self.dropping = False
        self.count = 0  # drops in the current dropping state
        self._first_above: float | None = None  # when the wait has been high long enough
        self._drop_next = 0.0

    def should_drop(self, sojourn: float, now: float) -> bool:
        """Whether the job seen at `now`, after waiting `sojourn` seconds, is to be dropped."""
        ok_to_drop = False
        if sojourn < self.target:
            self._first_above = None
        elif self._first_above is None:
            self._first_above = now + self.interval
        elif now >= self._first_above:
            ok_to_drop = True
        if self.dropping:
            if not ok_to_drop:
                self.dropping = False
                return False
            if now >= self._drop_next:
                self.count += 1
                self._drop_next = self._control_law(self._drop_next)
                return True
            return False
        if ok_to_drop:
            self.dropping = True
            # Back soon after leaving: carry on near the drop rate it had reached.
            recent = now - self._drop_next < 8 * self.interval
            self.count = self.count - 2 if self.count > 2 and recent else 1
            self._drop_next = self._control_law(now)
            return True
        return False

    def _control_law(self, moment: float) -> float:
        return moment + self.interval / math.sqrt(self.count)


class Shedder:
    def __init__(self, options: LoadShedding) -> None:
        self.options = options
        self._codel = CoDel(options.target, options.interval)

    def sheds(self, *, priority: int, waited: float, running: int, now: float) -> bool:
        """Whether to shed a job of `priority`, due `waited` seconds ago, about to start
        at `now` with `running` jobs already running on this node."""
        dropping = self._codel.should_drop(waited, now)
        rank = level(priority)
        if rank == 0:
            return False
        cap = self.options.max_in_flight
        if running >= cap or running >= self.options.thresholds[rank - 1] * cap:
            return True
        return dropping
