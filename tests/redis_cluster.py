"""A real local Redis Cluster for tests and benchmarks: N masters (and replicas) on free loopback
ports, created with ``redis-cli --cluster create``, with failover by killing a master."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from forensics.redisconn import find_redis_server

_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000 (the cluster bus)


def _free_node_port() -> int:
    """A port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each. Slots are split evenly over the masters."""

    def __init__(self, workdir: Path, *, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000):
        self.dir = Path(workdir)
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """The URL of one live node (any node will do for the cluster client)."""
        port = next(p for p, proc in self.procs.items() if proc.poll() is None)
        return f"redis://127.0.0.1:{port}/0"

    def start(self, timeout: float = 30.0) -> LocalCluster:
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli missing (apt-get install redis-tools; deploy/bootstrap.sh installs redis-server)"
        exe = find_redis_server()
        for _ in range(self.masters * (1 + self.replicas)):
            port = _free_node_port()
            d = self.dir / str(port)
            d.mkdir(parents=True)
            self.procs[port] = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", str(self.node_timeout_ms),
                 "--cluster-replica-validity-factor", "0", "--save", "", "--appendonly", "no", "--dir", str(d),
                 "--logfile", str(d / "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.procs:
            self._wait(lambda p=port: redis.Redis(port=p, socket_connect_timeout=0.5).ping(), timeout)
        nodes = [f"127.0.0.1:{p}" for p in self.procs]
        subprocess.run([cli, "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        self._wait(self._healthy, timeout)
        return self

    def _healthy(self) -> bool:
        for port in self.live_ports():
            c = redis.Redis(port=port, socket_connect_timeout=0.5)
            if c.cluster("info").get("cluster_state") != "ok":
                return False
            info = c.info("replication")
            if info["role"] == "master" and self.replicas:
                online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                          and v.get("state") == "online"]  # fmt: skip
                if len(online) < self.replicas:
                    return False
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_port_of(self, key: str) -> int:
        """Port of the master that owns ``key``'s slot now."""
        c = redis.RedisCluster(host="127.0.0.1", port=self.live_ports()[0])
        try:
            return int(c.get_node_from_key(key).port)
        finally:
            c.close()

    def kill_master_of(self, key: str, timeout: float = 30.0) -> int:
        """SIGKILL the master owning ``key``'s slot; wait until a replica took over its slots. Returns its port."""
        port = self.master_port_of(key)
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self._wait(lambda: self._promoted(key, port), timeout)
        return port

    def _promoted(self, key: str, dead: int) -> bool:
        try:
            return self.master_port_of(key) != dead and all(
                redis.Redis(port=p, socket_connect_timeout=0.5).cluster("info").get("cluster_state") == "ok"
                for p in self.live_ports()
            )
        except (redis.RedisError, OSError):
            return False

    @staticmethod
    def _wait(cond, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except (redis.RedisError, OSError) as err:
                last = err
            time.sleep(0.1)
        raise TimeoutError(f"local Redis Cluster not ready in {timeout:.0f} s (last error: {last})")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
