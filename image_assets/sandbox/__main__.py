"""`python -m image_assets.sandbox`: start, stop, status, reset, publish-vendor."""

import sys

from image_assets.sandbox import main

sys.exit(main())
