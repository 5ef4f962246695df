"""The Eve glue: the one module that imports Eve, and the one that knows its endpoint names and hooks.

Eve serves each resource of schema.DOMAIN under three Flask endpoints, named
``<resource>|<kind>``: COLLECTION (``/machines``: GET, POST), ITEM (``/machines/<name>``: GET,
PATCH, PUT, DELETE) and ITEM_POST_OVERRIDE (POST on an item URL, for X-HTTP-Method-Override).
The rest of the service asks `eve_endpoint()` which one a request reached, builds the app with
`make_app()`, registers hooks with `on()`, and extends the bases named here (the data layer,
datalayer.py; the validator, validation.py). An import contract (pyproject.toml) keeps every
other module of ours from importing Eve.
"""

from typing import NamedTuple

from eve import Eve
from eve.auth import BasicAuth, requires_auth
from eve.io.mongo import Mongo as EveMongo
from eve.io.mongo import Validator as EveValidator
from eve.io.mongo.parser import parse as parse_python_where
from eve.methods.common import build_response_document, pre_event, ratelimit, resolve_embedded_fields, resource_link
from eve.methods.patch import patch_internal
from eve.utils import config, home_link, parse_request

__all__ = [
    "COLLECTION", "ITEM", "ITEM_POST_OVERRIDE", "EveEndpoint", "EveMongo", "EveValidator", "build_response_document",
    "collection_view", "config", "endpoint", "eve_endpoint", "home_link", "make_app", "on", "parse_python_where",
    "parse_request", "patch_internal", "resolve_embedded_fields", "resource_link",
]

COLLECTION = "resource"
ITEM = "item_lookup"
ITEM_POST_OVERRIDE = "item_post_override"
_KINDS = (COLLECTION, ITEM, ITEM_POST_OVERRIDE)


class EveEndpoint(NamedTuple):
    """An endpoint of Eve's: the resource ("machines") and the kind (COLLECTION, ITEM, ITEM_POST_OVERRIDE)."""

    resource: str
    kind: str


def eve_endpoint(name):
    """Return the EveEndpoint of a Flask endpoint name, or None when Eve does not serve it."""
    resource, sep, kind = (name or "").rpartition("|")
    return EveEndpoint(resource, kind) if sep and resource and kind in _KINDS else None


def endpoint(resource, kind):
    """Return the Flask endpoint name Eve gives a resource's collection or item URL."""
    return f"{resource}|{kind}"


def make_app(settings, *, validator, data, authorize):
    """Return the Eve app of `settings`.

    `authorize(allowed_roles, resource, method)` decides Eve's own routes: it returns the user
    name of valid credentials that may, None without credentials (Eve answers 401), or aborts
    (403) when they may not.
    """

    class Auth(BasicAuth):
        def authorized(self, allowed_roles, resource, method):
            username = authorize(allowed_roles, resource, method)
            if username is None:
                return False
            self.set_user_or_token(username)
            return True

    return Eve(settings=settings, validator=validator, data=data, auth=Auth)


def on(app, event, fn, resource=None):
    """Add `fn` to Eve's hook `on_<event>` (of one resource when given: `on_<event>_<resource>`)."""
    hook = getattr(app, f"on_{event}" + (f"_{resource}" if resource else ""))
    hook += fn


def collection_view(view):
    """Make `view(resource, **lookup)` an Eve collection GET: rate limit, Eve's auth, its pre-GET hooks."""
    return ratelimit()(requires_auth("resource")(pre_event(view)))
