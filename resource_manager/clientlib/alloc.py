"""Allocation calls of the client: reservations, address pools, history (see docs/reference/reservations.md)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from . import retry as client_retry
from . import waiting
from .base import ClientBase, Document, Progress
from .errors import ReservationInterrupted

UNCHANGED = object()  # extend(heartbeat_seconds=...) left out: the period stays as it is


def new_idempotency_key() -> str:
    """Return a fresh Idempotency-Key: the same one goes with every retry of one call, never with another call."""
    return f"rmc-{uuid.uuid4().hex}"


PAGE_SIZE = 1000  # reservations per listing request (the server's most)


class AllocationMixin(ClientBase):
    """Reserve and release machines, allocate addresses, read history; needs `call` and `iter`."""

    def reserve(self, count: int, *, where: Mapping[str, Any] | None = None, owner: str | None = None,
                job_id: str | None = None, lease_seconds: int | None = None, reason: str | None = None,
                idempotency_key: str | None = None, dry_run: bool = False,
                wait: float | datetime.timedelta | None = None, on_progress: Progress | None = None,
                priority: int | None = None, heartbeat_seconds: int | None = None) -> Document:
        """Reserve `count` idle machines matching `where`; return the reservation (hostnames, expires).

        `heartbeat_seconds`: once granted, the reservation ends by itself (`expired`) when no
        heartbeat (`heartbeat()`, or an extension) comes for that long; `holding()` sends them.

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
        body: Document = {"count": count}
        optional = {"where": where, "owner": owner or self.username, "job_id": job_id,
                    "lease_seconds": lease_seconds, "reason": reason, "priority": priority,
                    "heartbeat_seconds": heartbeat_seconds,
                    "wait_seconds": seconds if seconds and not dry_run else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        params = {"dry_run": 1} if dry_run else None
        res: Document | None = None
        try:
            answer: Document = self.body_of(self.request("POST", "/reservations", json=body, headers=headers,
                                                         params=params))
            res = answer
            if dry_run or answer.get("state") not in waiting.WAITING_STATES:
                return answer
            return waiting.await_grant(self, answer, seconds, on_progress)
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

    def reservations(self, *, job_id: str | None = None, owner: str | None = None, state: str | None = None,
                     limit: int | None = None) -> list[Document]:
        """Return the reservations (every page), newest first, filtered by job, owner and state when given.

        state="queued": the line, in the order it is served. `limit`: at most this many.
        """
        params: dict[str, Any] = {k: v for k, v in {"job_id": job_id, "owner": owner, "state": state}.items() if v}
        found: list[Document] = []
        page = 1
        while limit is None or len(found) < limit:
            body = self.call("GET", "/reservations", params=dict(params, page=page, max_results=PAGE_SIZE))
            if not isinstance(body, dict):
                return list(body)  # a server of before pages: a plain list
            items = body.get("_items", [])
            found += items
            if not items or "next" not in body.get("_links", {}):
                break
            page += 1
        return found if limit is None else found[:limit]

    def reservation(self, reservation_id: str) -> Document:
        """Return one reservation. Raises NotFound."""
        return self._document("GET", f"/reservations/{quote(reservation_id, safe='')}")

    def release(self, reservation_id: str | None = None, *, job_id: str | None = None) -> Document:
        """Release a reservation, or every reservation of `job_id`; return {"released": [...], ...}.

        `released` names the machines this call freed. When a release by id was retried after its
        answer was lost, the lost attempt freed them: the reservation is re-read and, once released,
        its machines are reported (with "replayed": true). A retried release by job reports only what
        the retry itself freed.
        """
        if bool(reservation_id) == bool(job_id):
            raise ValueError("release needs a reservation id or a job id (not both)")
        if job_id:
            return self._document("DELETE", "/reservations", params={"job_id": job_id})
        path = f"/reservations/{quote(reservation_id or '', safe='')}"
        response = self.request("DELETE", path)
        result: Document = self.body_of(response)
        if client_retry.replayed(response) and not result.get("released"):
            res = self.call("GET", path)
            if res.get("state") == "released":
                result = {"released": sorted(res.get("hostnames") or []), "reservations": [reservation_id],
                          "replayed": True}
        return result

    def extend(self, reservation_id: str, lease_seconds: int | None = None, *,
               heartbeat_seconds: int | None | object = UNCHANGED, exact: bool = False,
               reason: str | None = None) -> Document:
        """Extend a reservation's lease to `lease_seconds` from now and renew its heartbeat; return the reservation.

        The lease is never shortened unless `exact`; `heartbeat_seconds` sets a new heartbeat period
        (None: no more heartbeats); `reason` goes to the reservation's history. Raises Conflict when
        the reservation has ended (or is not active yet), NotFound when there is none.
        """
        body: Document = {"lease_seconds": lease_seconds} if lease_seconds is not None else {}
        if heartbeat_seconds is not UNCHANGED:
            body["heartbeat_seconds"] = heartbeat_seconds
        if exact:
            body["exact"] = True
        if reason:
            body["reason"] = reason
        return self._document("POST", f"/reservations/{quote(reservation_id, safe='')}/extend", json=body)

    def heartbeat(self, reservation_id: str) -> Document:
        """Tell the server the holder of a reservation is alive (its heartbeat window starts again); return it.

        A queued reservation is answered as it stands (nothing is due before the grant). Raises
        Conflict once it has ended (the message says how: released, expired and why), NotFound.
        """
        return self._document("POST", f"/reservations/{quote(reservation_id, safe='')}/heartbeat")

    def sweep(self) -> Document:
        """Expire leases, fail machines stuck in pxe; return {"expired", "repaired", "released", "pxe_failed"}."""
        return self._document("POST", "/reservations/sweep")

    def pools(self) -> list[Document]:
        """Return the address pools."""
        return list(self.iter(path="/address-pools"))

    def pool(self, name: str) -> Document:
        """Return one address pool with its utilisation. Raises NotFound."""
        return self._document("GET", f"/address-pools/{quote(name, safe='')}")

    def create_pool(self, name: str, cidr: str, kind: str, exclude: Sequence[str] | None = None) -> Document:
        """Create an address pool; return what the server answered."""
        body: Document = {"name": name, "cidr": cidr, "kind": kind}
        if exclude:
            body["exclude"] = list(exclude)
        return self._document("POST", "/address-pools", json=body)

    def allocate_address(self, pool: str, count: int = 1, *, owner: str | None = None,
                         idempotency_key: str | None = None) -> Document:
        """Allocate `count` free addresses of `pool`; return {"pool", "addresses", "owner"}.

        Carries an Idempotency-Key (a new one unless given), as reserve() does.
        Raises Conflict when the pool cannot satisfy it.
        """
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        return self._document("POST", f"/address-pools/{quote(pool, safe='')}/allocate",
                         json={"owner": owner or self.username, "count": count}, headers=headers)

    def history(self, name: object, resource_type: str | None = None) -> list[Document]:
        """Return the change history of an item, newest first: every entry, a page at a time."""
        return list(self.iter(path=self.item_path(name, resource_type) + "/history"))

    def _document(self, method: str, path: str, **kwargs: Any) -> Document:
        """Send one request and return its JSON body, an object for these routes."""
        body: Document = self.call(method, path, **kwargs)
        return body
