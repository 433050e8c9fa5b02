# troupe's callback plugin: streams every ansible event, one JSON object per line, to the pipe
# whose fd number is in TROUPE_EVENT_FD. Enabled next to the normal stdout callback; it prints
# nothing itself. Field names follow ansible-runner's display callback.
#
# How an event gets its `stdout`: TaskQueueManager.send_callback is wrapped so that the whole
# dispatch of one callback (stdout callback first, then the others) runs under Display's lock,
# and sys.stdout/sys.stderr are teed while it runs. Whatever was written during the dispatch is
# that event's text. Text written outside any dispatch (warnings, deprecations, -v output of
# workers, ...) becomes an event of its own (`warning`, `deprecated`, `verbose`, ...).
#
# Graceful cancel: SIGUSR1 sets a flag. The task in flight finishes on every host; the next
# task is neither announced nor queued and the TaskQueueManager is terminated, so the play ends
# and the recap (playbook_on_stats) is still emitted, carrying `troupe_cancel_requested`.
from __future__ import annotations

DOCUMENTATION = '''
    name: troupe
    type: notification
    short_description: streams run events to troupe
    description:
      - Writes one JSON object per event (ansible-runner field names) to the file descriptor
        named by the TROUPE_EVENT_FD environment variable.
    requirements:
      - TROUPE_EVENT_FD set to an inherited, writable pipe
'''

import datetime
import json
import os
import re
import signal
import sys
import threading
import uuid

from ansible import constants as C
from ansible.executor.task_queue_manager import TaskQueueManager
from ansible.plugins.callback import CallbackBase
from ansible.plugins.strategy import StrategyBase
from ansible.utils.display import Display

CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
_TASK_START_METHODS = ('v2_playbook_on_task_start', 'v2_playbook_on_handler_task_start')
_LONE_SURROGATE = re.compile(r'(\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2})|\\ud[89a-f][0-9a-f]{2}')

_display = Display()
# Display's own lock: every write of Display holds it, so holding it across a whole callback
# dispatch keeps other threads' output out of this event's text.
_LOCK = getattr(_display, '_lock', None) or threading.RLock()
_MAIN_PID = os.getpid()


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _json_default(o):
    if isinstance(o, (datetime.date, datetime.datetime)):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode('utf-8', 'replace')
    if getattr(o, 'yaml_tag', None) == '!vault':
        return '<vaulted>'
    return str(o)


def _dumps(obj):
    s = json.dumps(obj, default=_json_default, separators=(',', ':'))
    if '\\ud' in s:
        # Lone surrogates (from surrogateescape'd bytes) are not valid JSON for strict readers.
        s = _LONE_SURROGATE.sub(lambda m: m.group(1) or '\\ufffd', s)
    return s


def _int(text, default):
    try:
        return int(text or '')
    except ValueError:
        return default


class _Frame(object):
    """One callback dispatch in progress: what was printed during it and what troupe recorded."""
    __slots__ = ('method', 'out', 'err', 'record')

    def __init__(self, method):
        self.method = method
        self.out = []
        self.err = []
        self.record = None


class _State(object):
    def __init__(self):
        self.fd = None
        self.max_res = 256 * 1024
        self.counter = 0
        self.line = 0
        self.frames = []
        self.local = threading.local()
        self.emitted = set()
        self.task_event_uuid = {}
        # Untemplated task arguments by task uuid (only with DISPLAY_ARGS_TO_STDOUT).
        self.task_args = {}
        self.task_seen = {}
        self.play_seen = {}
        self.host_start = {}
        self.playbook = None
        self.playbook_uuid = None
        self.play = None
        self.play_uuid = None
        self.play_pattern = None
        self.task_ctx = {}
        self.tqm = None
        self.cancel_requested = False
        self.canceled = False
        self.started_task = None
        # The first task a graceful cancel kept from starting: where a resumed run starts.
        self.resume_task = None

    # -- writing ---------------------------------------------------------------------------

    def configure(self, settings):
        """Takes troupe's settings: the event pipe's fd and the largest result kept."""
        fd = _int(settings.get('TROUPE_EVENT_FD'), -1)
        if fd >= 0:
            try:
                os.fstat(fd)
                os.set_inheritable(fd, False)
                self.fd = fd
            except OSError:
                self.fd = None
        self.max_res = max(1024, _int(settings.get('TROUPE_MAX_RESULT_BYTES'), 256 * 1024))

    def _write(self, data):
        fd = self.fd
        if fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            # troupe is gone or closed the pipe: keep ansible running, stop reporting.
            self.fd = None

    def emit(self, event, data, stdout='', err='', ev_uuid=None, parent=None, res=None, has_res=False):
        """Writes one event. Must be called with _LOCK held."""
        if os.getpid() != _MAIN_PID:
            return
        self.counter += 1
        start = self.line
        self.line += stdout.count('\n')
        ev_uuid = ev_uuid or str(uuid.uuid4())
        if parent is not None and parent not in self.emitted:
            parent = None
        if err:
            data['stderr'] = err
        data.setdefault('uuid', ev_uuid)
        head = {
            'event': event,
            'uuid': ev_uuid,
            'counter': self.counter,
            'parent_uuid': parent,
            'created': _now().isoformat(),
            'stdout': stdout,
            'start_line': start,
            'end_line': self.line,
            'pid': os.getpid(),
        }
        try:
            head_json = _dumps(head)
            try:
                data_json = _dumps(data)
            except Exception as ex:
                data_json = _dumps({'uuid': ev_uuid, 'troupe_plugin_error': 'event_data: %r' % (ex,)})
            if has_res:
                data_json = _splice(data_json, 'res', self._res_json(res))
            line = _splice(head_json, 'event_data', data_json) + '\n'
        except Exception as ex:
            line = _dumps(dict(head, event_data={'troupe_plugin_error': repr(ex)})) + '\n'
        self.emitted.add(ev_uuid)
        self._write(line.encode('utf-8', 'replace'))

    def _res_json(self, res):
        try:
            s = _dumps(res)
        except Exception as ex:
            return _dumps({'troupe_plugin_error': 'res: %r' % (ex,)})
        if len(s) <= self.max_res:
            return s
        marker = {'_troupe_truncated': True, '_troupe_original_bytes': len(s)}
        if isinstance(res, dict):
            for key in ('changed', 'failed', 'skipped', 'unreachable', 'rc'):
                if key in res:
                    marker[key] = res[key]
            if 'msg' in res:
                msg = res['msg'] if isinstance(res['msg'], str) else _dumps(res['msg'])
                marker['msg'] = msg[:1024]
        return _dumps(marker)

    # -- capture -----------------------------------------------------------------------------

    def captured(self, stream, text):
        """Text written to stdout/stderr by the main process. _LOCK is held."""
        if not text:
            return
        if self.frames:
            frame = self.frames[-1]
            (frame.out if stream == 'stdout' else frame.err).append(text)
            return
        kind, host = getattr(self.local, 'kind', None) or ('verbose', None)
        data = self.context()
        if host:
            data['remote_addr'] = host
        if stream == 'stdout':
            self.emit(kind, data, stdout=text, parent=self.context_parent())
        else:
            self.emit(kind, data, err=text, parent=self.context_parent())

    def context(self):
        data = {}
        if self.playbook_uuid:
            data['playbook'] = self.playbook
            data['playbook_uuid'] = self.playbook_uuid
        if self.play_uuid:
            data['play'] = self.play
            data['play_uuid'] = self.play_uuid
            data['play_pattern'] = self.play_pattern
        data.update(self.task_ctx)
        return data

    def context_parent(self):
        return self.task_ctx.get('task_uuid') or self.play_uuid or self.playbook_uuid

    def record(self, event, data, ev_uuid=None, parent=None, res=None, has_res=False):
        if self.frames and self.frames[-1].record is None:
            self.frames[-1].record = (event, data, ev_uuid, parent, res, has_res)
            return
        with _LOCK:
            self.emit(event, data, ev_uuid=ev_uuid, parent=parent, res=res, has_res=has_res)

    def finish_frame(self, frame):
        out = ''.join(frame.out)
        err = ''.join(frame.err)
        if frame.record is not None:
            event, data, ev_uuid, parent, res, has_res = frame.record
            self.emit(event, data, stdout=out, err=err, ev_uuid=ev_uuid, parent=parent, res=res, has_res=has_res)
        elif out or err:
            # A callback troupe does not record (or an implicit task) still printed something.
            name = frame.method[3:] if frame.method.startswith('v2_') else frame.method
            self.emit(name, self.context(), stdout=out, err=err, parent=self.context_parent())

    # -- cancel --------------------------------------------------------------------------------

    def stop(self, tqm):
        if tqm is not None and not getattr(tqm, '_terminated', False):
            tqm.terminate()
        self.canceled = True


def _splice(obj_json, key, value_json):
    """Appends `"key": <value_json>` to a serialised JSON object without parsing it again."""
    body = obj_json[:-1]
    sep = '' if body.rstrip().endswith('{') else ','
    return body + sep + json.dumps(key) + ':' + value_json + '}'


_S = _State()


# -- stdout/stderr tee ------------------------------------------------------------------------

class _Tee(object):
    def __init__(self, inner, stream):
        self._troupe_inner = inner
        self._troupe_stream = stream

    def write(self, text):
        if os.getpid() != _MAIN_PID:
            return self._troupe_inner.write(text)
        with _LOCK:
            n = self._troupe_inner.write(text)
            try:
                if isinstance(text, str):
                    _S.captured(self._troupe_stream, text)
            except Exception:
                pass
            return n

    def __getattr__(self, name):
        return getattr(self._troupe_inner, name)


def _install_tees():
    for stream in ('stdout', 'stderr'):
        current = getattr(sys, stream)
        if not isinstance(current, _Tee):
            setattr(sys, stream, _Tee(current, stream))


# -- Display hooks: tell warnings, deprecations and verbose output apart ----------------------

def _kind_wrapper(func, kind):
    def wrapper(self, *args, **kwargs):
        if os.getpid() != _MAIN_PID:
            return func(self, *args, **kwargs)
        prev = getattr(_S.local, 'kind', None)
        _S.local.kind = (kind, kwargs.get('host'))
        try:
            return func(self, *args, **kwargs)
        finally:
            _S.local.kind = prev
    wrapper.__wrapped__ = func
    wrapper._troupe_hooked = True
    return wrapper


def _install_display_hooks():
    for attr, kind in (('_warning', 'warning'), ('_deprecated', 'deprecated'),
                       ('_verbose_display', 'verbose'), ('_error', 'error'), ('debug', 'debug')):
        func = getattr(Display, attr, None)
        if func is not None and not getattr(func, '_troupe_hooked', False):
            setattr(Display, attr, _kind_wrapper(func, kind))


# -- dispatch and strategy hooks -----------------------------------------------------------------

def _task_name(task):
    try:
        return task.get_name()
    except Exception:
        return None


def _peek_next_task(strategy, iterator):
    """The name of the task the play would run next, for resuming there; None when the next
    step is implicit (handlers, end of play) or cannot be known."""
    try:
        hosts = strategy._inventory.get_hosts(iterator._play.hosts, order=iterator._play.order)
    except Exception:
        return None
    for host in hosts:
        try:
            _state, task = iterator.get_next_task_for_host(host, peek=True)
        except Exception:
            continue
        if task is None:
            continue
        if getattr(task, 'action', None) in ('meta', 'ansible.builtin.meta', 'ansible.legacy.meta'):
            return None
        return _task_name(task)
    return None


class _NotQueued(EOFError):
    """Raised to StrategyBase._queue_task for a task a graceful cancel keeps from starting."""


def _install_tqm_hooks():
    orig_send = TaskQueueManager.send_callback
    if getattr(orig_send, '_troupe_hooked', False):
        return

    def send_callback(self, method_name, *args, **kwargs):
        if os.getpid() != _MAIN_PID:
            return orig_send(self, method_name, *args, **kwargs)
        _S.tqm = self
        if _S.cancel_requested and method_name in _TASK_START_METHODS:
            # Graceful cancel: the next task is neither announced nor queued.
            if _S.resume_task is None and args:
                _S.resume_task = _task_name(args[0])
                _POSITION['resume'] = _task_position(args[0])
            _S.stop(self)
            return None
        if (_S.cancel_requested and method_name == 'v2_runner_on_start' and len(args) > 1
                and getattr(args[1], '_uuid', None) != _S.started_task):
            # StrategyBase._queue_task announces a host's task right before it forks the
            # worker; raising here makes it give up queuing that host (it takes EOFError for an
            # abort), so a later task starts on no host. Nothing wraps _queue_task itself:
            # workers fork from the same stack depth as in a bare run.
            _S.stop(self)
            raise _NotQueued()
        if _S.canceled and method_name == 'v2_playbook_on_play_start':
            # The remaining plays of a cancelled run would only print an empty banner.
            return None
        with _LOCK:
            frame = _Frame(method_name)
            _S.frames.append(frame)
            try:
                return orig_send(self, method_name, *args, **kwargs)
            finally:
                _S.frames.pop()
                try:
                    _S.finish_frame(frame)
                except Exception:
                    pass

    send_callback._troupe_hooked = True
    TaskQueueManager.send_callback = send_callback

    orig_wait = StrategyBase._wait_on_pending_results

    def _wait_on_pending_results(self, iterator):
        results = orig_wait(self, iterator)
        if _S.cancel_requested and os.getpid() == _MAIN_PID:
            if _S.resume_task is None:
                _S.resume_task = _peek_next_task(self, iterator)
            _S.stop(self._tqm)
        return results

    StrategyBase._wait_on_pending_results = _wait_on_pending_results


def _on_sigusr1(signum, frame):
    _S.cancel_requested = True


def _load_prctl():
    if not sys.platform.startswith('linux'):
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.restype = ctypes.c_int
        return lambda option, arg: prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                                         ctypes.c_ulong(0), ctypes.c_ulong(0))
    except Exception:
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _set_pdeathsig():
    """SIGKILL this process when the thread that spawned it exits. False if that failed."""
    if _PRCTL is None:
        return False
    try:
        return _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) == 0
    except Exception:
        return False


def _descends_from(pid):
    """Whether `pid` is an ancestor of this process (usually the parent; a wrapper that does
    not exec, such as `uv run`, adds a generation). True when it cannot be told."""
    current = os.getppid()
    for _ in range(64):
        if current == pid:
            return True
        if current <= 1:
            return False
        try:
            with open('/proc/%d/stat' % current, 'rb') as f:
                stat = f.read()
            # Fields start after the command name's last ')': state, then the parent's pid.
            current = int(stat[stat.rindex(b')') + 1:].split()[1])
        except (OSError, ValueError, IndexError):
            return True
    return True


def _die_with_troupe(troupe):
    # troupe spawns ansible-playbook with posix_spawn, which runs no code of troupe's in the
    # child, so the child asks for PR_SET_PDEATHSIG itself, here. The signal follows the thread
    # that spawned the process: troupe's spawner thread, which lives as long as troupe.
    #
    # Before this runs, a troupe that dies leaves ansible-playbook alive. That window is short
    # and harmless: ansible loads callbacks before it runs any task, so nothing has been done
    # on a host yet, and the check below makes ansible-playbook kill itself if troupe died in
    # it. Whatever else is left (an inventory script still running, say) carries the run's
    # TROUPE_RUN_DIR marker, by which troupe's restart reaper kills it.
    if troupe <= 0 or not sys.platform.startswith('linux'):
        return
    _set_pdeathsig()
    # After prctl, not before: a troupe that dies from now on is covered by the signal.
    if not _descends_from(troupe):
        os.kill(os.getpid(), signal.SIGKILL)


def _install_process_hooks():
    try:
        signal.signal(signal.SIGUSR1, _on_sigusr1)
    except (ValueError, OSError, AttributeError):
        pass
    parent = os.getpid()

    def after_fork_in_child():
        # Forked workers must not hold the event pipe (troupe waits for its EOF) and must die
        # with ansible-playbook, even when it is SIGKILLed.
        fd, _S.fd = _S.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if _PRCTL is not None and os.getppid() == parent:
            _set_pdeathsig()
            if os.getppid() != parent:
                os._exit(1)

    if hasattr(os, 'register_at_fork'):
        os.register_at_fork(after_in_child=after_fork_in_child)


def _force_colour():
    # Ansible's colours are kept (as ansible-runner keeps them in event stdout); readers that
    # want plain text strip them. ansible decided at import whether to colour (not on a pipe);
    # this changes that decision in this process only, not ansible's configuration, so nothing
    # a task runs sees it. The user's ANSIBLE_NOCOLOR/NO_COLOR/nocolor and ANSIBLE_FORCE_COLOR
    # still win.
    try:
        from ansible.utils import color
        if not C.ANSIBLE_NOCOLOR and 'ANSIBLE_FORCE_COLOR' not in os.environ:
            color.ANSIBLE_COLOR = True
    except Exception:
        pass


def _install_callback_registration():
    """Adds troupe's callback to every TaskQueueManager's callbacks, after ansible's own: the
    callback needs no entry in ANSIBLE_CALLBACK_PLUGINS or ANSIBLE_CALLBACKS_ENABLED."""
    orig_load = TaskQueueManager.load_callbacks

    def load_callbacks(self):
        orig_load(self)
        if not any(isinstance(c, CallbackModule) for c in self._callback_plugins):
            callback = CallbackModule()
            callback._init_callback_methods()
            self._callback_plugins.append(callback)

    TaskQueueManager.load_callbacks = load_callbacks


_PLUMBING = ('TROUPE_EVENT_FD', 'TROUPE_PARENT_PID', 'TROUPE_MAX_RESULT_BYTES')


def _note_local_tmp():
    # ansible made its local temp dir when it imported its constants, and removes it at exit; a
    # SIGKILLed run cannot. Its name goes into the run's directory, where troupe looks for it
    # when it removes the run's leftovers.
    run_dir = os.environ.get('TROUPE_RUN_DIR')
    path = getattr(C, 'DEFAULT_LOCAL_TMP', None)
    if not run_dir or not path:
        return
    try:
        with open(os.path.join(run_dir, 'local_tmp'), 'w') as f:
            f.write(str(path))
    except OSError:
        pass


def attach(settings, register=True):
    """Starts streaming this ansible-playbook's events to troupe. `settings` holds troupe's
    plumbing variables (see _PLUMBING), already taken out of the environment. With `register`,
    the callback adds itself to ansible's callbacks (troupe_boot.py); without, ansible loaded it
    as an enabled callback plugin."""
    if os.getpid() != _MAIN_PID or getattr(TaskQueueManager.send_callback, '_troupe_hooked', False):
        return
    _S.configure(settings)
    _install_tees()
    _install_display_hooks()
    _install_tqm_hooks()
    _die_with_troupe(_int(settings.get('TROUPE_PARENT_PID'), 0))
    _install_process_hooks()
    _force_colour()
    _note_local_tmp()
    if register:
        _install_callback_registration()


if any(name in os.environ for name in _PLUMBING):
    # Loaded by ansible as an enabled callback plugin (troupe runs an ansible-playbook that is
    # not a Python script, such as a wrapper, this way): the plumbing leaves the environment
    # before any task can inherit it.
    attach({name: os.environ.pop(name, None) for name in _PLUMBING}, register=False)


# -- task positions, and resuming at one --------------------------------------------------------
#
# --start-at-task matches names, so it starts at the first task of that name. Every task start
# therefore records where the task is (`troupe_task_position`: its play's file:line and which
# occurrence of that play it is, the task's file:line, paths relative to the project), and a run
# started with TROUPE_RESUME_AT (a relaunch from a failed task) starts at the task at that
# position instead. Nothing below is patched unless TROUPE_RESUME_AT is set: ordinary runs only
# read the position. A task inside a dynamic include (include_tasks, include_role) is known
# only once the include runs, so its position is the outermost dynamic include's.

_POSITION = {'play': None, 'plays': {}}


def _relative(path):
    """`file:line` relative to the project (the working directory) when inside it."""
    if not path:
        return None
    root = os.getcwd().rstrip('/') + '/'
    return path[len(root):] if path.startswith(root) else path


def _position_play_started(play):
    """Counts the plays at each file:line (a play file imported twice is two plays; the batches
    of a `serial` play are one)."""
    try:
        path = _relative(play.get_path())
        uuids = _POSITION['plays'].setdefault(path, [])
        if play._uuid not in uuids:
            uuids.append(play._uuid)
        _POSITION['play'] = (path, len(uuids))
    except Exception:
        _POSITION['play'] = None


def _static_path(task):
    """The task's file:line, or its outermost dynamic include's."""
    path = task.get_path()
    includes = getattr(C, '_ACTION_ALL_INCLUDES', ())
    parent = getattr(task, '_parent', None)
    while parent is not None:
        if getattr(parent, 'action', None) in includes:
            path = parent.get_path()
        parent = getattr(parent, '_parent', None)
    return _relative(path)


def _task_position(task):
    """Where a task of the current play is, or None when that cannot be told."""
    try:
        play, task_path = _POSITION['play'], _static_path(task)
    except Exception:
        return None
    if play is None or play[0] is None or not task_path:
        return None
    return {'play': play[0], 'play_n': play[1], 'task': task_path}


def _install_resume(spec):
    try:
        target = json.loads(spec)
        want = (str(target['play']), int(target.get('play_n', 1)), str(target['task']))
        from ansible.executor.play_iterator import HostState, IteratingStates, PlayIterator
    except Exception:
        return
    orig_init = PlayIterator.__init__
    started = []

    def skip_to(iterator, inventory, found):
        """Moves each host to the first task `found` accepts (as --start-at-task does), or past
        the play's end. Whether any host got there."""
        matched = False
        for name in list(iterator._host_states):
            host = inventory.get_host(name)
            iterator.set_state_for_host(name, HostState(blocks=iterator._blocks))
            while True:
                state, task = iterator.get_next_task_for_host(host, peek=True)
                if state.run_state == IteratingStates.COMPLETE:
                    break
                if found(task):
                    iterator._host_states[name].did_start_at_task = True
                    iterator._host_states[name].run_state = IteratingStates.SETUP
                    matched = True
                    break
                iterator.set_state_for_host(name, state)
        return matched

    def __init__(self, inventory, play, play_context, variable_manager, all_vars, start_at_done=False):
        name = play_context.start_at_task
        if started or start_at_done or name is None:
            return orig_init(self, inventory, play, play_context, variable_manager, all_vars,
                             start_at_done=start_at_done)
        orig_init(self, inventory, play, play_context, variable_manager, all_vars, start_at_done=True)
        here = _POSITION['play'] == (want[0], want[1])
        matched = here and skip_to(self, inventory, lambda t: _static_path(t) == want[2])
        if here and not matched:
            # The playbook changed since: the first task of that name in the play, as ansible.
            matched = skip_to(self, inventory, lambda t: name in (t.name, t.get_name()))
        if matched:
            started.append(True)
            # As ansible's own search does: the task is found, later plays run whole.
            play_context.start_at_task = None
        else:
            skip_to(self, inventory, lambda t: False)

    PlayIterator.__init__ = __init__


_RESUME_AT = os.environ.pop('TROUPE_RESUME_AT', None) if os.getpid() == _MAIN_PID else None
if _RESUME_AT:
    _install_resume(_RESUME_AT)


# -- the callback ----------------------------------------------------------------------------------

def _args_string(task):
    args = getattr(task, 'args', None) or {}
    try:
        return ', '.join('%s=%s' % (k, v) for k, v in args.items())
    except Exception:
        return ''


def _remote_addr(host):
    try:
        addr = host.vars.get('ansible_host')
        if isinstance(addr, str) and addr and '{{' not in addr:
            return addr
    except Exception:
        pass
    return getattr(host, 'address', None)


def _censor(res):
    if not isinstance(res, dict):
        return res
    if res.get('_ansible_no_log'):
        kept = {k: res[k] for k in ('changed', 'failed', 'skipped', 'unreachable', 'attempts') if k in res}
        kept['censored'] = CENSORED
        return kept
    results = res.get('results')
    if isinstance(results, list) and any(isinstance(r, dict) and r.get('_ansible_no_log') for r in results):
        res = dict(res)
        res['results'] = [_censor(r) if isinstance(r, dict) else r for r in results]
    return res


class CallbackModule(CallbackBase):
    """Streams events to troupe; see the module comment."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'troupe'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.wants_implicit_tasks = False

    # -- helpers ---------------------------------------------------------------------------------

    def _task_data(self, task, at_start=False):
        data = {}
        if task is None:
            return data
        try:
            data['task'] = task.name or task.action
        except Exception:
            data['task'] = None
        task_uuid = str(getattr(task, '_uuid', ''))
        data['task_uuid'] = _S.task_event_uuid.get(task_uuid, task_uuid)
        data['task_action'] = getattr(task, 'action', None)
        # The private attribute: the property resolves the action (and warns when it cannot) if
        # the task has not run yet, which would print a warning bare ansible does not.
        resolved = getattr(task, '_resolved_action', None)
        if resolved:
            data['resolved_action'] = resolved
        try:
            data['task_path'] = task.get_path()
        except Exception:
            pass
        # Arguments are shown only when the user asked ansible to show them
        # (DISPLAY_ARGS_TO_STDOUT), as ansible-runner does, and only as written in the playbook:
        # the copy of a task a result carries has its arguments templated, which would put
        # secrets (vaulted values, passwords from extra vars) into events. task.no_log is not
        # templated at task start either: anything but a literal False hides them.
        if at_start and C.DISPLAY_ARGS_TO_STDOUT:
            if getattr(task, 'no_log', True) is False and not C.DEFAULT_NO_LOG:
                _S.task_args[task_uuid] = _args_string(task)[:_S.max_res]
        data['task_args'] = _S.task_args.get(task_uuid, '')
        role = getattr(task, '_role', None)
        if role is not None:
            data['role'] = getattr(role, '_role_name', None)
        return data

    def _parent_for(self, task):
        if task is not None:
            mapped = _S.task_event_uuid.get(str(getattr(task, '_uuid', '')))
            if mapped:
                return mapped
        return _S.play_uuid or _S.playbook_uuid

    def _base(self):
        data = {}
        if _S.playbook_uuid:
            data['playbook'] = _S.playbook
            data['playbook_uuid'] = _S.playbook_uuid
        if _S.play_uuid:
            data['play'] = _S.play
            data['play_uuid'] = _S.play_uuid
            data['play_pattern'] = _S.play_pattern
        return data

    def _host_event(self, event, result, with_res=True, timing=True, **extra):
        task = getattr(result, '_task', None)
        host = result._host
        data = self._base()
        data.update(self._task_data(task))
        data['host'] = host.get_name()
        data['remote_addr'] = _remote_addr(host)
        if timing:
            key = (data['host'], str(getattr(task, '_uuid', '')))
            start = _S.host_start.get(key)
            end = _now()
            data['start'] = start.isoformat() if start else None
            data['end'] = end.isoformat()
            data['duration'] = (end - start).total_seconds() if start else None
            data['event_loop'] = getattr(task, 'loop_with', None)
        data.update(extra)
        res = None
        if with_res:
            res = _censor(result._result)
            if isinstance(res, dict) and getattr(task, 'action', None) in ('setup', 'gather_facts', 'ansible.builtin.setup', 'ansible.builtin.gather_facts'):
                facts = res.get('ansible_facts')
                if isinstance(facts, dict) and 'ansible_env' in facts:
                    res = dict(res)
                    res['ansible_facts'] = {k: v for k, v in facts.items() if k != 'ansible_env'}
        _S.record(event, data, parent=self._parent_for(task), res=res, has_res=with_res)

    def _guard(self, func, *args, **kwargs):
        try:
            func(*args, **kwargs)
        except Exception as ex:
            try:
                data = self._base()
                data['troupe_plugin_error'] = repr(ex)
                _S.record('verbose', data, parent=_S.play_uuid or _S.playbook_uuid)
            except Exception:
                pass

    # -- playbook and plays ------------------------------------------------------------------------

    def v2_playbook_on_start(self, playbook):
        self._guard(self._on_start, playbook)

    def _on_start(self, playbook):
        _S.playbook = getattr(playbook, '_file_name', None)
        _S.playbook_uuid = str(uuid.uuid4())
        _S.play = _S.play_uuid = _S.play_pattern = None
        _S.task_ctx = {}
        _S.record('playbook_on_start', self._base(), ev_uuid=_S.playbook_uuid)

    def v2_playbook_on_play_start(self, play):
        self._guard(self._on_play_start, play)

    def _on_play_start(self, play):
        hosts = getattr(play, 'hosts', '')
        pattern = ','.join(hosts) if isinstance(hosts, list) else (hosts or '')
        name = play.get_name().strip() or pattern
        play_uuid = str(play._uuid)
        seen = _S.play_seen.get(play_uuid, 0) + 1
        _S.play_seen[play_uuid] = seen
        if seen > 1:
            play_uuid = '%s_%d' % (play_uuid, seen)
        _S.play, _S.play_uuid, _S.play_pattern = name, play_uuid, pattern
        _S.task_ctx = {}
        _position_play_started(play)
        data = self._base()
        data.update(name=name, pattern=pattern)
        _S.record('playbook_on_play_start', data, ev_uuid=play_uuid, parent=_S.playbook_uuid)

    def v2_playbook_on_no_hosts_matched(self):
        self._guard(_S.record, 'playbook_on_no_hosts_matched', self._base(), parent=_S.play_uuid or _S.playbook_uuid)

    def v2_playbook_on_no_hosts_remaining(self):
        self._guard(_S.record, 'playbook_on_no_hosts_remaining', self._base(), parent=_S.play_uuid or _S.playbook_uuid)

    # -- tasks -------------------------------------------------------------------------------------

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._guard(self._on_task_start, task, is_conditional, False)

    def v2_playbook_on_handler_task_start(self, task):
        self._guard(self._on_task_start, task, True, True)

    def _on_task_start(self, task, is_conditional, handler):
        task_uuid = str(task._uuid)
        _S.started_task = task._uuid
        seen = _S.task_seen.get(task_uuid, 0) + 1
        _S.task_seen[task_uuid] = seen
        ev_uuid = task_uuid if seen == 1 else '%s_%d' % (task_uuid, seen)
        _S.task_event_uuid[task_uuid] = ev_uuid
        tdata = self._task_data(task, at_start=True)
        _S.task_ctx = tdata
        data = self._base()
        data.update(tdata)
        data.update(name=task.get_name(), is_conditional=bool(is_conditional))
        if handler:
            data['handler'] = True
        data['troupe_task_position'] = _task_position(task)
        _S.record('playbook_on_task_start', data, ev_uuid=ev_uuid, parent=_S.play_uuid or _S.playbook_uuid)

    def v2_playbook_on_include(self, included_file):
        self._guard(self._on_include, included_file)

    def _on_include(self, included_file):
        task = getattr(included_file, '_task', None)
        data = self._base()
        data.update(self._task_data(task))
        data['included_file'] = getattr(included_file, '_filename', None)
        data['hosts'] = [h.get_name() for h in getattr(included_file, '_hosts', [])]
        _S.record('playbook_on_include', data, parent=self._parent_for(task))

    def v2_playbook_on_notify(self, handler, host):
        def go():
            data = self._base()
            data.update(host=host.get_name(), handler=handler.get_name())
            _S.record('playbook_on_notify', data, parent=_S.task_ctx.get('task_uuid') or _S.play_uuid)
        self._guard(go)

    # -- host results ------------------------------------------------------------------------------

    def v2_runner_on_start(self, host, task):
        def go():
            name = host.get_name()
            _S.host_start[(name, str(task._uuid))] = _now()
            data = self._base()
            data.update(self._task_data(task))
            data['host'] = name
            data['remote_addr'] = _remote_addr(host)
            _S.record('runner_on_start', data, parent=self._parent_for(task))
        self._guard(go)

    def v2_runner_on_ok(self, result):
        self._guard(self._host_event, 'runner_on_ok', result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._guard(self._host_event, 'runner_on_failed', result, ignore_errors=bool(ignore_errors))

    def v2_runner_on_skipped(self, result):
        self._guard(self._host_event, 'runner_on_skipped', result)

    def v2_runner_on_unreachable(self, result):
        self._guard(self._host_event, 'runner_on_unreachable', result)

    def v2_runner_item_on_ok(self, result):
        self._guard(self._host_event, 'runner_item_on_ok', result, timing=False)

    def v2_runner_item_on_failed(self, result):
        self._guard(self._host_event, 'runner_item_on_failed', result, timing=False)

    def v2_runner_item_on_skipped(self, result):
        self._guard(self._host_event, 'runner_item_on_skipped', result, timing=False)

    def v2_runner_retry(self, result):
        self._guard(self._host_event, 'runner_retry', result, timing=False)

    def v2_runner_on_async_poll(self, result):
        self._guard(self._host_event, 'runner_on_async_poll', result, timing=False)

    def v2_runner_on_async_ok(self, result):
        self._guard(self._host_event, 'runner_on_async_ok', result, timing=False)

    def v2_runner_on_async_failed(self, result):
        self._guard(self._host_event, 'runner_on_async_failed', result, timing=False)

    def v2_on_file_diff(self, result):
        self._guard(self._host_event, 'runner_on_file_diff', result, with_res=False, timing=False,
                    diff=(result._result.get('diff') if not result._result.get('_ansible_no_log') else None))

    # -- the end -----------------------------------------------------------------------------------

    def v2_playbook_on_stats(self, stats):
        self._guard(self._on_stats, stats)

    def _on_stats(self, stats):
        _S.play = _S.play_uuid = _S.play_pattern = None
        _S.task_ctx = {}
        data = self._base()
        data.update(
            ok=dict(stats.ok),
            changed=dict(stats.changed),
            failures=dict(stats.failures),
            dark=dict(stats.dark),
            skipped=dict(stats.skipped),
            rescued=dict(getattr(stats, 'rescued', {}) or {}),
            ignored=dict(getattr(stats, 'ignored', {}) or {}),
            processed=dict(stats.processed),
            artifact_data=(stats.custom.get('_run', {}) if getattr(stats, 'custom', None) else {}),
            troupe_cancel_requested=_S.cancel_requested,
            troupe_canceled=_S.canceled,
            troupe_resume_task=_S.resume_task,
            troupe_resume_position=_POSITION.get('resume'),
        )
        _S.record('playbook_on_stats', data, parent=_S.playbook_uuid)
