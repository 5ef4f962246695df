"""ResourceManagerClient: the Python client of the API (the original methods and ours)."""


import json
from urllib.parse import quote

import requests

from .. import __version__
from ..schema import DOMAIN, NAME_FIELDS
from . import config as client_config
from . import retry as client_retry
from .alloc import AllocationMixin
from .errors import (
    APIError,
    Conflict,
    NotFound,
    PreconditionFailed,
    RequestFailureException,
    ReservationCancelled,
    ReservationInterrupted,
    ReservationNotGranted,
    ResourceManagerError,
    TransportError,
    ValidationError,
    WaitTimedOut,
    error_from_response,
)
from .original import OriginalAPIMixin, as_dict, merge
from .tokens import BearerAuth, TokenMixin

__all__ = [
    "ResourceManagerClient", "ResourceManagerError", "RequestFailureException", "APIError", "NotFound",
    "ValidationError", "Conflict", "PreconditionFailed", "TransportError", "RESOURCE_TYPES",
    "ReservationNotGranted", "WaitTimedOut", "ReservationCancelled", "ReservationInterrupted",
]

RESOURCE_TYPES = tuple(NAME_FIELDS)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
BULK_CHUNK = 1000


def _where(where):
    if where is None or isinstance(where, str):
        return where
    return json.dumps(where, separators=(",", ":"))


def _projection(fields):
    if fields is None or isinstance(fields, str):
        return fields
    return json.dumps({f: 1 for f in fields}, separators=(",", ":"))


def _query(where, sort, fields):
    params = {"where": _where(where), "sort": sort, "projection": _projection(fields)}
    return {k: v for k, v in params.items() if v is not None}


class ResourceManagerClient(OriginalAPIMixin, AllocationMixin, TokenMixin):
    """A client for one resource type (machines, public-addresses, private-addresses).

    Endpoint and credentials come from the arguments, else RM_ENDPOINT / RM_USERNAME /
    RM_PASSWORD / RM_TOKEN, else the config file ($RM_CONFIG or ~/.config/resource-manager/client.ini),
    else http://127.0.0.1:5000 and admin/admin, the defaults of the original tool. A token
    (`token=`, RM_TOKEN or `token =` in the file) wins over username and password wherever they come
    from: it is sent as `Authorization: Bearer`, and `username` and `password` are None.
    Every request goes through one requests.Session with a timeout (RM_TIMEOUT, 30 s by default).
    Errors raise ResourceManagerError subclasses (see errors.py).

    Restarts are ridden out (retry.py): connection errors and 502/503/504 are retried, up to
    `max_retries` times (RM_MAX_RETRIES, 5), none later than `retry_time` seconds after the first
    failure (RM_RETRY_TIME, 30), waiting what Retry-After says, else `retry_backoff` (RM_RETRY_BACKOFF,
    0.5 s) doubling. Only requests that are safe to repeat are sent again once they may have reached
    the server. `on_retry(RetryEvent)` is called before each wait. max_retries=0 turns this off.

    The original client's attributes keep their original values: `endpoint` is the collection
    URL (base_url + '/' + resource_type), `auth` the (username, password) tuple, `headers`
    {'content-type': 'application/json'} (sent with every write), `fields` the original FIELDS
    columns. `base_url` is the server's URL; `schema_fields` the resource's own fields.
    """

    def __init__(self, resource_type="machines", endpoint=None, username=None, password=None, *,
                 timeout=None, session=None, environ=None, config_file=None, max_retries=None,
                 retry_time=None, retry_backoff=None, on_retry=None, token=None):
        if resource_type not in NAME_FIELDS:
            raise ValueError(f"unknown resource type {resource_type!r}: use one of {', '.join(RESOURCE_TYPES)}")
        settings = client_config.resolve(
            {"endpoint": endpoint, "username": username, "password": password, "token": token, "timeout": timeout,
             "max_retries": max_retries, "retry_time": retry_time, "retry_backoff": retry_backoff},
            environ, config_file)
        if not settings["endpoint"].startswith(("http://", "https://")):
            raise ValueError(f"endpoint must start with http:// or https://, not {settings['endpoint']!r}")
        self.resource_type = resource_type
        self.base_url = settings["endpoint"]
        self.token = settings["token"] or None
        self.username = None if self.token else settings["username"]
        self.password = None if self.token else settings["password"]
        self.timeout = settings["timeout"]
        self.max_retries = settings["max_retries"]
        self.retry_time = settings["retry_time"]
        self.retry_backoff = settings["retry_backoff"]
        self.key = NAME_FIELDS[resource_type]
        self.fields = list(self.FIELDS[resource_type])
        self.schema_fields = list(DOMAIN[resource_type]["schema"])
        self.headers = {"content-type": "application/json"}
        self.session = session or requests.Session()
        if self.token:
            self.session.auth = BearerAuth(self.token)
        else:
            self.session.auth = (self.username, self.password) if self.username else None
        self.session.headers["User-Agent"] = f"resource-manager-client/{__version__}"
        if self.max_retries:
            retry = client_retry.policy(self.max_retries, self.retry_time, self.retry_backoff, on_retry)
            for prefix in ("http://", "https://"):
                self.session.mount(prefix, client_retry.RetryingAdapter(retry))

    @property
    def endpoint(self):
        """The collection URL, as in the original client: base_url + '/' + resource_type."""
        return f"{self.base_url}/{self.resource_type}"

    @endpoint.setter
    def endpoint(self, url):
        suffix = "/" + self.resource_type
        if not url.rstrip("/").endswith(suffix):
            raise ValueError(f"endpoint is the collection URL and must end with {suffix!r}; set base_url instead")
        self.base_url = url.rstrip("/")[:-len(suffix)]

    @property
    def auth(self):
        """The (username, password) every request sends, a BearerAuth for a token, or None."""
        return self.session.auth

    @auth.setter
    def auth(self, credentials):
        self.session.auth = tuple(credentials) if credentials else None

    def __repr__(self):
        return f"ResourceManagerClient({self.resource_type!r}, {self.base_url!r})"

    def close(self):
        """Close the session's connections."""
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def request(self, method, path, *, params=None, json=None, headers=None, timeout=None):
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

    def call(self, method, path, **kwargs):
        """Send one request and return its JSON body ({} when it has none)."""
        return self.body_of(self.request(method, path, **kwargs))

    @staticmethod
    def body_of(response):
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

    def item_path(self, name, resource_type=None):
        """Return the URL path of an item by name (hostname, address) or _id."""
        return f"/{resource_type or self.resource_type}/{quote(str(name), safe=':')}"

    # -- modern API: dicts in, dicts out ----------------------------------------------------

    def get(self, name):
        """Return the item named `name` (with _id and _etag). Raises NotFound."""
        return self.call("GET", self.item_path(name))

    def page(self, page=1, page_size=100, where=None, sort=None, fields=None, path=None):
        """Return one page of the listing as Eve sends it (_items, _meta, _links)."""
        params = {"page": page, "max_results": page_size, **_query(where, sort, fields)}
        return self.call("GET", path or f"/{self.resource_type}", params=params)

    def iter(self, where=None, sort=None, fields=None, page_size=1000, limit=None, path=None):
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

    def list(self, where=None, sort=None, fields=None, limit=None):
        """Return the matching items as a list."""
        return list(self.iter(where, sort, fields, limit=limit))

    def count(self, where=None):
        """Return how many items match `where`."""
        return self.page(1, 1, where, fields=[self.key])["_meta"]["total"]

    def create(self, doc, reason=None):
        """Create one item; return it with its _id and _etag. Raises ValidationError, Conflict."""
        doc = as_dict(doc)
        meta = self.call("POST", f"/{self.resource_type}", json=doc, headers=_reason_header(reason))
        return merge(doc, meta)

    def create_many(self, docs, chunk_size=BULK_CHUNK, on_progress=None):
        """Create items in bulk POSTs; return, per document, the created item or the APIError that refused it.

        A batch that Eve refuses as a whole (one bad document rejects all) is sent again without the bad ones.
        """
        results = []
        for start in range(0, len(docs), chunk_size):
            results.extend(self._post_chunk(docs[start:start + chunk_size]))
            if on_progress:
                on_progress(min(start + chunk_size, len(docs)))
        return results

    def _post_chunk(self, chunk):
        if len(chunk) == 1:
            return [self._try(self.create, chunk[0])]
        try:
            body = self.call("POST", f"/{self.resource_type}", json=chunk)
        except ValidationError as e:
            items = _items_of(e.response)
            if len(items) != len(chunk):
                raise
            results = [None] * len(chunk)
            good = []
            for i, item in enumerate(items):
                if item.get("_status") == "ERR":
                    results[i] = ValidationError(422, "invalid", item.get("_issues"), e.response, "POST", e.url)
                else:
                    good.append(i)
            for i, result in zip(good, self._post_chunk([chunk[i] for i in good]) if good else [], strict=True):
                results[i] = result
            return results
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
    def _try(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except APIError as e:
            return e

    def update(self, name, changes, etag=None, retries=0, reason=None):
        """PATCH the item with If-Match and return it as stored.

        Without `etag`, the item is read first. On 412 (changed meanwhile) it is re-read and
        patched again, up to `retries` times. `reason` goes to the item's history.
        Raises NotFound, ValidationError, PreconditionFailed.
        """
        changes = as_dict(changes)
        return self.modify(name, lambda doc: changes, retries=retries, etag=etag, reason=reason)

    def modify(self, name, change, retries=3, etag=None, reason=None):
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
                return (self.write_item("PATCH", path, changes, etag if doc is None else doc["_etag"], reason)
                        or self.call("GET", path))
            except PreconditionFailed:
                if attempt >= retries:
                    raise
                attempt += 1

    def replace(self, name, doc, etag=None, reason=None):
        """PUT a whole new version of the item and return it as stored."""
        doc = as_dict(doc)
        if etag is None:
            current = self.get(name)
            name, etag = current["_id"], current["_etag"]
        return self.write_item("PUT", self.item_path(name), doc, etag, reason) or self.get(name)

    def delete(self, name, etag=None, reason=None):
        """Delete the item. Raises NotFound, PreconditionFailed."""
        if etag is None:
            current = self.get(name)
            name, etag = current["_id"], current["_etag"]
        self.write_item("DELETE", self.item_path(name), None, etag, reason)

    def write_item(self, method, path, body, etag, reason=None):
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
            stored = self.call("GET", path)
            if not client_retry.holds(stored, body, merge=method == "PATCH"):
                raise
            return stored
        return None


def _reason_header(reason):
    # Recorded in the item's history; HTTP headers carry Latin-1 only.
    return {"X-Reason": reason.encode("latin-1", "replace").decode("latin-1")} if reason else {}


def _items_of(response):
    try:
        items = response.json().get("_items")
    except (ValueError, AttributeError):
        return []
    return items if isinstance(items, list) else []
