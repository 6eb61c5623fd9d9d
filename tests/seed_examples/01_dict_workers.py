"""Seed example 1: ten worker processes each write one key of a shared dict."""

import procshare as multiprocessing


def worker(d, key, value):
    d[key] = value


if __name__ == "__main__":
    mgr = multiprocessing.Manager()
    d = mgr.dict()
    jobs = [multiprocessing.Process(target=worker, args=(d, i, i * 2)) for i in range(10)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    print("Results:")
    for key, value in sorted(dict(d).items()):
        print("%s=%s" % (key, value))
