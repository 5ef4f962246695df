"""Strict JSON: what every JSON parser of ours accepts, and values the database can store.

No Flask here: the routes, the constraint checks and the dashboard all parse through this.
"""

import json
import math

# Deeper documents are refused: no real one comes close, and every layer below recurses.
MAX_DEPTH = 32
# The database stores 64-bit integers; a larger one fails deep in the BSON encoder.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _BadJSON(ValueError):
    """JSON that parses but that no client should send (NaN, duplicate keys)."""


def _no_constants(name):
    # NaN and Infinity are not JSON; the database drops the connection on them.
    raise _BadJSON(f"contains {name}, which is not JSON")


def _finite(text):
    # 1e999 parses to inf without passing through parse_constant.
    value = float(text)
    if not math.isfinite(value):
        raise _BadJSON(f"contains the number {text[:40]}, which is out of range")
    return value


def _int64(text):
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _BadJSON(f"contains the integer {text[:40]}{'...' if len(text) > 40 else ''}, "
                       "which does not fit in 64 bits")
    return value


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _BadJSON(f"has the key '{key}' twice in one object")
        seen[key] = value
    return seen


def loads_strict(text):
    """Parse JSON refusing NaN/Infinity (also 1e999), integers beyond 64 bits, duplicate keys,
    lone surrogates, NUL in keys and deep nesting: every JSON parser of ours goes through here.

    Raises ValueError whose message completes "<what> ...", e.g. "is not valid JSON: ...".
    """
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite, parse_int=_int64,
                           object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError(f"is nested too deeply (more than {MAX_DEPTH} levels)") from None
    except _BadJSON as e:
        raise ValueError(str(e)) from None
    except ValueError as e:
        raise ValueError(f"is not valid JSON: {e}") from None
    check_value(value)
    return value


def check_value(value):
    """Refuse a value the database cannot take: too deep, NUL in a key or a string, a lone surrogate,
    an integer beyond 64 bits, NaN or infinity. Raises ValueError completing "<what> ...".
    """
    # Iterative, so that depth is measured rather than hit as a RecursionError later
    # (Eve's ETag and the BSON encoder recurse once per level).
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"is nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            for key in item:
                if "\0" in key:
                    raise ValueError(f"has a key with a NUL character ({key[:40]!r})")
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("contains a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
            if "\0" in item:  # PostgreSQL's jsonb, behind the embedded database, cannot hold one
                raise ValueError("contains a NUL character (\\u0000) in a string")
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError("contains an integer that does not fit in 64 bits")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"contains {item}, which is not a number JSON or the database can hold")
