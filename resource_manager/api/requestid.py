"""Request ids: one per request, in the X-Request-Id header, every error body and every log line.

The caller's X-Request-Id is kept when it is sane: 1 to 128 characters of ``[A-Za-z0-9._:-]``
(nothing that could split a log line or a header). Otherwise, or when none is sent, the
server makes one (a uuid4 in hex). Log records get a ``request_id`` attribute ("-" outside a
request); ``LOG_FORMAT=json`` writes one JSON object per line for log shippers.

Every log record's message is made safe here, in the one place every record passes (the record
factory, so gunicorn's access lines, werkzeug's and a test's handlers alike): control characters
(CR and LF above all, which a path like ``/machines/x%0d%0a...`` carries) are escaped, so a client
can never end a line and forge the next; an API token's secret and any ``access_token=`` value are
redacted, so a token put in a URL does not land in the access log.
"""

import json
import logging
import re
import sys
import uuid

from flask import g, has_request_context, request

HEADER = "X-Request-Id"
SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
NONE = "-"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# The access log's atom for the answer's X-Request-Id (gunicorn_conf.py's access_log_format).
ACCESS_ATOM = "{x-request-id}o"
# What could end a log line or fake one, or mislead a terminal: C0 and C1 controls, DEL, and the
# Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# An API token (rm_<id>_<secret>: the id stays, it names the token without granting anything), and the
# value of any access_token query parameter (percent-encoded names too).
_TOKEN_SECRET = re.compile(r"\b(rm_[0-9a-f]{16}_)[A-Za-z0-9_-]+")
_ACCESS_TOKEN = re.compile(r"(?i)(access(?:_|%5f)token=)[^&\s\"']*")
REDACTED = "[redacted]"


def safe_text(text):
    """Return `text` fit for one log line: control characters escaped, token secrets redacted."""
    text = _ACCESS_TOKEN.sub(rf"\1{REDACTED}", _TOKEN_SECRET.sub(rf"\1{REDACTED}", text))
    return _CONTROL.sub(_escape, text)


def _escape(match):
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def request_id():
    """Return this request's id, choosing it on first use (the caller's if sane, else a new one)."""
    rid = g.get("rm_request_id")
    if rid is None:
        sent = request.headers.get(HEADER, "")
        rid = sent if SANE.match(sent) else uuid.uuid4().hex
        g.rm_request_id = rid
    return rid


def current():
    """Return the id of the request being served, or None outside one."""
    return request_id() if has_request_context() else None


class RequestIdFilter(logging.Filter):
    """Give each record a ``request_id``: the request's, gunicorn's access atom, or "-"."""

    def filter(self, record):
        if getattr(record, "request_id", None) is None:
            record.request_id = _record_id(record)
        return True


def _record_id(record):
    rid = current()
    if rid is None and isinstance(record.args, dict):  # gunicorn's access line: its atoms
        rid = record.args.get(ACCESS_ATOM)
    return rid if rid and rid != NONE else NONE


_filter = RequestIdFilter()
_base_factory = None


class SafeLogRecord(logging.LogRecord):
    """A log record whose message, once its arguments are in, is safe_text()."""

    def getMessage(self):
        return safe_text(super().getMessage())


_safe_classes = {logging.LogRecord: SafeLogRecord}


def _safe_class(cls):
    # A factory installed before ours may make records of its own class: give that one the same message.
    if cls not in _safe_classes:
        _safe_classes[cls] = type(f"Safe{cls.__name__}", (cls,), {"getMessage": SafeLogRecord.getMessage})
    return _safe_classes[cls]


def _factory(*args, **kwargs):
    record = _base_factory(*args, **kwargs)
    if not isinstance(record, SafeLogRecord):
        record.__class__ = _safe_class(type(record))
    _filter.filter(record)
    return record


def install_record_factory():
    """Stamp every log record with its request id and make its message safe, whoever logs it (idempotent).

    A record factory rather than a Filter on some handlers: the id must be on every line,
    including those of handlers added later (gunicorn's, a test's caplog).
    """
    global _base_factory
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and traceback if any."""

    def format(self, record):
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _record_id(record),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)

    def formatTime(self, record, datefmt=None):
        import datetime

        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(log_format):
    """Install the record factory, and with ``json`` give the root's and gunicorn's handlers JSON lines.

    When the root logger has no handler (under gunicorn), one writing to stderr is added, so that
    the app's lines are written whole (with their request id) rather than by logging's last resort.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    install_record_factory()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
    if log_format == "json":
        for name in (None, "gunicorn.error", "gunicorn.access"):
            for handler in logging.getLogger(name).handlers:
                if not isinstance(handler.formatter, JsonFormatter):
                    handler.setFormatter(JsonFormatter())


def _choose():
    request_id()  # before any other hook, so that their log lines carry it too


def _set_header(response):
    response.headers[HEADER] = request_id()
    return response


def init_app(app):
    """Choose each request's id first, send it back on every answer, and set up the log lines."""
    configure_logging(app.config.get("LOG_FORMAT") or "text")
    app.before_request_funcs.setdefault(None, []).insert(0, _choose)
    app.after_request(_set_header)
