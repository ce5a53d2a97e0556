// Every limit on what a request to the coordinator may carry, each with the reason it is what it is. One
// header, so that the coordinator's request checks, its error messages, the documentation and the clients
// agree. A request over a limit gets INVALID_ARGUMENT naming the field, its size and the limit; a quota
// (jobs, parked calls, store bytes) that is full gets RESOURCE_EXHAUSTED naming the quota.
#ifndef TPCOORD_COMMON_LIMITS_H_
#define TPCOORD_COMMON_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace tpcoord {

// --- names --------------------------------------------------------------------------------------------
// Job ids appear in every log line, metric label and state key; 128 covers "team.project.run-2026-12-01.7".
inline constexpr size_t kMaxJobIdBytes = 128;
// "host:pid:nonce" with a long host name.
inline constexpr size_t kMaxWorkerIdBytes = 128;
// The DNS limit on a host name (an IPv6 address is shorter).
inline constexpr size_t kMaxHostBytes = 253;
inline constexpr size_t kMaxBarrierNameBytes = 128;
// c10d keys are paths such as "/default_pg/0//cuda//0"; 1 KiB leaves room for any prefix store.
inline constexpr size_t kMaxStoreKeyBytes = 1024;

// --- secrets ------------------------------------------------------------------------------------------
// Job tokens and member keys (common/secrets.h): 16 characters is the least that is not guessable; 1 KiB
// holds any token format (a JWT, say) while keeping metadata small.
inline constexpr size_t kMinSecretBytes = 16;
inline constexpr size_t kMaxSecretBytes = 1024;

// --- payloads -----------------------------------------------------------------------------------------
// ncclUniqueId is NCCL_UNIQUE_ID_BYTES = 128 bytes, exactly.
inline constexpr size_t kUniqueIdBytes = 128;
// A store value: Gloo exchanges addresses (tens of bytes); 1 MiB is generous for anything a c10d user sets.
inline constexpr size_t kMaxStoreValueBytes = size_t{1} << 20;
// DeepSpeed configs are a few KiB; 1 MiB keeps a merged config well inside one gRPC message.
inline constexpr size_t kMaxConfigBytes = size_t{1} << 20;
// DeepSpeed configs nest 3-4 levels. The bound is checked while parsing, before any recursive code (copy,
// dump, diff) sees the document: 60,000 levels overflowed the coordinator's stack before it existed.
inline constexpr int kMaxJsonDepth = 64;
// A Leave reason is shown to every other worker of the generation.
inline constexpr size_t kMaxReasonBytes = 1024;

// --- counts and ranges --------------------------------------------------------------------------------
inline constexpr int kMaxTpSize = 65536;
inline constexpr int kMaxWorldSize = 1000000;
// One call covers one rank's TP, DP and world groups with room to spare.
inline constexpr int kMaxGroupsPerCall = 16;
inline constexpr int kMaxKeysPerCall = 1024;
// A Join answer lists the ranks of the caller's groups up to this many; a larger group's ranks follow from
// the mesh (coordinator.proto, Group), so that answering N workers costs O(N), not O(N^2 / tp_size).
inline constexpr int kMaxListedGroupRanks = 1024;
// Calls a member session may have in flight at once (coordinator.proto, Session).
inline constexpr int kMaxSessionCalls = 16;
// Members one session may carry (its slots: tp-agent's, one per worker of its host), and messages in one
// batch (SessionRequest.batch).
inline constexpr uint32_t kMaxSessionMembers = 256;
inline constexpr int kMaxSessionBatch = 1024;
// Parked calls wait at most an hour; longer waits are capped (a job that needs longer re-issues the call).
inline constexpr uint32_t kMaxWaitMs = 3600 * 1000;
// ListJobs pages; a page of 1000 jobs without their configs stays far below 4 MiB.
inline constexpr int kMaxListPageSize = 1000;
inline constexpr int kDefaultListPageSize = 100;
// GetJob lists at most this many members (about 1 MB); member_count says how many there are.
inline constexpr int kMaxMembersInView = 10000;

// --- whole requests -----------------------------------------------------------------------------------
// The gRPC receive limit: the largest legal requests (StoreSet with a 1 MiB value, StoreCheck with 1024
// keys of 1 KiB, MergeConfig with a 1 MiB config) fit with room for framing; anything larger is refused by
// gRPC before it is parsed.
inline constexpr int kMaxRequestBytes = 4 << 20;

// --- per-job quotas -----------------------------------------------------------------------------------
// Calls parked in one job at once: a 100,000-worker job parks one Join per worker, then one GetUniqueId or
// Barrier per worker, with headroom for retries.
inline constexpr size_t kMaxParkedCallsPerJob = size_t{1} << 18;
// Distinct barrier names in one generation (each holds a slot per rank).
inline constexpr size_t kMaxBarriersPerGeneration = 1024;
// Generations a job's history keeps (tpctl events), in the state store; older ones are forgotten.
inline constexpr size_t kMaxGenerationHistory = 100;
// Points of a job's loss curve (the status page): 512 points of 24 bytes, 12 KiB per job. A longer run's
// curve is thinned to every other point and goes on at half the resolution.
inline constexpr size_t kMaxProgressPoints = 512;

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_LIMITS_H_
