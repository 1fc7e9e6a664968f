"""cog-assets: CogVideoX training data as Dagster assets.

Transparent huge pages for torch's large CPU tensors (cog_assets.runtime.heap says why and
what it measured): torch reads THP_MEM_ALLOC_ENABLE once, at its first CPU allocation, so it
is set here, before any module of the package imports torch. A value the user set is kept.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
