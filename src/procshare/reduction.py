"""``multiprocessing.reduction``, under procshare's name.

``import procshare.reduction`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.reduction
import sys

sys.modules[__name__] = multiprocessing.reduction
