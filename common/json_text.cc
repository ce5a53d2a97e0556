#include "common/json_text.h"

#include <new>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/identifiers.h"

namespace tpcoord {
namespace {

using nlohmann::json;

// `text` with every byte outside printable ASCII written as \xHH, cut at 300 bytes: the parser's messages
// quote the input, which may be anything.
std::string Printable(absl::string_view text) {
  std::string out;
  for (char c : text.substr(0, 300)) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) out += c;
    else absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
  }
  if (text.size() > 300) out += "...";
  return out;
}

// Thrown from the parser callback to stop at the first violation; caught below, never escapes.
struct Rejected {
  std::string message;
};

}  // namespace

absl::StatusOr<json> ParseJsonText(absl::string_view text, absl::string_view field, int max_depth) {
  // The parser takes a NUL byte for the end of its input; JSON text never holds one (a string spells it
  // \u0000), so one is an error rather than a place where the rest of the text is silently ignored.
  if (const size_t nul = text.find('\0'); nul != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid JSON: a NUL byte at offset ", nul));
  }
  // The callback sees every event as it is read, with the depth of the value it belongs to: a document is
  // refused at the first level too deep, so the parser's own (iterative) stack never grows past the limit.
  // One set of keys per open object finds duplicates.
  std::vector<std::set<std::string>> open_objects;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth + 1 > max_depth) {
          throw Rejected{absl::StrCat(field, " nests deeper than ", max_depth, " levels")};
        }
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end: open_objects.pop_back(); break;
      case json::parse_event_t::key:
        if (!open_objects.back().insert(parsed.get<std::string>()).second) {
          throw Rejected{absl::StrCat(field, " has the key ", QuoteForError(parsed.get<std::string>()),
                                      " twice in one object")};
        }
        break;
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), on_event);
  } catch (const Rejected& r) {
    return absl::InvalidArgumentError(r.message);
  } catch (const json::exception& e) {
    // parse_error for malformed text and invalid UTF-8, out_of_range for a number such as 1e400.
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid JSON: ", Printable(e.what())));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(field, ": out of memory while parsing"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(field, " could not be parsed: ", e.what()));
  }
}

}  // namespace tpcoord
