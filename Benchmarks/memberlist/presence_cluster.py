#!/usr/bin/env python3
"""Run a cluster of presence-node processes and measure it, for run.sh.

Modes (the first argument):
  crash   kill -9 one node per round and time how long until every other node lists it as dead
          in GET /v1/cluster/members, polled every 50 ms. The victim restarts on the same ports.
  steady  run for --duration seconds and count death verdicts about live members.
  heal    start two groups of --nodes/2 nodes (the first with group ID --group-a-gid) and write
          their gossip ports to --ports-file. Then wait for the file named by --heal-file, which
          run.sh creates when it removes the partition rules, and time how long until every node
          lists all nodes as alive again.

Every node binds 127.0.0.1 on ports picked free by binding port 0, and uses the lan gossip preset.
All results are plain "key value" lines on stdout. Every child process is stopped by PID on exit.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HOST = "127.0.0.1"


def free_port():
    """Return a port that was free a moment ago; TCP and UDP are checked together."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free TCP and UDP port found on %s after 50 attempts" % HOST)


class Node:
    def __init__(self, name, binary, directory, seed):
        self.name = name
        self.binary = binary
        self.client_port = free_port()
        self.gossip_port = free_port()
        self.config_path = os.path.join(directory, name + ".json")
        self.log_path = os.path.join(directory, name + ".log")
        self.process = None
        config = {
            "name": name,
            "clientListen": "%s:%d" % (HOST, self.client_port),
            "gossipListen": "%s:%d" % (HOST, self.gossip_port),
            "seeds": [seed] if seed else [],
            "gossip": {"preset": "lan"},
            "log": {"level": "info"},
        }
        with open(self.config_path, "w") as file:
            json.dump(config, file)

    def start(self, group=None):
        log = open(self.log_path, "a")
        # A group ID marks which side of a partition the process is on, for iptables' owner match.
        extra = {"group": group, "extra_groups": []} if group is not None else {}
        self.process = subprocess.Popen([self.binary, "--config", self.config_path],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL, **extra)
        log.close()

    def kill(self, signal_number=signal.SIGKILL):
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal_number)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def members(self, timeout=0.5):
        """Return {name: state} from GET /v1/cluster/members, or None when the request fails."""
        url = "http://%s:%d/v1/cluster/members" % (HOST, self.client_port)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return {member["name"]: member["state"] for member in json.load(response)}
        except (OSError, ValueError):
            return None

    def dead_log_lines(self):
        """Count 'member dead' lines in this node's log."""
        try:
            with open(self.log_path, errors="replace") as file:
                return sum(1 for line in file if 'msg="member dead"' in line)
        except OSError:
            return 0


def start_nodes(count, prefix, binary, directory, group_a_gid=None):
    """Start count nodes joined through the first. With group_a_gid, the first half runs with that group ID."""
    nodes = []
    seed = None
    for index in range(count):
        node = Node("%s%d" % (prefix, index + 1), binary, directory, seed)
        if seed is None:
            seed = "%s:%d" % (HOST, node.gossip_port)
        node.start(group_a_gid if group_a_gid is not None and index < count // 2 else None)
        nodes.append(node)
    return nodes


def all_alive(nodes, names):
    for node in nodes:
        members = node.members()
        if members is None or any(members.get(name) != "alive" for name in names):
            return False
    return True


def wait_all_alive(nodes, names, timeout):
    """Poll every 50 ms until every node lists every name as alive; return the seconds taken or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all_alive(nodes, names):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def summary(values):
    if not values:
        return "none"
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return "min %.0f median %.0f max %.0f" % (ordered[0], median, ordered[-1])


def measure_crash(nodes, rounds, timeout, settle):
    names = [node.name for node in nodes]
    detections = []
    for round_number in range(1, rounds + 1):
        # Node 1 is every node's seed, so the victims rotate through the others.
        victim = nodes[1 + (round_number - 1) % (len(nodes) - 1)]
        others = [node for node in nodes if node is not victim]
        killed_at = time.monotonic()
        victim.kill(signal.SIGKILL)
        verdicts = {}
        while len(verdicts) < len(others) and time.monotonic() - killed_at < timeout:
            for node in others:
                if node.name in verdicts:
                    continue
                members = node.members(timeout=0.2)
                if members is not None and members.get(victim.name) in ("dead", "left"):
                    verdicts[node.name] = time.monotonic() - killed_at
            time.sleep(0.05)
        if len(verdicts) < len(others):
            print("round %d victim %s timed_out_after_ms %d reported_by %d of %d"
                  % (round_number, victim.name, timeout * 1000, len(verdicts), len(others)), flush=True)
        else:
            first, last = min(verdicts.values()) * 1000, max(verdicts.values()) * 1000
            detections.append(last)
            print("round %d victim %s first_ms %.0f last_ms %.0f" % (round_number, victim.name, first, last),
                  flush=True)
        victim.start()
        if wait_all_alive(nodes, names, timeout) is None:
            raise RuntimeError("cluster did not list %d alive members within %d s after round %d"
                               % (len(nodes), timeout, round_number))
        time.sleep(settle)
    print("crash_detection_ms %s rounds %d measured %d" % (summary(detections), rounds, len(detections)),
          flush=True)


def measure_steady(nodes, duration):
    """Count death verdicts two ways: polled transitions alive/suspect -> dead, and log lines."""
    log_before = sum(node.dead_log_lines() for node in nodes)
    previous = {node.name: node.members() or {} for node in nodes}
    polled_deaths = 0
    failed_polls = 0
    started = time.monotonic()
    next_poll = started + 1.0
    while time.monotonic() - started < duration:
        time.sleep(max(0.0, next_poll - time.monotonic()))
        next_poll += 1.0
        for node in nodes:
            members = node.members(timeout=0.5)
            if members is None:
                failed_polls += 1
                continue
            for name, state in members.items():
                if state in ("dead", "left") and previous[node.name].get(name) not in ("dead", "left"):
                    polled_deaths += 1
            previous[node.name] = members
    log_deaths = sum(node.dead_log_lines() for node in nodes) - log_before
    print("false_positive_deaths_polled %d false_positive_deaths_logged %d failed_polls %d duration_s %.0f nodes %d"
          % (polled_deaths, log_deaths, failed_polls, duration, len(nodes)), flush=True)


def measure_heal(nodes, ports_file, heal_file, partition_timeout, heal_timeout):
    half = len(nodes) // 2
    groups = [nodes[:half], nodes[half:]]
    with open(ports_file + ".tmp", "w") as file:
        for group in groups:
            file.write(",".join(str(node.gossip_port) for node in group) + "\n")
    os.rename(ports_file + ".tmp", ports_file)
    print("ports %s | %s" % tuple(",".join(str(n.gossip_port) for n in group) for group in groups), flush=True)

    waited = time.monotonic()
    while not os.path.exists(heal_file):
        if time.monotonic() - waited > partition_timeout:
            raise RuntimeError("run.sh did not create %s within %d s" % (heal_file, partition_timeout))
        time.sleep(0.02)
    healed_at = time.monotonic()
    dead_across = sum(1 for node in groups[0] for name, state in (node.members() or {}).items()
                      if state in ("dead", "left") and name in {other.name for other in groups[1]})
    print("at_heal members_of_other_side_listed_dead_by_side_a %d of %d" % (dead_across, half * (len(nodes) - half)),
          flush=True)
    names = [node.name for node in nodes]
    while time.monotonic() - healed_at < heal_timeout:
        if all_alive(nodes, names):
            print("heal_ms %.0f" % ((time.monotonic() - healed_at) * 1000), flush=True)
            return
        time.sleep(0.05)
    print("heal_ms not_merged_within_%d_s" % heal_timeout, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["crash", "steady", "heal"])
    parser.add_argument("--binary", required=True, help="path of the presence-node executable")
    parser.add_argument("--dir", required=True, help="directory for node configs and logs")
    parser.add_argument("--nodes", type=int, default=10, help="presence-node processes to run")
    parser.add_argument("--rounds", type=int, default=5, help="crash rounds")
    parser.add_argument("--duration", type=float, default=300, help="steady: seconds to count verdicts")
    parser.add_argument("--settle", type=float, default=5, help="crash: seconds to wait after the cluster is whole")
    parser.add_argument("--timeout", type=float, default=60, help="maximum wait in seconds for verdicts or a whole cluster")
    parser.add_argument("--ports-file", help="heal: file that receives the gossip ports of each side, one line each")
    parser.add_argument("--heal-file", help="heal: file whose creation marks the removal of the partition")
    parser.add_argument("--group-a-gid", type=int, default=4242, help="heal: group ID of the first half's processes")
    parser.add_argument("--partition-timeout", type=float, default=120, help="heal: maximum wait in seconds for --heal-file")
    options = parser.parse_args()

    os.makedirs(options.dir, exist_ok=True)
    nodes = []

    def stop(signal_number, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        group_a_gid = options.group_a_gid if options.mode == "heal" else None
        nodes = start_nodes(options.nodes, "node-", options.binary, options.dir, group_a_gid)
        names = [node.name for node in nodes]
        if wait_all_alive(nodes, names, options.timeout) is None:
            raise RuntimeError("the %d nodes did not all list each other alive within %d s" % (len(nodes), options.timeout))
        print("ready", flush=True)
        if options.mode == "crash":
            time.sleep(options.settle)
            measure_crash(nodes, options.rounds, options.timeout, options.settle)
        elif options.mode == "steady":
            measure_steady(nodes, options.duration)
        else:
            measure_heal(nodes, options.ports_file, options.heal_file, options.partition_timeout, options.timeout)
    except (RuntimeError, KeyboardInterrupt) as error:
        print("error %s" % (error or "interrupted"), file=sys.stderr, flush=True)
        return 1
    finally:
        for node in nodes:
            node.kill(signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
