// tpctl: the operator's command line for a tp-coordinator.
//
//   tpctl [--coordinator HOST:PORT] create ID [--job-token-file F]
//   tpctl [--coordinator HOST:PORT] record --job ID --tp-size N --dtype bf16 [--tp-group 0,1]
//   tpctl [--coordinator HOST:PORT] merge  --job ID --config ds_config.json [--mpu]
//   tpctl [--coordinator HOST:PORT] jobs
//   tpctl [--coordinator HOST:PORT] job ID
//   tpctl [--coordinator HOST:PORT] watch ID [--interval 1s]
//   tpctl [--coordinator HOST:PORT] delete ID [--force]
//   tpctl [--coordinator HOST:PORT] health
//
// Every command but health carries a token: --token-file F (or TPCOORD_TOKEN_FILE / TPCOORD_TOKEN), the
// job's or the coordinator's admin token; TLS with --tls-ca F (and --tls-cert F --tls-key F for mutual TLS).
// On failure it prints the coordinator's message (and its context line, if any) on stderr and exits 1;
// usage errors exit 2.
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/dtype.h"
#include "common/process_init.h"
#include "common/secrets.h"
#include "common/wire.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tpcoord/v1/coordinator.grpc.pb.h"
#include "worker/client_flags.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "coordinator address (env TPCOORD_COORDINATOR)");
ABSL_FLAG(std::string, job, "", "job id");
ABSL_FLAG(int, tp_size, 0, "record: tensor-parallel size");
ABSL_FLAG(std::string, dtype, "", "record: fp32 | fp16 | bf16 (or an alias such as torch.bfloat16)");
ABSL_FLAG(std::string, tp_group, "", "record: the TP group as comma-separated global ranks");
ABSL_FLAG(std::string, config, "", "merge: path of the DeepSpeed config (JSON)");
ABSL_FLAG(bool, mpu, false, "merge: as if deepspeed.initialize were given an mpu");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10), "deadline of each call");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(1), "watch: refresh interval");
ABSL_FLAG(int, count, 0, "watch: stop after this many refreshes (0: until the job completes or fails)");
ABSL_FLAG(bool, force, false, "delete: also a job whose generation is running (its workers are told it ended)");
ABSL_FLAG(std::string, job_token_file, "",
          "create: the token the job's workers will carry (default: the token of this call, --token-file)");

namespace {

namespace v1 = tpcoord::v1;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int UsageError(const std::string& message) {
  std::cerr << "tpctl: " << message << "\n" << absl::ProgramUsageMessage() << std::endl;
  return kExitUsage;
}

int Failed(const grpc::ClientContext& ctx, const grpc::Status& status) {
  std::cerr << status.error_message() << std::endl;
  for (const auto& [key, value] : ctx.GetServerTrailingMetadata()) {
    if (key == "tpcoord-context") std::cerr << "  (" << std::string(value.data(), value.size()) << ")" << std::endl;
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::cerr << "  (is a tp-coordinator serving on " << absl::GetFlag(FLAGS_coordinator)
              << "? If it serves TLS: do --tls-ca, --tls-cert and --tls-key match its certificates?)" << std::endl;
  }
  return kExitFailure;
}

// The token every call carries (from --token-file and the like).
std::string token;

// Readies a call: its deadline and its token.
void PrepareCall(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_timeout)));
  if (!token.empty()) ctx->AddMetadata(std::string(tpcoord::kAuthorizationMetadata), absl::StrCat("Bearer ", token));
}

std::string JobArg(const std::vector<char*>& args) {
  return args.size() > 2 ? std::string(args[2]) : absl::GetFlag(FLAGS_job);
}

std::string DescribeArgs(const v1::TpInitArgs& args) {
  std::vector<std::string> groups;
  for (const auto& g : args.tp_groups()) groups.push_back(absl::StrCat("[", absl::StrJoin(g.ranks(), ", "), "]"));
  absl::StatusOr<tpcoord::Dtype> dtype = tpcoord::DtypeFromProto(args.dtype());
  return absl::StrCat("tp_size=", args.tp_size(), " dtype=", dtype.ok() ? tpcoord::TorchDtypeName(*dtype) : "?",
                      " tp_group=", args.has_tp_group() ? absl::StrJoin(groups, " ") : "None");
}

std::string PhaseName(v1::Phase phase) {
  std::string name = v1::Phase_Name(phase);
  return absl::AsciiStrToLower(name.substr(name.find('_') + 1));
}

std::string Millis(int64_t ms) {
  if (ms < 0) return "in progress";
  if (ms < 10000) return absl::StrCat(ms, " ms");
  return absl::StrFormat("%.1f s", ms / 1000.0);
}

void PrintJob(const v1::JobStatus& job, bool details) {
  std::cout << "job " << job.job_id() << "\n";
  std::cout << "  tp_model_init: " << (job.tp_init_recorded() ? DescribeArgs(job.tp_init()) : "not recorded") << "\n";
  if (job.generation() == 0) {
    std::cout << "  generation: none yet\n";
  } else {
    std::cout << "  generation " << job.generation() << ": " << PhaseName(job.phase()) << ", world_size "
              << job.world_size() << "\n";
  }
  if (!job.end_reason().empty()) std::cout << "  ended: " << job.end_reason() << "\n";
  if (!details) return;
  if (job.members_size() > 0) {
    std::cout << absl::StrFormat("  members (%d%s):\n    %-6s %-24s %-36s %s\n", job.member_count(),
                                 job.member_count() > job.members_size()
                                     ? absl::StrCat(", the first ", job.members_size(), " shown")
                                     : "",
                                 "rank", "host", "worker", "heartbeat");
    for (const v1::Member& m : job.members()) {
      const std::string heartbeat = m.finished()                      ? "finished"
                                    : m.last_heartbeat_age_ms() < 0 ? "-"
                                                                    : Millis(m.last_heartbeat_age_ms()) + " ago";
      std::cout << absl::StrFormat("    %-6s %-24s %-36s %s\n", m.rank() < 0 ? "?" : std::to_string(m.rank()),
                                   m.host(), m.worker_id(), heartbeat);
    }
  }
  if (job.missing_size() > 0) std::cout << "  missing: " << absl::StrJoin(job.missing(), ", ") << "\n";
  if (job.timings_size() > 0) {
    std::cout << "  phases:\n";
    for (const v1::PhaseTiming& t : job.timings()) {
      std::cout << absl::StrFormat("    %-24s %s\n", t.phase(), Millis(t.duration_ms()));
    }
  }
  if (!job.merged_config_json().empty()) std::cout << "  merged config: " << job.merged_config_json() << "\n";
}

int Record(v1::Coordinator::Stub& stub) {
  v1::RecordTpInitArgsRequest req;
  req.set_job_id(absl::GetFlag(FLAGS_job));
  req.set_tp_size(absl::GetFlag(FLAGS_tp_size));
  absl::StatusOr<tpcoord::Dtype> dtype = tpcoord::ParseDtype(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return UsageError(absl::StrCat("--dtype: ", dtype.status().message()));
  req.set_dtype(tpcoord::DtypeToProto(*dtype));
  if (const std::string group = absl::GetFlag(FLAGS_tp_group); !group.empty()) {
    for (absl::string_view part : absl::StrSplit(group, ',')) {
      int rank;
      if (!absl::SimpleAtoi(part, &rank)) return UsageError(absl::StrCat("--tp-group: \"", part, "\" is not a rank"));
      req.mutable_tp_group()->add_ranks(rank);
    }
  }
  v1::RecordTpInitArgsResponse resp;
  grpc::ClientContext ctx;
  PrepareCall(&ctx);
  grpc::Status status = stub.RecordTpInitArgs(&ctx, req, &resp);
  if (!status.ok()) return Failed(ctx, status);
  std::cout << (resp.created() ? "recorded " : "matches the record: ") << DescribeArgs(resp.recorded()) << std::endl;
  return 0;
}

int Merge(v1::Coordinator::Stub& stub) {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return UsageError("merge needs --config PATH");
  std::ifstream file(path, std::ios::binary);
  if (!file) return UsageError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  v1::MergeConfigRequest req;
  req.set_job_id(absl::GetFlag(FLAGS_job));
  req.set_config_json(text.str());
  req.set_has_mpu(absl::GetFlag(FLAGS_mpu));
  v1::MergeConfigResponse resp;
  grpc::ClientContext ctx;
  PrepareCall(&ctx);
  grpc::Status status = stub.MergeConfig(&ctx, req, &resp);
  if (!status.ok()) return Failed(ctx, status);
  std::cout << nlohmann::json::parse(resp.merged_config_json()).dump(2) << std::endl;
  return 0;
}

int Jobs(v1::Coordinator::Stub& stub) {
  std::cout << absl::StrFormat("%-32s %-10s %-11s %-6s %s\n", "JOB", "GENERATION", "PHASE", "WORLD", "TP_MODEL_INIT");
  v1::ListJobsRequest req;
  req.set_page_size(500);
  do {  // a page at a time, so that any number of jobs can be listed
    v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    PrepareCall(&ctx);
    grpc::Status status = stub.ListJobs(&ctx, req, &resp);
    if (!status.ok()) return Failed(ctx, status);
    for (const v1::JobStatus& job : resp.jobs()) {
      std::cout << absl::StrFormat("%-32s %-10d %-11s %-6d %s\n", job.job_id(), job.generation(),
                                   PhaseName(job.phase()), job.world_size(),
                                   job.tp_init_recorded() ? DescribeArgs(job.tp_init()) : "-");
    }
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return 0;
}

int Create(v1::Coordinator::Stub& stub, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl create ID [--job-token-file F]");
  v1::CreateJobRequest req;
  req.set_job_id(job_id);
  if (const std::string path = absl::GetFlag(FLAGS_job_token_file); !path.empty()) {
    absl::StatusOr<std::string> job_token = tpcoord::ReadSecretFile(path);
    if (!job_token.ok()) return UsageError(absl::StrCat("--job-token-file: ", job_token.status().message()));
    req.set_job_token(*job_token);
  }
  v1::CreateJobResponse resp;
  grpc::ClientContext ctx;
  PrepareCall(&ctx);
  grpc::Status status = stub.CreateJob(&ctx, req, &resp);
  if (!status.ok()) return Failed(ctx, status);
  std::cout << "created job " << job_id << std::endl;
  return 0;
}

int Delete(v1::Coordinator::Stub& stub, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl delete ID [--force]");
  v1::DeleteJobRequest req;
  req.set_job_id(job_id);
  req.set_force(absl::GetFlag(FLAGS_force));
  v1::DeleteJobResponse resp;
  grpc::ClientContext ctx;
  PrepareCall(&ctx);
  grpc::Status status = stub.DeleteJob(&ctx, req, &resp);
  if (!status.ok()) return Failed(ctx, status);
  std::cout << "deleted job " << job_id << std::endl;
  return 0;
}

int Job(v1::Coordinator::Stub& stub, const std::string& job_id, bool watch) {
  if (job_id.empty()) return UsageError("give the job id: tpctl job ID");
  const int count = absl::GetFlag(FLAGS_count);
  for (int i = 1;; ++i) {
    v1::GetJobRequest req;
    req.set_job_id(job_id);
    v1::GetJobResponse resp;
    grpc::ClientContext ctx;
    PrepareCall(&ctx);
    grpc::Status status = stub.GetJob(&ctx, req, &resp);
    if (!status.ok()) return Failed(ctx, status);
    if (watch) std::cout << "--- " << absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()) << "\n";
    PrintJob(resp.job(), true);
    std::cout.flush();
    const v1::Phase phase = resp.job().phase();
    if (!watch || (count > 0 && i >= count) ||
        (count == 0 && (phase == v1::PHASE_COMPLETED || phase == v1::PHASE_FAILED))) {
      return 0;
    }
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_interval)));
  }
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  PrepareCall(&ctx);
  grpc::Status status = stub->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
  if (!status.ok()) return Failed(ctx, status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << std::endl;
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "usage (every command takes --token-file F, --tls-ca F, --tls-cert F, --tls-key F):\n"
      "  tpctl [--coordinator HOST:PORT] create ID [--job-token-file F]\n"
      "  tpctl [--coordinator HOST:PORT] record --job ID --tp-size N --dtype bf16 [--tp-group 0,1]\n"
      "  tpctl [--coordinator HOST:PORT] merge --job ID --config ds_config.json [--mpu]\n"
      "  tpctl [--coordinator HOST:PORT] jobs\n"
      "  tpctl [--coordinator HOST:PORT] job ID\n"
      "  tpctl [--coordinator HOST:PORT] watch ID [--interval 1s] [--count N]\n"
      "  tpctl [--coordinator HOST:PORT] delete ID [--force]\n"
      "  tpctl [--coordinator HOST:PORT] health");
  if (const char* env = std::getenv("TPCOORD_COORDINATOR"); env && *env) absl::SetFlag(&FLAGS_coordinator, env);
  std::vector<char*> args = tpcoord::InitProcess(argc, argv);
  if (args.size() < 2) return UsageError("no command given");
  const std::string command = args[1];

  absl::StatusOr<tpcoord::ClientCredentials> credentials = tpcoord::ClientCredentialsFromFlags();
  if (!credentials.ok()) return UsageError(std::string(credentials.status().message()));
  token = credentials->token;
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_coordinator), tpcoord::ChannelCredentialsFor(*credentials));
  v1::Coordinator::Stub stub(channel);
  if (command == "create") return Create(stub, JobArg(args));
  if (command == "record") return Record(stub);
  if (command == "merge") return Merge(stub);
  if (command == "jobs") return Jobs(stub);
  if (command == "job") return Job(stub, JobArg(args), false);
  if (command == "watch") return Job(stub, JobArg(args), true);
  if (command == "delete") return Delete(stub, JobArg(args));
  if (command == "health") return Health(channel);
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
