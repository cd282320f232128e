"""The CLI's error contract where reporting an error could itself fail, and what it does as a program."""
from __future__ import annotations

import io
import signal
import sys
import types

from services import cli


def test_ctrl_c_while_a_module_is_half_imported_is_still_one_line(monkeypatch):
    # A Ctrl-C during start-up can stop an import half-way (CI saw it in `requests`, under Beam's
    # import): whatever the error handlers look at must not import it again.
    def interrupted(args, console):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMANDS, "info", interrupted)
    monkeypatch.setitem(sys.modules, "adapters.provisioning",
                        types.ModuleType("adapters.provisioning"))  # in sys.modules, its names not yet defined
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["info", "anything.dcz"], stdout=out, stderr=err) == 130
    assert err.getvalue() == "dcas: error: interrupted\n"


def test_the_service_errors_reported_are_those_of_the_modules_loaded(monkeypatch):
    from services.jobs import JobError
    monkeypatch.delitem(sys.modules, "services.stack", raising=False)
    errors = cli._service_errors()
    assert JobError in errors and all(error.__module__ != "services.stack" for error in errors)


def test_as_a_program_it_leaves_the_objects_of_its_imports_to_the_exit_and_as_a_library_it_does_not(monkeypatch):
    # Shutdown's garbage collections would walk every object Beam's and numba's imports made.
    frozen = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: frozen.append(True))
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["info", "missing.dcz"], stdout=out, stderr=err) != 0
    assert not frozen
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "_AS_PROGRAM", True)
    try:
        assert cli.main(["info", "missing.dcz"], stdout=out, stderr=err) != 0
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert frozen  # at the start (the imports) and at the exit
