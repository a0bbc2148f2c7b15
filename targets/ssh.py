"""A remote machine over SSH, driven through the system's ``ssh`` and ``scp`` binaries.

Using the binaries (not a Python SSH library) means ``~/.ssh/config``, agents, jump hosts and
known_hosts all work as they do in a terminal. Host keys are always checked:
``StrictHostKeyChecking=yes`` is passed first (ssh keeps the first value it sees for an option),
and options that would turn checking off are refused. ``BatchMode=yes`` makes ssh fail instead of
asking for a password or a host key confirmation, so a run never hangs on a prompt.

Failures become one-line :class:`~pncd.errors.PncdError` messages that say what to do
(unreachable host, refused authentication, unknown host key, missing remote python, ...).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Sequence

from pncd.errors import PncdError, RunFailed

# Options that take a value. The same arguments go to ssh and to scp, so each is passed in a form
# both read the same way: ``-p PORT`` becomes ``-o Port=PORT`` (scp spells the port ``-P``) and
# ``-l USER`` becomes ``-o User=USER`` (scp's ``-l`` is a bandwidth limit in Kbit/s).
_WITH_VALUE = {"-o", "-i", "-p", "-F", "-J", "-c", "-l"}
_FLAGS = {"-4", "-6", "-C", "-q", "-v"}
_UNSAFE = {
    "stricthostkeychecking": {"no", "off", "accept-new"},
    "userknownhostsfile": {"/dev/null"},
}


def normalize_options(values: Sequence[str]) -> list[str]:
    """Turn ``--ssh-option`` values (each may hold several words) into ssh/scp arguments.

    Accepts ``-o KEY=VALUE``, ``-oKEY=VALUE``, ``-i KEY``, ``-p PORT``, ``-F CONFIG``, ``-J JUMP``,
    ``-c CIPHER``, ``-l USER`` and the flags ``-4 -6 -C -q -v``; the result means the same to ssh
    and scp (``-p`` and ``-l`` become ``-o Port=`` and ``-o User=``). Refuses anything that would skip
    host key checking. ``-J JUMP`` becomes a ``ProxyCommand`` whose own ssh gets the same strict
    host key options (ssh does not pass command-line options on to a ``-J`` jump host).
    """
    words: list[str] = []
    jump: str | None = None
    for v in values:
        words.extend(shlex.split(v))
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in _FLAGS:
            out.append(w)
            i += 1
            continue
        opt, val = (w[:2], w[2:]) if len(w) > 2 and w[:2] in _WITH_VALUE else (w, None)
        if opt not in _WITH_VALUE:
            raise PncdError(
                f"--ssh-option {w!r} is not supported; use -o KEY=VALUE, -i KEY, -p PORT, -F FILE, -J JUMP, "
                "-l USER, -c CIPHER or -4/-6/-C/-q/-v"
            )
        if val is None:
            if i + 1 >= len(words):
                raise PncdError(f"--ssh-option {w} needs a value (e.g. '{w} VALUE')")
            val = words[i + 1]
            i += 1
        i += 1
        if opt == "-o":
            key, _, setting = val.partition("=")
            if not setting:
                key, _, setting = val.partition(" ")
            if setting.strip().lower() in _UNSAFE.get(key.strip().lower(), set()):
                raise PncdError(
                    f"--ssh-option '-o {val}' would skip host key checking, which pncd never does; "
                    "add the device's key to known_hosts (ssh-keyscan, then verify it) or pass "
                    "-o UserKnownHostsFile=FILE"
                )
            out += ["-o", val]
        elif opt == "-p":
            if not val.isdigit():
                raise PncdError(f"--ssh-option -p needs a port number, got {val!r}")
            out += ["-o", f"Port={val}"]
        elif opt == "-l":  # ssh's login name; to scp, -l is a bandwidth limit
            if not val or val.startswith("-") or any(c.isspace() for c in val):
                raise PncdError(f"--ssh-option -l needs a user name, got {val!r}")
            out += ["-o", f"User={val}"]
        elif opt == "-J":
            if jump is not None or "," in val:
                raise PncdError(f"--ssh-option -J {val}: one jump host only; put longer chains in ~/.ssh/config "
                                "(ProxyJump, with StrictHostKeyChecking yes for every hop)")
            jump = val
        else:
            out += [opt, val]
    if jump is not None:
        out += ["-o", f"ProxyCommand={jump_command(jump, out)}"]
    return out


def jump_command(jump: str, options: Sequence[str]) -> str:
    """The ProxyCommand for ``-J jump``: an ssh to the jump host with the strict host key options
    (and the user's known-hosts file and config), forwarding to the target (%h:%p)."""
    user_host, port = jump, None
    m = re.fullmatch(r"(?:ssh://)?([^:/\s]+)(?::(\d+))?", jump)
    if m is None or m.group(1).startswith("-"):
        raise PncdError(f"--ssh-option -J {jump!r} is not a jump host; use [user@]host[:port]")
    user_host, port = m.group(1), m.group(2)
    argv = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    it = iter(options)
    for o in it:
        val = next(it, "") if o in _WITH_VALUE else ""
        if o == "-o" and val.split("=", 1)[0].strip().lower() in ("userknownhostsfile", "globalknownhostsfile",
                                                                  "connecttimeout"):
            argv += ["-o", val]
        elif o == "-F":
            argv += ["-F", val]
        elif o in ("-4", "-6"):
            argv.append(o)
    if port:
        argv += ["-p", port]
    argv += ["-W", "%h:%p", "--", user_host]
    # ssh expands %-tokens in ProxyCommand: escape the user's own % signs, keep %h:%p
    return " ".join(shlex.quote(a).replace("%", "%%") if a != "%h:%p" else a for a in argv)


def check_host(host: str | None) -> str:
    """``--host``: anything ssh accepts as a destination, but never an option."""
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise PncdError(f"--host {host!r} is not a host; use user@address or an alias from ~/.ssh/config")
    return host


class SshTarget:
    """Run commands on ``host`` and copy files to and from it.

    ``host`` is anything ssh accepts (``user@addr``, a ``Host`` alias from ~/.ssh/config).
    """

    def __init__(self, host: str, options: Sequence[str] = (), connect_timeout: int = 10) -> None:
        check_host(host)
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise RunFailed(f"the '{tool}' program is not on PATH; install openssh-client")
        self.host = host
        self.last_cleanup_ok: bool | None = None
        self.options = [
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={int(connect_timeout)}",
            *normalize_options(options),
        ]

    # -- commands -----------------------------------------------------------------------------
    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *self.options, self.host, "--", command]

    def run(
        self, command: str, timeout: float | None = 120, check: bool = True, what: str = "command"
    ) -> subprocess.CompletedProcess:
        """Run ``command`` (a shell string; quote parts with :func:`shlex.quote`) on the host."""
        try:
            proc = subprocess.run(
                self.ssh_argv(command), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise RunFailed(f"{what} on {self.host} did not finish within {timeout:.0f} s") from None
        if check:
            self.raise_for(proc, what)
        return proc

    def raise_for(self, proc: subprocess.CompletedProcess, what: str) -> None:
        """Translate a failed ssh/scp call into one line that says what to do."""
        if proc.returncode == 0:
            return
        err = (proc.stderr or "").strip()
        if proc.returncode == 255:  # ssh's own failure; a remote command's status passes through
            raise RunFailed(explain_transport_error(self.host, err)) from None
        last = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
        raise RunFailed(f"{what} failed on {self.host}: {last}")

    # -- files --------------------------------------------------------------------------------
    def put(self, local: Sequence[Path], remote_dir: str, timeout: float | None = 600) -> None:
        """Copy local files into ``remote_dir`` (scp keeps their names)."""
        argv = ["scp", "-q", *self.options, *[str(p) for p in local], f"{self.host}:{remote_dir}/"]
        self._scp(argv, timeout, f"copying {len(local)} file(s) to {self.host}")

    def get(self, remote: str, local: Path, timeout: float | None = 600) -> None:
        argv = ["scp", "-q", *self.options, f"{self.host}:{remote}", str(local)]
        self._scp(argv, timeout, f"copying {remote} back from {self.host}")

    def _scp(self, argv: list[str], timeout: float | None, what: str) -> None:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"{what} did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0:
            err = (proc.stderr or "").strip()
            if _is_transport_error(err):
                raise RunFailed(explain_transport_error(self.host, err))
            raise RunFailed(f"{what} failed: {err.splitlines()[-1] if err else proc.returncode}")

    # -- a temporary directory that never outlives the run ------------------------------------
    @contextlib.contextmanager
    def temp_dir(self, prefix: str = "pncd-bench") -> Iterator[str]:
        """``mktemp -d`` on the host, removed (``rm -rf``) on exit, also on failure."""
        proc = self.run(f"mktemp -d -t {shlex.quote(prefix)}.XXXXXXXX", what="creating a temporary directory")
        path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if not path.startswith("/"):
            raise RunFailed(f"mktemp -d on {self.host} printed {path!r}, not a directory path")
        self.last_cleanup_ok = False
        try:
            yield path
        finally:
            q = shlex.quote(path)
            try:
                proc = self.run(f"rm -rf -- {q} && ! test -e {q}", check=False, timeout=60, what="removing " + path)
                self.last_cleanup_ok = proc.returncode == 0
            except PncdError:  # keep the original error; the caller reports the failed clean-up
                self.last_cleanup_ok = False


def _is_transport_error(err: str) -> bool:
    keys = (
        "Connection refused", "Connection timed out", "No route to host", "Could not resolve hostname",
        "Permission denied (", "Host key verification failed", "Connection closed", "Network is unreachable",
        "kex_exchange_identification", "Too many authentication failures", "banner exchange",
    )
    return any(k in err for k in keys)


def explain_transport_error(host: str, err: str) -> str:
    """One actionable line for the ways an SSH connection fails before any command runs."""
    if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
        return (
            f"the host key of {host} is not in known_hosts (or has changed); connect once with "
            f"'ssh {host}' and verify the key, or pass --ssh-option '-o UserKnownHostsFile=FILE'"
        )
    if "Permission denied (" in err or "Too many authentication failures" in err:
        return (
            f"{host} refused the SSH authentication; load the right key into ssh-agent or pass "
            "--ssh-option '-i KEYFILE' (and -o IdentitiesOnly=yes)"
        )
    if "Could not resolve hostname" in err:
        return f"cannot resolve the host name in {host!r}; check --host (user@address or an ~/.ssh/config alias)"
    if any(k in err for k in ("Connection refused", "Connection timed out", "No route to host", "Network is unreachable",
                              "Operation timed out")):
        detail = next(
            (k for k in ("Connection refused", "Connection timed out", "No route to host", "Network is unreachable",
                         "Operation timed out") if k in err),
            "unreachable",
        ).lower()
        return f"cannot reach {host} over SSH ({detail}); is the device on, sshd running and the port right (-p PORT)?"
    last = err.strip().splitlines()[-1] if err.strip() else "no message"
    return f"SSH connection to {host} failed: {last}"
