"""The ledger: runs, notifications, deliveries, bounces and what each run kept, in SQLite.

Everything the probe learns is written here first, so a run that was killed can still be judged,
a separate sink process and a burst can share one ledger file, and history builds up. Opening a
ledger loads SQLite and nothing of the host inspection.

- `store`: `Ledger`, every read and write of the probe's records;
- `writer`: `LedgerWriter`, group commit for coroutines (one fsync serves every waiting session);
- `schema`: every table and every migration, and opening the file;
- `sql`: the SQL behind each operation, and rows turned back into records;
- `key`: the token key beside the ledger; `lock`: one `watch` per ledger.
"""

from probe.ledger.key import KEY_BYTES, key_path, load_key
from probe.ledger.lock import exclusive_use
from probe.ledger.schema import SCHEMA, SCHEMA_VERSION, default_path
from probe.ledger.sql import RETURNED_BYTES, Returned
from probe.ledger.store import Ledger
from probe.ledger.writer import LedgerWriter

__all__ = [
    "KEY_BYTES",
    "RETURNED_BYTES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Ledger",
    "LedgerWriter",
    "Returned",
    "default_path",
    "exclusive_use",
    "key_path",
    "load_key",
]
