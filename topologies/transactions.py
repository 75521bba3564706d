"""What every owner of a transactional librdkafka producer shares: its error codes and its bounded calls.

:data:`FENCED`: the codes that mean another producer now holds the transactional id (librdkafka's own and
the broker's); only these stop an owner, every other failure replaces the producer.

Blocking calls, bounded: run on a daemon thread, given up on past their own timeout.

librdkafka 2.16's ``send_offsets_to_transaction`` can block forever after a broker restart, ignoring its
timeout (confluentinc/librdkafka#5456, #5511; seen here in ``tests/e2e/test_broker_restart.py``). A caller
must neither wait for such a call without end nor keep the process from exiting (executor threads are
joined at exit), so each owner of a transactional producer runs its calls through :class:`DaemonCalls`:
one call at a time on a daemon thread, and :class:`Wedged` once a call has not returned ``CALL_GRACE_S``
after its own timeout. A wedged producer is replaced, not waited for (the route engine's
:mod:`topologies.engine.producer` from the event loop, the recommendations fold from its own thread).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException

__all__ = ["CALL_GRACE_S", "FENCED", "SEND_OFFSETS_TIMEOUT_S", "DaemonCalls", "Wedged", "fenced", "kafka_error",
           "retriable"]

FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})

CALL_GRACE_S = 10.0  # a blocking call that has not returned this long after its own timeout is wedged

# ``send_offsets_to_transaction``'s own timeout, shorter than the other calls' 30 s: a healthy call returns in
# milliseconds (one AddOffsetsToTxn, one TxnOffsetCommit), and the wedged one above ignores it, so only the
# bound matters. At 30 s every broker restart stalled an exactly-once route (and the recommendations fold)
# for 40 s before its producer was replaced; at 10 s, 20 s (tests/e2e/test_broker_restart.py).
SEND_OFFSETS_TIMEOUT_S = 10.0


def kafka_error(err: KafkaException) -> KafkaError | None:
    """The ``KafkaError`` a ``KafkaException`` carries; None for one raised with a plain message."""
    error = err.args[0] if err.args else None
    return error if isinstance(error, KafkaError) else None


def fenced(err: BaseException) -> bool:
    """Whether ``err`` says another producer holds the transactional id."""
    error = kafka_error(err) if isinstance(err, KafkaException) else None
    return error is not None and error.code() in FENCED


def retriable(err: KafkaException) -> KafkaError | None:
    """The error, when librdkafka's rule for a transactional call says "call it again": retriable, not
    fatal, not one that needs the transaction aborted. None for every other error."""
    error = kafka_error(err)
    if error is not None and error.retriable() and not error.fatal() and not error.txn_requires_abort():
        return error
    return None


class Wedged(Exception):
    """A librdkafka call did not return within its timeout plus ``CALL_GRACE_S``: replace the producer."""


class DaemonCalls:
    """Blocking calls, one at a time in order, on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            settle, fn, args = item
            try:
                result = fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                settle(None, err)
            else:
                settle(result, None)

    async def call(self, fn: Any, *args: Any, limit_s: float | None = None) -> Any:
        """``fn(*args)`` on the thread, awaited on the event loop; :class:`Wedged` after ``limit_s``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((lambda result, err: loop.call_soon_threadsafe(_settle, future, result, err), fn, args))
        if limit_s is None:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit_s)
        except asyncio.TimeoutError:
            raise Wedged(f"{_name(fn)} did not return in {limit_s:.0f}s") from None

    def call_sync(self, fn: Any, *args: Any, limit_s: float) -> Any:
        """``fn(*args)`` on the thread, waited for from another thread; :class:`Wedged` after ``limit_s``."""
        done, box = threading.Event(), []

        def settle(result: Any, err: BaseException | None) -> None:
            box.append((result, err))
            done.set()

        self._queue.put((settle, fn, args))
        if not done.wait(limit_s):
            raise Wedged(f"{_name(fn)} did not return in {limit_s:.0f}s")
        result, err = box[0]
        if err is not None:
            raise err
        return result

    def shutdown(self) -> None:
        """The thread ends after the call it is in (a wedged call: never; it is a daemon)."""
        self._queue.put(None)


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", repr(fn))


def _settle(future: asyncio.Future[Any], result: Any, err: BaseException | None) -> None:
    if not future.done():
        if err is not None:
            future.set_exception(err)
        else:
            future.set_result(result)
