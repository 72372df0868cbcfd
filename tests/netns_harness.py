"""Hosts of their own for multi-host tests: network namespaces on a bridge, and the
servers (PostgreSQL, Redis, Nutshell mints, Celery workers and beat) placed on it.

    net = Network(["hostA", "hostB", "beat"]).start()   # a bridge, one namespace per host
    net.gateway                                         # 10.77.N.1: the root namespace
    pg = BridgePostgres(net).start()                    # pg.url(db) -> 10.77.N.1:<port>
    redis = BridgeRedis(net).start()                    # redis.url(13) -> 10.77.N.1:<port>
    mint = start_bridge_mint(net, input_fee_ppk=100)     # mint.url -> http://10.77.N.1:<port>
    worker = NetnsWorker(net, "hostA", database_url=..., redis_url=..., mnemonic=...).start()
    beat = NetnsBeat(net, "beat", database_url=..., redis_url=..., mnemonic=...).start()
    net.cut("hostA")      # its link down: its connections hang, new ones fail
    net.restore("hostA")  # its link up again: what was in flight goes on
    net.stop()            # every namespace, link and the bridge (atexit does it too)

The network: a bridge in the root namespace holding the gateway address (10.77.N.1/24,
N the first subnet of 10.77.0.0/16 no interface of the machine uses) and one veth pair
per host; the host's end is `eth0` in its namespace (10.77.N.11, .12, ... in order, with
its loopback up), the root end is enslaved to the bridge. Cutting a host sets the root
end down: the host's eth0 loses its carrier, nothing it sends arrives, nothing reaches it,
and its TCP connections hang until their own timeouts, as a pulled cable would do.

Processes in a host run as `ip netns exec <namespace> <command>` (ip execs the command:
the process keeps its pid, so the harnesses' process-group kills work unchanged).

Names carry this process's pid (`cw<pid>...`): `Network.start()` first removes what a
dead process of ours left (its namespaces and bridge).

`unavailable()` says why namespaces cannot be used here (not root, no `ip`, refused), or
None.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from mint_harness import MINT_ROOT_DIR, RunningMint, free_port, mint_bin
from pg_harness import START_TIMEOUT as PG_START_TIMEOUT
from pg_harness import PrivatePostgres
from redis_harness import RedisServer
from worker_harness import CELERY_BIN, RunningWorker

PREFIX = "cw"  # every namespace, veth and bridge of ours: cw<pid>...
SUBNET_BASE = "10.77"
FIRST_HOST = 11  # hosts get .11, .12, ...
IP_TIMEOUT = 15.0

_NETWORKS: set[Network] = set()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why this machine cannot give a test network namespaces, or None if it can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        added = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` failed: {exc}"
    if added.returncode != 0:
        return f"`ip netns add` refused: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces and bridges a dead process of ours left behind."""
    removed: list[str] = []
    owner = re.compile(rf"^{PREFIX}(\d+)")
    namespaces = _ip("netns", "list", check=False).stdout.split()
    links = re.findall(r"^\d+: ([^:@]+)", _ip("-o", "link", "show", check=False).stdout, re.M)
    for name in namespaces:
        found = owner.match(name)
        if found and not _pid_alive(int(found.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for name in links:
        found = owner.match(name)
        if found and not _pid_alive(int(found.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet() -> str:
    used = set(re.findall(rf"inet {re.escape(SUBNET_BASE)}\.(\d+)\.", _ip("-4", "addr").stdout))
    for third in range(256):
        if str(third) not in used:
            return f"{SUBNET_BASE}.{third}"
    raise RuntimeError(f"no free /24 in {SUBNET_BASE}.0.0/16")


class Network:
    """A bridge and one namespace per host; hosts cut off and brought back on demand."""

    def __init__(self, hosts: list[str]) -> None:
        tag = f"{PREFIX}{os.getpid()}"
        self.hosts = list(hosts)
        self.bridge = f"{tag}br"
        self.namespaces = {host: f"{tag}-{host}" for host in hosts}
        self.veths = {host: f"{tag}v{i}" for i, host in enumerate(hosts)}  # root ends
        self.subnet = ""
        self.gateway = ""
        self.addresses: dict[str, str] = {}
        self.down: set[str] = set()
        self.started = False
        for name in (self.bridge, *self.veths.values()):
            if len(name) > 15:
                raise ValueError(f"interface name too long: {name}")

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def start(self) -> Network:
        remove_stale()
        self.subnet = _free_subnet()
        self.gateway = f"{self.subnet}.1"
        _NETWORKS.add(self)
        self.started = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, host in enumerate(self.hosts):
                ns, veth = self.namespaces[host], self.veths[host]
                address = f"{self.subnet}.{FIRST_HOST + i}"
                _ip("netns", "add", ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                self.addresses[host] = address
            self._wait_reachable()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_reachable(self, timeout: float = 10.0) -> None:
        """Every host reaches the gateway (a TCP connection to a closed port is refused:
        the gateway answered), once the bridge forwards on its new ports."""
        probe = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(('{self.gateway}', 9), timeout=1).close()\n"
            "except ConnectionRefusedError:\n"
            "    pass\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        deadline = time.monotonic() + timeout
        for host in self.hosts:
            while True:
                done = subprocess.run(
                    [*self.exec_prefix(host), sys.executable, "-c", probe],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                )
                if done.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{host} does not reach {self.gateway}")
                time.sleep(0.2)

    def exec_prefix(self, host: str) -> list[str]:
        """The words that run a command inside `host`."""
        return ["ip", "netns", "exec", self.namespaces[host]]

    def cut(self, host: str) -> None:
        """The host's link down: cut off from everything (its processes keep running)."""
        _ip("link", "set", self.veths[host], "down")
        self.down.add(host)

    def restore(self, host: str) -> None:
        """The host's link up again."""
        _ip("link", "set", self.veths[host], "up")
        self.down.discard(host)

    def restore_all(self) -> None:
        for host in list(self.down):
            with contextlib.suppress(Exception):
                self.restore(host)

    def stop(self) -> None:
        """Delete every namespace (their veths go with them) and the bridge."""
        if not self.started:
            return
        for ns in self.namespaces.values():
            _ip("netns", "del", ns, check=False)
        for veth in self.veths.values():  # gone with their namespace; in case one stayed
            if _ip("link", "show", veth, check=False).returncode == 0:
                _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.started = False
        self.down.clear()
        _NETWORKS.discard(self)

    def leftovers(self) -> list[str]:
        """What of this network still exists (empty after stop())."""
        namespaces = set(_ip("netns", "list", check=False).stdout.split())
        left = [ns for ns in self.namespaces.values() if ns in namespaces]
        for link in (self.bridge, *self.veths.values()):
            if _ip("link", "show", link, check=False).returncode == 0:
                left.append(link)
        return left

    def __repr__(self) -> str:
        return f"<Network {self.cidr} bridge={self.bridge} hosts={self.addresses}>"


# --- servers on the bridge --------------------------------------------------------------------


class BridgePostgres(PrivatePostgres):
    """tests/pg_harness.py's private cluster, listening on the gateway address as well, and
    trusting the network's hosts (pg_hba)."""

    def __init__(self, net: Network, root: Path | None = None) -> None:
        super().__init__(root)
        self.net = net

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@{self.net.gateway}:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = PG_START_TIMEOUT) -> None:
        if tool == "pg_ctl" and "start" in args:
            listen = f"listen_addresses=127.0.0.1,{self.net.gateway}"
            args = tuple(a.replace("listen_addresses=127.0.0.1", listen) for a in args)
        super()._run(tool, *args, timeout=timeout)
        if tool == "initdb":
            with open(self.data_dir / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.net.cidr} trust\n")


class BridgeRedis(RedisServer):
    """tests/redis_harness.py's redis-server, bound to the gateway address as well."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net
        _REDIS.add(self)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.net.gateway}:{self.port}/{db}"

    def start(self) -> BridgeRedis:
        super().start()
        local = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)
        try:
            local.config_set("bind", f"127.0.0.1 {self.net.gateway}")
            local.config_set("protected-mode", "no")  # the hosts are not loopback
        finally:
            local.close()
        return self


_REDIS: set[BridgeRedis] = set()


class BridgeMint(RunningMint):
    """A Nutshell mint (tests/mint_harness.py) listening on the gateway address."""

    def __init__(self, net: Network, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.net = net
        self.env_overrides["MINT_LISTEN_HOST"] = net.gateway

    @property
    def url(self) -> str:
        return f"http://{self.net.gateway}:{self.port}"


def start_bridge_mint(
    net: Network,
    *,
    env_overrides: dict[str, str | None] | None = None,
    input_fee_ppk: int = 100,
) -> BridgeMint:
    """start_mint's FakeWallet mint (its default version), reachable from every host."""
    if not mint_bin().exists():
        raise RuntimeError(f"{mint_bin()} not found (bash scripts/test.sh creates it)")
    MINT_ROOT_DIR.mkdir(exist_ok=True)
    mint = BridgeMint(
        net,
        port=free_port(),
        db_dir=Path(tempfile.mkdtemp(prefix="mint-", dir=MINT_ROOT_DIR)),
        env_overrides=env_overrides or {},
        input_fee_ppk=input_fee_ppk,
        private_key=f"cashu-worker-test-mint-{uuid.uuid4().hex}",
        owns_db_dir=True,
    )
    return mint.start()  # type: ignore[return-value]


# --- Celery processes inside a host ------------------------------------------------------------


class NetnsWorker(RunningWorker):
    """tests/worker_harness.py's worker, run inside a host: `ip netns exec <ns> celery ...`.
    Its node name starts with the host's name (hostA-1a2b3c4d@...)."""

    def __init__(self, net: Network, host: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.net = net
        self.host = host
        self.hostname = f"{host}-{uuid.uuid4().hex[:8]}@%h"

    def command(self) -> list[str]:
        return [*self.net.exec_prefix(self.host), *super().command()]


class NetnsBeat(NetnsWorker):
    """`celery -A tasks beat` inside a host, its schedule file in a temporary directory.
    Ready once its log says the beat started and has sent a first task."""

    def __init__(self, net: Network, host: str, **kwargs: object) -> None:
        super().__init__(net, host, **kwargs)
        self.schedule_dir = Path(tempfile.mkdtemp(prefix="beat-", dir=MINT_ROOT_DIR))
        self.log_path = self.log_path.with_name(self.log_path.name.replace("worker", "beat"))

    def command(self) -> list[str]:
        return [
            *self.net.exec_prefix(self.host),
            str(CELERY_BIN),
            "-A",
            "tasks",
            "beat",
            "-l",
            "INFO",
            "-s",
            str(self.schedule_dir / "celerybeat-schedule"),
        ]

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"beat exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if "Sending due task" in self.log_path.read_text(errors="replace"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"beat sent no task in {timeout}s:\n{self.log_tail()}")

    def cleanup(self) -> None:
        self.kill_hard()
        shutil.rmtree(self.schedule_dir, ignore_errors=True)


@atexit.register
def _clean_up() -> None:
    for server in list(_REDIS):
        with contextlib.suppress(Exception):
            server.kill()
    for net in list(_NETWORKS):
        with contextlib.suppress(Exception):
            net.stop()
