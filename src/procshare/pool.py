"""``multiprocessing.pool``, under procshare's name.

``import procshare.pool`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.pool
import sys

sys.modules[__name__] = multiprocessing.pool
