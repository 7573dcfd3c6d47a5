"""What every bench section reports: a `Figure` beside its reference, and the helpers that
measure it (`timed`, `spread`). Its own module so `bench.bench` and the sections it runs
(`bench.hostile`) both import it and not each other."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    reference: str
    reference_value: float
    ratio: float  # value / reference_value
    target: float | None  # the bound on the ratio, or None when the figure is informative only
    noise: float  # relative spread of the repeats
    higher_is_better: bool = True  # throughput: ratio ≥ target; cost or time: ratio ≤ target

    @property
    def passed(self) -> bool:
        if self.target is None:
            return True
        if self.higher_is_better:
            return self.ratio >= self.target * (1 - self.noise)
        return self.ratio <= self.target * (1 + self.noise)


def spread(samples: list[float]) -> float:
    middle = statistics.median(samples)
    return (max(samples) - min(samples)) / middle / 2 if middle else 0.0


def timed(action: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lab_gateway_argv(relay_port: int, mode: str = "healthy") -> list[str]:
    """`notifyprobe lab gateway` on a port of its choosing, relaying to 127.0.0.1:`relay_port`."""
    argv = [sys.executable, "-m", "probe", "lab", "gateway", "--listen", "127.0.0.1:0"]
    return [*argv, "--relay", f"127.0.0.1:{relay_port}", "--mode", mode]
