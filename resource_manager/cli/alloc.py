"""The allocation commands of the CLI: reserve, release, reservations, allocate-address, pools, history."""

import json
import time

from ..clientlib import durations
from ..schema import natural_key
from .command import Command, idempotency_option, output_option
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
    for name in sorted(names, key=natural_key):  # n2 before n10
        env.stdout.write(f"{name}\n")


def cmd_reserve(client, args, env):
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    where = parse_json_object(args.where, "--where") if args.where else None
    lease = parse_duration(args.lease) if args.lease else None
    wait = parse_duration(args.wait, "--wait") if args.wait else None
    heartbeat = parse_duration(args.heartbeat, "--heartbeat") if args.heartbeat else None
    progress = _show_place(env) if wait and env.stderr_isatty else None
    if args.priority is not None and not 0 <= args.priority <= 100:
        raise UsageError("--priority must be from 0 to 100")
    result = client.reserve(args.count, where=where, owner=args.owner, job_id=args.job_id,
                            lease_seconds=lease, reason=args.reason, dry_run=args.dry_run,
                            idempotency_key=args.idempotency_key, wait=wait, on_progress=progress,
                            priority=args.priority, heartbeat_seconds=heartbeat)
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


def cmd_why(client, args, env):
    res = client.reservation(args.reservation)
    if output_format(args, env) == "json":
        write_item(res, env.stdout, "json")
        return
    env.stdout.write(explain_reservation(res))


def explain_reservation(res):
    """Return, for a person, why a reservation waits and when it will run, or where it stands."""
    count = res.get("count")
    what = f"reservation {res.get('_id')} for {count} machine{'s' if count != 1 else ''}"
    who = ", ".join(f"{k} {res[k]}" for k in ("job_id", "owner") if res.get(k))
    lines = [f"{what}{f' ({who})' if who else ''}: {res.get('state')}"]
    state = res.get("state")
    if state == "queued":
        lines.append(f"  place {res.get('position')} in line, priority {res.get('priority')}, "
                     f"queued at {res.get('queued_at')}, waits until {res.get('wait_until')}")
        eta = res.get("eta")
        lines.append(f"  starts: by {eta}, unless the leases it waits for are extended" if eta else
                     "  starts: cannot be known yet")
        if res.get("why"):
            lines.append(f"  why: {res['why']}")
        blocked = res.get("blocked_by") or {}
        for held in blocked.get("reservations", []):
            lines.append(f"  waits for {held['_id']}, whose lease ends {held.get('expires') or 'when released'}")
        if blocked.get("requests"):
            lines.append(f"  behind: {', '.join(blocked['requests'])}")
    elif state == "active":
        lines.append(f"  hosts: {' '.join(res.get('hostnames') or [])}")
        lines.append(f"  granted at {res.get('granted_at')}, lease ends {res.get('expires')}"
                     + (f", next heartbeat due by {res['heartbeat_due']}" if res.get("heartbeat_due") else ""))
    elif state == "pending":
        lines.append("  being made or granted right now")
    else:
        ended = f" at {res['ended']}" if res.get("ended") else ""
        lines.append(f"  ended{ended}" + (f": {res['end_reason']}" if res.get("end_reason") else ""))
    return "\n".join(lines) + "\n"


def cmd_reservations(client, args, env):
    items = client.reservations(job_id=args.job_id, owner=args.owner, state=args.state)
    if args.state == "queued":
        # The queue, in arrival order: the place in line, who waits, for how many, on what, since when.
        for place, item in enumerate(items, 1):
            item.setdefault("position", place)
        columns = ["position", "_id", "owner", "job_id", "count", "priority", "where", "queued_at", "eta"]
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
    fmt = output_format(args, env)
    if fmt == "table":
        # As the dashboard shows them: one line per field, "state: idle → needs_repair".
        arrow, none = ("→", "—") if _can_write(env.stdout, "→—") else ("->", "-")
        items = [dict(item, changes="\n".join(
            f"{field}: {_shown(change.get('before'), none)} {arrow} {_shown(change.get('after'), none)}"
            for field, change in (item.get("changes") or {}).items()
            if isinstance(change, dict) and not field.startswith("_"))) for item in items]
    write_items(items, env.stdout, fmt, ["at", "user", "action", "changes", "reason", "job_id"])


def _shown(value, none):
    if value is None:
        return none
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value, default=str)
    return str(value)


def _can_write(stream, text):
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _reserve_arguments(p):
    p.add_argument("--count", type=int, required=True, help="how many machines")
    p.add_argument("--where", help="which machines qualify, as JSON")
    p.add_argument("--lease", help="lease length: 90s, 30m, 2h, 1d or seconds")
    p.add_argument("--job-id", help="the job the machines are for")
    p.add_argument("--owner", help="owner to record (default: your user name)")
    p.add_argument("--reason", help="free text kept in the history")
    p.add_argument("--wait", metavar="DURATION",
                   help="when not enough machines are free, wait in line this long (90s, 30m, 2h) "
                        "instead of failing; exit 7 if it runs out")
    p.add_argument("--priority", type=int, metavar="0-100",
                   help="place in the line: higher first (default 50; an operator may ask up to 50, an admin any)")
    p.add_argument("--heartbeat", metavar="DURATION",
                   help="once granted, the reservation ends by itself when no heartbeat (rmctl run --reservation, "
                        "the library's heartbeat()) comes for this long (5s to 1d)")
    p.add_argument("--dry-run", action="store_true", help="show what would be reserved, or when with --wait")
    idempotency_option(p, "reserve")
    output_option(p, extra=("plain", "id"))


def _release_arguments(p):
    p.add_argument("reservation", nargs="?", help="reservation id")
    p.add_argument("--job-id", help="release every reservation of this job")
    output_option(p, extra=("plain",))


def _extend_arguments(p):
    p.add_argument("reservation", help="reservation id")
    p.add_argument("--lease", required=True, help="new lease from now: 90s, 30m, 2h, 1d or seconds")
    output_option(p)


def _why_arguments(p):
    p.add_argument("reservation", help="reservation id")
    output_option(p)


def _reservations_arguments(p):
    p.add_argument("--job-id")
    p.add_argument("--owner")
    p.add_argument("--state", choices=("queued", "active", "released", "expired", "cancelled", "timed_out"),
                   help="queued: the queue, in arrival order")
    output_option(p)


def _allocate_address_arguments(p):
    p.add_argument("pool", help="address pool name")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--owner", help="owner to record (default: your user name)")
    idempotency_option(p, "allocation")
    output_option(p, extra=("plain",))


def _history_arguments(p):
    p.add_argument("name", help="hostname or address")
    output_option(p)


COMMANDS = (
    Command("reserve", "reserve idle machines (exclusive, with a lease)", """\
With --wait, a request that cannot be met now waits in line (by priority, then first come, first served;
see `why`) and blocks until granted, showing its place on stderr on a terminal;
exit code 7 when the wait runs out (nothing reserved); Ctrl-C cancels the queued request (exit 130).

examples:
  {prog} reserve --count 2 --lease 2h --job-id build-42
  hosts=$({prog} reserve --count 2 --wait 30m --lease 2h --job-id build-42 --format plain)
  hosts=$({prog} reserve --count 4 --where '{{"tags.cpucores": {{"$gte": 8}}}}' --format plain)
  {prog} reserve --count 2 --job-id "$BUILD_TAG" --idempotency-key "$BUILD_TAG-hosts"
  {prog} reserve --count 10 --dry-run
  RES=$({prog} reserve --count 2 --heartbeat 15m --lease 2h --format id)   # for: {prog} run --reservation ID""",
            _reserve_arguments, cmd_reserve),
    Command("release", "release a reservation, or every reservation of a job", """examples:
  {prog} release 6650c0ffee0000000000abcd
  {prog} release --job-id build-42""", _release_arguments, cmd_release),
    Command("extend", "extend the lease of a reservation", """examples:
  {prog} extend 6650c0ffee0000000000abcd --lease 4h""", _extend_arguments, cmd_extend),
    Command("why", "say why a reservation waits and when it will run (or how it ended)", """A queued reservation: its
place in line, its priority, when it will start (the latest lease end it waits for, unless those leases
are extended), the reservations holding what it waits for and the requests ahead of it. Any other: its state,
lease and how it ended.

examples:
  {prog} why 6650c0ffee0000000000abcd
  {prog} why "$RM_RESERVATION_ID" --format json""", _why_arguments, cmd_why),
    Command("reservations", "list reservations", """examples:
  {prog} reservations --state active
  {prog} reservations --state queued        # the queue: place, who, how many, constraints, since when
  {prog} reservations --job-id build-42 --format json""", _reservations_arguments, cmd_reservations),
    Command("allocate-address", "allocate free addresses from a pool", """examples:
  {prog} allocate-address lab-public
  {prog} allocate-address lab-private --count 4 --format plain""", _allocate_address_arguments,
            cmd_allocate_address),
    Command("pools", "list address pools and their utilisation", """examples:
  {prog} pools
  {prog} pools --format json""", output_option, cmd_pools),
    Command("history", "show the change history of an item, newest first", """examples:
  {prog} history a-15-r
  {prog} history 203.0.113.7 -r public-addresses""", _history_arguments, cmd_history),
)
