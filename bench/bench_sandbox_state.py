"""What keeping the sandbox's images costs a call that changes them, measured in one run.

A sandbox of its own (free port, temp state dir) with 1, 100 and 300 images it made (RegisterImage,
ten 40-character tags each): the median of 20 CreateTags calls (each saves the state file,
sandbox_state) against 20 DescribeRegions (no save), and the state file's size.

    python bench/bench_sandbox_state.py
"""

import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_assets import sandbox  # noqa: E402


def median_ms(calls: int, call) -> float:
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["IMAGE_ASSETS_STATE_DIR"] = tempfile.mkdtemp()
    sandbox.start(port)
    try:
        ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint(port), region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ids: list[str] = []
        for count in (1, 100, 300):
            while len(ids) < count:
                ids.append(ec2.register_image(Name=f"img-{len(ids)}", RootDeviceName="/dev/xvda")["ImageId"])
                ec2.create_tags(Resources=[ids[-1]], Tags=[{"Key": k, "Value": "x" * 40} for k in "ABCDEFGHIJ"])
            saving = median_ms(20, lambda: ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "T", "Value": "v"}]))
            reading = median_ms(20, ec2.describe_regions)
            size = (sandbox.state_dir() / f"sandbox-{port}-state.json").stat().st_size
            print(f"{count} kept images: CreateTags {saving:.1f} ms median (saves the state), "
                  f"DescribeRegions {reading:.1f} ms (saves nothing); state file {size / 1024:.0f} KiB")
    finally:
        sandbox.stop(port, forget=True)


if __name__ == "__main__":
    main()
