#include "common/deepspeed_error.h"

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

constexpr absl::string_view kDeepSpeedTextUrl = "type.tpcoord.dev/deepspeed-text";
constexpr absl::string_view kContextUrl = "type.tpcoord.dev/context";
// Set by WithJobContext on what it returns: the job is named once, however many layers add it.
constexpr absl::string_view kJobUrl = "type.tpcoord.dev/job";

}  // namespace

absl::Status DeepSpeedError(absl::string_view text) {
  absl::Status status = absl::FailedPreconditionError(text);
  status.SetPayload(kDeepSpeedTextUrl, absl::Cord("1"));
  return status;
}

bool IsDeepSpeedError(const absl::Status& status) {
  return status.GetPayload(kDeepSpeedTextUrl).has_value();
}

absl::Status WithJobContext(absl::string_view job_id, absl::Status status, absl::string_view detail) {
  if (status.ok() || status.GetPayload(kJobUrl).has_value()) return status;
  // Written with the job in it already ("job x does not exist", "job x: the coordinator holds ...").
  const std::string named = absl::StrCat("job ", job_id);
  if (absl::StartsWith(status.message(), named) && status.message().size() > named.size() &&
      (status.message()[named.size()] == ':' || status.message()[named.size()] == ' ')) {
    return status;
  }
  if (IsDeepSpeedError(status)) {
    status.SetPayload(kJobUrl, absl::Cord(job_id));
    status.SetPayload(kContextUrl, absl::Cord(detail.empty() ? absl::StrCat("job ", job_id)
                                                             : absl::StrCat("job ", job_id, ": ", detail)));
    return status;
  }
  absl::Status wrapped(status.code(), absl::StrCat("job ", job_id, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    wrapped.SetPayload(url, payload);
  });
  wrapped.SetPayload(kJobUrl, absl::Cord(job_id));
  return wrapped;
}

void SetErrorContext(absl::Status* status, absl::string_view context) {
  status->SetPayload(kContextUrl, absl::Cord(context));
}

std::optional<std::string> ErrorContext(const absl::Status& status) {
  auto payload = status.GetPayload(kContextUrl);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

}  // namespace tpcoord
