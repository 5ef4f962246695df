"""Address arithmetic for pools: usable ranges, exclusions, sortable keys, lowest free first."""

import bisect
import ipaddress


def ipkey(address):
    """Return a text key of an address that sorts like the address (v4 before v6)."""
    ip = ipaddress.ip_address(address)
    return f"{ip.version}:{int(ip):032x}"


# At most this many `exclude` entries per pool: each is parsed once, at write time.
MAX_EXCLUDE = 1024


def parse_pool(cidr, exclude, max_entries=None):
    """Return (network, exclude_ranges, issues) for a pool definition.

    exclude_ranges is a sorted, merged list of (first, last) integers: the
    default exclusions (see default_exclusions) plus each entry of `exclude`,
    which may be an address, a range "a-b" or a CIDR inside the pool.
    """
    issues = {}
    if "%" in str(cidr):
        return None, None, {"cidr": "an IPv6 zone id ('%...') names an interface, not a network: leave it out"}
    try:
        network = ipaddress.ip_network(str(cidr).strip(), strict=True)
    except ValueError as e:
        return None, None, {"cidr": f"not an IPv4 or IPv6 network: {e}"}
    if not isinstance(exclude, list):
        return network, None, {"exclude": "must be a list of addresses, ranges a-b or CIDRs"}
    if max_entries is not None and len(exclude) > max_entries:
        return network, None, {"exclude": f"at most {max_entries} entries (ranges a-b and CIDRs count as one)"}
    ranges = default_exclusions(network)
    for entry in exclude:
        try:
            first, last = _parse_range(entry)
        except (ValueError, TypeError) as e:
            issues["exclude"] = f"'{entry}': {e}"
            break
        if first.version != network.version or first not in network or last not in network:
            issues["exclude"] = f"'{entry}' is not inside {network}"
            break
        ranges.append((int(first), int(last)))
    return network, merge(ranges), issues


def _parse_range(entry):
    if not isinstance(entry, str):
        raise TypeError("must be a string")
    entry = entry.strip()
    if "%" in entry:
        raise ValueError("an IPv6 zone id ('%...') names an interface, not an address: leave it out")
    if "/" in entry:
        net = ipaddress.ip_network(entry, strict=True)
        return net[0], net[-1]
    if "-" in entry:
        a, b = (ipaddress.ip_address(part.strip()) for part in entry.split("-", 1))
        if a.version != b.version or int(a) > int(b):
            raise ValueError("a range runs from the lower address to the higher")
        return a, b
    ip = ipaddress.ip_address(entry)
    return ip, ip


def _address(network, n):
    return ipaddress.IPv4Address(n) if network.version == 4 else ipaddress.IPv6Address(n)


def normalise(network, exclude, max_entries=MAX_EXCLUDE):
    """Return ({"cidr", "exclude", "ranges"}, issues): a pool's stored form, computed once at write time.

    `exclude` becomes the caller's entries merged into sorted ranges ("a" or "a-b"); `ranges` holds
    every excluded range (the conventional ones too) as "first-last" in 32 hex digits each (IPv6
    addresses do not fit a 64-bit integer, and the embedded database stores no nested arrays),
    so that reading a pool parses nothing but its CIDR.
    """
    _network, excluded, issues = parse_pool(str(network), exclude, max_entries)
    if issues:
        return None, issues
    own = merge([_parse_ints(entry) for entry in exclude])  # each entry checked by parse_pool
    texts = [str(_address(network, a)) if a == b else f"{_address(network, a)}-{_address(network, b)}"
             for a, b in own]
    return {"cidr": str(network), "exclude": texts,
            "ranges": [f"{a:032x}-{b:032x}" for a, b in excluded]}, {}


def _parse_ints(entry):
    first, last = _parse_range(entry)
    return int(first), int(last)


def stored_ranges(pool):
    """Return (network, excluded ranges) of a stored pool, from its stored ranges (no parsing of exclusions).

    Pools stored before exclusions were normalised have no `ranges`: parsed as they were.
    """
    network = ipaddress.ip_network(pool["cidr"])
    ranges = pool.get("ranges")
    if ranges is None:
        return network, parse_pool(pool["cidr"], pool.get("exclude") or [])[1]
    return network, [(int(r[:32], 16), int(r[33:], 16)) for r in ranges]


def default_exclusions(network):
    """Return the addresses a pool never hands out by convention.

    IPv4 up to /30: the network address, the broadcast address and the first
    host (the gateway). /31 and /32 (RFC 3021 point-to-point, single host):
    nothing. IPv6: the network address (the subnet-router anycast address,
    RFC 4291) and the first host (the gateway).
    """
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.version == 4:
        if network.prefixlen >= 31:
            return []
        return [(first, first + 1), (last, last)]
    if network.prefixlen >= 127:
        return []
    return [(first, first + 1)]


def merge(ranges):
    """Return sorted, non-overlapping (first, last) ranges covering `ranges`."""
    merged = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def size(network, excluded):
    """Return how many addresses of the pool may be handed out."""
    return network.num_addresses - sum(last - first + 1 for first, last in excluded)


def count_usable(numbers, excluded):
    """Return how many of the sorted integer addresses `numbers` lie outside the exclusions."""
    starts = [first for first, _ in excluded]
    count = 0
    for n in numbers:
        i = bisect.bisect_right(starts, n) - 1
        if i < 0 or n > excluded[i][1]:
            count += 1
    return count


class Runs:
    """A sorted set of integers kept as sorted, disjoint (first, last) runs; iterating yields the integers."""

    def __init__(self, runs):
        self.runs = runs

    def __iter__(self):
        for first, last in self.runs:
            yield from range(first, last + 1)

    def __len__(self):
        return sum(last - first + 1 for first, last in self.runs)


def runs_of(numbers):
    """Return the (first, last) runs of sorted integers, in one pass."""
    if isinstance(numbers, Runs):
        return list(numbers.runs)
    runs = []
    for n in numbers:
        if runs and n <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(n, runs[-1][1]))
        else:
            runs.append((n, n))
    return runs


def free_addresses(network, excluded, taken):
    """Yield the pool's free addresses, lowest first, skipping exclusions and `taken`.

    `taken` is a sorted list of integers, or Runs. Cost is O(len(taken) + len(excluded))
    (O(runs) for Runs) plus the addresses yielded: a crowded /16 is never walked one by one.
    """
    blocked = merge(list(excluded) + runs_of(taken))
    n, last = int(network.network_address), int(network.broadcast_address)
    for first, end in blocked:
        while n < first and n <= last:
            yield ipaddress.ip_address(n) if network.version == 4 else ipaddress.IPv6Address(n)
            n += 1
        n = max(n, end + 1)
    while n <= last:
        yield ipaddress.ip_address(n) if network.version == 4 else ipaddress.IPv6Address(n)
        n += 1


def key_bounds(network):
    """Return the (lowest, highest) ipkey of a network, for range queries on claims."""
    return ipkey(network.network_address), ipkey(network.broadcast_address)


def from_key(key):
    """Return the integer address of an ipkey."""
    return int(key.split(":", 1)[1], 16)
