"""The layer delta's logic on real package database text: dpkg status stanzas as Debian 11's dpkg
wrote them in the local base image (trimmed of long descriptions), rpm's list in the query's format,
and both package managers' version orders (the layers read on docker: tests/test_layer_delta.py)."""

import pytest

from image_assets import layer_delta
from image_assets.layer_delta import Delta, Package, compare_dpkg, compare_rpm, package_delta, parse_dpkg_status

BEFORE = """\
Package: gcc-9-base
Status: install ok installed
Priority: required
Section: libs
Installed-Size: 262
Maintainer: Debian GCC Maintainers <debian-gcc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: gcc-9
Version: 9.3.0-22
Breaks: gnat (<< 7)
Description: GCC, the GNU Compiler Collection (base package)
 This package contains files common to all languages and libraries
 contained in the GNU Compiler Collection (GCC).
Homepage: http://gcc.gnu.org/

Package: libwrap0
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 109
Maintainer: Marco d'Itri <md@linux.it>
Architecture: amd64
Multi-Arch: same
Source: tcp-wrappers
Version: 7.6.q-31
Depends: libc6 (>= 2.14), libnsl2 (>= 1.0)
Description: Wietse Venema's TCP wrappers library
 Wietse Venema's network logger, also known as TCPD or LOG_TCP.
 .
 Security options are:
  - access control per host, domain and/or service;

Package: openssh-server
Status: install ok installed
Priority: optional
Section: net
Installed-Size: 1567
Maintainer: Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>
Architecture: amd64
Multi-Arch: foreign
Source: openssh
Version: 1:8.4p1-5+deb11u2
Provides: ssh-server
Conffiles:
 /etc/default/ssh 500e3cf069fe9a7b9936108eb9d9c035
 /etc/pam.d/sshd 8b4c7a12b031424b2a9946881da59812
Description: secure shell (SSH) server, for secure access from remote machines
 This is the portable version of OpenSSH.

Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12834
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.31-13+deb11u11
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
"""

LESS = """\
Package: less
Status: install ok installed
Priority: important
Section: text
Installed-Size: 304
Maintainer: Milan Kupcevic <milan@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 551-2+deb11u2
Depends: libc6 (>= 2.14), libtinfo6 (>= 6)
Description: pager program similar to more
 This package provides "less", a file pager.
Homepage: http://www.greenwoodsoftware.com/less/
"""


def after_layer() -> str:
    """What a layer that installs less, removes gcc-9-base (dpkg keeps a removed package's stanza
    while its conffiles stay), upgrades openssh-server and downgrades libc6 leaves in the status."""
    text = BEFORE.replace("Package: gcc-9-base\nStatus: install ok installed",
                          "Package: gcc-9-base\nStatus: deinstall ok config-files")
    text = text.replace("Version: 1:8.4p1-5+deb11u2", "Version: 1:8.4p1-5+deb11u3")
    text = text.replace("Version: 2.31-13+deb11u11", "Version: 2.31-13+deb11u10")
    return text + "\n" + LESS


def test_dpkg_status_gives_the_installed_packages_with_versions_and_arches():
    assert parse_dpkg_status(BEFORE) == [
        Package("gcc-9-base", "9.3.0-22", "amd64"), Package("libwrap0", "7.6.q-31", "amd64"),
        Package("openssh-server", "1:8.4p1-5+deb11u2", "amd64"), Package("libc6", "2.31-13+deb11u11", "amd64"),
    ]
    # config-files: removed, its conffiles kept; not installed
    assert "gcc-9-base" not in {p.name for p in parse_dpkg_status(after_layer())}


def test_a_package_installed_for_a_second_architecture_is_added_for_that_one():
    i386 = BEFORE.split("\n\n")[1].replace("Architecture: amd64", "Architecture: i386")
    delta = package_delta(parse_dpkg_status(BEFORE), parse_dpkg_status(BEFORE + "\n" + i386))
    assert delta.added == [Package("libwrap0", "7.6.q-31", "i386")] and not delta.removed and not delta.upgraded


def test_the_delta_of_a_layer_names_each_package_with_its_versions():
    delta = package_delta(parse_dpkg_status(BEFORE), parse_dpkg_status(after_layer()))
    assert delta.added == [Package("less", "551-2+deb11u2", "amd64")]
    assert delta.removed == [Package("gcc-9-base", "9.3.0-22", "amd64")]
    assert delta.upgraded == [(Package("openssh-server", "1:8.4p1-5+deb11u2", "amd64"),
                               Package("openssh-server", "1:8.4p1-5+deb11u3", "amd64"))]
    assert [new.version for _, new in delta.downgraded] == ["2.31-13+deb11u10"]
    delta.databases, delta.files_added, delta.files_modified, delta.files_removed = ("dpkg",), 31, 9, 2
    meta = delta.metadata()
    assert meta["packages_added"] == [{"name": "less", "version": "551-2+deb11u2", "arch": "amd64"}]
    assert meta["packages_removed"] == [{"name": "gcc-9-base", "version": "9.3.0-22", "arch": "amd64"}]
    assert meta["packages_upgraded"] == [{"name": "openssh-server", "from": "1:8.4p1-5+deb11u2",
                                          "to": "1:8.4p1-5+deb11u3", "arch": "amd64"}]
    assert meta["packages_downgraded"][0]["from"] == "2.31-13+deb11u11"
    assert meta["files_changed"] == 42
    assert meta["layer_delta"] == ("1 packages added, 1 removed, 1 upgraded, 1 downgraded; "
                                   "42 files changed (31 added, 9 modified, 2 removed)")
    assert set(meta) <= set(layer_delta.METADATA_KEYS)


def test_an_unchanged_database_gives_an_empty_delta_and_no_downgrade_key():
    delta = package_delta(parse_dpkg_status(BEFORE), parse_dpkg_status(BEFORE))
    delta.databases = ("dpkg",)
    meta = delta.metadata()
    assert meta["packages_added"] == meta["packages_removed"] == meta["packages_upgraded"] == []
    assert "packages_downgraded" not in meta and meta["files_changed"] == 0


def test_a_delta_not_measured_says_why_and_claims_nothing():
    meta = Delta(not_measured="ami-123 has no machine behind it on the sandbox").metadata()
    assert meta == {"layer_delta": "not measured: ami-123 has no machine behind it on the sandbox"}
    assert Delta().summary().startswith("no package database (dpkg or rpm) in the image; 0 files changed")


@pytest.mark.parametrize("older, newer", [
    ("1.0~rc1", "1.0"), ("1.0", "1.0+b1"), ("1.0", "1.0a"), ("1.0~~", "1.0~"), ("9.3.0-22", "10.2.1-6"),
    ("2.0", "1:1.0"), ("1:8.4p1-5+deb11u2", "1:8.4p1-5+deb11u3"), ("7.6.q-31", "7.6.q-31+b1"),
    ("2.31-13+deb11u10", "2.31-13+deb11u11"), ("1.0-1", "1.0-1.1"), ("1.2.3", "1.2.10"), ("0.9", "1.0-0"),
])
def test_dpkg_version_order(older, newer):
    assert compare_dpkg(older, newer) < 0 < compare_dpkg(newer, older)


def test_dpkg_equal_versions():
    assert compare_dpkg("1.0-1", "1.0-1") == compare_dpkg("0:1.0", "1.0") == compare_dpkg("1.01", "1.1") == 0


@pytest.mark.parametrize("older, newer", [
    ("1.0", "1.0.1"), ("1.0~rc1", "1.0"), ("1.0", "1.0^git1"), ("1.0^git1", "1.0.1"), ("1:9.9", "2:1.0"),
    ("1.0a", "1.0.1"), ("5.1-1.el8", "5.1-2.el8"), ("2.34-60.el9", "2.34-100.el9"), ("1.a", "1.b"),
])
def test_rpm_version_order(older, newer):
    assert compare_rpm(older, newer) < 0 < compare_rpm(newer, older)


def test_rpm_list_and_its_delta():
    before = layer_delta.parse_rpm_list("bash\t0:5.1.8-6.el9\tx86_64\nkernel\t0:5.14.0-70.el9\tx86_64\n"
                                        "nano\t0:5.6.1-5.el9\tx86_64\n")
    after = layer_delta.parse_rpm_list("bash\t0:5.1.8-9.el9\tx86_64\nkernel\t0:5.14.0-70.el9\tx86_64\n"
                                       "kernel\t0:5.14.0-162.el9\tx86_64\nless\t0:590-1.el9\tx86_64\n")
    delta = package_delta(before, after, compare_rpm)
    assert [p.name for p in delta.added] == ["kernel", "less"] and delta.added[0].version == "0:5.14.0-162.el9"
    assert [p.name for p in delta.removed] == ["nano"]
    assert [(a.version, b.version) for a, b in delta.upgraded] == [("0:5.1.8-6.el9", "0:5.1.8-9.el9")]
