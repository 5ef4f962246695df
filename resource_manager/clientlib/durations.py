"""Durations as people write them: "90" or "90s", "30m", "2h", "1d", "1h30m" (rmctl, the pytest plugin)."""

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: object) -> int:
    """Return the whole seconds of a duration ("90", "90s", "30m", "2h", "1d", "1h30m"). Raises ValueError."""
    compact = re.sub(r"\s", "", str(text).lower())
    if not re.fullmatch(r"(\d+[smhd]?)+", compact):
        raise ValueError(f"expected a duration like 90s, 30m, 2h or 1d, got {compact!r}")
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd]?)", compact))
