#include "common/identifiers.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

// Checks 1 <= size <= max_length and that every character is alphanumeric or in `extra`.
absl::Status CheckName(absl::string_view field, absl::string_view value, size_t max_length,
                       absl::string_view extra, absl::string_view charset_doc) {
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is empty; it must be 1-", max_length,
                                                   " characters from ", charset_doc));
  }
  if (value.size() > max_length) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", QuoteForError(value), " is ", value.size(),
                                                   " characters long; the limit is ", max_length));
  }
  for (char c : value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && extra.find(c) == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(field, " ", QuoteForError(value), " contains ",
                                                     QuoteForError(absl::string_view(&c, 1)),
                                                     "; allowed characters are ", charset_doc));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string QuoteForError(absl::string_view value) {
  constexpr size_t kMaxShown = 160;
  const bool cut = value.size() > kMaxShown;
  std::string shown = absl::CEscape(value.substr(0, kMaxShown));
  return absl::StrCat("\"", shown, cut ? "...\"" : "\"");
}

absl::Status ValidateJobId(absl::string_view job_id) {
  return CheckName("job_id", job_id, kMaxJobIdBytes, "._-", "[A-Za-z0-9._-]");
}

absl::Status ValidateWorkerId(absl::string_view worker_id) {
  return CheckName("worker_id", worker_id, kMaxWorkerIdBytes, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
                   "printable ASCII without spaces");
}

absl::Status ValidateHost(absl::string_view host) {
  return CheckName("host", host, kMaxHostBytes, "._:-", "[A-Za-z0-9._:-]");
}

absl::Status ValidateBarrierName(absl::string_view name) {
  return CheckName("name", name, kMaxBarrierNameBytes, "._:/-", "[A-Za-z0-9._:/-]");
}

absl::Status ValidateStoreKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > kMaxStoreKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("key ", QuoteForError(key), " is ", key.size(),
                                                   " bytes long; the limit is ", kMaxStoreKeyBytes));
  }
  if (key.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("key ", QuoteForError(key), " contains a NUL byte"));
  }
  return absl::OkStatus();
}

}  // namespace tpcoord
