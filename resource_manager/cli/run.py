"""rmctl run: reserve machines, run a command on them, release them however the command ends.

    reserve (in line with --wait; Ctrl-C, SIGTERM or SIGHUP cancel a queued request)
    -> signals blocked: from here on the main thread takes them one at a time (sigwaitinfo)
    -> heartbeats (clientlib/holding.py, the routine rm.holding() and the pytest plugin share)
    -> the command: a child in rmctl's process group, with RM_RESERVATION_ID, RM_HOSTS,
       RM_HOSTS_FILE and RM_MACHINES_JSON (files in a private temporary directory)
    -> it ends: release; or, when it failed and --keep-on-failure says so, keep for a post-mortem

Signals. The command stays in rmctl's process group, as sudo runs a command without a pty: it keeps
the terminal, job control works, and a signal to the whole group (Ctrl-C, a CI killing the job's
group) reaches it directly. SIGINT, SIGTERM and SIGHUP sent to rmctl by a process (kill, a CI
cancelling the job) are passed on to the command; those the kernel sent to the whole foreground
group (Ctrl-C, the terminal hanging up: si_code SI_KERNEL) reached it already and are not sent
again. rmctl then waits for the command to end, and releases.

If the reservation ends under the command (its lease ran out, someone released it), the heartbeat
answers 409: rmctl says so on one line and stops the command (SIGTERM, SIGKILL after STOP_GRACE s),
for its machines are no longer its own. If rmctl itself is killed outright (kill -9), the command
goes on, and the heartbeats stop: the server ends the reservation within the heartbeat period.

Exit status: the command's own; 128+n when signal n killed it; 126 (cannot execute) or 127 (not
found) when it could not start, as a shell says. rmctl's own codes (2, 4, 5, 6, 7, 130...) only
when reserving failed, and nothing ran.
"""

import os
import shlex
import shutil
import signal
import sys
import tempfile

from .command import Command
from .status import UsageError

SUMMARY = "reserve machines, run a command on them, release them (heartbeats meanwhile)"
EXAMPLES = """\
The command sees RM_RESERVATION_ID, RM_HOSTS (the hostnames, space-separated), RM_HOSTS_FILE (one
hostname a line) and RM_MACHINES_JSON (a file: the machines' documents, tags included). While it
runs, rmctl sends a heartbeat every third of --heartbeat; killed outright, it stops, and the server
frees the machines within --heartbeat. SIGINT, SIGTERM and SIGHUP go to the command first, then
rmctl releases. Exit status: the command's (128+n if signal n killed it; 126/127: it could not
start); rmctl's codes (2, 4, 5, 6, 7 not granted, 130) only when reserving failed.

examples:
  {prog} run --count 2 --job-id "$BUILD_TAG" --wait 30m -- ./ci/test-on-hosts.sh
  {prog} run --where '{{"tags.arch": "aarch64"}}' -- sh -c 'ssh "$RM_HOSTS" make check'
  {prog} run --count 4 --lease 8h --heartbeat 2m --keep-on-failure 4h -- pytest tests/system
  RES=$({prog} reserve --count 2 --heartbeat 15m --format id)     # several commands, one reservation:
  {prog} run --reservation "$RES" -- ./deploy.sh
  {prog} run --reservation "$RES" -- ./test.sh; {prog} release "$RES\""""

DEFAULT_HEARTBEAT = 60
STOP_GRACE = 10  # s between SIGTERM and SIGKILL when the reservation ended under the command
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WAITED = frozenset(FORWARDED + (signal.SIGCHLD, signal.SIGALRM))
RESET = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))
OWN_RESERVATION_OPTIONS = ("count", "where", "lease", "wait", "job_id", "owner", "reason", "keep_on_failure")


def add_arguments(p):
    """Add the options of `rmctl run` to its parser."""
    p.add_argument("--count", type=int, default=1, help="how many machines (default 1)")
    p.add_argument("--where", help="which machines qualify, as JSON")
    p.add_argument("--job-id", help="the job the machines are for")
    p.add_argument("--owner", help="owner to record (default: your user name)")
    p.add_argument("--reason", help="free text kept in the history")
    p.add_argument("--lease", metavar="DURATION",
                   help="the longest the machines are held, heartbeats or not (default: the server's, 4h)")
    p.add_argument("--wait", metavar="DURATION", help="when not enough machines are free, wait in line this long")
    p.add_argument("--heartbeat", metavar="DURATION",
                   help=f"the server frees the machines this long after the last heartbeat (default "
                        f"{DEFAULT_HEARTBEAT}s; one is sent every third of it)")
    p.add_argument("--keep-on-failure", metavar="DURATION",
                   help="when the command fails, keep the machines this long for a post-mortem instead of releasing")
    p.add_argument("--reservation", metavar="ID",
                   help="run on this active reservation (rmctl reserve --heartbeat ... --format id) instead of "
                        "making one; it is not released afterwards")
    p.add_argument("run_command", nargs="...", metavar="-- COMMAND [ARGS...]", help="the command and its arguments")


def cmd_run(client, args, env):
    """Run `rmctl run`; return the exit status."""
    from . import alloc
    from .commands import parse_json_object

    argv = list(args.run_command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError("run needs a command: rmctl run [OPTIONS] -- COMMAND [ARGS...]")
    if args.reservation:
        given = [f"--{name.replace('_', '-')}" for name in OWN_RESERVATION_OPTIONS
                 if getattr(args, name) not in (None, 1 if name == "count" else None)]
        if given:
            raise UsageError(f"run --reservation uses that reservation as it is: {', '.join(given)} "
                             "apply when run makes one")
    elif args.count < 1:
        raise UsageError("--count must be at least 1")
    where = parse_json_object(args.where, "--where") if args.where else None
    heartbeat = alloc.parse_duration(args.heartbeat, "--heartbeat") if args.heartbeat else DEFAULT_HEARTBEAT
    keep = alloc.parse_duration(args.keep_on_failure, "--keep-on-failure") if args.keep_on_failure else None
    hold = _hold(client, args, env, where, heartbeat)

    interrupted, previous = _Interruptible(), None
    try:
        with interrupted:
            res = hold.attach(args.reservation) if args.reservation else hold.reserve()
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)  # from here on, signals wait for us
    except KeyboardInterrupt as e:
        if previous is not None:
            _drain(WAITED)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if hold.reservation is not None:  # granted just before the signal came
            hold.release_quietly()
        signum = interrupted.signum or signal.SIGINT
        if signum == signal.SIGINT:
            raise  # the funnel says it, exit 130
        env.error(f"{signal.Signals(signum).name}: {_interrupted_message(e)}")
        return 128 + signum
    return Supervisor(argv, hold, env).run(res, keep, previous)


def _hold(client, args, env, where, heartbeat):
    from ..clientlib.holding import Hold

    progress = None
    if args.wait and env.stderr_isatty:
        from .alloc import _show_place

        progress = _show_place(env)
    from .alloc import parse_duration

    return Hold(client, args.count, where=where, job_id=args.job_id, owner=args.owner, reason=args.reason,
                lease=parse_duration(args.lease) if args.lease else None,
                wait=parse_duration(args.wait, "--wait") if args.wait else None, heartbeat=heartbeat,
                on_progress=progress)


class _Interruptible:
    """While reserving: SIGTERM and SIGHUP interrupt as Ctrl-C does (a queued request is cancelled)."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def _raise(self, signum, _frame):
        self.signum = signum
        raise KeyboardInterrupt

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self.previous[signum] = signal.signal(signum, self._raise)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _interrupted_message(interrupt):
    rid = getattr(interrupt, "reservation_id", None)
    if rid and getattr(interrupt, "cancelled", False):
        return f"interrupted: queued reservation {rid} cancelled"
    return "interrupted"


class Supervisor:
    """The command's life on held machines: start it, pass signals on, stop it if the machines go, release."""

    def __init__(self, argv, hold, env):
        self.argv, self.hold, self.env = argv, hold, env
        self.pid = None
        self.signalled = None  # the last signal passed on from someone telling rmctl to stop
        self.stopping = False  # the reservation ended under the command: SIGTERM sent, SIGKILL next

    def run(self, res, keep, previous):
        """Run the command on the reservation `res` (signals blocked, `previous` the mask before); return its status."""
        hold, env = self.hold, self.env
        env.error(f"holding {' '.join(hold.hostnames)} (reservation {hold.id}, heartbeat {hold.heartbeat} s)")
        directory = tempfile.mkdtemp(prefix="rmctl-run-")
        try:
            hold.on_lost = self._lost
            hold.start()  # after blocking: the thread inherits the mask, every signal comes to us
            status = self._spawn(self._environ(res, directory), previous)
            if status is None:
                status = self._supervise()
        finally:
            hold.stop()
            shutil.rmtree(directory, ignore_errors=True)
            signal.setitimer(signal.ITIMER_REAL, 0)
            _drain(WAITED)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if hold.lost:
            return status
        return self._finish(status, keep)

    def _environ(self, res, directory):
        import json

        hosts_file = os.path.join(directory, "hosts")
        with open(hosts_file, "w", encoding="utf-8") as fh:
            fh.writelines(f"{name}\n" for name in self.hold.hostnames)
        machines_file = os.path.join(directory, "machines.json")
        with open(machines_file, "w", encoding="utf-8") as fh:
            json.dump(res["machines"], fh, indent=1, sort_keys=True)
        return dict(self.env.environ, RM_RESERVATION_ID=self.hold.id, RM_HOSTS=" ".join(self.hold.hostnames),
                    RM_HOSTS_FILE=hosts_file, RM_MACHINES_JSON=machines_file)

    def _spawn(self, environ, mask):
        """Start the command; return None, or the exit status when it could not start (126, 127)."""
        name = self.argv[0]
        path = name if os.sep in name else shutil.which(name, path=environ.get("PATH", os.defpath))
        if path is None:
            self.env.error(f"cannot run {name}: command not found")
            return 127
        try:
            # posix_spawn: nothing of ours runs in the child, threads or not; it starts with rmctl's
            # signal mask from before the run and the default action for what Python ignores.
            self.pid = os.posix_spawn(path, self.argv, environ, setsigmask=mask, setsigdef=RESET)
        except OSError as e:
            self.env.error(f"cannot run {name}: {e.strerror or e}")
            return 127 if isinstance(e, FileNotFoundError) else 126
        return None

    def _supervise(self):
        """Wait for the command to end, taking signals one at a time; return its exit status."""
        while True:
            signum, from_kernel = _next_signal()
            if signum == signal.SIGCHLD:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == self.pid:
                    code = os.waitstatus_to_exitcode(status)
                    return code if code >= 0 else 128 - code
            elif signum == signal.SIGALRM:
                self._on_alarm()
            elif signum in FORWARDED:
                self.signalled = signum
                if not from_kernel:
                    _kill(self.pid, signum)

    def _lost(self, message):
        """The reservation ended under the command (called from the heartbeat thread): wake the main thread."""
        os.kill(os.getpid(), signal.SIGALRM)

    def _on_alarm(self):
        if self.hold.lost and not self.stopping:
            self.stopping = True
            self.env.error(f"{self.hold.lost}; stopping {self.argv[0]} (pid {self.pid}): its machines are no "
                           "longer its own")
            _kill(self.pid, signal.SIGTERM)
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE)
        elif self.stopping:
            _kill(self.pid, signal.SIGKILL)

    def _finish(self, status, keep):
        """Release (or keep, for a post-mortem); return the exit status."""
        from ..clientlib.errors import ResourceManagerError

        hold, env = self.hold, self.env
        if not hold.owned:
            return status
        try:
            if keep and status not in (0, 126, 127) and self.signalled is None:
                what = shlex.join(self.argv)
                what = what if len(what) <= 200 else what[:197] + "..."
                kept = hold.keep(keep, f"kept for post-mortem: {what} exited {status}")
                env.error(f"kept {' '.join(hold.hostnames)} (reservation {hold.id}) until {kept.get('expires')} "
                          f"for a post-mortem: {self.argv[0]} exited {status}; then it expires, or: "
                          f"rmctl release {hold.id}")
            else:
                hold.release()
                env.error(f"released {' '.join(hold.hostnames)} (reservation {hold.id})")
        except ResourceManagerError as e:
            why = e.describe() if hasattr(e, "describe") else e.message or str(e)
            env.error(f"could not release reservation {hold.id}: {why}; without heartbeats the server frees it "
                      f"within {hold.heartbeat} s")
        return status


def _next_signal():
    """Wait for one of WAITED; return (signal, whether the kernel sent it to the whole process group)."""
    if hasattr(signal, "sigwaitinfo") and sys.platform.startswith("linux"):
        info = signal.sigwaitinfo(WAITED)
        # SI_USER (0), SI_QUEUE and SI_TKILL (negative): a process sent it to us. SI_KERNEL (0x80):
        # the terminal's (Ctrl-C, a hang-up), sent to the whole foreground group, the command included.
        return info.si_signo, info.si_code > 0
    signum = signal.sigwait(WAITED)
    return signum, signum == signal.SIGINT and _terminal_foreground()


def _terminal_foreground():
    """Whether rmctl's process group holds its terminal (a SIGINT then came from the keyboard, to the group)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _kill(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it ended meanwhile: its SIGCHLD is on its way


def _drain(signals):
    """Take the signals of `signals` still pending, so unblocking them does not act on them now."""
    for signum in signal.sigpending() & set(signals):
        signal.sigwait({signum})


COMMANDS = (Command("run", SUMMARY, EXAMPLES, add_arguments, cmd_run),)
