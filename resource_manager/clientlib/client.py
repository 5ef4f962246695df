"""ResourceManagerClient: the Python client of the API (the original methods and ours)."""

from __future__ import annotations

import builtins
import datetime
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import requests

from .. import __version__
from ..schema import DOMAIN, NAME_FIELDS
from . import config as client_config
from . import retry as client_retry
from .alloc import AllocationMixin
from .base import Document, Params, Progress
from .errors import (
    APIError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RequestFailureException,
    ReservationCancelled,
    ReservationInterrupted,
    ReservationNotGranted,
    ResourceManagerError,
    TransportError,
    Unauthorized,
    ValidationError,
    WaitTimedOut,
    error_from_response,
)
from .holding import Hold
from .original import OriginalAPIMixin, as_dict, merge
from .tokens import BearerAuth, TokenMixin
from .webhooks import WebhookMixin

__all__ = [
    "ResourceManagerClient", "ResourceManagerError", "RequestFailureException", "APIError", "NotFound",
    "ValidationError", "Conflict", "PreconditionFailed", "Unauthorized", "Forbidden", "TransportError",
    "RESOURCE_TYPES",
    "ReservationNotGranted", "WaitTimedOut", "ReservationCancelled", "ReservationInterrupted",
]

RESOURCE_TYPES = tuple(NAME_FIELDS)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
BULK_CHUNK = 1000


Where = Mapping[str, Any] | str | None
Fields = Sequence[str] | str | None


def _where(where: Where) -> str | None:
    if where is None or isinstance(where, str):
        return where
    return json.dumps(where, separators=(",", ":"))


def _projection(fields: Fields) -> str | None:
    if fields is None or isinstance(fields, str):
        return fields
    return json.dumps({f: 1 for f in fields}, separators=(",", ":"))


def _query(where: Where, sort: str | None, fields: Fields) -> dict[str, str]:
    params = {"where": _where(where), "sort": sort, "projection": _projection(fields)}
    return {k: v for k, v in params.items() if v is not None}


class ResourceManagerClient(OriginalAPIMixin, AllocationMixin, TokenMixin, WebhookMixin):
    """A client for one resource type (machines, public-addresses, private-addresses).

    Endpoint and credentials come from the arguments, else RM_ENDPOINT / RM_USERNAME /
    RM_PASSWORD / RM_TOKEN, else the config file ($RM_CONFIG or ~/.config/resource-manager/client.ini),
    else http://127.0.0.1:5000 and admin/admin, the defaults of the original tool. A token
    (`token=`, RM_TOKEN or `token =` in the file) wins over username and password wherever they come
    from: it is sent as `Authorization: Bearer`, and `username` and `password` are None.
    Every request goes through one requests.Session with a timeout (RM_TIMEOUT, 30 s by default).
    Errors raise ResourceManagerError subclasses (see clientlib/errors.py).

    Restarts are ridden out (clientlib/retry.py): connection errors and 502/503/504 are retried, up to
    `max_retries` times (RM_MAX_RETRIES, 5), none later than `retry_time` seconds after the first
    failure (RM_RETRY_TIME, 30), waiting what Retry-After says, else `retry_backoff` (RM_RETRY_BACKOFF,
    0.5 s) doubling. Only requests that are safe to repeat are sent again once they may have reached
    the server. `on_retry(RetryEvent)` is called before each wait. max_retries=0 turns this off.

    The original client's attributes keep their original values: `endpoint` is the collection
    URL (base_url + '/' + resource_type), `auth` the (username, password) tuple, `headers`
    {'content-type': 'application/json'} (sent with every write), `fields` the original FIELDS
    columns. `base_url` is the server's URL; `schema_fields` the resource's own fields.
    """

    def __init__(self, resource_type: str = "machines", endpoint: str | None = None, username: str | None = None,
                 password: str | None = None, *, timeout: float | None = None,
                 session: requests.Session | None = None, environ: Mapping[str, str] | None = None,
                 config_file: str | None = None, max_retries: int | None = None, retry_time: float | None = None,
                 retry_backoff: float | None = None,
                 on_retry: Callable[[client_retry.RetryEvent], object] | None = None, token: str | None = None) -> None:
        if resource_type not in NAME_FIELDS:
            raise ValueError(f"unknown resource type {resource_type!r}: use one of {', '.join(RESOURCE_TYPES)}")
        settings = client_config.resolve(
            {"endpoint": endpoint, "username": username, "password": password, "token": token, "timeout": timeout,
             "max_retries": max_retries, "retry_time": retry_time, "retry_backoff": retry_backoff},
            environ, config_file)
        if not settings["endpoint"].startswith(("http://", "https://")):
            raise ValueError(f"endpoint must start with http:// or https://, not {settings['endpoint']!r}")
        self.resource_type = resource_type
        self.base_url: str = settings["endpoint"]
        self.token: str | None = settings["token"] or None
        self.username = None if self.token else settings["username"]
        self.password: str | None = None if self.token else settings["password"]
        self.timeout = settings["timeout"]
        self.max_retries: int = settings["max_retries"]
        self.retry_time: float = settings["retry_time"]
        self.retry_backoff: float = settings["retry_backoff"]
        self.on_retry = on_retry
        self.key = NAME_FIELDS[resource_type]
        self.fields = builtins.list(self.FIELDS[resource_type])
        self.schema_fields: builtins.list[str] = builtins.list(DOMAIN[resource_type]["schema"])
        self.headers = {"content-type": "application/json"}
        self.session = session or requests.Session()
        if self.token:
            self.session.auth = BearerAuth(self.token)
        elif self.username:
            self.session.auth = (self.username, settings["password"])
        else:
            self.session.auth = None
        self.session.headers["User-Agent"] = f"resource-manager-client/{__version__}"
        if self.max_retries:
            retry = client_retry.policy(self.max_retries, self.retry_time, self.retry_backoff, on_retry)
            for prefix in ("http://", "https://"):
                self.session.mount(prefix, client_retry.RetryingAdapter(retry))

    @property
    def endpoint(self) -> str:
        """The collection URL, as in the original client: base_url + '/' + resource_type."""
        return f"{self.base_url}/{self.resource_type}"

    @endpoint.setter
    def endpoint(self, url: str) -> None:
        suffix = "/" + self.resource_type
        if not url.rstrip("/").endswith(suffix):
            raise ValueError(f"endpoint is the collection URL and must end with {suffix!r}; set base_url instead")
        self.base_url = url.rstrip("/")[:-len(suffix)]

    @property
    def auth(self) -> Any:
        """The (username, password) every request sends, a BearerAuth for a token, or None."""
        return self.session.auth

    @auth.setter
    def auth(self, credentials: Sequence[str] | None) -> None:
        self.session.auth = cast("tuple[str, str]", tuple(credentials)) if credentials else None

    def __repr__(self) -> str:
        return f"ResourceManagerClient({self.resource_type!r}, {self.base_url!r})"

    def holding(self, count: int = 1, *, where: Mapping[str, Any] | None = None,
                wait: float | datetime.timedelta | None = None, heartbeat: float | datetime.timedelta = 60,
                lease: float | datetime.timedelta | None = None, job_id: str | None = None,
                owner: str | None = None, reason: str | None = None, on_progress: Progress | None = None,
                on_lost: Callable[[str], object] | None = None) -> Hold:
        """Return a context manager that holds `count` machines: reserve, keep alive, release (holding.py).

            with rm.holding(count=2, where={"tags.arch": "x86_64"}, wait=1800, heartbeat=60) as machines:
                machines["hostnames"], machines["machines"]   # the reservation, and the machine documents

        A daemon thread sends a heartbeat every third of `heartbeat` seconds; the machines are
        released when the block ends, by an exception or Ctrl-C too. Killed outright, the holder
        stops beating and the server ends the reservation within `heartbeat` seconds. `wait`,
        `heartbeat`, `lease`: seconds or timedeltas. `on_lost(message)` is called (from the thread)
        if the reservation ends under the block. Raises what reserve() raises.
        """
        return Hold(self, count, where=where, wait=wait, heartbeat=heartbeat, lease=lease, job_id=job_id,
                    owner=owner, reason=reason, on_progress=on_progress, on_lost=on_lost)

    def clone(self, *, timeout: float | None = None, retry_time: float | None = None) -> ResourceManagerClient:
        """Return a client of its own (a requests.Session is not shared across threads): the same server,
        credentials and retries, with `timeout` and `retry_time` changed where given."""
        return ResourceManagerClient(self.resource_type, self.base_url, self.username, self.password,
                                     token=self.token or "", timeout=self.timeout if timeout is None else timeout,
                                     max_retries=self.max_retries,
                                     retry_time=self.retry_time if retry_time is None else retry_time,
                                     retry_backoff=self.retry_backoff, on_retry=self.on_retry, environ={},
                                     config_file=os.devnull)

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()

    def __enter__(self) -> ResourceManagerClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
                headers: Mapping[str, str] | None = None, timeout: float | None = None) -> requests.Response:
        """Send one request and return the response.

        Raises APIError (or a subclass) on a 4xx/5xx answer, TransportError when the
        server cannot be reached or does not answer within the timeout.
        """
        timeout = self.timeout if timeout is None else timeout
        if method in WRITE_METHODS:
            headers = {**self.headers, **(headers or {})}
        url = self.base_url
        try:
            response = self.session.request(method, url + path, params=params, json=json,
                                            headers=headers, timeout=timeout)
        except requests.RequestException as e:
            raise client_retry.transport_error(e, method, path, url, timeout) from e
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def call(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
             headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
        """Send one request and return its JSON body ({} when it has none)."""
        return self.body_of(self.request(method, path, params=params, json=json, headers=headers, timeout=timeout))

    @staticmethod
    def body_of(response: requests.Response) -> Any:
        """Return a response's JSON body ({} when it has none). Raises ResourceManagerError when it is not JSON."""
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as e:
            request = response.request
            raise ResourceManagerError(f"{request.method} {request.path_url}: the server did not answer JSON "
                                       f"({response.headers.get('Content-Type', 'no content type')})",
                                       response) from e

    def item_path(self, name: object, resource_type: str | None = None) -> str:
        """Return the URL path of an item by name (hostname, address) or _id."""
        return f"/{resource_type or self.resource_type}/{quote(str(name), safe=':')}"

    # -- modern API: dicts in, dicts out ----------------------------------------------------

    def get(self, name: object) -> Document:
        """Return the item named `name` (with _id and _etag). Raises NotFound."""
        item: Document = self.call("GET", self.item_path(name))
        return item

    def page(self, page: int = 1, page_size: int = 100, where: Where = None, sort: str | None = None,
             fields: Fields = None, path: str | None = None) -> Any:
        """Return one page of the listing as Eve sends it (_items, _meta, _links)."""
        params = {"page": page, "max_results": page_size, **_query(where, sort, fields)}
        return self.call("GET", path or f"/{self.resource_type}", params=params)

    def iter(self, where: Where = None, sort: str | None = None, fields: Fields = None, page_size: int = 1000,
             limit: int | None = None, path: str | None = None) -> Iterator[Document]:
        """Yield every matching item, fetching one page at a time.

        A server that does not paginate (the original one: Eve with PAGINATION = False) answers
        without _meta and cuts at max_results; then the whole list is asked for in one request.
        """
        number, seen = 1, 0
        # One page size throughout: page N starts at item (N-1)*size.
        size = page_size if limit is None else max(1, min(page_size, limit))
        while True:
            body = self.page(number, size, where, sort, fields, path)
            items = body.get("_items", []) if isinstance(body, dict) else body
            if number == 1 and isinstance(body, dict) and "_meta" not in body and len(items) >= size:
                body = self.call("GET", path or f"/{self.resource_type}", params=_query(where, sort, fields))
                items = body.get("_items", [])
            for item in items:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            links = body.get("_links", {}) if isinstance(body, dict) else {}
            if not items or "next" not in links or "_meta" not in body:
                return
            number += 1

    def list(self, where: Where = None, sort: str | None = None, fields: Fields = None,
             limit: int | None = None) -> builtins.list[Document]:
        """Return the matching items as a list."""
        return builtins.list(self.iter(where, sort, fields, limit=limit))

    def count(self, where: Where = None) -> int:
        """Return how many items match `where`."""
        total: int = self.page(1, 1, where, fields=[self.key])["_meta"]["total"]
        return total

    def create(self, doc: Document | str | bytes, reason: str | None = None) -> Document:
        """Create one item; return it with its _id and _etag. Raises ValidationError, Conflict."""
        doc = as_dict(doc)
        meta = self.call("POST", f"/{self.resource_type}", json=doc, headers=_reason_header(reason))
        return merge(doc, meta)

    def create_many(self, docs: Sequence[Document], chunk_size: int = BULK_CHUNK,
                    on_progress: Callable[[int], object] | None = None) -> builtins.list[Document | APIError]:
        """Create items in bulk POSTs; return, per document, the created item or the APIError that refused it.

        A batch that Eve refuses as a whole (one bad document rejects all) is sent again without the bad ones.
        """
        results: builtins.list[Document | APIError] = []
        for start in range(0, len(docs), chunk_size):
            results.extend(self._post_chunk(docs[start:start + chunk_size]))
            if on_progress:
                on_progress(min(start + chunk_size, len(docs)))
        return results

    def _post_chunk(self, chunk: Sequence[Document]) -> builtins.list[Document | APIError]:
        if len(chunk) == 1:
            return [self._try(self.create, chunk[0])]
        try:
            body = self.call("POST", f"/{self.resource_type}", json=chunk)
        except ValidationError as e:
            items = _items_of(e.response)
            if len(items) != len(chunk):
                raise
            results: builtins.list[Document | APIError | None] = [None] * len(chunk)
            good = []
            for i, item in enumerate(items):
                if item.get("_status") == "ERR":
                    results[i] = ValidationError(422, "invalid", item.get("_issues"), e.response, "POST", e.url)
                else:
                    good.append(i)
            for i, result in zip(good, self._post_chunk([chunk[i] for i in good]) if good else [], strict=True):
                results[i] = result
            return [result for result in results if result is not None]
        except Conflict:
            # A name taken meanwhile (or twice in the batch): go one by one to tell which.
            return [self._try(self.create, doc) for doc in chunk]
        except APIError as e:
            if e.status != 413:
                raise
            # Too large a body for the server: halve the batch until it fits.
            half = len(chunk) // 2
            return self._post_chunk(chunk[:half]) + self._post_chunk(chunk[half:])
        return [merge(doc, meta) for doc, meta in zip(chunk, body["_items"], strict=True)]

    @staticmethod
    def _try(fn: Callable[..., Document], *args: Any, **kwargs: Any) -> Document | APIError:
        try:
            return fn(*args, **kwargs)
        except APIError as e:
            return e

    def update(self, name: object, changes: Document | str | bytes, etag: str | None = None, retries: int = 0,
               reason: str | None = None) -> Document:
        """PATCH the item with If-Match and return it as stored.

        Without `etag`, the item is read first. On 412 (changed meanwhile) it is re-read and
        patched again, up to `retries` times. `reason` goes to the item's history.
        Raises NotFound, ValidationError, PreconditionFailed.
        """
        wanted = as_dict(changes)
        return self.modify(name, lambda doc: wanted, retries=retries, etag=etag, reason=reason)

    def modify(self, name: object, change: Callable[[Document | None], Document], retries: int = 3,
               etag: str | None = None, reason: str | None = None) -> Document:
        """Apply `change(current_doc) -> changes` with If-Match, re-reading and retrying on 412.

        This is the conflict-safe way to update from a value read: the change is always computed
        from the version it is applied to. Raises PreconditionFailed after `retries` retries.
        """
        attempt = 0
        while True:
            doc = None if etag is not None and attempt == 0 else self.get(name)
            changes = change(doc)
            # By _id once we know it: on our database only {_id: x} lookups avoid a scan.
            path = self.item_path(name if doc is None else doc["_id"])
            try:
                current = cast(str, etag) if doc is None else doc["_etag"]  # doc is None only with etag given
                stored: Document = self.write_item("PATCH", path, changes, current, reason) or self.call("GET", path)
                return stored
            except PreconditionFailed:
                if attempt >= retries:
                    raise
                attempt += 1

    def replace(self, name: object, doc: Document | str | bytes, etag: str | None = None,
                reason: str | None = None) -> Document:
        """PUT a whole new version of the item and return it as stored."""
        document = as_dict(doc)
        if etag is None:
            current = self.get(name)
            name, etag = current["_id"], current["_etag"]
        return self.write_item("PUT", self.item_path(name), document, etag, reason) or self.get(name)

    def delete(self, name: object, etag: str | None = None, reason: str | None = None) -> None:
        """Delete the item. Raises NotFound, PreconditionFailed."""
        if etag is None:
            current = self.get(name)
            name, etag = current["_id"], current["_etag"]
        self.write_item("DELETE", self.item_path(name), None, etag, reason)

    def write_item(self, method: str, path: str, body: Mapping[str, Any] | None, etag: str,
                   reason: str | None = None) -> Document | None:
        """PATCH, PUT or DELETE an item with If-Match; return None, or the stored item when it was re-read.

        When the answer to a first attempt was lost (or was a 5xx) and the retry got 412 (PATCH/PUT)
        or 404 (DELETE), that attempt may well have done it: the item is re-read, and if it already
        holds every value sent (or is gone), that is the answer. Otherwise the 412 or 404 is raised:
        someone else changed or deleted the item.
        """
        headers = {"If-Match": etag, **_reason_header(reason)}
        try:
            self.request(method, path, json=body, headers=headers)
        except (PreconditionFailed, NotFound) as e:
            if not client_retry.replayed(e.response):
                raise
            if method == "DELETE" and isinstance(e, NotFound):
                return None  # gone, as asked
            if method == "DELETE" or isinstance(e, NotFound):
                raise
            stored: Document = self.call("GET", path)
            if body is None or not client_retry.holds(stored, body, merge=method == "PATCH"):
                raise
            return stored
        return None


def _reason_header(reason: str | None) -> dict[str, str]:
    # Recorded in the item's history; HTTP headers carry Latin-1 only.
    return {"X-Reason": reason.encode("latin-1", "replace").decode("latin-1")} if reason else {}


def _items_of(response: requests.Response | None) -> builtins.list[Document]:
    if response is None:
        return []
    try:
        items = response.json().get("_items")
    except (ValueError, AttributeError):
        return []
    return items if isinstance(items, list) else []
