"""Eve's Mongo data layer, with these corrections.

- Conditional writes are atomic on every engine (atomic.py): Eve's `{_id, _etag}` updates
  then really are compare-and-set, so of two writers holding one If-Match, one gets 412.
- A DELETE removes the version it checked (`{_id, _etag}`), or answers 412: Eve deletes by
  `_id` alone, so a delete racing a reservation could remove a machine just handed out.
- A bulk POST stores all of its documents or none: Eve's ordered insert keeps the documents
  before a duplicate. On FerretDB the insert and its undo hold the write lock, so nobody
  writes those documents in between; on MongoDB the undo spares a document changed meanwhile.
- Writes use the write concern of MONGO_URI (`w=majority` on a replica set); Eve would force w=1.
- A write that hits a unique index answers 409 naming the taken value, on MongoDB and on the
  embedded database (SQLite or PostgreSQL) alike: an insert (E11000 everywhere), and a PATCH or PUT
  renaming onto a taken name (Eve answers a bare 400 there; FerretDB does not even say E11000).
- Listings count the matches only when they must, and reuse a recent count (see Mongo.find): Eve
  counts on every page, and on the embedded database a count decodes every match.
- A PUT or PATCH that changes nothing succeeds (Eve answered 412 when it came within the
  second of the last write; see Mongo._unchanged).
- A string field is queried as the string it is: Eve turned any 24-hex value of ?where into an
  ObjectId, so `{"reservation": "<id>"}` (reservation ids look like ObjectIds) matched nothing.
"""

import contextlib
import datetime
import hashlib
import json
import threading
import time

import pymongo.errors
from flask import abort, g
from werkzeug.exceptions import Conflict

from ..core.dates import aware
from ..schema import NAME_FIELDS
from .db import engine
from .eveglue import EveMongo, config, on

COUNTS = "listing_counts"  # recent listing counts shared by the workers: {_id: digest of the query, count, at}


def _count_id(key):
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


class Exact:
    """A filter value compared as the text it is (routes/resources.py's field filters).

    Eve turns query strings that look like a date or 24 hex digits into datetimes and ObjectIds
    (Mongo._mongotize); an owner or job id of that shape must still match its stored text.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):  # part of the listing-count cache key (json.dumps default=str)
        return f"Exact({self.value!r})"

    __str__ = __repr__


class DuplicateName(Conflict):
    """A write collided with a unique index: the name is taken."""

    def __init__(self, error, key_value=None):
        key_value = key_value or (getattr(error, "details", None) or {}).get("keyValue", {})
        key = ", ".join(f"{k} '{v}'" for k, v in key_value.items())
        super().__init__(description=f"duplicate {key}: it exists already" if key
                         else "duplicate value of a unique field (hostname or address): it exists already")


def is_duplicate(error):
    """Return whether a write error is a unique-index violation."""
    if isinstance(error, pymongo.errors.DuplicateKeyError):
        return True
    # FerretDB reports a unique violation on update as a generic error (code 1), not E11000:
    # SQLite's text on SQLite, PostgreSQL's SQLSTATE 23505 (unique_violation) on PostgreSQL.
    text = str(error)
    return isinstance(error, pymongo.errors.OperationFailure) and (
        "UNIQUE constraint failed" in text or "SQLSTATE 23505" in text)


class _Collection:
    """An atomic Collection whose update/replace raise DuplicateName (which Eve lets through)."""

    def __init__(self, collection):
        self._collection = collection

    def __getattr__(self, name):
        return getattr(self._collection, name)

    def update_one(self, *args, **kwargs):
        return self._translate(self._collection.update_one, *args, **kwargs)

    def replace_one(self, *args, **kwargs):
        return self._translate(self._collection.replace_one, *args, **kwargs)

    @staticmethod
    def _translate(method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except pymongo.errors.OperationFailure as e:
            if is_duplicate(e):
                raise DuplicateName(e) from e
            raise


class Mongo(EveMongo):
    """Eve's data layer, honouring the URI's write concern and answering 409 on duplicate names."""

    # Page 1's count of a query serves its later pages while they keep coming (at most
    # COUNT_IDLE_SECONDS apart), for at most COUNT_MAX_SECONDS, in this process.
    COUNT_IDLE_SECONDS = 10.0
    COUNT_MAX_SECONDS = 120.0

    def init_app(self, app):
        super().init_app(app)
        self._counts = {}
        self._counts_lock = threading.Lock()
        on(app, "delete_item", _remember_deleted)

    def insert(self, resource, doc_or_docs):
        """Insert one document or a list of them, all or nothing; return their _ids.

        A unique index refusing a document answers 409 naming the taken value. The index
        decides, atomically, on every engine; single documents are not checked before (see
        validation.py), so a duplicate POST costs one insert, not a query and an insert.
        """
        docs = [doc_or_docs] if isinstance(doc_or_docs, dict) else list(doc_or_docs)
        coll = self.get_collection_with_write_concern(self.datasource(resource)[0], resource)
        with coll.locked() if len(docs) > 1 else contextlib.nullcontext():
            try:
                return coll.insert_many(docs, ordered=True).inserted_ids
            except pymongo.errors.BulkWriteError as e:
                # Ordered: exactly the first nInserted went in (pymongo gave each its _id).
                done = docs[:e.details.get("nInserted", 0)]
                for doc in done:
                    coll.delete_one({"_id": doc["_id"], "_etag": doc.get("_etag")})
                duplicates = [err for err in e.details.get("writeErrors") or [] if err.get("code") == 11000]
                if not duplicates:
                    raise
                # MongoDB names the key (keyValue); FerretDB does not, but the document does.
                key_value = duplicates[0].get("keyValue")
                field, document = NAME_FIELDS.get(resource), docs[duplicates[0].get("index", 0)]
                if not key_value and field in document:
                    key_value = {field: document[field]}
                raise DuplicateName(pymongo.errors.DuplicateKeyError(
                    duplicates[0].get("errmsg", ""), 11000, duplicates[0]), key_value) from e

    def remove(self, resource, lookup):
        """Delete the item Eve checked, only in the version it checked (412 otherwise)."""
        original = g.pop("rm_deleting", None)
        if original is None or original[0] != resource:
            return super().remove(resource, lookup)
        _resource, _id, etag = original
        coll = self.get_collection_with_write_concern(self.datasource(resource)[0], resource)
        if coll.delete_one({"_id": _id, "_etag": etag}).deleted_count != 1:
            abort(412, description="Client and server etags don't match")
        return None

    def find(self, resource, req, sub_resource_lookup, perform_count=True):
        """Return (documents, total), counting only when the page itself cannot tell the total.

        One document more than the page is read, so whether another page follows is always
        exact. A page with none after it gives the exact total itself (skip + its length).
        Otherwise the total is a count of the query made at most COUNT_CACHE_SECONDS ago (10;
        0: always now) by this process or another worker (collection `listing_counts`), and
        never below what this page proves exists; later pages of a listing reuse page 1's count
        while the listing goes on (at most COUNT_IDLE_SECONDS apart, COUNT_MAX_SECONDS in all).
        On the embedded database a count decodes every match, a second or more at 10,000; a
        skip-paged listing under concurrent writes is no snapshot anyway, and its items are
        always read now.
        """
        cursor, _ = super().find(resource, req, sub_resource_lookup, perform_count=False)
        if not perform_count:
            return cursor, None
        paginated = bool(req and req.max_results)
        if paginated:
            cursor.limit(req.max_results + 1)
        documents = list(cursor)
        if not paginated:  # every match is here
            return documents, len(documents)
        more = len(documents) > req.max_results
        documents = documents[:req.max_results]
        skip = (req.page - 1) * req.max_results
        if not more and (documents or req.page == 1):
            return documents, skip + len(documents)
        least = skip + len(documents) + more if documents else 0  # what this page proves exists
        key = (resource, req.where or "", json.dumps(sub_resource_lookup, sort_keys=True, default=str))
        fresh_for = float(self.app.config.get("COUNT_CACHE_SECONDS", 10))
        now = time.monotonic()
        with self._counts_lock:
            count, counted, used = self._counts.get(key, (None, 0.0, 0.0))
            listing = (req.page > 1 and now - used < self.COUNT_IDLE_SECONDS
                       and now - counted < self.COUNT_MAX_SECONDS)
            if count is not None and count >= least and (now - counted < fresh_for or listing):
                self._counts[key] = (count, counted, now)
                return documents, count
        count = self._shared_count(key, fresh_for, least) if fresh_for > 0 else None
        if count is None:
            # super().find gives an unexecuted cursor, and the count
            count = max(super().find(resource, req, sub_resource_lookup)[1], least)
            if fresh_for > 0:
                self._share_count(key, count)
        with self._counts_lock:
            if len(self._counts) > 1000:
                self._counts.clear()
            self._counts[key] = (count, now, now)
        return documents, count

    def _shared_count(self, key, fresh_for, least):
        # A count another worker made recently (one read by _id), so that N workers count once.
        try:
            doc = self.driver.db[COUNTS].find_one({"_id": _count_id(key)})
        except pymongo.errors.PyMongoError:
            return None
        if doc is None or not isinstance(doc.get("count"), int) or doc["count"] < least:
            return None
        age = (datetime.datetime.now(datetime.timezone.utc) - aware(doc["at"])).total_seconds()
        return doc["count"] if 0 <= age < fresh_for else None

    def _share_count(self, key, count):
        try:
            self.driver.db[COUNTS].replace_one(
                {"_id": _count_id(key)}, {"count": count, "at": datetime.datetime.now(datetime.timezone.utc)},
                upsert=True)
        except pymongo.errors.PyMongoError:
            pass  # only a cache: the next listing counts again

    def _mongotize(self, source, resource, parse_objectid=False):
        # Eve's conversion of query values (_id and tags.* values that look like ObjectIds or dates),
        # sparing Exact ones and the conditions on the resource's string fields, left as sent (also
        # inside $in, $ne...): a reservation id looks like an ObjectId, and `{"reservation": id}` must
        # match its stored text. Eve recurses through this method.
        schema = (self.app.config["DOMAIN"].get(resource) or {}).get("schema") or {}
        kept = {key: value.value if isinstance(value, Exact) else value for key, value in source.items()
                if isinstance(value, Exact) or (schema.get(key) or {}).get("type") == "string"}
        for key in kept:
            del source[key]
        super()._mongotize(source, resource, parse_objectid)
        source.update(kept)
        return source

    def update(self, resource, id_, updates, original):
        return self._done_unless_changed(super().update, resource, id_, updates, original)

    def replace(self, resource, id_, document, original):
        return self._done_unless_changed(super().replace, resource, id_, document, original)

    def _done_unless_changed(self, write, resource, id_, new, original):
        try:
            return write(resource, id_, new, original)
        except self.OriginalChangedError:
            if not self._unchanged(resource, id_, new, original):
                raise
        return None

    def _unchanged(self, resource, id_, new, original):
        """Return whether a write that modified nothing left the very version it was meant for.

        Eve takes "nothing modified" for "changed meanwhile" (412). A PUT or PATCH that sends
        what is stored within the second of the last write modifies nothing too: its new
        _etag, a hash of the content with _updated to the second, is the old one. That is
        done, not a conflict, when the item still has that _etag.
        """
        etag = original.get(config.ETAG)
        if etag is None or new.get(config.ETAG) != etag:
            return False
        datasource = self.datasource(resource)[0]
        current = self.pymongo(resource).db[datasource].find_one({"_id": id_}, {config.ETAG: 1})
        return current is not None and current.get(config.ETAG) == etag

    def get_collection_with_write_concern(self, datasource, resource):
        return _Collection(engine(self.app).wrap(self.pymongo(resource).db)[datasource])


def _remember_deleted(resource, original):
    # Eve passes the checked original to hooks, but only the lookup to remove().
    g.rm_deleting = (resource, original.get("_id"), original.get("_etag"))
