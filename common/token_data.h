// Training data: a text file tokenised byte-level (token = byte, vocabulary 256), or a ".bin" file of
// little-endian uint16 token ids (the nanoGPT format). The last tenth of the tokens is held out for
// evaluation. Batches are windows of seq_len + 1 consecutive tokens (inputs and their next-token
// targets) taken in file order, so every run sees the same sequences in the same order.
#ifndef TPCOORD_COMMON_TOKEN_DATA_H_
#define TPCOORD_COMMON_TOKEN_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpcoord {

class TokenData {
 public:
  // INVALID_ARGUMENT if the file cannot be read, or has too few tokens for a train and an eval window of
  // `seq_len` + 1 tokens.
  static absl::StatusOr<TokenData> Load(const std::string& path, int seq_len);
  // For tests.
  static absl::StatusOr<TokenData> FromTokens(std::vector<uint16_t> tokens, int seq_len);

  size_t size() const { return tokens_.size(); }
  int max_token() const { return max_token_; }

  // Training sequence number `index` (0, 1, 2, ...): seq_len + 1 tokens. Sequence i starts i * seq_len
  // tokens into the training split, wrapping around at its end.
  std::vector<int32_t> TrainSequence(int64_t index) const;
  // Evaluation sequence number `index`, from the held-out split, wrapping likewise.
  std::vector<int32_t> EvalSequence(int64_t index) const;
  // How many whole windows the held-out split has: EvalSequence(0 .. EvalWindows() - 1) are all different.
  int64_t EvalWindows() const;

 private:
  TokenData(std::vector<uint16_t> tokens, int seq_len);
  size_t WindowCount(size_t begin, size_t end) const;
  std::vector<int32_t> Window(size_t begin, size_t end, int64_t index) const;

  std::vector<uint16_t> tokens_;
  int seq_len_;
  size_t eval_begin_;
  int max_token_ = 0;
};

// The training sequence index of row `row` of micro-batch `micro_step` on data-parallel rank `dp_rank`, in
// optimizer step `step`. One step consumes train_batch_size = micro_batch * accumulation * dp_size
// consecutive sequences, spread so that every DP rank gets different rows and every TP rank of a DP rank the
// same ones: row r of micro step m on DP rank d is sequence step * train_batch_size + (m * dp_size + d) *
// micro_batch + r.
int64_t SequenceIndex(int64_t step, int micro_step, int dp_rank, int row, int micro_batch, int accumulation,
                      int dp_size);

// The evaluation windows [begin, end) that data-parallel rank `dp_rank` of `dp_size` scores: contiguous
// slices, disjoint, in rank order, that together cover [0, windows) exactly once (sizes differ by at most 1).
struct WindowRange {
  int64_t begin = 0, end = 0;
};
WindowRange EvalSlice(int64_t windows, int dp_rank, int dp_size);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_TOKEN_DATA_H_
