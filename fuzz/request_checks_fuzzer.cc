// libFuzzer target: the input is one request as it arrives on the wire: its first byte picks the RPC (or the
// call's credential metadata), the rest is the serialized request. Whatever parses must pass its check or fail it with INVALID_ARGUMENT
// (or, for the DeepSpeed size mismatch of a tp_group, FAILED_PRECONDITION) — never crash or throw.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <google/protobuf/stubs/logging.h>

#include "common/secrets.h"
#include "coordinator/job/caller.h"
#include "coordinator/rpc/request_checks.h"

namespace {

template <typename Request>
void Check(absl::string_view bytes) {
  Request req;
  if (!req.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  absl::Status status = [&]() -> absl::Status {
    if constexpr (std::is_same_v<decltype(tpcoord::CheckRequest(req)), absl::Status>) {
      return tpcoord::CheckRequest(req);
    } else {
      return tpcoord::CheckRequest(req).status();
    }
  }();
  if (!status.ok() && status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kFailedPrecondition) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {  // protobuf logs every string field with invalid UTF-8; the fuzzer makes many
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
  if (size == 0) return 0;
  const absl::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  namespace v1 = tpcoord::v1;
  switch (data[0] % 22) {
    case 0: Check<v1::RecordTpInitArgsRequest>(bytes); break;
    case 1: Check<v1::MergeConfigRequest>(bytes); break;
    case 2: Check<v1::JoinRequest>(bytes); break;
    case 3: Check<v1::PublishUniqueIdRequest>(bytes); break;
    case 4: Check<v1::GetUniqueIdRequest>(bytes); break;
    case 5: Check<v1::StoreSetRequest>(bytes); break;
    case 6: Check<v1::StoreGetRequest>(bytes); break;
    case 7: Check<v1::StoreAddRequest>(bytes); break;
    case 8: Check<v1::StoreCompareSetRequest>(bytes); break;
    case 9: Check<v1::StoreCheckRequest>(bytes); break;
    case 10: Check<v1::StoreDeleteRequest>(bytes); break;
    case 11: Check<v1::StoreNumKeysRequest>(bytes); break;
    case 12: Check<v1::StoreWaitRequest>(bytes); break;
    case 13: Check<v1::BarrierRequest>(bytes); break;
    case 14: Check<v1::HeartbeatRequest>(bytes); break;
    case 15: Check<v1::LeaveRequest>(bytes); break;
    case 16: Check<v1::ListJobsRequest>(bytes); break;
    case 17: Check<v1::GetJobRequest>(bytes); break;
    case 18: Check<v1::DeleteJobRequest>(bytes); break;
    case 19: Check<v1::CreateJobRequest>(bytes); break;
    case 21: Check<v1::CloseJobRequest>(bytes); break;
    case 20: {  // call metadata: an authorization value, NUL, a member key value
      const size_t nul = bytes.find('\0');
      const std::vector<absl::string_view> authorization = {bytes.substr(0, nul)};
      const std::vector<absl::string_view> keys = {nul == absl::string_view::npos ? "" : bytes.substr(nul + 1)};
      absl::StatusOr<tpcoord::Caller> caller = tpcoord::IdentifyCaller(authorization, keys, tpcoord::Sha256("admin"));
      if (!caller.ok() && caller.status().code() != absl::StatusCode::kUnauthenticated) std::abort();
      break;
    }
  }
  return 0;
}
