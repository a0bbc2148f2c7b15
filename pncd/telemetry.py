"""Usage telemetry of the runtimes pncd drives, off by default.

OpenVINO's model conversion and NNCF send anonymous usage events to Google Analytics by default
(through the ``openvino-telemetry`` package, from forked processes) and keep a client id under
``~/intel``. A tool for hospital networks must not phone home unasked, so pncd turns that off for
its own processes before either package is imported: ``openvino-telemetry`` sends nothing in a
process that runs as a CI job (``CI=true``), which pncd sets for itself and its child processes
unless the user opts in (``pncd --allow-telemetry`` or ``PNCD_ALLOW_TELEMETRY=1``). Nothing is
written to the user's consent file: the choice lasts for pncd's processes only.
"""

from __future__ import annotations

import os

ALLOW_ENV = "PNCD_ALLOW_TELEMETRY"
_SAVED = "PNCD_CI_BEFORE_OPT_OUT"  # the user's own CI value, restored by allow()


def allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip() not in ("", "0")


def opt_out() -> None:
    """Turn the runtimes' telemetry off for this process and its children (unless allowed)."""
    if allowed() or os.environ.get("CI", "").strip().lower() == "true":
        return
    os.environ.setdefault(_SAVED, os.environ.get("CI", ""))
    os.environ["CI"] = "true"


def allow() -> None:
    """Opt in: leave the runtimes' telemetry as they set it (the user's CI value restored)."""
    os.environ[ALLOW_ENV] = "1"
    saved = os.environ.pop(_SAVED, None)
    if saved is not None:
        if saved:
            os.environ["CI"] = saved
        else:
            os.environ.pop("CI", None)


def state() -> str:
    return "on (opted in)" if allowed() else "off"
