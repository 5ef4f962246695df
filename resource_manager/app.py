"""create_app(): the settings layers, then the Eve app with everything wired in."""

import logging

from werkzeug.middleware.proxy_fix import ProxyFix

from . import web
from .api import (
    auth,
    config,
    db,
    errors,
    guards,
    intake,
    listing,
    lookup,
    metrics,
    queryargs,
    requestid,
    routemeta,
    slots,
    upkeep,
)
from .api.datalayer import Mongo
from .api.eveglue import make_app
from .api.routes import events, health, history, pools, reservations, resources, tokens, webhooks
from .api.validation import Validator
from .schema import DOMAIN, EVE_SETTINGS


def create_app(overrides=None, environ=None, clock=None):
    """Return the ResourceManager WSGI app.

    `clock`: the lifecycles' clock (core/clock.py), for tests that move time; default the real one.
    Raises RuntimeError when no MONGO_URI is configured.
    """
    settings = dict(EVE_SETTINGS)
    settings.update(config.load(overrides, environ))
    settings["DOMAIN"] = _copy_domain()
    app = make_app(settings, validator=Validator, data=Mongo, authorize=auth.authorize_eve)
    app.logger.setLevel(logging.INFO)
    metrics.init_app(app)  # first: it then sees every answer last, with its final status
    requestid.init_app(app)
    errors.init_app(app)
    intake.init_app(app)
    queryargs.init_app(app)
    routemeta.init_app(app)
    auth.init_app(app)
    db.init_app(app, clock)
    lookup.init_app(app)
    listing.init_app(app)
    resources.init_app(app)
    health.init_app(app)
    history.init_app(app)
    guards.init_app(app)
    upkeep.init_app(app)
    reservations.init_app(app)
    pools.init_app(app)
    tokens.init_app(app)
    slots.init_app(app)
    events.init_app(app)
    webhooks.init_app(app)
    web.init_app(app)
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies:
        # The client address (the throttle's key) from X-Forwarded-For, as set by that many proxies.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app


def _copy_domain():
    # Eve fills the DOMAIN dicts in place; each app gets its own.
    import copy

    return copy.deepcopy(DOMAIN)
