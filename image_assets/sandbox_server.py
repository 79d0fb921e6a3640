"""The sandbox's moto server: `python -m image_assets.sandbox_server --port N`.

Started detached by `image_assets.sandbox.start()`; serves until SIGTERM.
"""

import argparse

from moto.ec2.models.amis import AmiBackend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

_moto_create_image = AmiBackend.create_image


def _create_image_ebs(self, instance_id, *args, **kwargs):
    # moto 5.2.5 gives images made by CreateImage RootDeviceType "standard" (instance-store)
    # and root device /dev/sda1 whatever the instance had; packer 1.6.6 refuses such a source
    # image ("invalid root device type"), so no layer could be built on a built layer. On AWS
    # an image created from an EBS-backed instance is EBS-backed with the instance's root
    # device; moto already gives every Ami a root snapshot in its block device mapping.
    ami = _moto_create_image(self, instance_id, *args, **kwargs)
    ami.root_device_type = "ebs"
    ami.root_device_name = self.get_instance(instance_id).root_device_name
    return ami


def patch_moto() -> None:
    AmiBackend.create_image = _create_image_ebs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m image_assets.sandbox_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    patch_moto()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"moto sandbox serving on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
