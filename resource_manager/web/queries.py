"""The dashboard's machine queries: few per page, each bounded (skip/limit, projections).

Counting machines by state and ordering the table are passes over every matching machine on
an engine that counts and sorts in memory (FerretDB decodes every match in Go). So, unless
DASHBOARD_CACHE_SECONDS is 0, each app (one per process) keeps per filter the state counts and the table's
order (the `_id`s, sorted) and serves them while they are younger than that many seconds (10 by
default); older ones are still served, at once, while one background pass renews them, so they
may be that old plus one pass (a few seconds at 10,000 machines on the embedded engine). The
page says how old. The rows themselves are always read fresh, by `_id`: a machine's state,
owner and job in the table are current even while its position and the counts are not.
"""

import json
import math
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import pymongo
from flask import current_app

from ..api.db import collection_name, database
from ..core.jsontext import loads_strict
from ..schema import MACHINE_STATES, canonical_hostname, natural_key, sort_key

SORTS = ("hostname", "state", "owner", "job_id", "_updated")
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
TAG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
# Pages beyond this are clamped to it (and then to the last page): skip must fit 64 bits.
MAX_PAGE = 10**9
LIST_FIELDS = {"hostname": 1, "state": 1, "owner": 1, "job_id": 1, "tags": 1, "_updated": 1}
DEFAULT_CACHE_SECONDS = 10
CACHE_ENTRIES = 64  # per app: counts and orders of the most recent filters


class DashboardCache:
    """The dashboard's cache of one app: values of passes over the machines, renewed in the background.

    The app owns it (app.extensions, made by init_app; tests clear it between tests), and it owns
    the threads that run those renewals and read beside a page's main query.
    """

    def __init__(self):
        self._entries = OrderedDict()  # key -> (value, computed at, monotonic)
        self._renewing = set()
        self._lock = threading.Lock()
        self._pool = None
        self._pool_lock = threading.Lock()

    def pool(self):
        """Return the threads that run a page's second query beside the first (pymongo clients are
        thread-safe) and the renewals; started on the first dashboard page, not with the app."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rm-dashboard")
            return self._pool

    def get(self, key, compute, max_age):
        """Return (value, its age in seconds), computing it now only when there is none."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                if now - entry[1] >= max_age and key not in self._renewing:
                    self._renewing.add(key)
                    self.pool().submit(self._renew, key, compute)
                return entry[0], now - entry[1]
        value = compute()
        self._store(key, value, now)
        return value, time.monotonic() - now

    def _renew(self, key, compute):
        try:
            started = time.monotonic()
            self._store(key, compute(), started)
        except Exception:  # the database is away: the old value stays, the next request retries
            pass
        finally:
            with self._lock:
                self._renewing.discard(key)

    def _store(self, key, value, at):
        with self._lock:
            self._entries[key] = (value, at)
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self):
        """Forget everything (after a change made from this app's dashboard, or between tests)."""
        with self._lock:
            self._entries.clear()

    def close(self):
        """Forget everything and stop the threads (when the app is done)."""
        self.clear()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def cache_of(app):
    """Return the dashboard cache `app` owns."""
    return app.extensions["rm_dashboard_cache"]


def _cache():
    return cache_of(current_app)


def cached(collection, what, compute, max_age):
    """Return (value, age in seconds) of `compute()`, a pass over `collection`, from this app's cache."""
    return _cache().get(_key(collection, what), compute, max_age)


def machines():
    """Return the machines collection."""
    return database()[collection_name(current_app, "machines")]


def _int(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _tag_value(text):
    # Tags keep their JSON types (memory is a number): match the typed value and its text.
    try:
        value = loads_strict(text)  # NaN, 1e999 and integers beyond 64 bits stay text
    except ValueError:
        return text
    if isinstance(value, (dict, list)):
        return text
    return {"$in": [value, text]} if not isinstance(value, str) else value


class MachineQuery:
    """The machines table's filters, sort and page, read from the query string and made safe."""

    def __init__(self, args):
        self.q = args.get("q", "").strip()[:253]
        self.state = args.get("state", "") if args.get("state") in MACHINE_STATES else ""
        self.owner = args.get("owner", "").strip()[:256]
        self.job = args.get("job", "").strip()[:256]
        self.tag = args.get("tag", "").strip()[:300]
        sort = args.get("sort", "hostname")
        self.sort = sort if sort.lstrip("-") in SORTS else "hostname"
        size = _int(args.get("per_page"), DEFAULT_PAGE_SIZE)
        self.per_page = size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE
        self.page = min(MAX_PAGE, max(1, _int(args.get("page"), 1)))
        self.problems = []  # a NUL character never gets here: api/errors.check_nul refuses it (400)

    def filter(self, with_state=True):
        """Return the MongoDB filter; user text never becomes an operator or a raw regex."""
        found = {}
        if self.q:
            found["hostname"] = {"$regex": re.escape(self.q), "$options": "i"}
        if self.state and with_state:
            found["state"] = self.state
        if self.owner:
            found["owner"] = self.owner
        if self.job:
            found["job_id"] = self.job
        if self.tag:
            key, sep, value = self.tag.partition("=")
            key = key.strip()
            if not TAG_KEY.match(key):
                problem = f"ignored tag filter '{self.tag}': use key or key=value"
                if problem not in self.problems:  # filter() runs once per query of the page
                    self.problems.append(problem)
            elif sep:
                found[f"tags.{key}"] = _tag_value(value.strip())
            else:
                found[f"tags.{key}"] = {"$exists": True}
        return found

    def sort_spec(self):
        """Return the sort as pymongo's spec, with hostname as the tie-breaker (the cache's key; _sorted() sorts)."""
        field = self.sort.lstrip("-")
        direction = pymongo.DESCENDING if self.sort.startswith("-") else pymongo.ASCENDING
        spec = [(field, direction)]
        if field != "hostname":
            spec.append(("hostname", pymongo.ASCENDING))
        return spec

    def active(self):
        """Return whether any filter is set."""
        return bool(self.q or self.state or self.owner or self.job or self.tag)

    def args(self, **changes):
        """Return the query-string arguments of this query with `changes`, without empty ones."""
        args = {"q": self.q, "state": self.state, "owner": self.owner, "job": self.job, "tag": self.tag,
                "sort": self.sort if self.sort != "hostname" else "",
                "per_page": self.per_page if self.per_page != DEFAULT_PAGE_SIZE else "",
                "page": self.page if self.page != 1 else ""}
        args.update(changes)
        if args["page"] == 1:
            args["page"] = ""
        return {k: v for k, v in args.items() if v not in ("", None)}


def _state_counts(collection, query):
    counts = dict.fromkeys(MACHINE_STATES, 0)
    pipeline = [{"$group": {"_id": "$state", "n": {"$sum": 1}}}]
    found = query.filter(with_state=False)
    if found:
        pipeline.insert(0, {"$match": found})
    for row in collection.aggregate(pipeline):
        if row["_id"] in counts:
            counts[row["_id"]] = row["n"]
    return counts


def _sorted(docs, query):
    """Return `docs` in the table's order: hostnames (and other text) in natural order, n2 before n10.

    A database sorts text code point by code point (n10 before n2), so the order is made here, from
    the fields it needs: on the embedded database the sort read every match anyway.
    """
    field = query.sort.lstrip("-")
    docs = sorted(docs, key=lambda doc: natural_key(doc.get("hostname") or ""))  # the tie-breaker, ascending
    if field != "hostname" or query.sort.startswith("-"):
        docs.sort(key=lambda doc: sort_key(doc.get(field)), reverse=query.sort.startswith("-"))
    return docs


def _order(collection, query):
    fields = {"_id": 1, "hostname": 1, query.sort.lstrip("-"): 1}
    return [doc["_id"] for doc in _sorted(collection.find(query.filter(), fields), query)]


def _rows(collection, ids):
    # One find_one by _id each, side by side: FerretDB pushes {_id: x} down (an index serves
    # it), not {_id: {$in: [...]}}. A machine deleted since the order was taken is left out.
    found = _cache().pool().map(lambda i: collection.find_one({"_id": i}, LIST_FIELDS), ids)
    return [doc for doc in found if doc is not None]


def _key(collection, *parts):
    return (id(collection.database.client), collection.full_name,
            *(json.dumps(part, sort_keys=True, default=str) for part in parts))


def overview(query, max_age=0):
    """Return ({state: count}, total, machines, pages, age) for the query; its page is clamped to the last.

    `age`: how many seconds old the counts and the table's order are (0 when read now). With
    max_age 0, two queries side by side: one aggregation for the state cards (machines matching
    every filter but the state one) and the table's order (the `_id`s, with the sort fields, sorted
    here in natural order: _sorted). Otherwise both come from the cache (see the module's
    docstring). Either way the page's rows are then read by `_id`.
    """
    collection = machines()
    cache = _cache()
    if max_age <= 0:
        counts_future = cache.pool().submit(_state_counts, collection, query)
        order = _order(collection, query)
        counts = counts_future.result()
        total = len(order)
        pages = max(1, math.ceil(total / query.per_page))
        query.page = min(query.page, pages)  # past the end (a stale link): the last page instead
        start = (query.page - 1) * query.per_page
        return counts, total, _rows(collection, order[start:start + query.per_page]), pages, 0.0
    counts_future = cache.pool().submit(cache.get, _key(collection, "counts", query.filter(with_state=False)),
                                        lambda: _state_counts(collection, query), max_age)
    order, order_age = cache.get(_key(collection, "order", query.filter(), query.sort_spec()),
                                  lambda: _order(collection, query), max_age)
    counts, counts_age = counts_future.result()
    total = len(order)
    pages = max(1, math.ceil(total / query.per_page))
    query.page = min(query.page, pages)
    start = (query.page - 1) * query.per_page
    return counts, total, _rows(collection, order[start:start + query.per_page]), pages, max(order_age, counts_age)


def forget():
    """Drop this app's cached counts and orders (a dashboard action changed a machine)."""
    _cache().clear()


def machine(hostname):
    """Return the machine named `hostname` (any spelling of it), or None."""
    return machines().find_one({"hostname": canonical_hostname(hostname)})


def init_app(app):
    """Give the app its dashboard cache; index what the dashboard filters and counts by (MongoDB uses them)."""
    app.extensions["rm_dashboard_cache"] = DashboardCache()
    indexes = app.extensions["rm_indexes"]
    for field in ("state", "owner", "job_id"):
        indexes.add(collection_name(app, "machines"), [(field, pymongo.ASCENDING)], name=f"{field}_1")
