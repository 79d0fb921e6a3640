"""Imported only by the multiprocess executor's forkserver (executor.PRELOAD): work every step would
otherwise repeat after the fork, done once. No network or git call; one `packer version`."""

import sys

from image_assets import packer
from image_assets.stores import ec2

ec2.warm_up()

# Every built image records the packer version: asked once here (two packer processes), not in
# every step's worker.
try:
    packer.packer_version(packer.resolve_binary(packer.PackerCli().binary))
except Exception:  # no packer here: each step then reports it (PackerError names the fix)
    pass

# The code location's repository and asset graph, built once here: every forked step finds the
# Definitions object it loads (module `definitions`, preloaded) already resolved, instead of
# resolving it again (~0.6 s per step in a 1,000-image catalog).
_location = sys.modules.get("definitions")
if _location is not None and hasattr(_location, "defs"):
    try:
        _location.defs.resolve_asset_graph()
    except Exception:  # a warm-up must never stop the forkserver; steps then resolve it themselves
        pass
