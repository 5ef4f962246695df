"""A command for the `rmctl run` tests: says what it got, tells the test it runs, then ends as told.

    python run_child.py OUT [--survive-int]

1. writes OUT/report.json: its RM_* variables, the contents of RM_HOSTS_FILE and RM_MACHINES_JSON,
   its pid and process group;
2. prints "ready" (the test reads it on rmctl's stdout, or the terminal);
3. reads one line on stdin: "exit N" exits N; "kill SIGNAME" kills itself with that signal.
Each SIGINT, SIGTERM, SIGHUP it gets is appended to OUT/signals (one name a line), then it dies of
that signal (the default action), except SIGINT with --survive-int.
"""

import json
import os
import signal
import sys

OUT = sys.argv[1]
SURVIVE_INT = "--survive-int" in sys.argv[2:]


def log(signum, _frame):
    with open(os.path.join(OUT, "signals"), "a", encoding="utf-8") as fh:
        fh.write(signal.Signals(signum).name + "\n")
    if signum == signal.SIGINT and SURVIVE_INT:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def read(name):
    path = os.environ.get(name)
    with open(path, encoding="utf-8") as fh:
        return fh.read()


for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, log)
report = {name: os.environ.get(name) for name in ("RM_RESERVATION_ID", "RM_HOSTS", "RM_HOSTS_FILE", "RM_MACHINES_JSON")}
report.update(hosts_file=read("RM_HOSTS_FILE"), machines=json.loads(read("RM_MACHINES_JSON")), pid=os.getpid(),
              pgid=os.getpgrp(), ppid=os.getppid())
with open(os.path.join(OUT, "report.json"), "w", encoding="utf-8") as fh:
    json.dump(report, fh)
print("ready", flush=True)
word, arg = sys.stdin.readline().split()
if word == "exit":
    sys.exit(int(arg))
os.kill(os.getpid(), getattr(signal, arg))
signal.pause()
