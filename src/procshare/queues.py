"""``multiprocessing.queues``, under procshare's name.

``import procshare.queues`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.queues
import sys

sys.modules[__name__] = multiprocessing.queues
