"""--ssh-option goes to ssh and to scp alike, so every option is passed in a form both read the
same way: ``-l USER`` (which pncd's own error message offers) is ssh's login name but scp's
bandwidth limit, so it becomes ``-o User=USER``; ``-p PORT`` becomes ``-o Port=PORT`` (scp's port
is ``-P``). Checked on the argument lists pncd builds (a real sshd: tests/targets/test_jetson_ssh.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pncd.errors import PncdError
from pncd.targets import ssh
from pncd.targets.ssh import SshTarget, normalize_options

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("scp") is None,
                                reason="ssh and scp are not installed")

# what scp reads differently from ssh when given the same word
SCP_ONLY_MEANINGS = {"-l": "bandwidth limit", "-P": "port", "-r": "recursive", "-3": "copy through the local host"}


@pytest.fixture
def calls(monkeypatch):
    """The argument lists SshTarget runs (nothing runs: each call succeeds at once)."""
    seen: list[list[str]] = []

    def fake_run(argv, **_kw):
        seen.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "/tmp/pncd-bench.x\n", "")

    monkeypatch.setattr(ssh.subprocess, "run", fake_run)
    return seen


def _options(argv: list[str]) -> list[str]:
    """The options pncd passed (before the files or the host)."""
    out, it = [], iter(argv[1:])
    for w in it:
        if not w.startswith("-"):
            break
        out.append(w)
        if w in ("-o", "-i", "-F", "-c", "-l", "-P", "-p", "-J"):
            out.append(next(it))
    return out


def test_dash_l_user_is_a_login_name_for_both_ssh_and_scp(calls, tmp_path):
    assert normalize_options(["-l admin"]) == ["-o", "User=admin"]
    assert normalize_options(["-ladmin", "-p 2222"]) == ["-o", "User=admin", "-o", "Port=2222"]
    t = SshTarget("jetson.local", ["-l admin", "-p 2222", "-i /keys/id -C"])
    t.run("true")
    t.put([tmp_path / "a.onnx"], "/tmp/x")
    t.get("/tmp/x/out/result.json", tmp_path / "result.json")
    ssh_argv, put_argv, get_argv = calls
    assert ssh_argv[0] == "ssh" and put_argv[0] == get_argv[0] == "scp"
    for argv in calls:
        opts = _options(argv)
        assert not set(opts) & set(SCP_ONLY_MEANINGS), argv  # neither -l nor -P: no word scp reads otherwise
        pairs = list(zip(opts, opts[1:]))
        assert ("-o", "User=admin") in pairs and ("-o", "Port=2222") in pairs and ("-i", "/keys/id") in pairs, argv
        assert [o for o in opts if o != "-q"][:2] == ["-o", "StrictHostKeyChecking=yes"]  # first: ssh keeps it
    assert put_argv[-1] == "jetson.local:/tmp/x/" and get_argv[-2] == "jetson.local:/tmp/x/out/result.json"


def test_dash_l_needs_a_user_name():
    for bad in (["-l"], ["-l -v"], ["-l", ""]):
        with pytest.raises(PncdError, match=r"-l"):
            normalize_options(bad)


def test_the_jump_host_keeps_its_own_user(calls):
    """-l names the user on the device; the ProxyCommand's ssh to the jump host does not get it."""
    opts = normalize_options(["-l admin", "-J gate@bastion:2200"])
    proxy = next(v for k, v in zip(opts, opts[1:]) if k == "-o" and v.startswith("ProxyCommand="))
    assert "User=admin" not in proxy and "gate@bastion" in proxy and "-p 2200" in proxy
    assert ("-o", "User=admin") in list(zip(opts, opts[1:]))


def test_the_error_message_offers_options_that_work_for_both():
    with pytest.raises(PncdError) as e:
        normalize_options(["-R 8080:localhost:80"])
    assert "-l USER" in str(e.value)  # offered, and now safe for scp too
