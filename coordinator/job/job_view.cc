#include "coordinator/job/job_view.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpcoord {

std::string Shortlist::ToString() const {
  std::string text = absl::StrJoin(shown_, ", ");
  if (total_ > shown_.size()) absl::StrAppend(&text, " and ", total_ - shown_.size(), " more");
  return text;
}

}  // namespace tpcoord
