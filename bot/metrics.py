"""Prometheus text exposition: requests by command and outcome, and a latency histogram."""

from __future__ import annotations

import threading
from collections import Counter

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bucket_counts = [0] * len(BUCKETS)
        self.count = 0
        self.total = 0.0

    def observe(self, command: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.requests[(command, outcome)] += 1
            self.count += 1
            self.total += seconds
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP recbot_commands_total Slash commands handled, by command and outcome.",
                     "# TYPE recbot_commands_total counter"]
            for (command, outcome), n in sorted(self.requests.items()):
                lines.append(f'recbot_commands_total{{command="{command}",outcome="{outcome}"}} {n}')
            lines += ["# HELP recbot_command_seconds Time to answer a slash command.",
                      "# TYPE recbot_command_seconds histogram"]
            for bound, n in zip(BUCKETS, self.bucket_counts, strict=True):
                lines.append(f'recbot_command_seconds_bucket{{le="{bound}"}} {n}')
            lines.append(f'recbot_command_seconds_bucket{{le="+Inf"}} {self.count}')
            lines.append(f"recbot_command_seconds_sum {self.total:.6f}")
            lines.append(f"recbot_command_seconds_count {self.count}")
        return "\n".join(lines) + "\n"
