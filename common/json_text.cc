#include "common/json_text.h"

#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
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

// A JSON Pointer token (RFC 6901): "~" and "/" escaped.
std::string PointerToken(absl::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

// Builds the document from the parser's events, refusing at the first event that breaks a rule: a level
// too deep (so the parser's own, iterative, stack never grows past the limit), a key repeated within one
// object, an integer that does not fit in 64 bits (nlohmann would keep it as a rounded double, where
// Python's json, and so DeepSpeed, keeps it exactly: refused rather than changed without a word).
// Invariant: open_[i] is the array or object at depth i+1 that is being filled; keys_[i] the key of the
// value that goes into open_[i] next (objects), so that Path() names where the parser is.
class DomBuilder {
 public:
  DomBuilder(absl::string_view field, int max_depth) : field_(field), max_depth_(max_depth) {}

  bool null() { return Add(nullptr); }
  bool boolean(bool value) { return Add(value); }
  bool number_integer(json::number_integer_t value) { return Add(value); }
  bool number_unsigned(json::number_unsigned_t value) { return Add(value); }
  bool number_float(json::number_float_t value, const std::string& text) {
    // A literal without a fraction or an exponent is an integer; it came here only because it overflowed.
    if (text.find_first_of(".eE") == std::string::npos) {
      return Refuse(absl::StrCat(field_, " has the integer ", Printable(text), " at ", Path(),
                                 ", which does not fit in 64 bits; tpcoord keeps numbers exactly or not at all "
                                 "(write it as a string if it must be this large)"));
    }
    return Add(value);
  }
  bool string(std::string& value) { return Add(std::move(value)); }
  bool binary(json::binary_t& value) { return Add(std::move(value)); }
  bool start_object(std::size_t) { return Open(json::object()); }
  bool start_array(std::size_t) { return Open(json::array()); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool key(std::string& key) {
    if (open_.back()->contains(key)) {
      return Refuse(absl::StrCat(field_, " has the key ", QuoteForError(key), " twice in one object"));
    }
    keys_.back() = std::move(key);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) {
    // parse_error for malformed text and invalid UTF-8, out_of_range for a number such as 1e400.
    return Refuse(absl::StrCat(field_, " is not valid JSON: ", Printable(e.what())));
  }

  json& root() { return root_; }
  const std::string& refusal() const { return refusal_; }

 private:
  template <typename Value>
  bool Add(Value&& value) {
    Slot() = json(std::forward<Value>(value));
    return true;
  }
  bool Open(json value) {
    if (static_cast<int>(open_.size()) + 1 > max_depth_) {
      return Refuse(absl::StrCat(field_, " nests deeper than ", max_depth_, " levels"));
    }
    json& slot = Slot();
    slot = std::move(value);
    open_.push_back(&slot);
    keys_.emplace_back();
    return true;
  }
  bool Close() {
    open_.pop_back();
    keys_.pop_back();
    return true;
  }
  // Where the next value goes.
  json& Slot() {
    if (open_.empty()) return root_;
    json& parent = *open_.back();
    if (parent.is_array()) return parent.emplace_back();
    return parent[keys_.back()];
  }
  // The JSON Pointer of the value being read ("/zero_optimization/stage").
  std::string Path() const {
    std::string path;
    for (size_t i = 0; i < open_.size(); ++i) {
      // An outer array holds the element being read already; the innermost one does not yet.
      const size_t index = open_[i]->size() - (i + 1 < open_.size() ? 1 : 0);
      if (open_[i]->is_array()) absl::StrAppend(&path, "/", index);
      else absl::StrAppend(&path, "/", PointerToken(keys_[i]));
    }
    return path.empty() ? "the top level" : Printable(path);
  }
  bool Refuse(std::string message) {
    refusal_ = std::move(message);
    return false;
  }

  const absl::string_view field_;
  const int max_depth_;
  json root_;
  std::vector<json*> open_;
  std::vector<std::string> keys_;
  std::string refusal_;
};

}  // namespace

absl::StatusOr<json> ParseJsonText(absl::string_view text, absl::string_view field, int max_depth) {
  // The parser takes a NUL byte for the end of its input; JSON text never holds one (a string spells it
  // \u0000), so one is an error rather than a place where the rest of the text is silently ignored.
  if (const size_t nul = text.find('\0'); nul != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid JSON: a NUL byte at offset ", nul));
  }
  DomBuilder builder(field, max_depth);
  try {
    if (!json::sax_parse(text.begin(), text.end(), &builder)) return absl::InvalidArgumentError(builder.refusal());
    return std::move(builder.root());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(field, ": out of memory while parsing"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(field, " could not be parsed: ", e.what()));
  }
}

}  // namespace tpcoord
