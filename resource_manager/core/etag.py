"""Version tags of documents written by our own code (Eve compares them with If-Match)."""

import hashlib

import bson


def etag(doc):
    """Return the version tag of `doc`'s content (its `_etag` aside): a new content, a new tag."""
    content = {k: v for k, v in doc.items() if k != "_etag"}
    return hashlib.sha1(bson.encode(content)).hexdigest()
