"""What a secret can look like once a shell has printed it or it was split, beyond the encodings
the redactor derives from each text (image_assets.packer.encodings).

- dash (`/bin/sh` on Debian, so most provisioners' shell) interprets backslashes in `echo` and
  in `printf '%b'` (one routine for both): `\\t`, `\\n`, `\\\\`, octal `\\0nnn` and `\\nnn`, and
  `\\c` ends the output.
- A value printed in pieces, or partly rewritten, is masked by its long runs: every maximal run
  of RUN or more characters between the characters packer, JSON or a shell may rewrite.
- A JSON object or array (a map secret's text) is also masked leaf by leaf; its runs are its
  leaves' runs, as its keys are not secret.
"""

from __future__ import annotations

import itertools
import json
import os
import re

RUN = 8  # shorter runs of a secret are not masked on their own: they would mask ordinary words
REWRITABLE = re.compile(r'[,"\\%\r\n]')
# Octal (`\0` then 1-3 digits, or 1-3 digits), `\c`, or a named escape; others print as written.
_DASH_ESCAPE = re.compile(rb"\\(?:0([0-7]{1,3})|([0-7]{1,3})|(c)|([\\abfnrtv]))")
_DASH_NAMED = {b"\\": b"\\", b"a": b"\a", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def shell_printed(text: str) -> str:
    """What dash's `echo` (less its newline) and `printf '%b'` print for `text`, decoded as the
    packer runner decodes output (UTF-8, undecodable bytes replaced)."""
    data = text.encode("utf-8", "surrogateescape")
    out, start = bytearray(), 0
    for match in _DASH_ESCAPE.finditer(data):
        out += data[start:match.start()]
        start = match.end()
        octal, stop, named = match.group(1) or match.group(2), match.group(3), match.group(4)
        if stop:
            return out.decode("utf-8", "replace")
        out += bytes([int(octal, 8) & 0xFF]) if octal else _DASH_NAMED[named]
    return (out + data[start:]).decode("utf-8", "replace")


def printed(secret: str) -> set[str]:
    """The texts a secret can be printed as, each to be masked in every encoding: as it is and as
    dash prints it, a JSON container's leaves likewise, and each line of all these (packer
    prints a provisioner's output line by line)."""
    texts = {secret, *_run_sources(secret)}
    texts |= {shell_printed(text) for text in texts}
    return texts | {line for text in texts for line in text.splitlines()}


def runs(secret: str) -> set[str]:
    """Every maximal run of RUN or more characters (less surrounding blanks) between rewritable
    characters, in the secret as it is, as dash prints it and JSON-escaped."""
    texts = set()
    for text in _run_sources(secret):
        for shown in (text, shell_printed(text)):
            texts |= {shown, json.dumps(shown)[1:-1], json.dumps(shown, ensure_ascii=False)[1:-1]}
    return {run.strip() for text in texts for run in REWRITABLE.split(text) if len(run.strip()) >= RUN}


def alternation(forms) -> str:
    """A regex matching any of `forms`, the longest at each position, as a prefix tree: at each
    position the regex engine follows one branch per character instead of trying every form (with
    a few hundred forms, a flat alternation masked a line over ten times slower)."""
    words = sorted(set(forms))
    branches = []
    for _, group in itertools.groupby((w for w in words if w), key=lambda w: w[0]):
        group = list(group)
        prefix = os.path.commonprefix(group)
        branches.append(re.escape(prefix) + alternation([w[len(prefix):] for w in group]))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Greedy: a longer form through this point wins over one that ends here.
    return f"(?:{body})?" if "" in words else body


def leaves(value) -> list[str]:
    """The scalar values inside a value: a sensitive map or list is printed item by item."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in leaves(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in leaves(v)]
    return [] if value is None else [scalar_text(value)]


def scalar_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _run_sources(secret: str) -> set[str]:
    """The secret, or for a JSON object or array its leaves."""
    try:
        value = json.loads(secret)
    except ValueError:
        return {secret}
    return set(leaves(value)) if isinstance(value, (dict, list)) else {secret}
