"""Eve's Mongo data layer, with two corrections.

- Writes use the write concern of MONGO_URI (`w=majority` on a replica set); Eve would force w=1.
- A change that hits a unique index (a PATCH or PUT renaming onto a taken name) answers 409,
  as an insert does; Eve answers a bare 400.
"""

import pymongo.errors
from eve.io.mongo import Mongo as EveMongo
from werkzeug.exceptions import Conflict


class DuplicateName(Conflict):
    """A write collided with a unique index: the name is taken."""

    def __init__(self, error):
        key = ", ".join(f"{k} '{v}'" for k, v in (error.details or {}).get("keyValue", {}).items())
        super().__init__(description=f"duplicate {key}: it exists already" if key
                         else "duplicate value of a unique field (hostname or address): it exists already")


def is_duplicate(error):
    """Return whether a write error is a unique-index violation."""
    if isinstance(error, pymongo.errors.DuplicateKeyError):
        return True
    # FerretDB/SQLite reports a unique violation on update as a generic error, not E11000.
    return isinstance(error, pymongo.errors.OperationFailure) and "UNIQUE constraint failed" in str(error)


class _Collection:
    """A pymongo Collection whose update/replace raise DuplicateName (which Eve lets through)."""

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

    def get_collection_with_write_concern(self, datasource, resource):
        return _Collection(self.pymongo(resource).db[datasource])
