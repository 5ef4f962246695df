"""A server-sent events reader for the tests: GET /events over real HTTP, parsed as EventSource would."""

import json
import socket
import threading
import time

import requests


class Stream:
    """One GET /events, read in a thread into `events` [(id, type, data)]; `ids` is what a reconnect sends."""

    def __init__(self, url, last_event_id=None, params=None, auth=None, timeout=30, retry=True):
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        # A slot of a stream just hung up comes back within a second (routes/events.py): a reconnect may wait it.
        deadline = time.monotonic() + 5
        while True:
            self.response = requests.get(url + "/events", headers=headers, params=params, auth=auth, stream=True,
                                         timeout=timeout)
            if self.response.status_code != 503 or not retry or time.monotonic() > deadline:
                break
            self.response.close()
            time.sleep(0.1)
        self.events = []
        self.comments = 0
        self.last_id = last_event_id
        self.ended = threading.Event()
        self.arrived = threading.Condition()
        if self.response.status_code == 200:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        else:
            self.ended.set()

    def _read(self):
        fields = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "":
                    self._dispatch(fields)
                    fields = {}
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by us
        finally:
            self.ended.set()
            with self.arrived:
                self.arrived.notify_all()

    def _dispatch(self, fields):
        with self.arrived:
            if "id" in fields:
                self.last_id = int(fields["id"])
            if "data" in fields:
                self.events.append((int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"])))
            self.arrived.notify_all()

    def wait_for(self, count, timeout=20):
        """Wait until `count` events arrived (or the stream ended); return the events."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.events) >= count or self.ended.is_set(), timeout)
        return list(self.events)

    def wait_until(self, predicate, timeout=20):
        """Wait until predicate(events) holds (or the stream ended); return the events."""
        with self.arrived:
            self.arrived.wait_for(lambda: predicate(self.events) or self.ended.is_set(), timeout)
        return list(self.events)

    def close(self):
        """Hang up (as a browser closing its tab does): the server notices at its next write."""
        sock = getattr(getattr(self.response.raw, "_connection", None), "sock", None)
        if sock is None:  # Connection: close: the socket belongs to the response's reader
            sock = getattr(getattr(getattr(self.response.raw._fp, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; closing alone would not
            except OSError:
                pass
        self.response.close()
        self.ended.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
