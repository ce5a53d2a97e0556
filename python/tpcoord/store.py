"""A torch.distributed.Store over the coordinator's key-value API (coordinator.proto, Store*), for
init_process_group(store=member.store(), ...) and new_group: every c10d Store method, scoped to the member's
job and generation (a new generation starts with an empty store), each call carrying the member's key.

Waits (get, wait) are bounded by the store's timeout (init_process_group sets it to its own); when it passes,
the coordinator's answer names the keys still missing, raised as WaitTimeout. A generation that ended raises
GenerationEnded naming the rank that ended it.
"""
import datetime

import torch.distributed as dist

from ._proto import pb

_FOREVER = 3600.0  # a store without timeout (c10d's kNoTimeout) waits as long as the coordinator allows


class CoordinatorStore(dist.Store):
    def __init__(self, member, timeout=datetime.timedelta(minutes=5)):
        super().__init__()
        self._member = member
        self._client = member.client
        if timeout is not None:
            self.set_timeout(timeout)

    def set(self, key, value):
        self._call("StoreSet", pb.StoreSetRequest(key=key, value=_bytes(value)))

    def get(self, key):
        request = pb.StoreGetRequest(key=key)
        return self._wait("StoreGet", request, self._seconds(None)).value

    def add(self, key, delta):
        # Not idempotent: a retry after a lost answer would add twice. Reading (delta 0) is retried.
        request = pb.StoreAddRequest(key=key, delta=int(delta))
        return self._call("StoreAdd", request, idempotent=delta == 0).value

    def compare_set(self, key, expected, desired):
        request = pb.StoreCompareSetRequest(key=key, expected_value=_bytes(expected), desired_value=_bytes(desired))
        return self._call("StoreCompareSet", request).value

    def check(self, keys):
        return self._call("StoreCheck", pb.StoreCheckRequest(keys=list(keys))).all_present

    def delete_key(self, key):
        return self._call("StoreDelete", pb.StoreDeleteRequest(key=key)).deleted

    def num_keys(self):
        return self._call("StoreNumKeys", pb.StoreNumKeysRequest()).num_keys

    def wait(self, keys, timeout=None):
        self._wait("StoreWait", pb.StoreWaitRequest(keys=list(keys)), self._seconds(timeout))

    def _seconds(self, timeout):
        seconds = (timeout if timeout is not None else self.timeout).total_seconds()
        return seconds if seconds > 0 else _FOREVER

    def _scope(self, request):
        self._member.check()
        request.job_id, request.generation = self._member.job, self._member.generation
        return request

    def _call(self, method, request, idempotent=True):
        return self._client._call(method, self._scope(request), self._member.key, idempotent)

    def _wait(self, method, request, seconds):
        return self._client._wait(method, self._scope(request), self._member.key, seconds)


def _bytes(value):
    return value.encode() if isinstance(value, str) else bytes(value)
