"""Imported only by the multiprocess executor's forkserver (defs.PRELOAD): work every step would
otherwise repeat after the fork, done once. No network, git or packer call."""

from image_assets.stores import ec2

ec2.warm_up()
