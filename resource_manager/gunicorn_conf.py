"""Gunicorn settings for production, from the environment (see supervisord.conf and README's Production).

What matters against slow and heavy clients:
- worker_class gthread: the main thread of each worker waits (without a thread) for a new
  connection's first bytes and for kept-alive connections; a pool thread is taken only once a
  request arrives. Sync workers would give each slow client a whole process.
- The app reads a body within RM_BODY_TIMEOUT (10 s) and refuses a write without credentials
  before reading its body at all; gunicorn cannot bound how long headers take to arrive, so
  behind the internet put a buffering proxy in front (e.g. nginx with client_header_timeout,
  client_body_timeout and proxy_request_buffering on).
- limit_request_line / limit_request_fields / limit_request_field_size bound the headers;
  the app bounds the body (RM_MAX_CONTENT_LENGTH, 4 MiB: 413).
- timeout: a worker whose main loop stops answering for this long is restarted; keepalive:
  how long an idle connection is kept (in the main loop, not in a thread).
"""

import multiprocessing
import os

bind = os.environ.get("RM_BIND", "127.0.0.1:5000")
worker_class = "gthread"
workers = int(os.environ.get("RM_WORKERS", str(min(2 * multiprocessing.cpu_count() + 1, 9))))
threads = int(os.environ.get("RM_THREADS", "4"))
timeout = int(os.environ.get("RM_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = int(os.environ.get("RM_KEEPALIVE", "5"))
# Requests with longer lines or more headers are refused (400/431) before the app sees them.
limit_request_line = 8190
limit_request_fields = 64
limit_request_field_size = 8190
accesslog = os.environ.get("RM_ACCESS_LOG", "-")
errorlog = "-"
# Each worker builds its own app (and MongoClient) after the fork: pymongo clients are not fork-safe.
preload_app = False
