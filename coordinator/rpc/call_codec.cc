#include "coordinator/rpc/call_codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <iostream>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/wire.h"

namespace tpcoord {
namespace {

thread_local std::string* parse_log = nullptr;

void CapturingLogHandler(google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
  if (parse_log != nullptr) {
    if (parse_log->empty()) *parse_log = message;
    return;
  }
  static const char* const kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::cerr << "[libprotobuf " << kLevels[std::clamp<int>(level, 0, 3)] << " " << file << ":" << line << "] " << message
            << std::endl;
}

// Every value the call's metadata holds under `name`.
std::vector<absl::string_view> MetadataValues(const grpc::CallbackServerContext* ctx, absl::string_view name) {
  std::vector<absl::string_view> values;
  auto [first, last] = ctx->client_metadata().equal_range(grpc::string_ref(name.data(), name.size()));
  for (auto it = first; it != last; ++it) values.emplace_back(it->second.data(), it->second.size());
  return values;
}

}  // namespace

absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message) {
  static absl::once_flag once;
  absl::call_once(once, [] { google::protobuf::SetLogHandler(&CapturingLogHandler); });
  std::string why;
  parse_log = &why;
  grpc::ProtoBufferReader reader(const_cast<grpc::ByteBuffer*>(&bytes));
  const bool ok = message->ParseFromZeroCopyStream(&reader);
  parse_log = nullptr;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", message->GetDescriptor()->full_name(),
                                                 " message (", bytes.Length(), " bytes)", why.empty() ? "" : ": ",
                                                 why));
}

absl::StatusOr<Caller> IdentifyCall(const grpc::CallbackServerContext* ctx, const std::string& admin_token_sha256) {
  absl::StatusOr<Caller> caller = IdentifyCaller(MetadataValues(ctx, kAuthorizationMetadata),
                                                 MetadataValues(ctx, kMemberKeyMetadata), admin_token_sha256);
  if (caller.ok() && caller->token_sha256.empty()) return MissingTokenError();
  return caller;
}

grpc::ByteBuffer SerializeAnswer(const google::protobuf::Message& message) {
  grpc::ByteBuffer bytes;
  bool own_buffer = false;
  (void)grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(message, &bytes, &own_buffer);
  return bytes;
}

void AnswerBytes::Append(const google::protobuf::Message& message) {
  const size_t length = message.ByteSizeLong();
  if (length == 0) return;
  grpc::Slice slice(length);  // uninitialised, ours to fill
  message.SerializeWithCachedSizesToArray(const_cast<uint8_t*>(slice.begin()));
  Append(slice);
}

void AnswerBytes::Append(const grpc::Slice& slice) {
  if (slice.size() == 0) return;
  slices_.push_back(slice);  // a reference, not a copy
  size_ += slice.size();
}

void AnswerBytes::AppendField(int field, const AnswerBytes& embedded) {
  uint8_t header[16];
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteTagToArray(
      google::protobuf::internal::WireFormatLite::MakeTag(field,
                                                          google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED),
      header);
  end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(embedded.size(), end);
  Append(grpc::Slice(header, end - header));
  for (const grpc::Slice& slice : embedded.slices_) Append(slice);
}

grpc::ByteBuffer AnswerBytes::ToByteBuffer() const { return grpc::ByteBuffer(slices_.data(), slices_.size()); }

grpc::Status ToGrpc(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  if (std::optional<std::string> context = ErrorContext(status)) ctx->AddTrailingMetadata("tpcoord-context", *context);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace tpcoord
