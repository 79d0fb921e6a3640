"""Secrets of one build: what they are, how packer gets them, what the redactor masks.

A secret is a catalog `secrets` entry (its value read from an environment variable at build
time), a catalog variable the template declares `sensitive = true` (each leaf of a map or list),
or a cloud credential in the environment. Packer gets secrets as `PKR_VAR_<name>` environment
variables, never in the JSON var-file: packer quotes the var-file's line (the whole file, it is
one line of JSON) when it rejects a value there, and says "(source code not available)" for a
value from the environment (measured on 1.6.6).

How packer 1.6.6 reads a PKR_VAR_ (measured): a string, number or bool variable, and one declared
without a type, takes the text as it is; a map, list or object variable parses it as an HCL
expression. So a map/object secret is given as JSON in its environment variable, checked here
against the declared type, and handed to packer as an HCL literal (JSON itself is not safe:
`${` in it would be a template).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from image_assets.errors import ImageAssetsError
from image_assets.packer import hcl_literal
from image_assets.secret_forms import leaves, scalar_text

ENV_PREFIX = "PKR_VAR_"
CREDENTIAL_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SCALAR_TYPES = ("string", "number", "bool")
# Packer 1.6.6 renders `{{ }}` in plugin fields after HCL has put the variables in, and some fields
# (environment_vars) twice, so the number of escapes a value needs depends on where it is used:
# a secret holding `{{` is refused, as the catalog refuses it in `variables`.
GO_TEMPLATE = "{{"
_COLLECTION = re.compile(r"^(map|list|set|object|tuple)\((.*)\)$")


class SecretError(ImageAssetsError):
    """A secret is missing or not of its variable's type; permanent. Never holds the value."""


@dataclass
class Secrets:
    env: dict[str, str] = field(default_factory=dict)  # PKR_VAR_<name> -> the text packer reads
    values: list[str] = field(default_factory=list)  # every value to mask

    @property
    def names(self) -> set[str]:
        """Variables that travel in the environment, and so stay out of the var-file."""
        return {key.removeprefix(ENV_PREFIX) for key in self.env}


def for_image(name: str, image, declared: Mapping, environ: Mapping[str, str] = os.environ) -> Secrets:
    """The secrets of one image's build: `image` is the catalog entry or the build's Resolved
    (whatever has its `secrets` and `variables`), `declared` the template's
    variables (templates.declared_variables)."""
    out = sensitive_variables(name, image, declared, environ)
    for var, secret in image.secrets.items():
        where = f"image {name!r}, field 'secrets.{var}': environment variable {secret.env}"
        raw = environ.get(secret.env)
        if raw is None:
            raise SecretError(f"{where} is not set")
        hcl_type = _type(declared, var)
        value = raw if _is_scalar(hcl_type) else _from_json(raw, hcl_type, where)
        text = _packer_text(value, hcl_type, where)
        if GO_TEMPLATE in text:
            raise SecretError(f"{where} holds '{{{{': packer would evaluate it as a Go template and the build "
                              "would get, and print, another value (as for `variables`, no escape of it "
                              "reaches every field unchanged); change the secret")
        out.env[ENV_PREFIX + var] = text
        out.values += [raw, *leaves(value)]
    return out


def sensitive_variables(name: str, image, declared: Mapping, environ: Mapping[str, str] = os.environ) -> Secrets:
    """The catalog variables the template declares sensitive, and the cloud credentials: all but
    the catalog secrets (a `packer validate` gives those placeholders)."""
    out = Secrets()
    for var, value in image.variables.items():
        if var in declared and declared[var].sensitive:
            hcl_type = _type(declared, var)
            out.env[ENV_PREFIX + var] = _packer_text(value, hcl_type, f"image {name!r}, field 'variables.{var}'")
            out.values += leaves(value)
    out.values += credential_values(environ)
    return out


def credential_values(environ: Mapping[str, str] = os.environ) -> list[str]:
    return [environ[k] for k in CREDENTIAL_ENV if environ.get(k)]


def _type(declared: Mapping, var: str) -> str:
    return declared[var].type if var in declared else "any"


def _is_scalar(hcl_type: str) -> bool:
    return hcl_type in SCALAR_TYPES or hcl_type == "any"  # 1.6.6 has no `any`: "any" means untyped


def _packer_text(value, hcl_type: str, where: str) -> str:
    if _is_scalar(hcl_type):
        if isinstance(value, (dict, list, tuple)) or value is None:
            # An untyped variable would take the text as a string: the template must say the type.
            raise SecretError(f"{where}: a {_kind(value)} for a variable declared {hcl_type}; declare its type "
                              "(map(...), list(...) or object({...})) in the template")
        return scalar_text(value)
    return hcl_literal(value)


def _from_json(raw: str, hcl_type: str, where: str):
    """A map/list/object secret's JSON, checked against the declared type; errors name the
    variable and the environment variable, never the value."""
    expect = f"must hold JSON of the template's type {hcl_type}, e.g. " + _example(hcl_type)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise SecretError(f"{where} {expect}; it is not JSON (line {exc.lineno}, column {exc.colno})") from None
    problem = _mismatch(value, hcl_type)
    if problem:
        raise SecretError(f"{where} {expect}; {problem}")
    return value


def _example(hcl_type: str) -> str:
    kind = _COLLECTION.match(hcl_type)
    return '\'{"NAME": "value"}\'' if kind and kind.group(1) in ("map", "object") else '\'["value"]\''


def _kind(value) -> str:
    if isinstance(value, dict):
        return "JSON object"
    if isinstance(value, list):
        return "JSON array"
    return "null" if value is None else f"JSON {type(value).__name__}"


def _mismatch(value, hcl_type: str, path: str = "the value") -> str | None:
    """Why a JSON value does not fit a type, naming only its shape and keys; None when it fits
    (objects' attributes and tuples' items are left to packer, whose errors name no value)."""
    match = _COLLECTION.match(hcl_type)
    if not match:
        if hcl_type in SCALAR_TYPES and (value is None or isinstance(value, (dict, list))):
            return f"{path} is a {_kind(value)}, not a {hcl_type}"
        return None
    kind, inner = match.groups()
    if kind in ("map", "object"):
        if not isinstance(value, dict):
            return f"{path} is a {_kind(value)}, not a JSON object"
        if kind == "map":
            return next((m for key, item in value.items() if (m := _mismatch(item, inner, f"{path}[{key!r}]"))), None)
        return None
    if not isinstance(value, list):
        return f"{path} is a {_kind(value)}, not a JSON array"
    if kind in ("list", "set"):
        return next((m for i, item in enumerate(value) if (m := _mismatch(item, inner, f"{path}[{i}]"))), None)
    return None
