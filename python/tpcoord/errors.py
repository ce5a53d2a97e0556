"""The exceptions the client raises: one base type that keeps the coordinator's status code and message, and
three a training script catches by kind.

    CoordinatorError                 any answer that is not OK (code, message as the coordinator gave them)
     +- DeepSpeedError (ValueError)  a DeepSpeed conflict: str(e) is DeepSpeed's exact text
     +- GenerationEnded              the generation this member belongs to is over; names the rank that ended it
     +- WaitTimeout (TimeoutError)   a wait passed its deadline; the message names what never arrived
"""
import re

import grpc


class CoordinatorError(Exception):
    """A call the coordinator answered with an error (or that could not reach it: code UNAVAILABLE)."""

    def __init__(self, code, message, job=None):
        super().__init__(message)
        self.code = code        # a grpc.StatusCode
        self.message = message  # the coordinator's text, unchanged
        self.job = job


class DeepSpeedError(CoordinatorError, ValueError):
    """What deepspeed.tp_model_init / deepspeed.initialize would raise as ValueError, with the same text.

    `context` is the coordinator's line saying where the conflict arose (job, which call); it is kept out of
    str(e) so that the text compares equal to DeepSpeed's."""

    def __init__(self, code, message, context, job=None):
        super().__init__(code, message, job)
        self.context = context


# "generation 3 ended: rank 2 (host h, worker w) missed its heartbeat lease" (coordinator.proto, Session).
_ENDED = re.compile(r"generation (\d+) ended: rank (\d+) \(host ([^,]*), worker ([^)]*)\)")


class GenerationEnded(CoordinatorError):
    """The member's generation ended: a worker died, hung past its lease, or left, or the job was deleted.

    `rank` and `host` name the worker that ended it (None when the coordinator did not name one: a deleted
    job, or a coordinator unreachable for the whole retry budget). `restartable` is False when the worker that
    ended it said no restart cures it (a configuration error): then rejoining would wait in vain."""

    def __init__(self, code, message, job=None):
        super().__init__(code, message, job)
        m = _ENDED.search(message)
        self.generation = int(m.group(1)) if m else None
        self.rank = int(m.group(2)) if m else None
        self.host = m.group(3) if m else None
        self.worker_id = m.group(4) if m else None
        self.restartable = code == grpc.StatusCode.ABORTED


class WaitTimeout(CoordinatorError, TimeoutError):
    """A wait (join, store get/wait, barrier) passed its deadline: the message names the ranks, hosts or keys
    still missing, as the coordinator counted them."""


def from_rpc_error(error, job=None):
    """The exception for a grpc.RpcError the coordinator (or gRPC itself) answered."""
    code, message = error.code(), error.details() or ""
    context = trailer(error, "tpcoord-context")
    if context:
        return DeepSpeedError(code, message, context, job)
    return from_status(code, message, job)


def from_status(code, message, job=None):
    # ABORTED: the generation ended (or the job was deleted); FAILED_PRECONDITION naming the rank: it ended on
    # a configuration error that no restart cures.
    if code == grpc.StatusCode.ABORTED or _ENDED.search(message):
        return GenerationEnded(code, message, job)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return WaitTimeout(code, message, job)
    return CoordinatorError(code, message, job)


def trailer(error, key):
    """The value of the trailing metadata `key` of a grpc.RpcError ("" if none)."""
    try:
        metadata = error.trailing_metadata() or ()
    except Exception:  # an error raised before any answer has no trailers
        return ""
    for k, v in metadata:
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return ""


def describe_transport_error(error, tls):
    """What a gRPC transport error (a failed connection or handshake) means to someone who typed the address:
    the cause in words, then gRPC's own text (client/targets.cc: DescribeTransportError). `tls`: whether the client
    speaks TLS."""
    low = error.lower()

    def has(*texts):
        return any(t in low for t in texts)
    if has("connection refused"):
        cause = "nothing listens there (connection refused)"
    elif has("http1", "http/1", "parsing http/2"):
        cause = "an HTTP/1 server answers there, not a tpcoord coordinator (a metrics or status port?)"
    elif tls and has("handshake", "ssl", "tls", "wrong_version"):
        cause = ("the TLS handshake failed: the server there does not speak TLS (a plaintext coordinator?), or its "
                 "certificate is not trusted by the given CA")
    elif not tls and has("socket closed", "connection reset", "end of file", "eof", "goaway", "handshake"):
        cause = "the server there closes the connection: a TLS coordinator (give tls_ca), or not a gRPC server"
    elif has("dns", "resolve", "name or service not known"):
        cause = "the host name does not resolve"
    elif has("timed out", "deadline", "no route", "unreachable"):
        cause = "no answer from that address (a firewall, a wrong host, or a frozen process)"
    else:
        return error
    return "%s [%s]" % (cause, error)

