"""An asyncio event loop on its own thread, for a synchronous gRPC server.

The generator's engine is asynchronous (vLLM's ``AsyncLLM``); the shared gRPC host runs
handlers on a thread pool. Handlers hand coroutines to this loop and wait for the result, or
iterate an async generator through a queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class LoopThread:
    def __init__(self, name: str = "engine-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stream(self, agen: AsyncIterator[T]) -> tuple[Iterator[T], Callable[[], None]]:
        """Iterate ``agen`` from this thread; the returned ``cancel`` stops it (and so runs its
        cleanup) from any thread. An exception inside ``agen`` is raised by the iterator."""
        items: queue.Queue[Any] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in agen:
                    items.put(item)
            except asyncio.CancelledError:
                pass
            except BaseException as e:  # delivered to the consumer
                items.put(_Raise(e))
            finally:
                items.put(_END)

        task = asyncio.run_coroutine_threadsafe(pump(), self.loop)

        def iterate() -> Iterator[T]:
            try:
                while True:
                    item = items.get()
                    if item is _END:
                        return
                    if isinstance(item, _Raise):
                        raise item.error
                    yield item
            finally:
                task.cancel()  # the consumer stopped early

        def cancel() -> None:
            task.cancel()

        return iterate(), cancel

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class _Raise:
    def __init__(self, error: BaseException) -> None:
        self.error = error
