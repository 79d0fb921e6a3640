"""The Dagster code location: every image in the catalog (images.yaml or $IMAGE_ASSETS_CATALOG)."""

from image_assets.catalog import load_catalog
from image_assets.defs import build_defs

defs = build_defs(load_catalog())
