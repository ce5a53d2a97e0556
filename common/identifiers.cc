#include "common/identifiers.h"

#include <cstdint>
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

absl::Status ValidatePrintableText(absl::string_view field, absl::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", QuoteForError(text), " is ", text.size(),
                                                   " bytes long; the limit is ", max_bytes));
  }
  auto refuse = [&](size_t at, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", QuoteForError(text), " ", what, " at byte ", at,
                                                   "; give printable UTF-8 text"));
  };
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) {
        return refuse(i, absl::StrCat("contains the control character ", QuoteForError(text.substr(i, 1))));
      }
      ++i;
      continue;
    }
    // The length of the sequence c starts, and the least code point it may encode (no overlong forms).
    const size_t length = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (length == 0 || i + length > text.size()) return refuse(i, "is not valid UTF-8");
    uint32_t code = c & (0x7f >> length);
    for (size_t k = 1; k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return refuse(i, "is not valid UTF-8");
      code = (code << 6) | (next & 0x3f);
    }
    const uint32_t least = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
    if (code < least || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return refuse(i, "is not valid UTF-8");
    }
    if (code <= 0x9f) {
      return refuse(i, absl::StrCat("contains the control character ", QuoteForError(text.substr(i, length))));
    }
    i += length;
  }
  return absl::OkStatus();
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
