"""The in-process seccomp filter installed in a candidate's child after the trusted imports.

Default allow, with a deny list: whatever a network's training needs keeps working, while the
ways out of the sandbox (exec, new processes, sockets, tracing, namespaces, kernel interfaces)
kill the process with SIGSYS, which the evaluator reports as a sandbox violation.
"""

from __future__ import annotations

import errno
import os
import socket
from types import ModuleType


# Imported when this module is, before any candidate runs: pyseccomp locates libseccomp with
# ctypes.util.find_library, which runs ldconfig, which a confined child may not do.
def _import_seccomp() -> ModuleType | None:
    try:
        import pyseccomp

        return pyseccomp
    except ImportError:  # Debian's python3-seccomp has the same API
        try:
            import seccomp as debian_seccomp

            return debian_seccomp
        except ImportError:
            return None


seccomp = _import_seccomp()

CLONE_THREAD = 0x00010000
UNIX_SOCKET_CALLS = ("socketpair", "connect", "bind", "listen", "accept", "accept4")

KILLED = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "userfaultfd", "personality", "reboot", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "sethostname", "setdomainname", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "kcmp",
    "process_madvise", "mknod", "mknodat",
    # System V IPC: segments outlive the process, escape RLIMIT_AS and pass data between
    # candidates of the same worker.
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl",
    # POSIX message queues (kernel objects outside the process, like System V IPC); memfd
    # (pages outside RLIMIT_AS until mapped); kernel logs and handles.
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "memfd_create", "memfd_secret", "syslog", "lookup_dcookie", "vhangup", "fanotify_init",
)  # fmt: skip


def available() -> bool:
    return seccomp is not None


def install(allow_unix_sockets: bool = False) -> None:
    """Load the filter into the calling process (irreversible; inherited by its threads).

    ``allow_unix_sockets``: CUDA's runtime talks over Unix sockets; on GPU they stay allowed
    (network sockets never are).
    """
    if seccomp is None:
        raise RuntimeError("no seccomp bindings: install pyseccomp or python3-seccomp")
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    killed = [n for n in KILLED if not (allow_unix_sockets and n in UNIX_SOCKET_CALLS)]
    for name in killed:
        try:
            f.add_rule(seccomp.KILL_PROCESS, name)
        except (OSError, ValueError, RuntimeError):
            continue  # a syscall this kernel or architecture does not have
    # New processes: clone without CLONE_THREAD kills; clone3 (whose flags a filter cannot
    # read) answers ENOSYS so that glibc falls back to clone for threads.
    f.add_rule(seccomp.KILL_PROCESS, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Network sockets kill; a Unix socket is refused politely, because glibc's user lookup
    # (getpwuid, which torch calls on import) first tries nscd's socket and then falls back.
    f.add_rule(seccomp.KILL_PROCESS, "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    if not allow_unix_sockets:
        unix = seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX)
        f.add_rule(seccomp.ERRNO(errno.EACCES), "socket", unix)
    # Signals only to itself: in weak mode another process of the same uid could be reached.
    me = os.getpid()
    f.add_rule(seccomp.ERRNO(errno.EPERM), "kill", seccomp.Arg(0, seccomp.NE, me))
    f.add_rule(seccomp.ERRNO(errno.EPERM), "tgkill", seccomp.Arg(0, seccomp.NE, me))
    f.add_rule(seccomp.ERRNO(errno.EPERM), "tkill")
    f.add_rule(seccomp.ERRNO(errno.EPERM), "rt_sigqueueinfo", seccomp.Arg(0, seccomp.NE, me))
    f.add_rule(seccomp.ERRNO(errno.EPERM), "rt_tgsigqueueinfo", seccomp.Arg(0, seccomp.NE, me))
    # Resource limits of other processes: glibc passes pid 0 for its own (a filter rule cannot
    # compare one argument twice, so an explicit own pid is refused too).
    f.add_rule(seccomp.ERRNO(errno.EPERM), "prlimit64", seccomp.Arg(0, seccomp.NE, 0))
    f.load()
