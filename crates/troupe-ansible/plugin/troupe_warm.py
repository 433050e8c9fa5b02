# A warm parent: troupe starts it as `<python> troupe_warm.py <ansible-playbook>`, with the
# environment and working directory of the runs it will serve (one parent per configuration
# ansible reads at import; troupe computes that key). It imports ansible's CLI once, then forks
# one child per run; the child becomes that run's ansible-playbook exactly as troupe_boot.py
# would have started it. See docs/architecture.md, "The warm launcher".
#
# Protocol. TROUPE_WARM_FD is a SOCK_SEQPACKET socket to troupe. After the import the parent
# sends {"ready": pid} (or {"unfit": why} when the import printed something or started a
# thread: such a configuration cannot be shared, troupe runs it with exec). Each run is one
# message: JSON {"argv": [...], "cwd": ..., "env": {...}} with five descriptors: the run's own
# stream socket, stdin, stdout, stderr and the event pipe. On the run's socket the parent writes
# {"pid": N} with the child's pidfd once the child leads its own process group, then
# {"status": wait status} once it has reaped it. The parent ends when troupe closes the socket and its children have ended, and
# dies with troupe (PR_SET_PDEATHSIG); its children die with it: a run whose parent crashed ends
# (troupe reports it), none is left behind.
import os
import sys

def _python_added():
    """What Python put into the environment at start (LC_CTYPE when it coerced a C locale):
    an exec'd run's interpreter would add the same, so each child does."""
    try:
        with open('/proc/self/environ', 'rb') as f:
            given = {kv.split(b'=', 1)[0] for kv in f.read().split(b'\0') if kv}
    except OSError:
        return {}
    return {k: v for k, v in os.environ.items() if os.fsencode(k) not in given}


_python_env = _python_added()
_troupe_pid = int(os.environ.pop('TROUPE_PARENT_PID', '0') or 0)
_ctl_fd = int(os.environ.pop('TROUPE_WARM_FD'))
_here = os.path.dirname(os.path.abspath(__file__))
del sys.argv[0]
sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[0]))


def _prctl_pdeathsig():
    try:
        import ctypes
        import signal
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(ctypes.c_int(1), ctypes.c_ulong(int(signal.SIGKILL)), ctypes.c_ulong(0),
              ctypes.c_ulong(0), ctypes.c_ulong(0))
    except Exception:
        pass


# troupe spawns the parent from a thread that lives as long as troupe does.
_prctl_pdeathsig()
if _troupe_pid and os.getppid() != _troupe_pid:
    os._exit(1)

# Whatever the import prints would belong to the first run in a bare ansible-playbook; it is
# caught here, and a parent that printed anything is not used.
import tempfile  # noqa: E402

_import_output = tempfile.TemporaryFile()
for _fd in (1, 2):
    os.dup2(_import_output.fileno(), _fd)

from ansible.cli.playbook import main  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402

# What every run imports next (ansible's executor, and the builtin plugins its loader imports
# under these same names for any play: it takes a module already in sys.modules as it is).
for _module in '''
        ansible.executor.playbook_executor ansible.executor.task_queue_manager
        ansible.playbook.handler_task_include ansible.utils.hashing ansible.utils.shlex
        ansible.plugins.strategy.linear ansible.plugins.cache.memory
        ansible.plugins.callback.default ansible.plugins.callback.minimal
        ansible.plugins.callback.oneline ansible.plugins.callback.tree
        ansible.plugins.callback.junit
        ansible.plugins.connection.local ansible.plugins.connection.ssh
        ansible.plugins.connection.paramiko_ssh ansible.plugins.connection.winrm
        ansible.plugins.connection.psrp
        ansible.plugins.shell.sh ansible.plugins.shell.powershell ansible.plugins.shell.cmd
        ansible.plugins.inventory.auto ansible.plugins.inventory.host_list
        ansible.plugins.inventory.ini ansible.plugins.inventory.script
        ansible.plugins.inventory.toml ansible.plugins.inventory.yaml
        ansible.plugins.vars.host_group_vars ansible.plugins.become.su ansible.plugins.become.sudo
        ansible.plugins.action.normal ansible.plugins.action.command ansible.plugins.action.debug
        '''.split():
    try:
        importlib.import_module(_module)
    except Exception:
        # Not in this ansible: a run imports what it has, as it would have.
        pass

import atexit  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402

sys.stdout.flush()
sys.stderr.flush()
_import_output.seek(0)
_printed = _import_output.read(4096)
_null = os.open(os.devnull, os.O_RDWR)
for _fd in (1, 2):
    os.dup2(_null, _fd)
os.close(_null)
_import_output.close()


def _open_fds():
    return {int(name) for name in os.listdir('/proc/self/fd')}


_ctl = socket.socket(fileno=_ctl_fd)
# The descriptors the import opened (a log file, say) belong to every run, as in a bare run;
# anything else a child finds open is the parent's and is closed.
_imported_fds = _open_fds() - {_ctl_fd}


def _send(sock, message):
    try:
        sock.send(json.dumps(message).encode() + b'\n')
    except OSError:
        pass


def _unfit_reason():
    if _printed:
        return 'the import printed: %s' % _printed.decode('utf-8', 'replace').strip()[:500]
    if threading.active_count() != 1:
        return 'the import started threads'
    return None


def _serve():
    """Forks a child per request; returns only in a child, with its request and descriptors."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    runs = {}
    accepting = True
    sel = selectors.DefaultSelector()
    sel.register(_ctl, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while accepting or runs:
        for key, _ in sel.select():
            if key.fileobj is _ctl:
                try:
                    data, fds, flags, _ = socket.recv_fds(_ctl, 1 << 20, 5)
                except OSError:
                    data, fds, flags = b'', [], 0
                if not data:
                    accepting = False
                    sel.unregister(_ctl)
                    for fd in fds:
                        os.close(fd)
                    continue
                if len(fds) != 5 or flags & socket.MSG_TRUNC or flags & socket.MSG_CTRUNC:
                    for fd in fds:
                        os.close(fd)
                    continue
                run = socket.socket(fileno=fds[0])
                try:
                    request = json.loads(data)
                    pid = os.fork()
                except Exception as e:
                    _send(run, {'error': str(e)})
                    run.close()
                    for fd in fds[1:]:
                        os.close(fd)
                    continue
                if pid == 0:
                    os.close(wake_r)
                    os.close(wake_w)
                    sel.close()
                    run.close()
                    return request, fds[1:], runs
                for fd in fds[1:]:
                    os.close(fd)
                try:
                    # Also done by the child: a signal troupe sends to the group as soon as it
                    # knows the pid must reach it.
                    os.setpgid(pid, pid)
                except OSError:
                    pass
                runs[pid] = run
                # With a pidfd opened before the child can have been reaped: troupe watches the
                # process, not a pid that could be reused.
                try:
                    pidfd = os.pidfd_open(pid)
                    socket.send_fds(run, [json.dumps({'pid': pid}).encode() + b'\n'], [pidfd])
                    os.close(pidfd)
                except OSError:
                    pass
            else:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                while runs:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    run = runs.pop(pid, None)
                    if run is not None:
                        _send(run, {'status': status})
                        run.close()
    sys.exit(0)


_unfit = _unfit_reason()
if _unfit:
    _send(_ctl, {'unfit': _unfit})
    sys.exit(0)
# What the import made stays as it is for the parent's life: out of the collector's reach, a
# child's collections do not touch (and copy) the pages it shares with the parent. The child
# gives them back to the collector at its end (troupe_boot.exit_as_python).
import gc  # noqa: E402
gc.freeze()
_send(_ctl, {'ready': os.getpid()})
_parent = os.getpid()
_request, _fds, _siblings = _serve()

# -- in the child: become the run's ansible-playbook --------------------------------------------
signal.set_wakeup_fd(-1)
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
for _sibling in _siblings.values():
    _sibling.close()
_ctl.close()
_prctl_pdeathsig()
if os.getppid() != _parent:
    os._exit(1)
os.setpgid(0, 0)
_stdin, _stdout, _stderr, _event = _fds
for _fd, _target in ((_stdin, 0), (_stdout, 1), (_stderr, 2)):
    os.dup2(_fd, _target)
# The event pipe keeps a number of its own (above 2), inherited as in an exec'd run.
_event_fd = _event if _event > 2 else os.dup(_event)
os.set_inheritable(_event_fd, True)
for _fd in _open_fds() - _imported_fds - {0, 1, 2, _event_fd}:
    try:
        os.close(_fd)
    except OSError:
        pass
os.chdir(_request['cwd'])
os.environ.clear()
os.environ.update(_request['env'])
for _key, _value in _python_env.items():
    os.environ.setdefault(_key, _value)
sys.argv = list(_request['argv'])

# What the import made once and a run must make its own: the local temp dir (named after the
# pid, removed by the process that made it), the random state and the prefix of ansible's
# unique ids.
from ansible import constants as C  # noqa: E402
from ansible.config.manager import cleanup_tmp_file  # noqa: E402
import ansible.utils.vars as _vars  # noqa: E402
import ansible.cli  # noqa: E402

atexit.unregister(cleanup_tmp_file)
C.DEFAULT_LOCAL_TMP = C.config.get_config_value('DEFAULT_LOCAL_TMP')
random.seed()
_vars.random_int = ('%08x' % secrets.randbelow(_vars._MAXSIZE))[:8]
ansible.cli.check_blocking_io()

# From here on, troupe_boot.py's work, done by troupe_boot.py itself: loaded as a module (not
# as __main__, so it does not run main()), with the argv and plumbing an exec'd run gives it.
os.environ['TROUPE_EVENT_FD'] = str(_event_fd)
sys.argv = [os.path.join(_here, 'troupe_boot.py')] + sys.argv
_boot_spec = importlib.util.spec_from_file_location('troupe_boot', sys.argv[0])
_boot = importlib.util.module_from_spec(_boot_spec)
_boot_spec.loader.exec_module(_boot)
del _here, _boot_spec, _request, _fds, _siblings, _fd, _target
del _stdin, _stdout, _stderr, _event, _event_fd, _python_env

if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\.pyw|\.exe)?$', '', sys.argv[0])
    try:
        _code = main()
    except SystemExit as _exit:
        _code = _exit.code
    _boot.exit_as_python(_code)
