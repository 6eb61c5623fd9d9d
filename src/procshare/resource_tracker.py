"""``multiprocessing.resource_tracker``, under procshare's name.

``import procshare.resource_tracker`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.resource_tracker
import sys

sys.modules[__name__] = multiprocessing.resource_tracker
