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
#   script: workers fork from the same stack depth as in a bare run.
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

if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\.pyw|\.exe)?$', '', sys.argv[0])
    sys.exit(main())
