"""Children that die with their launcher (even on SIGKILL), started without preexec_fn.

Linux sends a process its PR_SET_PDEATHSIG signal when the thread that started it exits. The
flag must be set in the child itself, after any change of user (which clears it) and before
exec. subprocess's preexec_fn would do that in a forked copy of a threaded interpreter, which
Python documents as unsafe (a lock held by another thread at the fork stays held in the child).
So the child first runs a tiny interpreter of its own (``python -I -S``: no site, nothing of
ours imported) that switches user if asked, sets the flag, checks that its parent is still the
launcher (if the launcher died in between, the signal would never come: it exits instead), and
execs the real program, which keeps the flag and the pid. Elsewhere than Linux the program is
started as it is.
"""

import os
import sys

_SHIM = r"""
import ctypes, os, sys
signum, parent, uid, gid = map(int, sys.argv[1:5])
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
if ctypes.CDLL(None, use_errno=True).prctl(1, signum) != 0:  # PR_SET_PDEATHSIG
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: errno %d" % ctypes.get_errno())
if os.getppid() != parent:
    sys.exit("the launcher is gone")
os.execv(sys.argv[5], sys.argv[5:])
"""


def dying_with_us(argv, signum, user=None):
    """Return (argv, Popen keyword arguments) that run `argv` as `user` (a passwd entry, or None),
    sent `signum` when the calling thread exits.

    The program must be named by its path (argv[0]): it is exec'd without a PATH search.
    """
    if not sys.platform.startswith("linux"):
        return list(argv), ({} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []})
    uid, gid = (user.pw_uid, user.pw_gid) if user is not None else (-1, -1)
    shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(int(signum)), str(os.getpid()), str(uid), str(gid)]
    return shim + list(argv), {}
