"""Deterministic nuScenes tokens: 32 lowercase hex digits derived from stable ids.

The same stable ids always give the same token, so rebuilding a dataset reproduces its JSON byte for
byte, and records built in different merges never collide unless they describe the same thing.
"""

from __future__ import annotations

import hashlib
import json
import re

TOKEN_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def make_token(kind: str, *stable_parts: object) -> str:
    """Token of the `kind` record identified by stable_parts, e.g. make_token('log', 'log-0001').

    The parts are turned into strings and encoded unambiguously (a JSON list), so ('a:b', 'c') and
    ('a', 'b:c') give different tokens. The result is the MD5 hex digest: 32 lowercase hex digits.
    """
    text = json.dumps([str(kind), *(str(part) for part in stable_parts)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def is_token(value: object) -> bool:
    """Whether value looks like one of our tokens (32 lowercase hex digits)."""
    return isinstance(value, str) and TOKEN_PATTERN.match(value) is not None
