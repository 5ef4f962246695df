"""The metrics reference: every figure of GET /metrics, read from api/metrics.py's own collectors."""

import os
from unittest import mock

from prometheus_client.metrics import MetricWrapperBase

from resource_manager.api import metrics as api_metrics

# What the help text of a figure leaves out: its label values, when it is 0, what to do with it.
# A figure of /metrics missing here fails `docgen --check`.
NOTES = {
    "rm_machines": "Every state of the schema (`pxe`, `pxe_failed`, `idle`, `in_use`, `needs_repair`), 0 when "
                   "none; any other state stored too.",
    "rm_reservations": "Every state stored; `active` and `pending` always, 0 when none.",
    "rm_reservation_queue_length": "Reservations in state `queued`.",
    "rm_pool_addresses": "`state` is `allocated` (holding a claim) or `free`; excluded addresses count in neither "
                         "(as `GET /address-pools` counts them).",
    "rm_http_requests_total": "By route **template** (`/machines/<_id>`, `/reservations/<rid>`: never the "
                              "requested path), `unmatched` for a path no route serves; methods other than the "
                              "usual seven count as `OTHER`.",
    "rm_http_request_duration_seconds": "From the first hook to the last.",
    "rm_reservation_latency_seconds": "`granted` (201), `queued` (answered in state `queued`, or 202), `refused` "
                                      "(409), `invalid` (other 4xx), `error` (5xx); dry runs are not counted.",
    "rm_queue_wait_seconds": "Counted by whichever process granted the request; buckets from 1 s to a day.",
    "rm_database_errors_total": "`unavailable` (answered 503), `query_rejected` (a `where`/`sort` the database "
                                "refused: 400).",
    "rm_http_unavailable_total": "`database` (it did not answer) or `busy` (retry later: a lock held, a request "
                                 "with the same Idempotency-Key still in progress, a reservation that took too "
                                 "long).",
    "rm_database_up": "At 0 the database figures are left out (no false zeros); the request figures still come.",
    "rm_metrics_database_read_seconds": "See `RM_METRICS_CACHE_SECONDS`.",
    "rm_metrics_database_age_seconds": "At most `RM_METRICS_CACHE_SECONDS` plus one read.",
}

# One of each kind of row the database figures can have, so that every family shows its labels.
SAMPLE_FIGURES = {"machines": {"idle": 1}, "reservations": {"active": 1}, "seconds": 0.0,
                  "pools": [{"name": "lab", "kind": "private", "allocated": 1, "free": 1}]}


class _App:
    config = {"METRICS_CACHE_SECONDS": 0}


class _Figures:
    """Stands in for the figures cache: answers SAMPLE_FIGURES without a database."""

    @staticmethod
    def get(_read):
        return SAMPLE_FIGURES, 0.0


def families():
    """Return [(name, type, labels, help)] of every figure /metrics answers, in the order it answers them."""
    with mock.patch.dict(os.environ):
        os.environ.pop(api_metrics.MULTIPROC_ENV, None)
        collected = api_metrics.Metrics(_App())  # its own throwaway registry
    found = []
    for wrapper in vars(collected).values():
        if isinstance(wrapper, MetricWrapperBase):
            for family in wrapper.describe():
                name = family.name + ("_total" if family.type == "counter" else "")
                found.append((name, family.type, tuple(wrapper._labelnames), family.documentation))
    for family in api_metrics.DatabaseCollector(_Figures()).collect():
        labels = []
        for sample in family.samples:
            labels += [k for k in sample.labels if k not in labels]
        found.append((family.name, family.type, tuple(labels), family.documentation))
    return found


def missing():
    """Return the figures without notes, and notes of no figure (empty when complete)."""
    names = [f[0] for f in families()]
    gaps = [f"metric {n}: no notes in docgen/metrics.py NOTES" for n in names if n not in NOTES]
    gaps += [f"metric {n}: no help text in api/metrics.py" for n, _t, _l, h in families() if not h.strip()]
    return gaps + [f"NOTES names {n}, which /metrics does not answer" for n in NOTES if n not in names]


def table():
    rows = ["| metric | type | labels | help (from the code) | notes |", "|---|---|---|---|---|"]
    for name, kind, labels, doc in families():
        shown = ", ".join(f"`{label}`" for label in labels) or "—"
        rows.append(f"| `{name}` | {kind} | {shown} | {doc} | {NOTES.get(name, '')} |")
    return "\n".join(rows)
