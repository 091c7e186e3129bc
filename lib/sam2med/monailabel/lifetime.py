"""Background jobs (training, scoring) that die with the server that started them.

MONAI Label runs them as child processes of the server. The server records its pid in the environment
the children inherit; a child asks Linux to kill it when its parent dies (prctl PR_SET_PDEATHSIG), so a
`kill -9` of the server leaves no training behind that could publish a model later. A restarted server
also finds a training its predecessor left running (`train_stats.json` names its pid) and stops it.
(Linux sends the signal when the *thread* that started the child ends: MONAI Label starts jobs from its
job-executor thread, which lives as long as the server.)
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

SERVER_PID_ENV = "SAM2MED_SERVER_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
JOB_MODULE = "monailabel.interfaces.utils.app"  # what MONAI Label runs a background job as


def mark_server_process() -> None:
    """Called in the server: its children learn which process they must not outlive."""
    os.environ[SERVER_PID_ENV] = str(os.getpid())


def die_with_server() -> None:
    """Called in a background job: be killed when the server dies; exit now if it is already gone."""
    server = os.environ.get(SERVER_PID_ENV)
    if not server or not server.isdigit() or int(server) == os.getpid():
        return  # not a child of a sam2med server (a CLI run, a test): nothing to follow
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this job may outlive the server", ctypes.get_errno())
    else:
        logger.warning("no parent-death signal on %s: a restarted server stops this job instead", sys.platform)
    if os.getppid() != int(server):  # the server died before the signal was armed
        logger.error("the server (pid %s) is gone: stopping", server)
        os._exit(1)


def is_training_job(pid: int) -> bool:
    """Whether `pid` is a running MONAI Label training job (and not some other process that reused the pid)."""
    import psutil

    try:
        command = psutil.Process(pid).cmdline()
    except (psutil.Error, ValueError):
        return False
    return JOB_MODULE in command and "train" in command


def stop_job(pid: int, timeout: float = 10) -> bool:
    """Kill a training job and its children; True if one was running."""
    import psutil

    if not is_training_job(pid):
        return False
    process = psutil.Process(pid)
    for child in process.children(recursive=True):
        child.kill()
    process.kill()
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        logger.warning("training job %d did not end within %gs of SIGKILL", pid, timeout)
    return True
