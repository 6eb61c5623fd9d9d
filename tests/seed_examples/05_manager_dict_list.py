"""Seed example 5: a child process changes a managed dict and list."""

import procshare as multiprocessing


def func(mydict, mylist):
    mydict["index1"] = "aaaaaa"
    mydict["index2"] = "bbbbbb"
    mylist.append(11)
    mylist.append(22)
    mylist.append(33)


if __name__ == "__main__":
    with multiprocessing.Manager() as MG:
        mydict = multiprocessing.Manager().dict()  # as in the seed: a second manager
        mylist = multiprocessing.Manager().list(range(5))  # and a third
        p = multiprocessing.Process(target=func, args=(mydict, mylist))
        p.start()
        p.join()
        print(mylist)
        print(mydict)
