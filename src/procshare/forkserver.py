"""``multiprocessing.forkserver``, under procshare's name.

``import procshare.forkserver`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.forkserver
import sys

sys.modules[__name__] = multiprocessing.forkserver
