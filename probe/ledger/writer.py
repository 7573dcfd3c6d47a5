"""`LedgerWriter`: group commit for coroutines (one fsync serves every waiting session)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from probe.correlation import TokenRef
from probe.errors import ProbeError
from probe.ledger import sql
from probe.ledger.sql import Returned
from probe.ledger.store import Ledger, Op, T, log
from probe.records import (
    FoundIn,
    ReceivedMessage,
    Run,
    RunStatus,
    Submission,
)


class LedgerWriter:
    """Group commit for coroutines: every write queued while a commit runs joins the next one.

    A caller that must not answer before its row is durable (the sink's 250) awaits the future
    its `record_*` call returns; one commit (one fsync) then serves all the sessions that were
    waiting, so durability costs little throughput. A single thread does the SQLite work so the
    event loop never blocks on I/O.
    """

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._flusher: asyncio.Task[None] | None = None
        # run id → the first write about that run's notifications that failed, with its cause:
        # the run cannot be judged from the ledger then, and must say why
        self.failures: dict[str, str] = {}

    def defer(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `op`; the returned future resolves once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    def record_delivery(
        self, ref: TokenRef, found_in: FoundIn, message: ReceivedMessage
    ) -> asyncio.Future[bool]:
        """Queue one delivery; the future says True, or False when the token is unknown."""
        return self.defer(partial(sql.insert_delivery, ref, found_in, message))

    def record_foreign(
        self, reason: str, message: ReceivedMessage, run_id: str | None = None
    ) -> asyncio.Future[None]:
        return self.defer(partial(sql.insert_foreign, reason, message, run_id))

    def record_returned(self, returned: Returned) -> asyncio.Future[list[bool]]:
        """Queue a returned notification and its bounces; the future says, bounce by bounce,
        whether it named a known notification."""
        return self.defer(partial(sql.insert_returned, returned))

    def create_run(self, run: Run, *, control: bool = True) -> asyncio.Future[None]:
        """Queue a new run with its notifications' rows: a fleet's runs that start together
        share a commit, and the loop never waits for the fsync."""
        return self.defer(partial(sql.insert_run, run, control, self.ledger.token_key))

    def finish_run(
        self, run_id: str, status: RunStatus, finished_at: float, verdict: str | None
    ) -> asyncio.Future[None]:
        """Queue a run's end (and its verdict, as JSON), like `create_run`."""
        return self.defer(partial(sql.finish_run, run_id, status, finished_at, verdict))

    def record_submission(self, run_id: str, seq: int, submission: Submission) -> None:
        """Queued, not awaited: the burst goes on. A failure is logged, never silent."""
        future = self.defer(partial(sql.update_submission, run_id, seq, submission))
        future.add_done_callback(partial(self._failed, run_id, f"the result of notification {seq}"))

    def record_not_attempted(self, run_id: str, seq: int, reason: str) -> None:
        """Queued like a submission: the probe chose not to send this one, and says why."""
        future = self.defer(partial(sql.update_not_attempted, run_id, seq, reason))
        future.add_done_callback(
            partial(self._failed, run_id, f"why notification {seq} was not sent")
        )

    async def drain(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        await self.drain()
        self._executor.shutdown(wait=True)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await loop.run_in_executor(
                    self._executor, self.ledger.apply, [op for op, _ in batch]
                )
            except Exception as exc:  # the commit failed: nobody in the group is durable
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=False):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(ProbeError(f"ledger write failed: {result}"))
                else:
                    future.set_result(result)

    def _failed(self, run_id: str, what: str, future: asyncio.Future[Any]) -> None:
        """A write the burst did not wait for failed: logged, and kept as the run's failure."""
        if future.cancelled() or future.exception() is None:
            return
        error = str(future.exception())
        log.error("ledger_write_failed", run_id=run_id, error=error)
        self.failures.setdefault(run_id, f"cannot record {what}: {error}")
