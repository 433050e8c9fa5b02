# troupe starts ansible-playbook as `<python> troupe_boot.py <ansible-playbook> <arguments>`,
# with the interpreter ansible-playbook's own script names. This file does what that script
# does (import ansible's CLI, call its main() at module level) with troupe's callback attached
# in-process, so that a playbook cannot tell the difference:
# - troupe's plumbing variables (the event pipe's fd, troupe's pid, the result size limit) leave
#   the environment before ansible reads it: no task, inventory script or nested ansible command
#   inherits them;
# - the callback is added to ansible's callbacks in-process (troupe.py's attach), not through
#   ANSIBLE_CALLBACK_PLUGINS/ANSIBLE_CALLBACKS_ENABLED: ansible's configuration is the user's;
# - sys.argv[0] and sys.path[0] are the script's, and main() runs at module level as in the
#   script: workers fork from the same stack depth as in a bare run;
# - the exit is Python's (see exit_as_python), without the interpreter's teardown.
import os
import re
import sys

_settings = {name: os.environ.pop(name, None)
             for name in ('TROUPE_EVENT_FD', 'TROUPE_PARENT_PID', 'TROUPE_MAX_RESULT_BYTES')}
_here = os.path.dirname(os.path.abspath(__file__))
del sys.argv[0]
sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[0]))
# Python made this run's stdout block-buffered (a pipe); troupe reads it as it is written.
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.reconfigure(line_buffering=True, write_through=True)
    except (AttributeError, ValueError):
        pass

from ansible.cli.playbook import main  # noqa: E402  (after the environment is the user's)


def _attach():
    import importlib.util
    spec = importlib.util.spec_from_file_location('troupe_callback', os.path.join(_here, 'troupe.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.attach(_settings)


_attach()
del _settings, _here, _stream, _attach


def exit_as_python(code):
    """`sys.exit(code)` for main()'s answer (or its SystemExit's code), as Python ends a script,
    up to the interpreter's teardown: the exit status (a non-integer printed to stderr, status 1),
    non-daemon threads joined (threading._shutdown), the atexit handlers run, files still open
    flushed, stdout and stderr flushed (status 120 when stdout cannot be) -- then the process
    ends. The teardown left out frees every module and object ansible made, one by one: 0.13 to
    0.19 s after the recap of every run, which nothing a playbook or callback does can see.
    A Python without these internals ends as usual."""
    import atexit
    import io
    import threading
    if not (hasattr(threading, '_shutdown') and hasattr(atexit, '_run_exitfuncs')):
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xff
    else:
        try:
            sys.stderr.write('%s\n' % (code,))
        except Exception:
            pass
        status = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    # What the teardown would have flushed on freeing them: files a plugin left open.
    import gc
    # A warm run's parent froze what its import made; files among it are flushed too.
    gc.unfreeze()
    buffered = {io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper}
    for f in gc.get_objects():
        if type(f) in buffered and f not in (sys.stdout, sys.stderr):
            try:
                if not f.closed:
                    f.flush()
            except Exception:
                pass
    try:
        sys.stdout.flush()
    except Exception:
        status = 120
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(status)


if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\.pyw|\.exe)?$', '', sys.argv[0])
    # main() at module level, as in the script; an exception other than SystemExit ends the
    # process as it would there.
    try:
        _code = main()
    except SystemExit as _exit:
        _code = _exit.code
    exit_as_python(_code)
