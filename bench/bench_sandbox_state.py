"""What keeping the sandbox's images costs a call that changes them, measured in one run.

A sandbox of its own (free port, temp state dir) with 1, 100 and 300 images it made (RegisterImage,
ten 40-character tags each): the median of 20 CreateTags calls (each saves the state file,
sandbox_state) against 20 DescribeRegions (no save), and the state file's size.

    python bench/bench_sandbox_state.py
"""
import os, sys, time, socket, tempfile, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.environ["IMAGE_ASSETS_STATE_DIR"] = tempfile.mkdtemp()
from image_assets import sandbox
import boto3
sandbox.start(port)
ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint(port), region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
def timed(n, f):
    out = []
    for _ in range(n):
        t = time.perf_counter(); f(); out.append(time.perf_counter() - t)
    return statistics.median(out) * 1000
ids = []
for count in (1, 100, 300):
    while len(ids) < count:
        ids.append(ec2.register_image(Name=f"img-{len(ids)}", RootDeviceName="/dev/xvda")["ImageId"])
        ec2.create_tags(Resources=[ids[-1]], Tags=[{"Key": k, "Value": "x" * 40} for k in "ABCDEFGHIJ"])
    if not ids:
        ids.append(ec2.register_image(Name="first", RootDeviceName="/dev/xvda")["ImageId"])
    tag = timed(20, lambda: ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "T", "Value": "v"}]))
    read = timed(20, lambda: ec2.describe_regions())
    size = (sandbox.state_dir() / f"sandbox-{port}-state.json").stat().st_size if ids else 0
    print(f"{count} kept images: CreateTags {tag:.1f} ms median (saves), DescribeRegions {read:.1f} ms (no save); state file {size/1024:.0f} KiB")
sandbox.stop(port, forget=True)
