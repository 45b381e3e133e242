"""Schemathesis hook of the agent's contract test (crates/cli/tests/api_contract.rs).

The agent's OpenAPI document states every rule of a request that JSON Schema can state. One it
cannot, because it compares two fields: a memtouch working set plus what the guest itself needs
must fit the VM's `memory_bytes`. The document says so in `VmConfig.workload`'s description,
quoting the 422 that enforces it. The built-in `positive_data_acceptance` would count that 422 as
a schema-valid request rejected, so the test runs the check below instead: the built-in one,
except for exactly that answer. A 422 is let through only when

  - the operation takes a VM configuration (`POST /v1/vms`, or `POST /v1/incoming`'s `config`),
  - its error is the quoted message, word for word, about this request's own workload (its field
    named by its path: `config.workload` in an incoming request), and
  - its numbers are this request's and the request does break the rule as the document states it
    (working set + the documented overhead > memory_bytes).

Everything else, any other 422 included, is judged by the built-in check.
"""

import re

import schemathesis
from schemathesis.checks import CHECKS

MIB = 1 << 20

# The refusal as the document quotes it, its placeholders as groups.
REFUSAL = re.compile(
    r"workload '(?P<spec>[^']*)': working set (?P<wss>[0-9]+) MiB does not fit a "
    r"(?P<mem>[0-9]+) MiB guest \(the guest itself needs about (?P<overhead>[0-9]+) MiB\)"
)

# The rule as the document states it.
RULE = re.compile(
    r"a memtouch working set(?: \([^)]*\))? plus (?P<overhead>[0-9]+) MiB \(what the guest itself needs\)"
)

# The working set of a memtouch spec, alone or the first part of memtouch+disk (the document's
# pattern admits M, G, MiB and GiB).
WSS = re.compile(r"memtouch:wss=(?P<n>[1-9][0-9]*)(?P<unit>MiB|GiB|M|G)(,.*)?")


def vm_config(case):
    """The request's VM configuration and the path prefix its fields are named with."""
    body = case.body if isinstance(case.body, dict) else {}
    label = case.operation.label
    if label == "POST /v1/vms":
        return body, ""
    if label == "POST /v1/incoming":
        return body.get("config"), "config."
    return None, ""


def documented_overhead_mib(case):
    schemas = case.operation.schema.raw_schema.get("components", {}).get("schemas", {})
    text = schemas.get("VmConfig", {}).get("properties", {}).get("workload", {}).get("description", "")
    found = RULE.search(text)
    return int(found["overhead"]) if found else None


def is_the_documented_workload_refusal(case, response):
    if response.status_code != 422:
        return False
    config, prefix = vm_config(case)
    if not isinstance(config, dict):
        return False
    try:
        error = response.json().get("error", "")
    except Exception:
        return False
    if not isinstance(error, str) or not error.startswith(prefix):
        return False
    refusal = REFUSAL.fullmatch(error[len(prefix):])
    spec, memory = config.get("workload"), config.get("memory_bytes")
    # The document: the spec's first 80 characters (all of a shorter one).
    if refusal is None or not isinstance(spec, str) or refusal["spec"] != spec[:80]:
        return False
    if not isinstance(memory, (int, float)):
        return False
    wss = WSS.fullmatch(spec)
    overhead = documented_overhead_mib(case)
    if wss is None or overhead is None or int(refusal["overhead"]) != overhead:
        return False
    wss_mib = int(wss["n"]) * (1024 if wss["unit"].startswith("G") else 1)
    memory = int(memory)
    breaks_the_rule = (wss_mib + overhead) * MIB > memory
    return breaks_the_rule and int(refusal["wss"]) == wss_mib and int(refusal["mem"]) == memory >> 20


# The other rule the document states but a schema cannot: a forwarded migration URI must be the
# one the agent made for that incoming VM (the agent quotes the URI as it reads it back).
URI_REFUSAL = re.compile(
    r"arguments\.uri '(?P<uri>tcp:[^']*)' is not valid: expected the URI this agent made for "
    r"incoming VM '(?P<name>[^']*)'"
)


def is_the_documented_uri_refusal(case, response):
    if response.status_code != 422 or case.operation.label != "POST /v1/vms/{name}/qmp":
        return False
    body = case.body if isinstance(case.body, dict) else {}
    if body.get("execute") not in ("migrate-incoming", "migrate-recover"):
        return False
    try:
        error = response.json().get("error", "")
    except Exception:
        return False
    found = URI_REFUSAL.fullmatch(error) if isinstance(error, str) else None
    name = (getattr(case, "path_parameters", None) or {}).get("name")
    return found is not None and found["name"] == name


# The same rule for the storage modes' forwarded commands: an NBD address must be the one the
# agent made for that incoming VM, an export, a stream or a job exactly its disk's, and each
# mode's commands reach only a destination of that mode (a VM without a disk takes none; a
# storage hybrid's destination takes both the pre-copy's NBD commands and the post-copy's).
NBD_REFUSAL = re.compile(
    r"(arguments\.addr|arguments|arguments\.device|arguments\.job-id|arguments\.id|execute) "
    r"'[^']*' is not valid: expected [^']* for incoming VM '(?P<name>[^']*)'"
)
STORAGE_COMMANDS = (
    "nbd-server-start",
    "block-export-add",
    "nbd-server-stop",
    "block-stream",
    "block-job-resume",
    "job-dismiss",
    "query-block-jobs",
    "cont",
    "query-named-block-nodes",
)


def is_the_documented_nbd_refusal(case, response):
    if response.status_code != 422 or case.operation.label != "POST /v1/vms/{name}/qmp":
        return False
    body = case.body if isinstance(case.body, dict) else {}
    if body.get("execute") not in STORAGE_COMMANDS:
        return False
    try:
        error = response.json().get("error", "")
    except Exception:
        return False
    found = NBD_REFUSAL.fullmatch(error) if isinstance(error, str) else None
    name = (getattr(case, "path_parameters", None) or {}).get("name")
    return found is not None and found["name"] == name


# A storage post-copy's source export must be on the address the incoming request came from
# (the source agent's own), which only the agent knows.
SOURCE_NBD_REFUSAL = re.compile(
    r"source_nbd \S+ is not valid: expected an address of the requesting source, \S+"
)


def is_the_documented_source_nbd_refusal(case, response):
    if response.status_code != 422 or case.operation.label != "POST /v1/incoming":
        return False
    try:
        error = response.json().get("error", "")
    except Exception:
        return False
    return isinstance(error, str) and SOURCE_NBD_REFUSAL.fullmatch(error) is not None


@schemathesis.check
def positive_data_acceptance_but_workload_fit(ctx, response, case):
    """`positive_data_acceptance`, allowing only the documented cross-field 422s."""
    if (
        is_the_documented_workload_refusal(case, response)
        or is_the_documented_uri_refusal(case, response)
        or is_the_documented_nbd_refusal(case, response)
        or is_the_documented_source_nbd_refusal(case, response)
    ):
        return True
    # Looked up when first needed: the built-in OpenAPI checks register after hooks load.
    return CHECKS.get_one("positive_data_acceptance")(ctx, response, case)


def self_test():
    """Checks that the exception is exactly as narrow as documented (run by the Rust test with
    schemathesis' own interpreter before the run: `python hooks.py`)."""

    class Schema:
        raw_schema = {
            "components": {
                "schemas": {
                    "VmConfig": {
                        "properties": {
                            "workload": {
                                "description": "... a memtouch working set (alone or memtouch+disk's) plus 96 MiB (what the guest itself needs) ..."
                            }
                        }
                    }
                }
            }
        }

    class Operation:
        def __init__(self, label):
            self.label = label
            self.schema = Schema()

    class Case:
        def __init__(self, label, body, name=None):
            self.operation = Operation(label)
            self.body = body
            self.path_parameters = {"name": name} if name else {}

    class Response:
        def __init__(self, status_code, error):
            self.status_code = status_code
            self.error = error

        def json(self):
            return {"error": self.error}

    def refusal(spec, wss, mem, overhead=96, prefix=""):
        return (
            f"{prefix}workload '{spec}': working set {wss} MiB does not fit a {mem} MiB guest "
            f"(the guest itself needs about {overhead} MiB)"
        )

    spec = "memtouch:wss=100M,rate=max"
    mixed = "memtouch:wss=100M,rate=10+disk:wss=16M,rate=1"
    long = "memtouch:wss=100M,rate=10,pattern=random+disk:wss=16M,rate=100,pattern=random,read=50"
    config = {"name": "a", "memory_bytes": 134217728.0, "workload": spec}
    allowed = [
        (Case("POST /v1/vms", config), Response(422, refusal(spec, 100, 128))),
        (
            Case("POST /v1/incoming", {"config": config, "migration_id": "m"}),
            Response(422, refusal(spec, 100, 128, prefix="config.")),
        ),
        (
            Case("POST /v1/vms", {"name": "a", "memory_bytes": 2 << 30, "workload": "memtouch:wss=2GiB"}),
            Response(422, refusal("memtouch:wss=2GiB", 2048, 2048)),
        ),
        (
            Case("POST /v1/vms", {"name": "a", "memory_bytes": 128 << 20, "workload": mixed}),
            Response(422, refusal(mixed, 100, 128)),
        ),
        (
            Case("POST /v1/vms", {"name": "a", "memory_bytes": 128 << 20, "workload": long}),
            Response(422, refusal(long[:80], 100, 128)),
        ),
    ]
    fits = {"name": "a", "memory_bytes": 128 << 20, "workload": "memtouch:wss=32M"}
    refused = [
        # Another 422, or another status.
        (Case("POST /v1/vms", config), Response(422, "name '' is not valid: expected ...")),
        (Case("POST /v1/vms", config), Response(400, refusal(spec, 100, 128))),
        (
            Case("POST /v1/vms", {"name": "a", "memory_bytes": 128 << 20, "workload": long}),
            Response(422, refusal(long[:79], 100, 128)),
        ),
        # Not the request's numbers, or not its workload.
        (Case("POST /v1/vms", config), Response(422, refusal(spec, 99, 128))),
        (Case("POST /v1/vms", config), Response(422, refusal(spec, 100, 127))),
        (Case("POST /v1/vms", config), Response(422, refusal("memtouch:wss=100M", 100, 128))),
        # Not the documented overhead.
        (Case("POST /v1/vms", config), Response(422, refusal(spec, 100, 128, overhead=95))),
        # A configuration that keeps the rule (32 + 96 = 128 MiB fits).
        (Case("POST /v1/vms", fits), Response(422, refusal("memtouch:wss=32M", 32, 128))),
        # An operation that takes no VM configuration.
        (Case("POST /v1/vms/{name}/migrations", config), Response(422, refusal(spec, 100, 128))),
        # The incoming request's refusal names its field by its path; a bare one is not it.
        (Case("POST /v1/incoming", {"config": config, "migration_id": "m"}), Response(422, refusal(spec, 100, 128))),
        (Case("POST /v1/vms", config), Response(422, refusal(spec, 100, 128, prefix="config."))),
        # Extra text around the message.
        (Case("POST /v1/vms", config), Response(422, refusal(spec, 100, 128) + "; and more")),
    ]
    for case, response in allowed:
        assert is_the_documented_workload_refusal(case, response), (case.body, response.error)
    for case, response in refused:
        assert not is_the_documented_workload_refusal(case, response), (case.body, response.status_code, response.error)
    qmp = "POST /v1/vms/{name}/qmp"
    incoming = {"execute": "migrate-incoming", "arguments": {"uri": "tcp:[1::1]:5"}}
    foreign = "arguments.uri 'tcp:[1::1]:5' is not valid: expected the URI this agent made for incoming VM 'in1'"
    assert is_the_documented_uri_refusal(Case(qmp, incoming, "in1"), Response(422, foreign))
    for case, response in [
        (Case(qmp, incoming, "in2"), Response(422, foreign)),
        (Case(qmp, incoming, "in1"), Response(400, foreign)),
        (Case(qmp, {"execute": "query-status"}, "in1"), Response(422, foreign)),
        (Case("POST /v1/vms", incoming, "in1"), Response(422, foreign)),
        (Case(qmp, incoming, "in1"), Response(422, foreign + "; and more")),
    ]:
        assert not is_the_documented_uri_refusal(case, response), (case.body, response.error)
    start = {"execute": "nbd-server-start",
             "arguments": {"addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": "5"}}}}
    nbd = ("arguments.addr '127.0.0.1:5' is not valid: expected the NBD address 127.0.0.1:6 this "
           "agent made for incoming VM 'in1'")
    stop = {"execute": "nbd-server-stop"}
    diskless = ("execute 'nbd-server-stop' is not valid: expected no storage command (it has no "
                "disk) for incoming VM 'in1'")
    assert is_the_documented_nbd_refusal(Case(qmp, start, "in1"), Response(422, nbd))
    assert is_the_documented_nbd_refusal(Case(qmp, stop, "in1"), Response(422, diskless))
    export = {"execute": "block-export-add", "arguments": {}}
    other = ("arguments 'id x, node-name y, name z' is not valid: expected the export of its disk "
             "(id drover-disk0-export, node-name drover-disk0, name drover-disk0) for incoming VM 'in1'")
    assert is_the_documented_nbd_refusal(Case(qmp, export, "in1"), Response(422, other))
    for case, response in [
        (Case(qmp, start, "in2"), Response(422, nbd)),
        (Case(qmp, start, "in1"), Response(400, nbd)),
        (Case(qmp, incoming, "in1"), Response(422, nbd)),
        (Case(qmp, start, "in1"), Response(422, nbd + "; and more")),
    ]:
        assert not is_the_documented_nbd_refusal(case, response), (case.body, response.error)
    print(f"hooks.py self-test: {len(allowed)} allowed, {len(refused)} refused, as documented")


if __name__ == "__main__":
    self_test()
