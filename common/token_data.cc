#include "common/token_data.h"

#include <algorithm>
#include <fstream>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tpcoord {

absl::StatusOr<TokenData> TokenData::Load(const std::string& path, int seq_len) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::InvalidArgumentError(absl::StrCat("cannot read the training data ", path));
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<uint16_t> tokens;
  if (absl::EndsWith(path, ".bin")) {
    if (bytes.size() % 2 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has ", bytes.size(), " bytes; a .bin file holds little-endian uint16 tokens"));
    }
    tokens.resize(bytes.size() / 2);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<uint16_t>(static_cast<uint8_t>(bytes[2 * i]) |
                                        (static_cast<uint8_t>(bytes[2 * i + 1]) << 8));
    }
  } else {
    tokens.assign(bytes.begin(), bytes.end());
    for (uint16_t& t : tokens) t &= 0xff;  // bytes, not signed chars
  }
  absl::StatusOr<TokenData> data = FromTokens(std::move(tokens), seq_len);
  if (!data.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", data.status().message()));
  return data;
}

absl::StatusOr<TokenData> TokenData::FromTokens(std::vector<uint16_t> tokens, int seq_len) {
  const size_t needed = 10 * static_cast<size_t>(seq_len + 1);
  if (seq_len < 1 || tokens.size() < needed) {
    return absl::InvalidArgumentError(absl::StrCat("the training data has ", tokens.size(),
                                                   " tokens; seq_len ", seq_len, " needs at least ", needed,
                                                   " (a tenth is held out for evaluation)"));
  }
  return TokenData(std::move(tokens), seq_len);
}

TokenData::TokenData(std::vector<uint16_t> tokens, int seq_len)
    : tokens_(std::move(tokens)), seq_len_(seq_len), eval_begin_(tokens_.size() - tokens_.size() / 10) {
  max_token_ = *std::max_element(tokens_.begin(), tokens_.end());
}

size_t TokenData::WindowCount(size_t begin, size_t end) const {
  // Start positions 0, seq_len, 2 seq_len, ... while a whole window fits.
  return (end - begin - static_cast<size_t>(seq_len_) - 1) / static_cast<size_t>(seq_len_) + 1;
}

std::vector<int32_t> TokenData::Window(size_t begin, size_t end, int64_t index) const {
  const size_t starts = WindowCount(begin, end);  // then around again
  const size_t start = begin + static_cast<size_t>(index % static_cast<int64_t>(starts)) * seq_len_;
  return std::vector<int32_t>(tokens_.begin() + static_cast<long>(start),
                              tokens_.begin() + static_cast<long>(start + seq_len_ + 1));
}

std::vector<int32_t> TokenData::TrainSequence(int64_t index) const { return Window(0, eval_begin_, index); }

std::vector<int32_t> TokenData::EvalSequence(int64_t index) const {
  return Window(eval_begin_, tokens_.size(), index);
}

int64_t TokenData::EvalWindows() const { return static_cast<int64_t>(WindowCount(eval_begin_, tokens_.size())); }

int64_t SequenceIndex(int64_t step, int micro_step, int dp_rank, int row, int micro_batch, int accumulation,
                      int dp_size) {
  const int64_t train_batch = static_cast<int64_t>(micro_batch) * accumulation * dp_size;
  return step * train_batch + (static_cast<int64_t>(micro_step) * dp_size + dp_rank) * micro_batch + row;
}

WindowRange EvalSlice(int64_t windows, int dp_rank, int dp_size) {
  return {windows * dp_rank / dp_size, windows * (dp_rank + 1) / dp_size};
}

}  // namespace tpcoord
