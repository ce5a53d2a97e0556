// What every call the coordinator serves does with gRPC's raw parts, unary or on a member session: parse the
// request's bytes, identify the caller from the call's metadata, and turn the answer into a grpc::Status.
#ifndef TPCOORD_COORDINATOR_RPC_CALL_CODEC_H_
#define TPCOORD_COORDINATOR_RPC_CALL_CODEC_H_

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/job/caller.h"

namespace tpcoord {

// INVALID_ARGUMENT naming the message type (and protobuf's reason, e.g. invalid UTF-8 in a string field)
// when `bytes` are not a valid `message`. Protobuf reports the reason only through its log: while a request
// is parsed, that log line becomes part of the answer instead of a line on the coordinator's stderr (which a
// hostile client could otherwise flood).
absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message);

// Who makes the call, from its authorization and member-key metadata. Every call needs a token
// (UNAUTHENTICATED otherwise): a call without one learns nothing, not even whether its job exists.
absl::StatusOr<Caller> IdentifyCall(const grpc::CallbackServerContext* ctx, const std::string& admin_token_sha256);

// `message`'s bytes, serialized straight into gRPC's slices (no intermediate string).
grpc::ByteBuffer SerializeAnswer(const google::protobuf::Message& message);

// An answer's bytes as a list of gRPC slices, so that a part many answers carry (a group's unique IDs) is
// referenced by each, not copied: protobuf's wire format lets a message be written as the concatenation of
// its fields, and an embedded message as a tag, a length and its bytes.
class AnswerBytes {
 public:
  // Appends `message`'s fields.
  void Append(const google::protobuf::Message& message);
  // Appends `slice` as it is (bytes already in wire format), by reference.
  void Append(const grpc::Slice& slice);
  // Appends `embedded` as the length-delimited field `field`.
  void AppendField(int field, const AnswerBytes& embedded);
  size_t size() const { return size_; }
  grpc::ByteBuffer ToByteBuffer() const;

 private:
  std::vector<grpc::Slice> slices_;
  size_t size_ = 0;
};

// absl::Status -> grpc::Status; the codes share their numbers. DeepSpeed errors keep their exact text as the
// message and carry the job context in the "tpcoord-context" trailing metadata.
grpc::Status ToGrpc(grpc::CallbackServerContext* ctx, const absl::Status& status);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_CALL_CODEC_H_
