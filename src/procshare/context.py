"""``multiprocessing.context``, under procshare's name.

``import procshare.context`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.context
import sys

sys.modules[__name__] = multiprocessing.context
