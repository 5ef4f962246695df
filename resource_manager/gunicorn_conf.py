"""Gunicorn settings for production, from the environment (see supervisord.conf)."""

import multiprocessing
import os

bind = os.environ.get("RM_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("RM_WORKERS", str(min(2 * multiprocessing.cpu_count() + 1, 9))))
threads = int(os.environ.get("RM_THREADS", "4"))
timeout = int(os.environ.get("RM_TIMEOUT", "60"))
graceful_timeout = 30
accesslog = os.environ.get("RM_ACCESS_LOG", "-")
errorlog = "-"
# Each worker builds its own app (and MongoClient) after the fork: pymongo clients are not fork-safe.
preload_app = False
