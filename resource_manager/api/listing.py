"""A collection GET without ?page and ?max_results answers every match, streamed.

The original server ran Eve with PAGINATION = False: a bare GET /machines listed every machine,
and its client (and the scripts built on it) read `_items` of that one answer. Paged requests
(?page or ?max_results) stay Eve's, with `_meta` and `_links.next`.

The bare listing is written while the database cursor is read, so the server holds at most one
database batch (BATCH documents) and one chunk of output, whatever the fleet's size. The body is
{"_items": [...], "_links": {...}, "_meta": {"total": N}}: the count comes last, once known.
A database failure before the first document is the usual JSON error (503, 400); one after the
answer began breaks the connection off (no final chunk), so the client sees a failed transfer
and an unterminated JSON document, never a shorter list that looks whole.

Eve's `on_fetched_resource` hooks do not run for this listing (the documents are never all in
memory at once); none is registered. The answer has no Last-Modified header.
"""

import functools
import itertools
import logging

import pymongo.errors
import simplejson as json
from blinker import Namespace
from flask import Response, current_app, request, stream_with_context

from ..schema import DOMAIN
from .eveglue import (
    COLLECTION,
    build_response_document,
    collection_view,
    config,
    endpoint,
    eve_endpoint,
    home_link,
    parse_request,
    resolve_embedded_fields,
    resource_link,
)

log = logging.getLogger(__name__)

# Documents per database round trip, and per chunk of the body.
BATCH = 200
# Sent (the app, resource=..., sent=N) after each chunk of a bare listing is handed to the server.
chunk_sent = Namespace().signal("listing-chunk-sent")


def is_bare(args):
    """Return whether a collection GET asks for everything: neither ?page nor ?max_results."""
    return "page" not in args and "max_results" not in args


@collection_view
def get_all(resource, **lookup):
    """Answer every document of `resource` matching the request's where/sort/projection, streamed."""
    req = parse_request(resource)
    req.max_results, req.page = 0, 1  # no limit, no skip
    embedded = resolve_embedded_fields(resource, req)
    cursor, _ = current_app.data.find(resource, req, lookup, perform_count=False)
    cursor.batch_size(BATCH)
    # Read the first batch now: a database that is away or refuses the query answers an error
    # status here, before any of the body is sent.
    first = list(itertools.islice(cursor, 1))
    query = request.query_string.decode("utf-8", "replace")
    links = {"parent": home_link(),
             "self": {"title": config.DOMAIN[resource]["resource_title"],
                      "href": resource_link() + (f"?{query}" if query else "")}}
    response = Response(mimetype="application/json")
    if request.method != "HEAD":
        body = _body(current_app._get_current_object(), resource, itertools.chain(first, cursor), cursor,
                     embedded, links)
        response.response = stream_with_context(body)
    return response


def _body(app, resource, documents, cursor, embedded, links):
    indent = 4 if "pretty" in request.args else None
    dumps = functools.partial(json.dumps, cls=app.data.json_encoder_class, sort_keys=config.JSON_SORT_KEYS,
                              indent=indent)
    total = 0
    try:
        yield '{"_items": ['
        while True:
            chunk = list(itertools.islice(documents, BATCH))
            if not chunk:
                break
            for document in chunk:
                build_response_document(document, resource, embedded)
            yield ("," if total else "") + ",".join(dumps(document) for document in chunk)
            total += len(chunk)
            chunk_sent.send(app, resource=resource, sent=total)
        yield f'], "_links": {dumps(links)}, "_meta": {dumps({"total": total})}}}'
    except pymongo.errors.PyMongoError as e:
        log.warning("listing %s broke off after %d documents: %s", resource, total, e)
        raise
    finally:
        cursor.close()


def _wrap(view):
    @functools.wraps(view)
    def collection(**lookup):
        if request.method in ("GET", "HEAD") and is_bare(request.args):
            return get_all(eve_endpoint(request.endpoint).resource, lookup)
        return view(**lookup)

    return collection


def init_app(app):
    """Serve bare collection GETs of every Eve resource with get_all()."""
    for resource in DOMAIN:
        name = endpoint(resource, COLLECTION)
        app.view_functions[name] = _wrap(app.view_functions[name])
