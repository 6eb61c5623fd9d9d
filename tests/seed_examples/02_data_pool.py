"""Seed example 2: processes A and B append to one shared list while C (the parent) looks at it."""

import sys
from time import sleep

from procshare import Manager, Process


def thread_a_main(sync_data_pool):
    for ix in range(100, 105):
        sleep(0.1)
        sync_data_pool.append(ix)


def thread_b_main(sync_data_pool):
    for ix in range(300, 309):
        sleep(0.06)
        sync_data_pool.append(ix)


def _test_case_000():
    manager = Manager()
    sync_data_pool = manager.list()
    a = Process(target=thread_a_main, args=(sync_data_pool,))
    b = Process(target=thread_b_main, args=(sync_data_pool,))
    a.start()
    b.start()
    for ix in range(6):
        sleep(0.1)
        print(sync_data_pool, file=sys.stderr)  # snapshots vary from run to run
    a.join()
    b.join()
    print(sorted(sync_data_pool))
    print(len(sync_data_pool))


if __name__ == "__main__":
    _test_case_000()
