"""``multiprocessing.sharedctypes``, under procshare's name.

``import procshare.sharedctypes`` gives the standard library's module itself (procshare changes
nothing in it), so that code written for ``import multiprocessing`` runs with only the import
changed.
"""

import multiprocessing.sharedctypes
import sys

sys.modules[__name__] = multiprocessing.sharedctypes
