"""The allocation commands of the CLI: reserve, release, reservations, allocate-address, pools, history."""

import time

from ..clientlib import durations
from .commands import output_format, parse_json_object
from .output import write_item, write_items
from .status import UsageError


def parse_duration(text, option="--lease"):
    """Return seconds from "90", "90s", "30m", "2h", "1d" (or "1h30m"). Raises UsageError naming `option`."""
    try:
        return durations.seconds(text)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None


def _write_names(names, env):
    for name in names:
        env.stdout.write(f"{name}\n")


def cmd_reserve(client, args, env):
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    where = parse_json_object(args.where, "--where") if args.where else None
    lease = parse_duration(args.lease) if args.lease else None
    wait = parse_duration(args.wait, "--wait") if args.wait else None
    heartbeat = parse_duration(args.heartbeat, "--heartbeat") if args.heartbeat else None
    progress = _show_place(env) if wait and env.stderr_isatty else None
    result = client.reserve(args.count, where=where, owner=args.owner, job_id=args.job_id,
                            lease_seconds=lease, reason=args.reason, dry_run=args.dry_run,
                            idempotency_key=args.idempotency_key, wait=wait, on_progress=progress,
                            heartbeat_seconds=heartbeat)
    if progress is not None and progress.since is not None:
        env.error(f"granted after {time.monotonic() - progress.since:.0f} s in line")
    fmt = output_format(args, env)
    if fmt == "plain":
        _write_names(result.get("would_reserve" if args.dry_run else "hostnames", []), env)
    elif fmt == "id":
        _write_names([result["_id"]] if result.get("_id") else [], env)
    else:
        write_item(result, env.stdout, fmt)


def _show_place(env):
    """Return the progress callback of reserve --wait: the place in line, on stderr, when it changes."""
    def show(res):
        if show.since is None:
            show.since = time.monotonic()
        count = res.get("count")
        place = res.get("position")
        where = f"place {place} in line" if place is not None else "in line"
        until = f", until {res['wait_until']}" if res.get("wait_until") else ""
        env.error(f"waiting for {count} machine{'s' if count != 1 else ''}: {where} "
                  f"(reservation {res.get('_id')}{until}; Ctrl-C cancels)")
    show.since = None
    return show


def cmd_release(client, args, env):
    if bool(args.reservation) == bool(args.job_id):
        raise UsageError("release needs a RESERVATION id or --job-id (one of them)")
    result = client.release(args.reservation, job_id=args.job_id)
    fmt = output_format(args, env)
    if fmt == "plain":
        _write_names(result.get("released", []), env)
    else:
        write_item(result, env.stdout, fmt)
    if env.stderr_isatty or fmt == "plain":
        if result.get("state") in ("cancelled", "timed_out"):
            # A request still waiting in line: DELETE cancels it; nothing was held.
            env.note(f"reservation {args.reservation} is {result['state']}: it no longer waits in line")
        else:
            env.note(f"released {len(result.get('released', []))} machine(s)")


def cmd_extend(client, args, env):
    result = client.extend(args.reservation, parse_duration(args.lease))
    write_item(result, env.stdout, output_format(args, env))


def cmd_reservations(client, args, env):
    items = client.reservations(job_id=args.job_id, owner=args.owner, state=args.state)
    if args.state == "queued":
        # The queue, in arrival order: the place in line, who waits, for how many, on what, since when.
        for place, item in enumerate(items, 1):
            item.setdefault("position", place)
        columns = ["position", "_id", "owner", "job_id", "count", "where", "queued_at", "wait_until"]
    else:
        columns = ["_id", "owner", "job_id", "count", "state", "expires", "hostnames"]
    write_items(items, env.stdout, output_format(args, env), columns)


def cmd_allocate_address(client, args, env):
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    result = client.allocate_address(args.pool, args.count, owner=args.owner, idempotency_key=args.idempotency_key)
    fmt = output_format(args, env)
    if fmt == "plain":
        _write_names(result.get("addresses", []), env)
    else:
        write_item(result, env.stdout, fmt)


def cmd_pools(client, args, env):
    pools = client.pools()
    fmt = output_format(args, env)
    for pool in pools if fmt != "json" else ():
        usage = pool.get("utilisation") or {}
        for key in ("size", "allocated", "free"):
            pool.setdefault(key, usage.get(key))
    write_items(pools, env.stdout, fmt, ["name", "kind", "cidr", "size", "allocated", "free"])


def cmd_history(client, args, env):
    items = client.history(args.name)
    write_items(items, env.stdout, output_format(args, env), ["at", "user", "action", "changes", "reason", "job_id"])


HANDLERS = {
    "reserve": cmd_reserve, "release": cmd_release, "extend": cmd_extend, "reservations": cmd_reservations,
    "allocate-address": cmd_allocate_address, "pools": cmd_pools, "history": cmd_history,
}
