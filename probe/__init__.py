"""notifyprobe: does the notification gateway still deliver every notification?

The package is layered: pure records and judgement (`records`, `correlation`, `verdict`) at the
bottom, I/O parts (`ledger`, `sink`, `burst`, `lab`) above them, and `run` / `cli` wiring it all.
"""

__version__ = "0.1.0"
