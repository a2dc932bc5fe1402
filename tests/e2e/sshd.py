"""A real OpenSSH server for ssh-mcp's end-to-end tests.

`Sshd` starts Debian's `/usr/sbin/sshd` in the foreground on 127.0.0.1 and a free port, with its
own sshd_config, a fresh ed25519 host key and an authorized_keys file holding a fresh client key,
all under one temporary directory. It logs in the current user. Nothing is skipped: a missing
`sshd` or `ssh-keygen` fails the test with the command that installs them.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path

from conftest import free_port, require, wait_for_port

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
INSTALL_HINT = "run `bash scripts/setup-test-deps.sh` (installs openssh-server and openssh-client)"


def keygen(path: Path, passphrase: str = "", comment: str = "ssh-mcp-test", kind: str = "ed25519") -> Path:
    """A fresh key pair at `path` / `path.pub`; returns the private key's path."""
    require(SSH_KEYGEN, INSTALL_HINT)
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    args = [str(SSH_KEYGEN), "-q", "-t", kind, "-N", passphrase, "-C", comment, "-f", str(path)]
    if kind == "rsa":
        args[4:4] = ["-b", "2048", "-m", "PEM"]
    subprocess.run(args, check=True)
    return path


def fingerprint(pub: Path) -> str:
    """`SHA256:...` of a public key file, as `ssh-keygen -lf` prints it."""
    out = subprocess.run([str(SSH_KEYGEN), "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


class Sshd:
    """A running sshd; `stop()` ends it."""

    def __init__(self, root: Path) -> None:
        require(SSHD, INSTALL_HINT)
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = keygen(self.dir / "host_ed25519", comment="ssh-mcp-test-host")
        self.client_key = keygen(self.dir / "client_ed25519")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.port = free_port()
        # The sessions' HOME: a clean one, so the machine user's dotfiles stay out of the tests
        # (a ~/.bashrc that runs `pyenv init` cost ~300 ms per command here, since bash reads
        # ~/.bashrc when sshd starts it). sshd still starts commands in the real home directory.
        self.home = self.dir / "home"
        self.home.mkdir(exist_ok=True)
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.dir / 'sshd.pid'}
AuthorizedKeysFile {self.authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {self.user}
AllowTcpForwarding yes
MaxSessions 30
SetEnv HOME={self.home}
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""
        )
        if os.geteuid() == 0:
            # sshd's privilege separation directory; Debian's package does not create it.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.log_path = self.dir / "sshd.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(self.port, self.proc, timeout=15)
        except Exception:
            self.stop()
            raise RuntimeError(f"sshd did not start:\n{self.log()}") from None

    @property
    def host_pub(self) -> Path:
        return Path(f"{self.host_key}.pub")

    def fingerprint(self) -> str:
        return fingerprint(self.host_pub)

    def known_hosts_line(self, key_pub: Path | None = None) -> str:
        """The known_hosts line that trusts this server's key (or another key, to fake a change)."""
        kind, b64 = (key_pub or self.host_pub).read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def authorize(self, key: Path) -> None:
        with open(self.authorized_keys, "a") as f:
            f.write(Path(f"{key}.pub").read_text())

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
