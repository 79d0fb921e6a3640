"""The image catalog (images.yaml): pydantic models, loading and cross-field validation.

Every error is a CatalogError whose message names the file, the image (or repo) and the field.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import logging
import os
import re
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from image_assets import templates
from image_assets.gitrepos import glob_problem, redact_url
from image_assets.errors import ImageAssetsError

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "images.yaml"
# Deeper parent chains are refused at load; the lineage walk of image tags stops there too.
MAX_DEPTH = 10_000
LAYER_RANK = {"vendor": 0, "global": 1, "product": 2, "service": 3}
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_REPO_TEMPLATE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):(.+)$")
_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
_CHANNEL = re.compile(r"^[a-z][a-z0-9-]*$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_GLOB = re.compile(r"^[A-Za-z0-9._/*?\[\]!+-]{1,128}$")
# git transports that run commands or read arbitrary fds; refused outright.
_BAD_URL = re.compile(r"(^-)|(^[A-Za-z0-9+.-]+::)|([\s\x00-\x1f])|(://-)|(--upload-pack|--receive-pack|--config)")


class CatalogError(ImageAssetsError, ValueError):
    pass


class Layer(str, Enum):
    vendor = "vendor"
    global_ = "global"
    product = "product"
    service = "service"


def _region(name: str) -> str:
    if not _REGION.match(name):
        raise ValueError(f"{name!r} is not an AWS region name (like eu-central-1)")
    return name


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 12h, 1d, 2w")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Model):
    target: Literal["sandbox", "aws", "local"] = "sandbox"
    region: Annotated[str, AfterValidator(_region)] = "us-east-1"
    # Finite and bounded: a sensor that never ticks, or a git call that never times out, is a mistake.
    git_sensor_interval_seconds: int = Field(30, ge=5, le=86400)
    vendor_sensor_interval_seconds: int = Field(300, ge=5, le=86400)
    git_timeout_seconds: float = Field(20, gt=0, le=300)
    # Images carry a Deployment tag; retention and reuse act on this deployment's images only, so
    # two Dagster instances sharing one account never touch each other's images.
    deployment: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")


class Repo(_Model):
    url: str
    tags: str = "v*"

    @field_validator("url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        if not url or _BAD_URL.search(url):
            raise ValueError(f"{redact_url(url)!r} is not an accepted git URL (option-like or command transport)")
        return url

    @field_validator("tags")
    @classmethod
    def _glob(cls, glob: str) -> str:
        if not _GLOB.match(glob):
            raise ValueError(f"{glob!r} is not a valid tag glob (1-128 of letters, digits and ._/*?[]!+-)")
        if problem := glob_problem(glob):
            raise ValueError(f"{glob!r} is not a valid tag glob: {problem}")
        return glob


class VendorQuery(_Model):
    """An EC2 lookup (owners and name, for sandbox and aws) and/or `image`: an image reference in
    the local docker daemon (for local)."""

    owners: list[str] | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1)
    image: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _lookup(self):
        if (self.owners is None) != (self.name is None):
            raise ValueError("an EC2 lookup needs both owners and name")
        if self.owners is None and self.image is None:
            raise ValueError("a vendor query needs owners and name (EC2), or image (local docker), or both")
        return self


class Retention(_Model):
    keep: int = Field(3, ge=1)
    min_age: str = "1d"

    @field_validator("min_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def min_age_delta(self) -> timedelta:
        return parse_duration(self.min_age)


class Secret(_Model):
    """A template variable whose value comes from the environment at build time, never the catalog."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Compliance(_Model):
    """OpenSCAP scoring of an image's filesystem (target local): an SCAP Security Guide profile
    (`standard`, `anssi_np_nt28_average`, ...) or, with `tailoring`, a profile that file defines.
    It holds for the image and every image built on it, unless one declares its own."""

    profile: str = Field("standard", pattern=r"^[A-Za-z0-9_.-]+$")
    min_pass_ratio: float = Field(0.0, ge=0, le=1)
    tailoring: str | None = None  # an XCCDF tailoring file, relative to this catalog file


class Distribute(_Model):
    """Copies of every build in other regions (same tags, plus SourceImageId), and launch
    permission for other accounts (on the image and each copy). EC2 targets only."""

    regions: list[str] = []
    accounts: list[str] = []

    @field_validator("regions")
    @classmethod
    def _regions(cls, regions: list[str]) -> list[str]:
        bad = [r for r in regions if not _REGION.match(r)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an AWS region name (like eu-central-1)")
        if len(set(regions)) != len(regions):
            raise ValueError(f"regions {regions} name a region twice")
        return regions

    @field_validator("accounts", mode="before")
    @classmethod
    def _accounts(cls, accounts):
        if not isinstance(accounts, list):
            return accounts
        bad = [a for a in accounts if not isinstance(a, str) or not _ACCOUNT.match(a)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an AWS account id: 12 digits, quoted in YAML "
                             "(an unquoted number loses its leading zeros)")
        return accounts


class Image(_Model):
    layer: Layer
    parent: str | None = None
    template: str | None = None
    repos: list[str] = []
    variables: dict[str, Any] = {}
    secrets: dict[str, Secret] = {}
    # Provisioning content the build reads beyond its template directory: name -> a path relative
    # to this file, or "<repo>:<path>" in an input repo at its tag ("<repo>:" for its root).
    # Injected as var.content_dirs (name -> absolute path) and digested into the fingerprint.
    content: dict[str, str] = {}
    # The template's own var-files (paths inside its directory), handed to packer in this order,
    # before the build's injected var-file; the template digest covers their contents.
    var_files: list[Annotated[str, Field(min_length=1)]] = []
    vendor: VendorQuery | None = None
    retention: Retention = Retention()
    description: str | None = None
    # Shell commands that must succeed inside the built image, in order, in one throwaway
    # container (target local), before any child builds on it.
    tests: list[Annotated[str, Field(min_length=1)]] = []
    compliance: Compliance | None = None
    # Release channels (image_assets.channels): every build that passes its blocking checks is
    # published to `latest` (added when not listed); the others move by promotion and rollback.
    channels: list[str] = ["latest"]
    distribute: Distribute | None = None

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        for channel in channels:
            if not isinstance(channel, str) or not _CHANNEL.match(channel) or len(channel) > 64:
                raise ValueError(f"channel {channel!r} is not a channel name (lower-case letters, digits and '-', "
                                 "starting with a letter: it becomes an SSM parameter path and a docker tag)")
        if len(set(channels)) != len(channels):
            raise ValueError(f"channels {channels} name a channel twice")
        return channels if "latest" in channels else ["latest", *channels]

    @field_validator("var_files")
    @classmethod
    def _var_files_inside(cls, var_files: list[str]) -> list[str]:
        for name in var_files:
            if name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"var-file {name!r} must be a path inside the template directory, relative to it")
        if len(set(var_files)) != len(var_files):
            raise ValueError(f"var_files {var_files} name a file twice")
        return var_files

    @field_validator("variables")
    @classmethod
    def _no_go_templates(cls, variables: dict[str, Any]) -> dict[str, Any]:
        # Packer evaluates `{{ ... }}` in provisioner fields even in variable values, so such a value
        # would not reach the build unchanged. Without recursion, each shared (aliased) value once.
        stack, seen = [(value, name) for name, value in reversed(variables.items())], set()
        while stack:
            value, where = stack.pop()
            if isinstance(value, str) and "{{" in value:
                raise ValueError(f"value of {where} contains '{{{{': packer would evaluate it as a template")
            if isinstance(value, (dict, list)) and id(value) not in seen:
                seen.add(id(value))
                items = value.items() if isinstance(value, dict) else enumerate(value)
                stack += reversed([(item, f"{where}.{key}") for key, item in items])
        return variables


class Catalog(_Model):
    path: Path
    defaults: Defaults = Defaults()
    repos: dict[str, Repo] = {}
    images: dict[str, Image]
    # image -> "image 'x', field 'template': <file>:<line>: ..." for a local template that does not
    # parse: only that image (and what is built on it) fails, at build time; the catalog still loads.
    _template_errors: dict[str, str] = PrivateAttr(default_factory=dict)
    _depths: dict[str, int] = PrivateAttr(default_factory=dict)  # filled on first use: the graph is loaded
    _children: dict[str | None, list[str]] = PrivateAttr(default_factory=dict)

    @property
    def root_dir(self) -> Path:
        return self.path.parent

    @property
    def template_errors(self) -> dict[str, str]:
        return self._template_errors

    def template_error(self, name: str) -> str | None:
        """Why the image cannot be built: its own template, or an ancestor's, does not parse."""
        for ancestor in self.chain(name):
            error = self._template_errors.get(ancestor)
            if error and ancestor == name:
                return error
            if error:
                kin = "parent" if ancestor == self.images[name].parent else "ancestor"
                return (f"image {name!r}: {kin} {ancestor!r} cannot be built ({error}); fix its template, then: "
                        f"dagster asset materialize -m definitions --select '{ancestor}*'")
        return None

    @property
    def target(self) -> str:
        return os.environ.get("IMAGE_ASSETS_TARGET") or self.defaults.target

    @property
    def deployment(self) -> str:
        """The Deployment tag of this instance's images (env IMAGE_ASSETS_DEPLOYMENT overrides)."""
        return os.environ.get("IMAGE_ASSETS_DEPLOYMENT") or self.defaults.deployment

    def template_ref(self, name: str) -> tuple[str | None, str]:
        """(repo or None, path) of an image's template."""
        template = self.images[name].template or ""
        match = _REPO_TEMPLATE.match(template)
        if match and match.group(1) in self.repos:
            return match.group(1), match.group(2)
        return None, template

    def template_dir(self, name: str) -> Path | None:
        """Local template directory; None for a template that lives in a git repo."""
        repo, path = self.template_ref(name)
        return None if repo else (self.root_dir / path).resolve()

    def content_ref(self, name: str, key: str) -> tuple[str | None, str]:
        """(repo or None, path) of one `content` entry: "<repo>:<path>" in an input repo, else a
        path relative to this file."""
        source = self.images[name].content[key]
        repo, sep, path = source.partition(":")
        return (repo, path) if sep else (None, source)

    def compliance(self, name: str) -> tuple[str, Compliance] | None:
        """(the image that declares it, the compliance) in force for an image: its own, else its
        nearest ancestor's, so a hardening standard set on a global image binds its descendants."""
        for ancestor in self.chain(name):
            if self.images[ancestor].compliance:
                return ancestor, self.images[ancestor].compliance
        return None

    def tailoring_path(self, name: str) -> Path | None:
        found = self.compliance(name)
        return (self.root_dir / found[1].tailoring).resolve() if found and found[1].tailoring else None

    def input_repos(self, name: str) -> list[str]:
        """Repos whose tags rebuild this image: its `repos` plus its template's repo."""
        repo, _ = self.template_ref(name)
        names = list(self.images[name].repos)
        if repo and repo not in names:
            names.append(repo)
        return names

    def chain(self, name: str) -> list[str]:
        """The image and its ancestors, the vendor root last."""
        out = [name]
        while self.images[out[-1]].parent:
            out.append(self.images[out[-1]].parent)
        return out

    def depth(self, name: str) -> int:
        """How many ancestors the image has (0 for a vendor image)."""
        if not self._depths:  # built whole, then set: a sensor thread never sees half of it
            depths: dict[str, int] = {}
            for start in self.images:  # each image's depth from the nearest ancestor already known
                path, node = [], start
                while node and node not in depths:
                    path.append(node)
                    node = self.images[node].parent
                known = depths[node] if node else -1
                depths.update((n, known + len(path) - i) for i, n in enumerate(path))
            self._depths = depths
        return self._depths[name]

    def children(self, name: str) -> list[str]:
        if not self._children:
            children: dict[str | None, list[str]] = {}
            for n, img in self.images.items():
                children.setdefault(img.parent, []).append(n)
            self._children = children
        return self._children.get(name, [])

    def descendants(self, name: str) -> list[str]:
        """Every image built on this one, depth first, children in catalog order (no recursion:
        a parent chain may be deeper than Python's recursion limit)."""
        out: list[str] = []
        stack = list(reversed(self.children(name)))
        while stack:
            out.append(stack.pop())
            stack += reversed(self.children(out[-1]))
        return out

    def users_of_repo(self, repo: str) -> list[str]:
        return [n for n in self.images if repo in self.input_repos(n)]


# libyaml's parser where PyYAML has it: the pure-Python one took 2.1 s of a 1,000-image catalog's import.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """PyYAML keeps the last of two equal keys; a duplicate image name must be an error instead."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise CatalogError(
                    f"line {key_node.start_mark.line + 1}: duplicate name {key!r} "
                    f"(first defined on line {seen[key] + 1})"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# What YAML aliases may add to a catalog once expanded (one per value, one per character of a
# string): a file of a few hundred bytes can otherwise expand to billions of values ("billion laughs").
MAX_ALIAS_GROWTH = 4_000_000


def _nodes(root: yaml.Node):
    """(path, node) for every node of a composed YAML document, each node once (an alias is not
    followed again), without recursion. A path is the keys from the document root."""
    seen: set[int] = set()
    stack: list[tuple[tuple, yaml.Node]] = [((), root)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [((*path, i), item) for i, item in reversed(list(enumerate(node.value)))]
        elif isinstance(node, yaml.MappingNode):
            stack += [((*path, key.value if isinstance(key, yaml.ScalarNode) else "?"), value)
                      for key, value in reversed(node.value)]


def _path_of(root: yaml.Node, target: yaml.Node) -> tuple:
    return next(path for path, node in _nodes(root) if node is target)


def _check_nodes(root: yaml.Node, text_size: int) -> None:
    """What PyYAML would turn into a traceback or a hang, refused with the line and field: a
    key that is not a plain value, an alias inside its own anchor, aliases that expand too far.
    One pass sizes every node as if each alias were expanded, sizing each shared node once."""
    size: dict[int, int] = {}  # id(node) -> values and characters under it, aliases expanded
    open_: set[int] = set()  # nodes whose children are still being sized: the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if node.id == "scalar":
            size[id(node)] = 1 + len(node.value)
            continue
        children = node.value if node.id == "sequence" else [n for pair in node.value for n in pair]
        if children_done:
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            open_.discard(id(node))
        elif id(node) in open_:
            raise CatalogError(f"line {node.start_mark.line + 1}: {_where(_path_of(root, node))}: a YAML alias here "
                               "is inside its own anchor: the value would never end")
        elif id(node) not in size:
            for key in children[::2] if node.id == "mapping" else ():
                if key.id != "scalar":
                    raise CatalogError(f"line {key.start_mark.line + 1}: {_where(_path_of(root, node))}: a key must "
                                       f"be a plain name, not a {'list' if key.id == 'sequence' else 'mapping'} "
                                       "(a '? ' complex key)")
            open_.add(id(node))
            stack.append((node, True))
            stack += [(child, False) for child in children if id(child) not in size]
    if size[id(root)] - text_size <= MAX_ALIAS_GROWTH:
        return
    path, node = (), root
    while len(path) < 4 and node.id != "scalar" and node.value:
        items = enumerate(node.value) if node.id == "sequence" else ((k.value, v) for k, v in node.value)
        key, node = max(items, key=lambda item: size[id(item[1])])
        path = (*path, key)
    raise CatalogError(f"line {node.start_mark.line + 1}: {_where(path)}: YAML aliases expand this value to "
                       f"{size[id(node)]:,} values and characters; a catalog's aliases may add at most "
                       f"{MAX_ALIAS_GROWTH:,} (write the value out, or share less)")


def _field_on_line(text: str, line: int) -> str:
    """"image 'x', field 'y': " for the value on a line of the catalog, "" where none is found."""
    try:
        root = yaml.compose(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        return ""
    found = [path for path, node in _nodes(root) if isinstance(node, yaml.ScalarNode) and path
             and node.start_mark.line + 1 <= line <= node.end_mark.line + 1] if root else []
    return f"{_where(found[-1])}: " if found else ""


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "images":
        field = ".".join(parts[2:]) or "(image)"
        return f"image {parts[1]!r}, field {field!r}"
    if len(parts) >= 2 and parts[0] == "repos":
        field = ".".join(parts[2:]) or "(repo)"
        return f"repo {parts[1]!r}, field {field!r}"
    return f"field {'.'.join(parts)!r}"


def _model_fields(loc: tuple) -> list[str]:
    """Field names of the model that holds the last part of an error location."""
    def model(node):
        return next((t for t in (node, *get_args(node)) if isinstance(t, type) and issubclass(t, BaseModel)), None)

    node = Catalog
    for part in loc[:-1]:
        if get_origin(node) is dict:  # a key of images, repos, secrets
            node = get_args(node)[1]
        elif (found := model(node)) and part in found.model_fields:
            node = found.model_fields[part].annotation
        else:
            return []
    found = model(node)
    return [f for f in found.model_fields if f != "path"] if found else []


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        field = str(err["loc"][-1])
        near = difflib.get_close_matches(field, _model_fields(err["loc"]), n=1)
        return f"unknown field {field!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
    return err["msg"].removeprefix("Value error, ")


def catalog_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("IMAGE_ASSETS_CATALOG") or DEFAULT_CATALOG).resolve()


@contextlib.contextmanager
def gc_paused(freeze: bool = False):
    """The cyclic garbage collector off while building what lives as long as the code location
    (the catalog, its asset definitions): each full collection walks all of Dagster's objects, and
    a 1,000-image load set off 4-5 of them (~0.3 s). Refcounting still frees what is not cyclic.
    `freeze`: what exists once the block ends moves to the collector's permanent generation."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def load_catalog(path: str | os.PathLike | None = None) -> Catalog:
    with gc_paused():
        return _load_catalog(catalog_path(path))


def _load_catalog(path: Path) -> Catalog:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = _field_on_line(data.decode("utf-8", errors="replace"), line)
        raise CatalogError(f"{path}: line {line}: {where}not UTF-8 text (byte 0x{data[exc.start]:02x}): "
                           "save the catalog as UTF-8") from None
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_nodes(node, len(text))
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{path}: {line}YAML syntax error: {problem}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: the catalog must be a mapping with 'images'")
    _resolve_repo_paths(raw, path.parent)
    try:
        catalog = Catalog.model_validate({**raw, "path": path})
    except ValidationError as exc:
        # An unknown field (a typo) often causes the other errors, e.g. a missing `layer` for `layr`.
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CatalogError(f"{path}: {_where(err['loc'])}: {_message(err)}{more}") from None
    _check_graph(catalog)
    return catalog


def _resolve_repo_paths(raw: dict, base: Path) -> None:
    """A relative local repo path is relative to the catalog file, like template paths."""
    repos = raw.get("repos")
    if not isinstance(repos, dict):
        return
    for spec in repos.values():
        url = spec.get("url") if isinstance(spec, dict) else None
        if isinstance(url, str) and url and not url.startswith(("/", "-")) and not re.match(r"^[\w.+@-]+:", url) \
                and not _BAD_URL.search(url):
            spec["url"] = str((base / url).resolve())


def _check_graph(catalog: Catalog) -> None:
    def fail(image: str, field: str, msg: str):
        raise CatalogError(f"{catalog.path}: image {image!r}, field {field!r}: {msg}")

    if not catalog.images:
        raise CatalogError(f"{catalog.path}: field 'images': the catalog defines no images")
    content_found: dict[str, str | None] = {}  # path -> why it cannot be content
    for name, img in catalog.images.items():
        if not re.match(_NAME, name):
            fail(name, "(name)", "image names are lower-case letters, digits and '-' (an asset key and AMI name)")
        if img.layer is Layer.vendor:
            if img.template:
                fail(name, "template", "a vendor image is looked up, not built: remove its template")
            if img.parent:
                fail(name, "parent", "a vendor image has no parent")
            if not img.vendor:
                fail(name, "vendor", "a vendor image needs a vendor query (owners, name)")
            if img.channels != ["latest"]:
                fail(name, "channels", "a vendor image is looked up, not built: nothing publishes it to a channel")
            if img.distribute:
                fail(name, "distribute", "a vendor image is looked up, not built: nothing copies it")
            continue
        if img.vendor:
            fail(name, "vendor", f"only vendor images have a vendor query (layer is {img.layer.value})")
        if not img.parent:
            fail(name, "parent", f"a {img.layer.value} image needs a parent")
        if img.parent not in catalog.images:
            fail(name, "parent", f"unknown parent {img.parent!r}")
        if not img.template:
            fail(name, "template", f"a {img.layer.value} image needs a template")
        for repo in img.repos:
            if repo not in catalog.repos:
                fail(name, "repos", f"unknown repo {repo!r} (known: {', '.join(catalog.repos) or 'none'})")
        match = _REPO_TEMPLATE.match(img.template)
        if match and not (catalog.root_dir / img.template).exists() and match.group(1) not in catalog.repos:
            fail(name, "template", f"unknown repo {match.group(1)!r} in {img.template!r}")
        for field, keys in (("variables", img.variables), ("secrets", img.secrets)):
            for var in keys:
                if var in templates.INJECTED:
                    fail(name, f"{field}.{var}", f"{var!r} is injected by the build; a catalog variable may not "
                                                 f"reuse an injected name ({', '.join(templates.INJECTED)})")
        for key in img.content:
            repo, rel = catalog.content_ref(name, key)
            if repo and repo not in catalog.input_repos(name):
                fail(name, f"content.{key}", f"repo {repo!r} is not an input of this image "
                                             f"(inputs: {', '.join(catalog.input_repos(name)) or 'none'})")
            source = img.content[key]
            if source not in content_found:  # most images share their content paths
                content_found[source] = _content_problem(catalog.root_dir, repo, rel)
            if content_found[source]:
                fail(name, f"content.{key}", content_found[source])
        if img.compliance and img.compliance.tailoring and not (catalog.root_dir / img.compliance.tailoring).is_file():
            fail(name, "compliance.tailoring", f"{(catalog.root_dir / img.compliance.tailoring).resolve()} does not exist")
        if img.layer is Layer.vendor and img.tests:
            fail(name, "tests", "a vendor image is looked up, not built: its tests would never run")
        if img.layer is Layer.vendor and img.var_files:
            fail(name, "var_files", "a vendor image is looked up, not built: it has no template to pass var-files to")
    acyclic: set[str] = set()  # each image's chain is walked up to the first image known to end at a root
    for name in catalog.images:
        path, on_path, node = [], set(), name
        while node and node not in acyclic:
            if node in on_path:
                fail(name, "parent", "cycle: " + " -> ".join(path + [node]))
            path.append(node)
            on_path.add(node)
            node = catalog.images[node].parent
        acyclic.update(path)
    for name in catalog.images:
        if catalog.depth(name) > MAX_DEPTH:
            fail(name, "parent", f"{catalog.depth(name)} ancestors: a parent chain may be at most {MAX_DEPTH} deep")
    for name, img in catalog.images.items():
        if img.parent and LAYER_RANK[img.layer.value] < LAYER_RANK[catalog.images[img.parent].layer.value]:
            fail(name, "layer", f"a {img.layer.value} image cannot sit on {img.parent!r} "
                                f"({catalog.images[img.parent].layer.value}): layers go vendor > global > product > service")
    dirs = _template_dirs(catalog)
    with templates.read_once():
        _check_target(catalog, dirs)
        _check_templates(catalog, dirs, fail)
    used = {repo for name in catalog.images for repo in catalog.input_repos(name)}
    for repo in catalog.repos:
        if repo not in used:
            raise CatalogError(f"{catalog.path}: repo {repo!r}, field 'repos': no image uses this repo")


def _content_problem(root: Path, repo: str | None, rel: str) -> str | None:
    """Why a `content` path cannot be read (None when it can): it must be a path under the catalog's
    directory, links followed, or "<repo>:<path>" inside an input repo's checkout."""
    where = (f"content comes from a path under {root} (this catalog's directory), or '<repo>:<path>' in one of "
             "the image's input repos")
    if repo is not None:
        if rel.startswith("/") or ".." in Path(rel).parts:
            return f"{rel!r} leaves the checkout of repo {repo!r}: {where}"
        return None
    top, found = root.resolve(), (root / rel).resolve()
    if not found.is_relative_to(top):
        return f"{rel!r} is {found}, outside the catalog's tree: {where}"
    if not found.exists():
        return f"{found} does not exist"
    for folder, dirs, files in os.walk(found) if found.is_dir() else ():
        for entry in dirs + files:  # the build reads through links: each must stay in the tree
            link = Path(folder) / entry
            if link.is_symlink() and not link.resolve().is_relative_to(top):
                return f"{link} links to {link.resolve()}, outside the catalog's tree: {where}"
    return None


def _template_dirs(catalog: Catalog) -> dict[str, Path | None]:
    """image -> Catalog.template_dir, resolved once per distinct template: images share a few
    templates, and a realpath for each of 1,000 images took ~0.05 s of a load."""
    by_template: dict[str | None, Path | None] = {}
    dirs = {}
    for name, img in catalog.images.items():
        if img.template not in by_template:
            by_template[img.template] = catalog.template_dir(name)
        dirs[name] = by_template[img.template]
    return dirs


def _check_templates(catalog: Catalog, dirs: dict[str, Path | None], fail) -> None:
    """Each local template against the catalog variables of every image built from it."""
    present: dict[Path, bool] = {}
    for name, img in catalog.images.items():
        template_dir = dirs[name]
        if template_dir is None or img.layer is Layer.vendor:
            continue  # a repo template is read after checkout, at build time
        if template_dir not in present:
            present[template_dir] = template_dir.is_dir() and any(template_dir.glob("*.pkr.hcl"))
        if not present[template_dir]:
            fail(name, "template", f"template directory {template_dir} does not exist or holds no *.pkr.hcl")
        try:
            templates.declared_variables(template_dir)
        except templates.TemplateError as exc:
            catalog.template_errors[name] = f"image {name!r}, field 'template': {exc}"
            logging.getLogger(__name__).warning("%s: %s (this image and its descendants will fail)",
                                                catalog.path, catalog.template_errors[name])
            continue
        check_variables(catalog.path, name, img, template_dir)


def _check_target(catalog: Catalog, dirs: dict[str, Path | None]) -> None:
    """What the target needs of each image: a vendor lookup of its kind; for local, a template
    with a docker source (the Windows templates have none: docker runs no Windows images here)."""
    target = catalog.target
    docker_source: dict[Path, bool] = {}  # per template directory, not per image
    for name, img in catalog.images.items():
        if img.distribute and target == "local":
            raise CatalogError(f"{catalog.path}: image {name!r}, field 'distribute': target 'local' keeps images in "
                               "the local docker daemon, which has no regions or accounts to copy to: remove "
                               "distribute, or build this catalog on sandbox or aws")
        if img.distribute and catalog.defaults.region in img.distribute.regions:
            raise CatalogError(f"{catalog.path}: image {name!r}, field 'distribute.regions': "
                               f"{catalog.defaults.region!r} is where the image is built (defaults.region), not a copy")
        if img.vendor and target == "local" and not img.vendor.image:
            raise CatalogError(f"{catalog.path}: image {name!r}, field 'vendor.image': target 'local' looks vendor "
                               "images up in the local docker daemon: set vendor.image (an image reference)")
        if img.vendor and target != "local" and img.vendor.owners is None:
            raise CatalogError(f"{catalog.path}: image {name!r}, field 'vendor': target {target!r} looks vendor "
                               "images up in EC2: set vendor.owners and vendor.name")
        template_dir = dirs[name]
        if target != "local" or img.layer is Layer.vendor or template_dir is None or not template_dir.is_dir():
            continue
        if template_dir not in docker_source:
            text = "".join(p.read_text(errors="replace") for p in template_dir.glob("*.pkr.hcl"))
            docker_source[template_dir] = bool(re.search(r'source\s+"docker"\s+"local"', text))
        if not docker_source[template_dir]:
            raise CatalogError(f"{catalog.path}: image {name!r}, field 'template': target 'local' builds with the "
                               f"docker.local source, which {template_dir} does not define (Windows templates have "
                               "none: Windows images build on sandbox or aws, not in docker)")


def check_variables(path: Path, name: str, img: Image, template_dir: Path) -> None:
    """Catalog variables and secrets against what the template declares: a load-time error, not a
    packer failure. The first problem is raised, with the count of the others."""
    try:
        declared = templates.declared_variables(template_dir)
    except templates.TemplateError as exc:
        raise CatalogError(f"{path}: image {name!r}, field 'template': {exc}") from None
    problems = []
    set_by_files: set[str] = set()
    for file in img.var_files:
        found = (template_dir / file).resolve()
        if not found.is_relative_to(template_dir.resolve()):
            problems.append(("var_files", f"{file!r} is {found}, outside the template directory {template_dir}"))
        elif not found.is_file():
            problems.append(("var_files", f"{file!r}: {found} does not exist (var-files are relative to the template directory)"))
        else:
            try:
                set_by_files |= templates.var_file_variables(found)
            except templates.TemplateError as exc:
                problems.append(("var_files", str(exc)))
    for field, keys in (("variables", img.variables), ("secrets", img.secrets)):
        problems += [(f"{field}.{var}", f"template {template_dir} declares no variable {var!r}")
                     for var in keys if var not in declared]
    for var, value in img.variables.items():
        mismatch = var in declared and type_mismatch(value, declared[var].type)
        if mismatch and declared[var].sensitive:  # never quote a sensitive value
            problems.append((f"variables.{var}", f"the template declares {var!r} as {declared[var].type} (sensitive); "
                                                 "the catalog's value does not fit that type"))
        elif mismatch:
            problems.append((f"variables.{var}", f"the template declares {var!r} as {declared[var].type}: {var}{mismatch}"))
    for var in img.secrets:
        kind = declared[var].type.partition("(")[0] if var in declared else "string"
        if kind not in ("string", "map", "object"):
            problems.append((f"secrets.{var}", f"the template declares {var!r} as {declared[var].type}; a secret "
                                               "must be a string, map or object variable (a map or object takes JSON)"))
    required = sorted(v.name for v in declared.values() if not v.has_default and v.name not in templates.INJECTED
                      and v.name not in img.variables and v.name not in img.secrets and v.name not in set_by_files)
    if required:
        problems.append(("variables", f"template {template_dir} requires {', '.join(map(repr, required))} "
                                      "(no default): set them under variables or secrets, or in a var-file under var_files"))
    missing = sorted(templates.content_names(template_dir) - set(img.content))
    if missing:
        problems.append(("content", f"template {template_dir} reads {', '.join(map(repr, missing))} from "
                                    "var.content_dirs: name where each comes from under content (a path or '<repo>:<path>')"))
    if problems:
        field, msg = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CatalogError(f"{path}: image {name!r}, field {field!r}: {msg}{more}")


def _split(text: str) -> list[str]:
    """Top-level comma-separated parts of a type expression's arguments."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [p for p in parts + [text[start:]] if p]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return {list: "a list", dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def type_mismatch(value: Any, hcl_type: str) -> str | None:
    """Why a YAML value does not fit an HCL type expression (whitespace removed), as
    "<path> is <what>, not a <kind>"; None when it fits or the type is one we do not know."""
    kind, _, rest = hcl_type.partition("(")
    inner = rest[:-1]
    if kind == "string":
        if isinstance(value, str):
            return None
        hint = ""
        if value is not None and not isinstance(value, (list, dict)):
            hint = "; quote it (YAML reads an unquoted 1.30 as the number 1.3, yes as true, 2024-01-01 as a date)"
        return f" is {_describe(value)}, not a string{hint}"
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f" is {_describe(value)}, not a number"
    if kind == "bool":
        return None if isinstance(value, bool) else f" is {_describe(value)}, not a bool"
    if kind in ("list", "set", "tuple"):
        if not isinstance(value, list):
            return f" is {_describe(value)}, not a list"
        items = _split(inner[1:-1]) if kind == "tuple" else [inner] * len(value)
        if len(items) != len(value):
            return f" has {len(value)} items, not {len(items)}"
        return next((f"[{i}]{m}" for i, (item, t) in enumerate(zip(value, items)) if (m := type_mismatch(item, t))), None)
    if kind in ("map", "object"):
        if not isinstance(value, dict):
            return f" is {_describe(value)}, not a mapping"
        if kind == "map":
            attrs = {key: inner for key in value}
        else:
            attrs = dict(part.partition("=")[::2] for part in _split(inner[1:-1]))
            missing = [key for key in attrs if key not in value]
            if missing:
                return f" has no attribute {missing[0]!r}"
        return next((f".{key}{m}" for key, t in attrs.items() if key in value and (m := type_mismatch(value[key], t))), None)
    return None  # any, or an expression we do not parse: packer judges it
