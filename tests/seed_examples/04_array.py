"""Seed example 4: a shared-memory int array changed by a child process."""

import procshare as multiprocessing


def func(num):
    num[2] = 9999


if __name__ == "__main__":
    num = multiprocessing.Array("i", [1, 2, 3, 4, 5])
    print(num[:])
    p = multiprocessing.Process(target=func, args=(num,))
    p.start()
    p.join()
    print(num[:])
