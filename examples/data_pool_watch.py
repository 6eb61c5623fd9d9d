"""The seed's data pool, pushed instead of polled.

Processes A and B append numbers to one shared list. Process C (this one) is told of each
append as it happens and prints it; it stops when both producers have said they are done.
No sleep loop, no "mailbox" polling: compare with ``tests/seed_examples/02_data_pool.py``.
"""

from time import sleep

from procshare import Manager, Process


def producer(pool, numbers, pause):
    for n in numbers:
        sleep(pause)
        pool.append(n)
    pool.append(None)  # this producer is done


if __name__ == "__main__":
    with Manager() as manager:
        pool = manager.list()
        with pool.watch() as changes:  # subscribed before anyone writes: nothing is missed
            a = Process(target=producer, args=(pool, range(100, 105), 0.1))
            b = Process(target=producer, args=(pool, range(300, 309), 0.06))
            a.start()
            b.start()
            finished = 0
            for change in changes:
                value = change.args[0]
                if value is None:
                    finished += 1
                    if finished == 2:
                        break
                else:
                    print("C got", value)
        a.join()
        b.join()
        print(sorted(n for n in pool if n is not None))
