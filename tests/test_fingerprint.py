"""The fingerprint covers exactly what the build reads; content comes from an explicit catalog
field; a copied template directory builds. Real packer, real git, the sandbox."""

import shutil

from conftest import PROJECT, latest, materialize, write_demo_catalog

from image_assets import build as buildmod
from image_assets.catalog import load_catalog

PARENT = buildmod.Parent("ami-00000000000000001", "ami-00000000000000001")


def resolved_fingerprints(catalog, work) -> dict[str, str]:
    """The fingerprint of every built image of the catalog, resolved as a build resolves it."""
    out = {}
    for name, image in catalog.images.items():
        if not image.vendor:
            out[name] = buildmod.resolve(catalog, name, PARENT, work / name).fingerprint()
    return out


def test_fingerprint_covers_exactly_the_content_each_image_reads(tmp_path):
    catalog = load_catalog(write_demo_catalog(tmp_path / "p"))
    root = catalog.root_dir
    before = resolved_fingerprints(catalog, tmp_path / "w1")
    assert resolved_fingerprints(catalog, tmp_path / "w2") == before  # stable for equal inputs

    # A Windows-only script: only the Windows images change.
    (root / "packer/scripts/windows/service-iis.ps1").write_text("# edited\n", encoding="utf-8")
    after = resolved_fingerprints(catalog, tmp_path / "w3")
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"global-windows", "service-iis"}

    # A file no image reads (another cloud's template, the local copy of the roles, which every
    # Linux image takes from the tagged ansible-roles repo instead): nothing changes.
    (root / "packer/azure/linux/build.pkr.hcl").write_text("# edited\n")
    (root / "packer/ansible/global.yml").write_text("# edited locally, not released\n")
    assert resolved_fingerprints(catalog, tmp_path / "w4") == after

    # A Linux script: every image whose content names packer/scripts/linux; a template edit:
    # every image of that template.
    (root / "packer/scripts/linux/sshd-banner.sh").write_text("#!/bin/sh\necho edited\n")
    linux = resolved_fingerprints(catalog, tmp_path / "w5")
    assert {n for n in after if after[n] != linux[n]} == {"global-linux", "python310", "service-urllib3",
                                                          "service-sshd-banner"}
    variables = root / "packer/aws/windows/variables.pkr.hcl"
    variables.write_text(variables.read_text() + "\n# edited\n")
    windows = resolved_fingerprints(catalog, tmp_path / "w6")
    assert {n for n in linux if linux[n] != windows[n]} == {"global-windows", "service-iis"}


def test_provisioning_content_comes_from_the_catalog_field_not_a_hard_coded_repo_name(tmp_path, work_dir, instance):
    """The roles repo renamed in the catalog: the build still provisions from that repo's tagged
    checkout (the local copy has no global.yml at all), because `content` names it."""
    def rename(doc):
        doc["repos"]["company-roles"] = doc["repos"].pop("ansible-roles")
        doc["repos"]["company-roles"]["url"] = ".demo/git/ansible-roles.git"
        for image in doc["images"].values():
            if "ansible-roles" in image.get("repos", []):
                image["repos"] = ["company-roles" if r == "ansible-roles" else r for r in image["repos"]]
                image["content"] = {**image["content"], "ansible": "company-roles:"}
    path = write_demo_catalog(tmp_path / "p", rename)
    (path.parent / "packer/ansible/global.yml").unlink()
    catalog = load_catalog(path)
    materialize(catalog, instance, selection="*global-linux")
    meta = latest(instance, "global-linux")
    assert set(meta["git_refs"]) == {"company-roles"} and meta["reused"] is False


def test_a_copied_template_directory_builds(tmp_path, work_dir, instance):
    """A user's first step to customize a shipped template: copy it anywhere (links followed)."""
    def elsewhere(doc):
        doc["images"]["service-sshd-banner"]["template"] = "custom/banner-template"
    path = write_demo_catalog(tmp_path / "p", elsewhere)
    shutil.copytree(PROJECT / "packer/aws/linux", path.parent / "custom/banner-template")
    catalog = load_catalog(path)
    materialize(catalog, instance, selection="*service-sshd-banner")
    assert latest(instance, "service-sshd-banner")["reused"] is False
