"""The consortium host's Redis: broker for Celery, home of listener checkpoints, outboxes and event streams.

Debian's redis-server binary, started by us on the topology's port with an append-only file in the run folder, so
checkpoints and queued tasks survive a restart. scripts/bootstrap installs the package on a fresh machine.

Nothing connects without a password. The users are written to an ACL file (passwords as SHA-256 hashes) at every
start:
- the default user (what a connection is before AUTH) has a random password that is not kept anywhere, so nobody can
  log in as it. It cannot simply be `off`: Redis 7.0 replays the MULTI/EXEC blocks of its append-only file as the
  default user, and with that user off it drops them on restart (every transaction kombu and the workers wrote, e.g.
  an unacknowledged message's record, is lost), as tests/integration/test_workers.py shows;
- one user per member org (named after its MSP id), limited to the org's key patterns (consortium.redis_keys) and to
  the commands its processes need, with no pub/sub channels: Celery's remote control, events and gossip are off
  (workers/app.py, workers/cli.py), so nothing publishes or subscribes;
- `careledger-admin`, every command and key, for the set-up, operators and tests.
The passwords are secret files in each org's home (network/org_secrets.py); Redis gets only their SHA-256, which
each org hands over (`<run>/redis/users/<MSP>.sha256`). An org that joins later is added live (`ensure_users`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import subprocess

import redis

from consortium.errors import ToolMissing
from consortium.processes import ManagedProcess, ensure_port_free
from consortium.redis_keys import OrgKeys
from consortium.secrets import read_secret, replace_secret
from consortium.topology import REDIS_ADMIN_USER, Org, Topology

NAME = "redis"

# What an org's processes run, found by running them under this ACL and reading `ACL LOG` (the workers' integration
# tests assert that it stays empty):
ORG_COMMANDS = [
    # connecting (redis-py sends HELLO with AUTH; CLIENT SETINFO too, see _commands) and health checks
    "auth", "hello", "ping", "client|setname",
    # kombu's Redis transport: queues, unacknowledged messages and their index, bindings, the restore mutex
    "lpush", "rpush", "rpop", "brpop", "llen",
    "hset", "hget", "hdel", "hlen", "hgetall", "hexists",
    "sadd", "srem", "smembers",
    "zadd", "zrem", "zrange",
    "set", "get", "mget", "del", "exists", "expire", "pexpire",
    "multi", "exec", "discard", "watch", "unwatch",
    # redis-py locks (the restore mutex, one adjudication per member) release and extend with Lua scripts
    "evalsha", "script|load",
    # CareLedger's own keys: outbox, failures, dead letters, the org's event stream and its readers, the queues of
    # claims waiting for the next remittance, the insurer's memory of claim lines, liveness
    "lpop", "lrange", "ltrim", "xadd", "xrange", "xread", "xreadgroup", "xack", "xlen", "xgroup|create",
    "zcard", "incr", "setex", "psetex",
]  # fmt: skip


def _version(binary: str) -> tuple[int, ...]:
    """redis-server's version, e.g. (7, 0, 15), from `redis-server --version` ("Redis server v=7.0.15 sha=...")."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(g) for g in match.groups()) if match else (0, 0, 0)


def _commands(binary: str) -> list[str]:
    """ORG_COMMANDS, and CLIENT SETINFO where Redis has it (7.2 and later): redis-py sends it on connecting."""
    return [*ORG_COMMANDS, "client|setinfo"] if _version(binary) >= (7, 2) else list(ORG_COMMANDS)


def process(topology: Topology) -> ManagedProcess:
    return ManagedProcess(NAME, topology.pid_file(NAME), topology.log_file(NAME))


def _hash(password: bytes) -> str:
    return hashlib.sha256(password.strip()).hexdigest()


def _org_user(topology: Topology, org: Org, commands: list[str]) -> str:
    """An org's ACL rule, from the password hash the org handed over (never the password itself)."""
    password_hash = read_secret(topology.redis_user_hash_file(org), f"{org.name}'s Redis password hash").decode()
    patterns = " ".join(f"~{p}" for p in OrgKeys(org.msp_id).acl_patterns)
    allowed = " ".join(f"+{c}" for c in commands)
    return f"on #{password_hash.strip()} resetchannels {patterns} -@all {allowed}"


def acl_lines(topology: Topology, commands: list[str]) -> list[str]:
    """The ACL file: the default user off, the admin, one user per member org allowed `commands`."""
    admin = read_secret(topology.redis_admin_password_file, "the Redis admin password")
    lines = [
        f"user default on #{_hash(secrets.token_hex(32).encode())} ~* &* +@all",  # see the module's docstring
        f"user {REDIS_ADMIN_USER} on #{_hash(admin)} ~* &* +@all",
    ]
    for org in topology.member_orgs:
        lines.append(f"user {topology.redis_user(org)} {_org_user(topology, org, commands)}")
    return lines


def ensure_users(topology: Topology) -> list[str]:
    """Add the users of orgs that joined since Redis started, without a restart (ACL SETUSER, then ACL SAVE so the
    file keeps them). Returns the users added."""
    binary = shutil.which("redis-server") or "redis-server"
    commands = _commands(binary)
    added = []
    with admin(topology) as r:
        existing = {u.decode() if isinstance(u, bytes) else str(u) for u in r.acl_users()}
        for org in topology.member_orgs:
            user = topology.redis_user(org)
            if user not in existing:
                r.execute_command("ACL", "SETUSER", user, "reset", *_org_user(topology, org, commands).split())
                added.append(user)
        if added:
            r.execute_command("ACL", "SAVE")
    return added


def admin(topology: Topology, timeout: float = 2.0) -> redis.Redis:
    """A client as the admin user (set-up, operators, tests)."""
    return redis.Redis.from_url(topology.redis_admin_url, socket_timeout=timeout, socket_connect_timeout=timeout)


def ping(topology: Topology) -> bool:
    try:
        with admin(topology, timeout=1) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def _without_our_users(topology: Topology) -> bool:
    """A Redis started before it had users (an older run folder) refuses the admin's password: restart it."""
    try:
        with admin(topology, timeout=1) as r:
            r.ping()
    except redis.AuthenticationError:
        return True
    except redis.RedisError:
        return False
    return False


def start(topology: Topology) -> bool:
    proc = process(topology)
    binary = shutil.which("redis-server")
    if binary is None:
        raise ToolMissing("redis-server is not installed; run scripts/bootstrap (it installs Debian's redis-server)")
    replace_secret(topology.redis_acl_file, ("\n".join(acl_lines(topology, _commands(binary))) + "\n").encode())
    if proc.running():
        if not _without_our_users(topology):
            return False
        proc.stop()
    ensure_port_free(NAME, topology.services_host, topology.redis_port, wait=5.0)
    data = topology.data_dir(NAME)
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--bind", topology.services_host,
        "--port", str(topology.redis_port),
        "--dir", str(data),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--aclfile", str(topology.redis_acl_file),
    ]  # fmt: skip
    proc.start(argv, {"PATH": "/usr/bin:/bin"}, launcher=topology.launcher_of(None))
    return True


def wait_ready(topology: Topology, timeout: float = 20.0) -> None:
    process(topology).wait_until(lambda: ping(topology), "answering PING as the admin user", timeout)
