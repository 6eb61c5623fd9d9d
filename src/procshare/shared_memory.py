"""``multiprocessing.shared_memory``, under procshare's name.

``import procshare.shared_memory`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.shared_memory
import sys

sys.modules[__name__] = multiprocessing.shared_memory
