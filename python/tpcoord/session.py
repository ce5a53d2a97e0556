"""A member's session (coordinator.proto, Session): one stream, held by a background thread, that carries a
heartbeat every heartbeat_interval and brings the generation's end down the moment the coordinator decides it.

While the session is open, this process's death ends the generation at once, naming its rank; a hang ends it
when the lease runs out. A stream lost for want of a coordinator (a restart, a failover) is opened again, to
the leader, with backoff, for up to the client's retry budget: the membership survives it. The end the
coordinator pushes (ABORTED naming the rank that failed; FAILED_PRECONDITION for a configuration error no
restart cures or a stale generation; NOT_FOUND for a deleted job) becomes `ended`, a GenerationEnded, and
every later call of the member raises it.
"""
import queue
import random
import threading
import time

import grpc

from ._proto import pb
from .errors import GenerationEnded, trailer, from_status

# The stream ended with the coordinator's verdict, not for want of a coordinator.
_VERDICTS = (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
_CLOSE = object()  # ends the request stream (a half-close)


class MemberSession:
    def __init__(self, client, member, on_end=None):
        self._client, self._member, self._on_end = client, member, on_end
        self._interval = max(member.heartbeat_interval, 0.01)
        self._requests = queue.Queue()  # the open stream's (replaced with each stream)
        self._lock = threading.Lock()
        self._open = threading.Event()     # the coordinator holds the session
        self._done = threading.Event()     # the thread is over: ended, or closed
        self._stop = threading.Event()
        self._call = None
        self.ended = None  # the GenerationEnded that ended the session, once it did
        self._thread = threading.Thread(target=self._run, name="tpcoord-session-%d" % member.rank, daemon=True)
        self._thread.start()

    def wait_open(self, timeout):
        """Whether the coordinator holds the session within `timeout` seconds (or it ended meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._done.is_set():
            if self._open.wait(0.05):
                return True
        return self._open.is_set()

    def wait_ended(self, timeout):
        """The GenerationEnded once the session has ended, waiting up to `timeout` seconds for it; else None."""
        self._done.wait(timeout)
        return self.ended

    def send(self, progress):
        """A heartbeat carrying `progress` (a TrainingProgress), now; dropped while no stream is open."""
        if self._open.is_set():
            self._requests.put(self._beat(progress))

    def close(self):
        """Ends the stream (after Leave, or the coordinator takes it for a death) and the thread."""
        self._stop.set()
        self._requests.put(_CLOSE)
        self._thread.join(self._client.call_timeout)
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._thread.join(self._client.call_timeout)

    def _beat(self, progress=None):
        m = self._member
        beat = pb.SessionRequest(job_id=m.job, generation=m.generation, rank=m.rank)
        if progress is not None:
            beat.progress.CopyFrom(progress)
        return beat

    def _run(self):
        client = self._client
        last_open, backoff = time.monotonic(), client.initial_backoff
        try:
            while not self._stop.is_set():
                opened, code, details, leader, target = self._stream()
                self._open.clear()
                if self._stop.is_set() or code == grpc.StatusCode.OK:
                    return
                if opened:
                    last_open, backoff = time.monotonic(), client.initial_backoff
                if code in _VERDICTS:
                    return self._end(from_status(code, details, client.job))
                if time.monotonic() - last_open > client.timeout:
                    return self._end(GenerationEnded(grpc.StatusCode.UNAVAILABLE, (
                        "the coordinator at %s has not held this member's session for %d s: %s"
                        % (client.address, time.monotonic() - last_open, details)), client.job))
                client._follow(target, leader)
                if self._stop.wait(random.uniform(0, backoff)):
                    return
                backoff = min(backoff * 2, client.max_backoff)
        finally:
            self._done.set()

    def _end(self, error):
        self.ended = error
        if self._on_end is not None:
            self._on_end(error)

    def _stream(self):
        """One stream, until it ends: (opened, code, details, leader named, target)."""
        client = self._client
        target = client._target()
        since = time.monotonic()
        try:  # nothing else moves a failed connection forward when the session is the only traffic
            grpc.channel_ready_future(target.channel).result(timeout=1.0)
        except grpc.FutureTimeoutError:
            client._note_unreachable(target, since)
            return False, grpc.StatusCode.UNAVAILABLE, "cannot connect to the coordinator at " + target.address, "", target
        requests = queue.Queue()
        self._requests = requests

        def stream():
            yield self._beat()  # a member opens its session with a heartbeat
            while True:
                try:
                    item = requests.get(timeout=self._interval)
                except queue.Empty:
                    item = self._beat()
                if item is _CLOSE:
                    return
                yield item

        call = target.stub.Session(stream(), metadata=client.metadata(self._member.key))
        with self._lock:
            self._call = call
        if self._stop.is_set():
            call.cancel()
        opened = False
        try:
            for event in call:
                if not opened:
                    client._note_reachable()
                opened = True
                if event.lease_ms > 0 and event.status_code == 0:
                    self._open.set()
            return opened, grpc.StatusCode.OK, "", "", target
        except grpc.RpcError as e:
            return opened, e.code(), e.details() or "", trailer(e, "tpcoord-leader"), target
        finally:
            requests.put(_CLOSE)
            with self._lock:
                self._call = None
