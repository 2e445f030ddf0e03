"""Prometheus text exposition: requests by command and outcome, and a latency histogram.

The counters live in one block of memory shared by every serving process (server.workers), one row
per process, so the /metrics of whichever process answers the scrape reports the whole bot.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Sequence

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REFUSED_COMMAND = "-"  # a request refused before it named a command (bad token, no user)
UNKNOWN_COMMAND = "unknown"  # text that is no command: never a label of the user's choosing
# Counters of the alert loop: name -> help text.
EVENTS = {
    "alert_checks_failed": "Disk checks that failed (the alert loop could not sample, evaluate or store).",
    "alert_posts_sent": "Alert posts Mattermost accepted.",
    "alert_posts_failed": "Alert post attempts that failed and will be tried again.",
    "alert_posts_set_aside": "Alert posts Mattermost refused for good, set aside until retried.",
}


class Metrics:
    """Create it before the serving processes fork, then tell each process its row with `use_row`."""

    def __init__(self, commands: Sequence[str], outcomes: Sequence[str], processes: int = 1) -> None:
        self.commands = (REFUSED_COMMAND, UNKNOWN_COMMAND, *sorted(set(commands) - {REFUSED_COMMAND,
                                                                                      UNKNOWN_COMMAND}))
        self.outcomes = tuple(outcomes)
        self._series = {(c, o): i for i, (c, o) in enumerate((c, o) for c in self.commands for o in self.outcomes)}
        # One row: a count per series, a count per event, a count per bucket, the total count, the sum
        # of seconds.
        self._events = {name: len(self._series) + i for i, name in enumerate(EVENTS)}
        self._buckets = len(self._series) + len(EVENTS)
        self._width = self._buckets + len(BUCKETS) + 2
        self._rows = processes
        self._block = mmap.mmap(-1, 8 * self._width * processes)  # anonymous and shared: forks see it
        self._ints = memoryview(self._block).cast("q")
        self._floats = memoryview(self._block).cast("d")
        self._row = 0
        self._lock = threading.Lock()

    def use_row(self, index: int) -> None:
        if not 0 <= index < self._rows:
            raise ValueError(f"row {index} of {self._rows}")
        self._row = index

    def observe(self, command: str, outcome: str, seconds: float) -> None:
        series = self._series.get((command, outcome))
        if series is None:
            series = self._series[(UNKNOWN_COMMAND, outcome)]
        base = self._row * self._width
        buckets = base + self._buckets
        with self._lock:  # each process writes only its own row
            self._ints[base + series] += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._ints[buckets + i] += 1
            self._ints[buckets + len(BUCKETS)] += 1
            self._floats[buckets + len(BUCKETS) + 1] += seconds

    def count(self, event: str) -> None:
        """One more of an EVENTS counter."""
        with self._lock:
            self._ints[self._row * self._width + self._events[event]] += 1

    def _summed(self) -> list[float]:
        totals = [0.0] * self._width
        for row in range(self._rows):
            base = row * self._width
            for i in range(self._width - 1):
                totals[i] += self._ints[base + i]
            totals[-1] += self._floats[base + self._width - 1]
        return totals

    def render(self) -> str:
        totals = self._summed()
        lines = ["# HELP recbot_commands_total Slash commands handled, by command and outcome.",
                 "# TYPE recbot_commands_total counter"]
        for (command, outcome), i in sorted(self._series.items()):
            if totals[i]:
                lines.append(f'recbot_commands_total{{command="{command}",outcome="{outcome}"}} {int(totals[i])}')
        lines += ["# HELP recbot_command_seconds Time to answer a slash command.",
                  "# TYPE recbot_command_seconds histogram"]
        buckets = self._buckets
        for i, bound in enumerate(BUCKETS):
            lines.append(f'recbot_command_seconds_bucket{{le="{bound}"}} {int(totals[buckets + i])}')
        count = int(totals[buckets + len(BUCKETS)])
        lines.append(f'recbot_command_seconds_bucket{{le="+Inf"}} {count}')
        lines.append(f"recbot_command_seconds_sum {totals[-1]:.6f}")
        lines.append(f"recbot_command_seconds_count {count}")
        for name, text in EVENTS.items():
            lines += [f"# HELP recbot_{name}_total {text}", f"# TYPE recbot_{name}_total counter",
                      f"recbot_{name}_total {int(totals[self._events[name]])}"]
        return "\n".join(lines) + "\n"
