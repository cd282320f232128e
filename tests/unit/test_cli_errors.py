"""The CLI's error contract where reporting an error could itself fail."""
from __future__ import annotations

import io
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
