"""A service's checkout is the tagged tree without its `.git` (what the local service layer ships, built:
tests/test_service_content.py)."""

from image_assets import gitrepos
from image_assets.devtools import demo


def test_a_checkout_is_the_tagged_tree_without_its_git_dir(tmp_path):
    bare = tmp_path / "svc.git"
    commit = demo.make_repo(bare, {"app.py": "print('hi')\n", "lib/util.py": "X = 1\n"})
    dest = gitrepos.checkout(str(bare), gitrepos.Ref("v1.0.0", commit), tmp_path / "checkout")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["app.py", "lib", "lib/util.py"]
