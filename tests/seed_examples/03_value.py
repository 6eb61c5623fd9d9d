"""Seed example 3: a shared-memory double changed by a child process."""

import procshare as multiprocessing


def func(num):
    num.value = 10.78


if __name__ == "__main__":
    num = multiprocessing.Value("d", 10.0)
    print(num.value)
    p = multiprocessing.Process(target=func, args=(num,))
    p.start()
    p.join()
    print(num.value)
