"""The Dagster code location: every image in the catalog (images.yaml or $IMAGE_ASSETS_CATALOG)."""

import gc

from image_assets.catalog import load_catalog
from image_assets.defs import build_defs

defs = build_defs(load_catalog())

# What is loaded by now (Dagster, the catalog, its definitions) lives as long as the process:
# moved out of the collector's reach, later collections and the final one at exit no longer walk
# it (measured on a 4-layer chain: `dagster asset materialize` exit 0.8 -> 0.2 s after RUN_SUCCESS,
# first step 0.9 -> 0.5 s).
gc.freeze()
