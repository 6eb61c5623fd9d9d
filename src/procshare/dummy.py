"""``multiprocessing.dummy``, under procshare's name.

``import procshare.dummy`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.dummy
import sys

sys.modules[__name__] = multiprocessing.dummy
