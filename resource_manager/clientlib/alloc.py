"""Allocation calls of the client: reservations, address pools, history (see docs/reference/reservations.md)."""

import uuid
from urllib.parse import quote

from . import retry as client_retry
from . import waiting
from .errors import ReservationInterrupted


def new_idempotency_key():
    """Return a fresh Idempotency-Key: the same one goes with every retry of one call, never with another call."""
    return f"rmc-{uuid.uuid4().hex}"


PAGE_SIZE = 1000  # reservations per listing request (the server's most)


class AllocationMixin:
    """Reserve and release machines, allocate addresses, read history; needs `call` and `iter`."""

    def reserve(self, count, *, where=None, owner=None, job_id=None, lease_seconds=None, reason=None,
                idempotency_key=None, dry_run=False, wait=None, on_progress=None, priority=None):
        """Reserve `count` idle machines matching `where`; return the reservation (hostnames, expires).

        With `wait` (seconds, or a timedelta) the request waits in line when not enough are free:
        the server answers 202 with the reservation `queued`, and this call long-polls it until it
        is granted, then returns it as an immediate grant would (state `active`; the lease starts
        at the grant). `on_progress(reservation)` is called while it waits: first, then whenever
        its place in line (`position`) changes.

        Every call carries an Idempotency-Key (a new one unless given), so the retries of a call
        whose answer was lost get the same reservation back (queued or granted) instead of a
        second one.
        Raises Conflict ("requested N, M available") when not enough are free and `wait` is 0/None;
        WaitTimedOut when the wait runs out (nothing reserved), ReservationCancelled when someone
        cancels it while it waits; on Ctrl-C the queued request is cancelled, then
        ReservationInterrupted (a KeyboardInterrupt) is raised.
        """
        seconds = waiting.wait_seconds(wait)
        body = {"count": count}
        optional = {"where": where, "owner": owner or self.username, "job_id": job_id,
                    "lease_seconds": lease_seconds, "reason": reason, "priority": priority,
                    "wait_seconds": seconds if seconds and not dry_run else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        params = {"dry_run": 1} if dry_run else None
        res = None
        try:
            res = self.body_of(self.request("POST", "/reservations", json=body, headers=headers, params=params))
            if dry_run or res.get("state") not in waiting.WAITING_STATES:
                return res
            return waiting.await_grant(self, res, seconds, on_progress)
        except ReservationInterrupted:
            raise  # the wait already cancelled it
        except KeyboardInterrupt as interrupt:
            if not body.get("wait_seconds"):
                raise
            # Ctrl-C before the answer: the request may be queued already, under an id we never saw.
            # The same key asks for the same reservation (made now if the first never landed): cancel it.
            known = res
            waiting.interrupted(self, lambda: known or self.call("POST", "/reservations", json=body,
                                                                 headers=headers), interrupt)

    def reservations(self, *, job_id=None, owner=None, state=None, limit=None):
        """Return the reservations (every page), newest first, filtered by job, owner and state when given.

        state="queued": the line, in the order it is served. `limit`: at most this many.
        """
        params = {k: v for k, v in {"job_id": job_id, "owner": owner, "state": state}.items() if v}
        found, page = [], 1
        while limit is None or len(found) < limit:
            body = self.call("GET", "/reservations", params=dict(params, page=page, max_results=PAGE_SIZE))
            if not isinstance(body, dict):
                return body  # a server of before pages: a plain list
            items = body.get("_items", [])
            found += items
            if not items or "next" not in body.get("_links", {}):
                break
            page += 1
        return found if limit is None else found[:limit]

    def reservation(self, reservation_id):
        """Return one reservation. Raises NotFound."""
        return self.call("GET", f"/reservations/{quote(reservation_id, safe='')}")

    def release(self, reservation_id=None, *, job_id=None):
        """Release a reservation, or every reservation of `job_id`; return {"released": [...], ...}.

        `released` names the machines this call freed. When a release by id was retried after its
        answer was lost, the lost attempt freed them: the reservation is re-read and, once released,
        its machines are reported (with "replayed": true). A retried release by job reports only what
        the retry itself freed.
        """
        if bool(reservation_id) == bool(job_id):
            raise ValueError("release needs a reservation id or a job id (not both)")
        if job_id:
            return self.call("DELETE", "/reservations", params={"job_id": job_id})
        path = f"/reservations/{quote(reservation_id, safe='')}"
        response = self.request("DELETE", path)
        result = self.body_of(response)
        if client_retry.replayed(response) and not result.get("released"):
            res = self.call("GET", path)
            if res.get("state") == "released":
                result = {"released": sorted(res.get("hostnames") or []), "reservations": [reservation_id],
                          "replayed": True}
        return result

    def extend(self, reservation_id, lease_seconds):
        """Extend a reservation's lease by `lease_seconds` from now; return the reservation."""
        return self.call("POST", f"/reservations/{quote(reservation_id, safe='')}/extend",
                         json={"lease_seconds": lease_seconds})

    def sweep(self):
        """Expire leases, fail machines stuck in pxe; return {"expired", "repaired", "released", "pxe_failed"}."""
        return self.call("POST", "/reservations/sweep")

    def pools(self):
        """Return the address pools."""
        return list(self.iter(path="/address-pools"))

    def pool(self, name):
        """Return one address pool with its utilisation. Raises NotFound."""
        return self.call("GET", f"/address-pools/{quote(name, safe='')}")

    def create_pool(self, name, cidr, kind, exclude=None):
        """Create an address pool; return what the server answered."""
        body = {"name": name, "cidr": cidr, "kind": kind}
        if exclude:
            body["exclude"] = list(exclude)
        return self.call("POST", "/address-pools", json=body)

    def allocate_address(self, pool, count=1, *, owner=None, idempotency_key=None):
        """Allocate `count` free addresses of `pool`; return {"pool", "addresses", "owner"}.

        Carries an Idempotency-Key (a new one unless given), as reserve() does.
        Raises Conflict when the pool cannot satisfy it.
        """
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        return self.call("POST", f"/address-pools/{quote(pool, safe='')}/allocate",
                         json={"owner": owner or self.username, "count": count}, headers=headers)

    def history(self, name, resource_type=None):
        """Return the change history of an item, newest first."""
        body = self.call("GET", self.item_path(name, resource_type) + "/history")
        return body.get("_items", []) if isinstance(body, dict) else body
