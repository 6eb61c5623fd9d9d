"""``multiprocessing.synchronize``, under procshare's name.

``import procshare.synchronize`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.synchronize
import sys

sys.modules[__name__] = multiprocessing.synchronize
