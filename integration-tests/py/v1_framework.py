#!/usr/bin/env python3
"""A Mesos v1 HTTP scheduler written with Python's standard library only: no Agora code, no Mesos library.

It talks to a master the way frameworks of the Mesos ecosystem do (pymesos, mesos-go, the Java v1 clients): JSON
calls to POST /api/v1/scheduler, a chunked RecordIO event stream answering SUBSCRIBE, the Mesos-Stream-Id header on
every other call, acknowledgements echoing each update's base64 uuid, 307 redirects to the leading master and 503
while none is known.

    v1_framework.py basic    --masters HOST:PORT --marker M   # launch, decline with a filter, revive, kill, reconcile
    v1_framework.py failover --masters H1:P1,H2:P2 --marker M # survive a kill -9 of the leading master

It prints one JSON object per line as it goes ({"step": ...}); success ends with {"result": "ok"} and exit code 0,
anything else with {"result": "failed", "why": ...} and exit code 1. Every wait is bounded.
"""

import argparse
import http.client
import json
import queue
import sys
import threading
import time

WAIT = 30.0


class Failed(Exception):
    pass


def say(**fields):
    print(json.dumps(fields), flush=True)


def post(address, body, stream_id=None, timeout=10.0):
    """One call on its own connection: (status, headers, body text)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if stream_id:
        headers["Mesos-Stream-Id"] = stream_id
    try:
        conn.request("POST", "/api/v1/scheduler", json.dumps(body), headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def location_address(location):
    """The host:port a 307's Location names (`http://h:p/...` or `//h:p/...`)."""
    rest = location.split("//", 1)[1] if "//" in location else location
    return rest.split("/", 1)[0]


class Subscription:
    """A SUBSCRIBE stream: a thread reads RecordIO records and queues the decoded events (None when it ends)."""

    def __init__(self, masters, framework_info, framework_id=None):
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}}
        if framework_id:
            body["framework_id"] = {"value": framework_id}
        self.events = queue.Queue()
        # Events read while waiting for another kind, kept for a later `next` (updates are acknowledged at once).
        self.pending = []
        deadline = time.time() + WAIT
        candidates = list(masters)
        i = 0
        while True:
            if time.time() > deadline:
                raise Failed("no master accepted SUBSCRIBE within %ss" % WAIT)
            address = candidates[i % len(candidates)]
            i += 1
            try:
                host, port = address.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
                conn.request("POST", "/api/v1/scheduler", json.dumps(body),
                             {"Content-Type": "application/json", "Accept": "application/json"})
                r = conn.getresponse()
            except OSError:
                time.sleep(0.2)
                continue
            if r.status == 307:
                leader = location_address(r.getheader("Location"))
                r.read()
                conn.close()
                say(step="redirected", frm=address, to=leader)
                candidates = [leader] + [m for m in masters if m != leader]
                i = 0
                continue
            if r.status == 503:
                r.read()
                conn.close()
                time.sleep(0.2)
                continue
            if r.status != 200:
                raise Failed("SUBSCRIBE answered %s: %s" % (r.status, r.read().decode()))
            if r.getheader("Transfer-Encoding", "").lower() != "chunked":
                raise Failed("Response is not chunked")
            self.master = address
            self.stream_id = r.getheader("Mesos-Stream-Id")
            self.response = r
            self.conn = conn
            break
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next(lambda e: True, "the first event")
        if first["type"] != "SUBSCRIBED":
            raise Failed("the stream began with %s" % json.dumps(first))
        self.framework_id = first["subscribed"]["framework_id"]["value"]
        self.heartbeat = first["subscribed"].get("heartbeat_interval_seconds")

    def _read(self):
        try:
            while True:
                header = b""
                while not header.endswith(b"\n"):
                    byte = self.response.read(1)
                    if not byte:
                        raise EOFError()
                    header += byte
                length = int(header)
                record = b""
                while len(record) < length:
                    part = self.response.read(length - len(record))
                    if not part:
                        raise EOFError()
                    record += part
                self.events.put(json.loads(record))
        except (EOFError, OSError, ValueError, http.client.HTTPException):
            self.events.put(None)

    def next(self, want, what, timeout=WAIT):
        """The next event `want` accepts; updates read meanwhile are acknowledged, other events kept for later."""
        for i, e in enumerate(self.pending):
            if want(e):
                return self.pending.pop(i)
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise Failed("timed out waiting for %s" % what)
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                raise Failed("timed out waiting for %s" % what)
            if e is None:
                raise Failed("the event stream ended while waiting for %s" % what)
            if want(e):
                return e
            if e["type"] == "ERROR":
                raise Failed("ERROR event: %s" % e["error"]["message"])
            if e["type"] == "UPDATE":
                self.acknowledge(e["update"]["status"])
            if e["type"] != "HEARTBEAT":
                self.pending.append(e)

    def ended(self, timeout=WAIT):
        """Waits for the stream to end, acknowledging updates meanwhile."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                e = self.events.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                break
            if e is None:
                return
            if e["type"] == "UPDATE":
                self.acknowledge(e["update"]["status"])
        raise Failed("the event stream did not end")

    def call(self, kind, payload=None, expect=202):
        body = {"framework_id": {"value": self.framework_id}, "type": kind}
        if payload is not None:
            body[kind.lower()] = payload
        status, _, text = post(self.master, body, self.stream_id)
        if status != expect:
            raise Failed("%s answered %s (expected %s): %s" % (kind, status, expect, text))
        return text

    def acknowledge(self, status):
        if "uuid" in status:
            self.call("ACKNOWLEDGE", {"agent_id": status["agent_id"], "task_id": status["task_id"],
                                      "uuid": status["uuid"]})

    def offers(self, what="OFFERS"):
        return self.next(lambda e: e["type"] == "OFFERS", what)["offers"]["offers"]

    def update(self, task_id, states, what=None):
        """The next UPDATE of `task_id` in one of `states`, acknowledged."""
        e = self.next(lambda e: e["type"] == "UPDATE" and e["update"]["status"]["task_id"]["value"] == task_id
                      and e["update"]["status"]["state"] in states, what or "%s in %s" % (task_id, states))
        status = e["update"]["status"]
        self.acknowledge(status)
        return status


def framework_info(failover_timeout):
    return {"user": "root", "name": "python-v1", "failover_timeout": failover_timeout,
            "capabilities": [{"type": "TASK_KILLING_STATE"}]}


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def task(task_id, offer, command):
    return {"name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
            "resources": [scalar("cpus", 0.1), scalar("mem", 32)], "command": {"value": command}}


def launch(s, offer, tasks, refuse_seconds):
    s.call("ACCEPT", {"offer_ids": [offer["id"]],
                      "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                      "filters": {"refuse_seconds": refuse_seconds}})


def basic(masters, marker):
    s = Subscription(masters, framework_info(0))
    say(step="subscribed", framework_id=s.framework_id, stream_id=s.stream_id, heartbeat=s.heartbeat)
    offer = s.offers()[0]
    agent = offer["agent_id"]
    say(step="offered", offer=offer["id"]["value"], resources=offer["resources"])
    launch(s, offer, [task("py-long", offer, "sleep 1000.%s" % marker),
                      task("py-short", offer, "echo done > out.txt")], 0.5)
    s.update("py-long", ["TASK_RUNNING"])
    s.update("py-short", ["TASK_FINISHED"])
    say(step="running and finished")

    # DECLINE with a long filter: that agent is not offered again until REVIVE clears the filter.
    again = s.offers("the rest of the agent")[0]
    s.call("DECLINE", {"offer_ids": [again["id"]], "filters": {"refuse_seconds": 3600}})
    quiet_until = time.time() + 2.0
    while time.time() < quiet_until:
        try:
            e = s.events.get(timeout=max(0.0, quiet_until - time.time()))
        except queue.Empty:
            break
        if e is None or e["type"] == "OFFERS":
            raise Failed("offered again despite the decline filter: %s" % json.dumps(e))
        if e["type"] == "UPDATE":
            s.acknowledge(e["update"]["status"])
    s.call("REVIVE", {"roles": []})
    revived = s.offers("an offer after REVIVE")[0]
    if revived["agent_id"] != agent:
        raise Failed("revived an offer of another agent")
    say(step="declined with a filter, revived")

    launch(s, revived, [task("py-third", revived, "sleep 1000.%s" % marker)], 3600)
    s.update("py-third", ["TASK_RUNNING"])

    # KILL: TASK_KILLING (the framework has TASK_KILLING_STATE) or straight to TASK_KILLED.
    s.call("KILL", {"task_id": {"value": "py-long"}, "agent_id": agent})
    s.update("py-long", ["TASK_KILLED"])
    say(step="killed")

    # Explicit reconciliation: a known (completed) task and one the agent never ran.
    s.call("RECONCILE", {"tasks": [{"task_id": {"value": "py-long"}, "agent_id": agent},
                                   {"task_id": {"value": "py-ghost"}, "agent_id": agent}]})
    killed = s.update("py-long", ["TASK_KILLED"], "reconciliation of py-long")
    ghost = s.update("py-ghost", ["TASK_LOST"], "reconciliation of py-ghost")
    for status in (killed, ghost):
        if status.get("reason") != "REASON_RECONCILIATION" or "uuid" in status:
            raise Failed("not a reconciliation answer: %s" % json.dumps(status))
    # Implicit: every task the master knows is not terminal.
    s.call("RECONCILE", {"tasks": []})
    running = s.update("py-third", ["TASK_RUNNING"], "implicit reconciliation of py-third")
    if running.get("reason") != "REASON_RECONCILIATION":
        raise Failed("not a reconciliation answer: %s" % json.dumps(running))
    say(step="reconciled")

    # TEARDOWN ends the stream and kills what still runs.
    s.call("TEARDOWN")
    s.ended()
    say(step="torn down")


def failover(masters, marker):
    s = Subscription(masters, framework_info(3600))
    say(step="subscribed", framework_id=s.framework_id, leader=s.master)
    offer = s.offers()[0]
    launch(s, offer, [task("py-survivor", offer, "sleep 1000.%s" % marker)], 3600)
    s.update("py-survivor", ["TASK_RUNNING"])
    say(step="ready", leader=s.master)

    # The test kills the leader: the stream ends; subscribe again, through whichever master answers.
    s.ended(timeout=60)
    say(step="disconnected")
    info = framework_info(3600)
    info["id"] = {"value": s.framework_id}
    again = Subscription([m for m in masters if m != s.master] + [s.master], info, s.framework_id)
    if again.framework_id != s.framework_id:
        raise Failed("resubscribed as %s, not %s" % (again.framework_id, s.framework_id))
    say(step="resubscribed", leader=again.master)

    # Until the agent re-registers with the new leader, reconciliation of its tasks stays silent (Mesos's rule).
    def survivor(e):
        return e["type"] == "UPDATE" and e["update"]["status"]["task_id"]["value"] == "py-survivor"
    deadline = time.time() + WAIT
    while True:
        again.call("RECONCILE", {"tasks": [{"task_id": {"value": "py-survivor"}, "agent_id": offer["agent_id"]}]})
        try:
            status = again.next(survivor, "reconciliation after the failover", 1.0)["update"]["status"]
            break
        except Failed:
            if time.time() > deadline:
                raise
    if status["state"] != "TASK_RUNNING" or status.get("reason") != "REASON_RECONCILIATION":
        raise Failed("the task did not survive the failover: %s" % json.dumps(status))
    say(step="reconciled after failover", state=status["state"])
    again.call("KILL", {"task_id": {"value": "py-survivor"}})
    again.update("py-survivor", ["TASK_KILLED"])
    again.call("TEARDOWN")
    again.ended()
    say(step="torn down")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=["basic", "failover"])
    p.add_argument("--masters", required=True, help="HOST:PORT[,HOST:PORT...]")
    p.add_argument("--marker", required=True, help="unique text in the tasks' commands")
    args = p.parse_args()
    masters = args.masters.split(",")
    try:
        {"basic": basic, "failover": failover}[args.scenario](masters, args.marker)
    except Failed as e:
        say(result="failed", why=str(e))
        return 1
    say(result="ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
