"""Dashboard pages: the overview with the machines table, a machine's page, and its actions."""

import json

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..api.eveglue import patch_internal
from ..core.errors import AllocationError
from ..schema import MACHINE_STATES
from . import alloc, bp, queries, signin

# The order the dashboard shows states in: the usual ones first.
DISPLAY_STATES = ("idle", "in_use", "pxe", "pxe_failed", "needs_repair")
assert set(DISPLAY_STATES) == set(MACHINE_STATES)

# The states an operator may set from the dashboard, and the button that sets each.
SETTABLE = {"needs_repair": "Mark needs repair", "idle": "Mark idle"}


@bp.app_context_processor
def _globals():
    return {"rm_version": __version__, "web_user": signin.current, "can_act": signin.can_act,
            "signin_enabled": signin.enabled, "STATES": DISPLAY_STATES}


@bp.app_template_filter("show")
def _show(value):
    # Values as a person reads them: None as a dash, lists and dicts as JSON.
    if value is None:
        return "—"
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value, default=str)
    return value


@bp.get("/ui/")
def dashboard():
    """Show counts, pools, reservations, the queue and one page of the machines table."""
    query = queries.MachineQuery(request.args)
    max_age = float(current_app.config.get("DASHBOARD_CACHE_SECONDS", queries.DEFAULT_CACHE_SECONDS))
    counts, total, rows, pages, age = queries.overview(query, max_age)
    events, events_age = alloc.queue_events()
    return render_template(
        "dashboard.html", query=query, counts=counts, machines=rows, total=total, age=age, max_age=max_age,
        pages=pages, reservations=alloc.active_reservations(), pools=alloc.pools(),
        queue=alloc.queued_reservations(), queue_events=events, events_age=events_age)


@bp.get("/ui/machines/<path:hostname>")
def machine(hostname):
    """Show one machine: fields, tags, current reservation, history and actions."""
    doc = queries.machine(hostname)
    if doc is None:
        abort(404, description=f"no machine '{hostname}'")
    return render_template(
        "machine.html", m=doc, reservation=alloc.current_reservation(doc),
        history=alloc.machine_history(doc), settable=SETTABLE)


@bp.post("/ui/machines/<path:hostname>/state")
def set_state(hostname):
    """Mark a machine needs_repair or idle (idle also clears owner and job)."""
    user = signin.require_writer()
    state = request.form.get("state")
    if state not in SETTABLE:
        abort(400, description=f"state must be one of: {', '.join(SETTABLE)}")
    doc = queries.machine(hostname)
    if doc is None:
        abort(404, description=f"no machine '{hostname}'")
    back = url_for(".machine", hostname=hostname)
    if alloc.current_reservation(doc):
        flash(f"{hostname} is reserved: free its reservation first.", "warning")
        return redirect(back, code=303)
    updates = {"state": state}
    if state == "idle":
        updates.update(owner=None, job_id=None)
    # Through Eve, so validation, _etag/_updated and every on_update hook (guards, history)
    # apply; the hooks see the dashboard user as the request's user.
    g.rm_user = user
    try:
        _body, _modified, _etag, status = patch_internal("machines", updates, _id=doc["_id"])
    except HTTPException as e:
        if e.code != 409:
            raise
        flash(e.description, "warning")
        return redirect(back, code=303)
    if status != 200:
        abort(status if 400 <= status < 600 else 500, description=f"could not mark {hostname} {state}")
    queries.forget()
    flash(f"{hostname} is now {state}.", "success")
    return redirect(signin.safe_next(request.form.get("next"), back), code=303)


@bp.post("/ui/reservations/<reservation_id>/release")
def release(reservation_id):
    """Free a reservation (its machines go back to the pool), or cancel it while it waits in line."""
    user = signin.require_writer()
    outcome = alloc.release(reservation_id, user["username"])
    if outcome is None:
        abort(404, description=f"no reservation {reservation_id}")
    queries.forget()
    if outcome.state == "cancelled" and outcome.ended:
        flash(f"Reservation {reservation_id} is cancelled: it no longer waits in line.", "success")
    elif outcome.ended:
        flash(f"Freed {', '.join(outcome.released)}." if outcome.released else "Nothing left to free.", "success")
    else:
        flash(f"Nothing to free: reservation {reservation_id} is already {outcome.state}.", "success")
    return redirect(signin.safe_next(request.form.get("next"), url_for("home")), code=303)


@bp.errorhandler(AllocationError)
def _refused(error):
    # What the allocator cannot do now (core/errors.py) is said on the page the action came from.
    flash(error.message, "warning")
    return redirect(signin.safe_next(request.form.get("next"), url_for("home")), code=303)


def _html_error(error):
    if not isinstance(error, HTTPException):
        raise error
    return render_template("error.html", error=error), error.code


for _code in (400, 401, 403, 404, 405, 409, 413, 422):
    bp.register_error_handler(_code, _html_error)
