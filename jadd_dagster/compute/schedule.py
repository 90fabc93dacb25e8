"""Several scenes at once: how one worker spreads its threads over a chunk's scenes (side_by_side).

A scene cut into pieces (sample_scene with threads > 1) ends when its slowest piece ends, and its
serial steps (selection, CAN and pose slices, the record, publishing its files) run on one thread
while the others wait. Whole scenes side by side, one thread each, share nothing and keep every
core busy; the store's uploads of one scene overlap the others' decoding. When fewer scenes than
threads are left to start, each gets threads // left (pieces inside the scene), so the cores do not
idle at the end of a chunk: until the scenes already running finish, the process runs a few more
threads than cores, and the operating system shares them out.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def side_by_side(
    items: Sequence[Item], work: Callable[[Item, int], Result], threads: int
) -> Iterator[tuple[Item, Future]]:
    """work(item, item_threads) for every item, at most `threads` items at once; yields (item,
    its finished Future) in the items' order, each as soon as it and those before it are done.

    item_threads is 1 while at least `threads` items are left to start, then threads // left.
    An item's exception is in its Future; the others go on. With threads 1 the items run one after
    the other in the calling thread. Closing the iterator early cancels the items not yet started
    and waits for the running ones.
    """
    threads = max(1, int(threads))
    if threads == 1 or len(items) <= 1:
        for item in items:
            done: Future = Future()
            try:
                done.set_result(work(item, threads))
            except Exception as error:  # delivered with the item, as from the pool
                done.set_exception(error)
            yield item, done
        return
    lock = threading.Lock()
    started = [0]

    def start(item: Item) -> Result:
        with lock:
            left = len(items) - started[0]
            started[0] += 1
        return work(item, max(1, threads // min(threads, left)))

    with ThreadPoolExecutor(threads, thread_name_prefix="jadd-scenes") as pool:
        pending = deque((item, pool.submit(start, item)) for item in items)
        try:
            while pending:
                item, future = pending[0]
                future.exception()  # waits; an item's failure is the caller's to read
                pending.popleft()
                yield item, future
        finally:
            for _, future in pending:
                future.cancel()
