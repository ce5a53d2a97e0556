// tpctl: the operator's command line for a tp-coordinator.
//
//   tpctl [--coordinator HOST:PORT] create ID [--job-token-file F]
//   tpctl [--coordinator HOST:PORT] record --job ID --tp-size N --dtype bf16 [--tp-group 0,1]
//   tpctl [--coordinator HOST:PORT] merge  --job ID --config ds_config.json [--mpu]
//   tpctl [--coordinator HOST:PORT] jobs
//   tpctl [--coordinator HOST:PORT] job ID
//   tpctl [--coordinator HOST:PORT] watch [ID...] [--interval 1s] [--count N]
//   tpctl [--coordinator HOST:PORT] events ID
//   tpctl [--coordinator HOST:PORT] delete ID [--force]
//   tpctl [--coordinator HOST:PORT] close ID [--reason TEXT]
//   tpctl [--coordinator HOST:PORT] health
//
// Every command but health carries a token: --token-file F (or TPCOORD_TOKEN_FILE / TPCOORD_TOKEN), the
// job's or the coordinator's admin token; TLS with --tls-ca F (and --tls-cert F --tls-key F for mutual TLS).
// On failure it prints the coordinator's message (and its context line, if any) on stderr and exits 1;
// usage errors exit 2.
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client_flags.h"
#include "client/coordinator_client.h"
#include "common/deepspeed_error.h"
#include "common/dtype.h"
#include "common/process_init.h"
#include "common/secrets.h"
#include "common/wire.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "coordinator address (env TPCOORD_COORDINATOR)");
ABSL_FLAG(std::string, job, "", "job id");
ABSL_FLAG(int, tp_size, 0, "record: tensor-parallel size");
ABSL_FLAG(std::string, dtype, "", "record: fp32 | fp16 | bf16 (or an alias such as torch.bfloat16)");
ABSL_FLAG(std::string, tp_group, "", "record: the TP group as comma-separated global ranks");
ABSL_FLAG(std::string, config, "", "merge: path of the DeepSpeed config (JSON)");
ABSL_FLAG(bool, mpu, false, "merge: as if deepspeed.initialize were given an mpu");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10), "deadline of each call");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(1), "watch: refresh interval");
ABSL_FLAG(int, count, 0, "watch: stop after this many refreshes (0: until every watched job completes)");
ABSL_FLAG(bool, force, false, "delete: also a job whose generation is running (its workers are told it ended)");
ABSL_FLAG(std::string, reason, "", "close: why the job is closed (shown with it, and to every later Join)");
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

// The coordinator's message, its DeepSpeed context line if any, and a hint when it cannot be reached.
int Failed(const absl::Status& status) {
  std::cerr << status.message() << std::endl;
  if (std::optional<std::string> context = tpcoord::ErrorContext(status))
    std::cerr << "  (" << *context << ")" << std::endl;
  if (status.code() == absl::StatusCode::kUnavailable) {
    std::cerr << "  (is a tp-coordinator serving on " << absl::GetFlag(FLAGS_coordinator)
              << "? If it serves TLS: do --tls-ca, --tls-cert and --tls-key match its certificates?)" << std::endl;
  }
  return kExitFailure;
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

// "1m05s", "2h03m".
std::string Eta(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, s / 60 % 60);
}

// "step 12/20 (60%) loss 5.123 eval 5.2 1234 tokens/s ETA 8s", or "no progress reported".
std::string ProgressLine(const v1::JobStatus& job) {
  if (!job.has_progress() || job.progress().step() == 0) return "no progress reported";
  const v1::TrainingProgress& p = job.progress();
  std::string line = absl::StrCat("step ", p.step());
  if (p.total_steps() > 0) {
    absl::StrAppend(&line, "/", p.total_steps(), absl::StrFormat(" (%.0f%%)", 100.0 * p.step() / p.total_steps()));
  }
  absl::StrAppend(&line, absl::StrFormat(" loss %.4f", p.loss()));
  if (p.has_eval_loss()) absl::StrAppend(&line, absl::StrFormat(" eval %.4f", p.eval_loss()));
  absl::StrAppend(&line, absl::StrFormat(" %.0f tokens/s %.0f ms/step", p.tokens_per_second(), p.step_seconds() * 1e3));
  if (job.phase() == v1::PHASE_RUNNING && p.total_steps() > p.step()) {
    absl::StrAppend(&line, " ETA ", Eta(p.step_seconds() * static_cast<double>(p.total_steps() - p.step())));
  }
  return line;
}

// One line of tpctl watch.
std::string WatchLine(const v1::JobStatus& job) {
  std::string line = absl::StrCat(job.job_id(), "  ");
  if (job.generation() == 0) return absl::StrCat(line, "no generation yet");
  absl::StrAppend(&line, "generation ", job.generation(), ": ", PhaseName(job.phase()), "  ", ProgressLine(job), "  ");
  if (job.phase() == v1::PHASE_RUNNING) {
    absl::StrAppend(&line, "members ", job.healthy_members(), "/", job.world_size(), " healthy");
  } else {
    absl::StrAppend(&line, "members ", job.member_count(), "/", job.world_size());
  }
  if (job.phase() == v1::PHASE_FAILED && !job.end_reason().empty())
    absl::StrAppend(&line, "  (", job.end_reason(), ")");
  return line;
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
  if (job.closed()) {
    std::cout << "  closed: " << (job.closed_reason().empty() ? "(no reason given)" : job.closed_reason())
              << "; no new generation starts\n";
  }
  if (job.has_progress()) std::cout << "  training: " << ProgressLine(job) << "\n";
  if (!details) return;
  if (job.members_size() > 0) {
    std::cout << absl::StrFormat(
        "  members (%d%s):\n    %-6s %-24s %-36s %s\n", job.member_count(),
        job.member_count() > job.members_size() ? absl::StrCat(", the first ", job.members_size(), " shown") : "",
        "rank", "host", "worker", "heartbeat");
    for (const v1::Member& m : job.members()) {
      const std::string heartbeat = m.finished()                    ? "finished"
                                    : m.last_heartbeat_age_ms() < 0 ? "-"
                                                                    : Millis(m.last_heartbeat_age_ms()) + " ago";
      std::cout << absl::StrFormat("    %-6s %-24s %-36s %s\n", m.rank() < 0 ? "?" : std::to_string(m.rank()), m.host(),
                                   m.worker_id(), heartbeat);
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

using tpcoord::CoordinatorClient;

int Record(CoordinatorClient& client) {
  absl::StatusOr<tpcoord::Dtype> dtype = tpcoord::ParseDtype(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return UsageError(absl::StrCat("--dtype: ", dtype.status().message()));
  std::optional<std::vector<int>> tp_group;
  if (const std::string group = absl::GetFlag(FLAGS_tp_group); !group.empty()) {
    tp_group.emplace();
    for (absl::string_view part : absl::StrSplit(group, ',')) {
      int rank;
      if (!absl::SimpleAtoi(part, &rank)) return UsageError(absl::StrCat("--tp-group: \"", part, "\" is not a rank"));
      tp_group->push_back(rank);
    }
  }
  // Sent as given: the coordinator checks the values (and names the job and field when they are wrong).
  bool created = false;
  absl::StatusOr<tpcoord::TpInitRecord> record =
      client.RecordTpInitArgs(absl::GetFlag(FLAGS_job),
                              tpcoord::TpInitArgs{absl::GetFlag(FLAGS_tp_size), *dtype, std::move(tp_group)}, &created);
  if (!record.ok()) return Failed(record.status());
  v1::TpInitArgs recorded;
  tpcoord::TpInitRecordToProto(*record, &recorded);
  std::cout << (created ? "recorded " : "matches the record: ") << DescribeArgs(recorded) << std::endl;
  return 0;
}

int Merge(CoordinatorClient& client) {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return UsageError("merge needs --config PATH");
  std::ifstream file(path, std::ios::binary);
  if (!file) return UsageError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  absl::StatusOr<std::string> merged =
      client.MergeConfig(absl::GetFlag(FLAGS_job), text.str(), absl::GetFlag(FLAGS_mpu));
  if (!merged.ok()) return Failed(merged.status());
  std::cout << nlohmann::json::parse(*merged).dump(2) << std::endl;
  return 0;
}

int Jobs(CoordinatorClient& client) {
  absl::StatusOr<std::vector<v1::JobStatus>> jobs = client.ListJobs();
  if (!jobs.ok()) return Failed(jobs.status());
  std::cout << absl::StrFormat("%-32s %-10s %-16s %-6s %s\n", "JOB", "GENERATION", "PHASE", "WORLD", "TP_MODEL_INIT");
  for (const v1::JobStatus& job : *jobs) {
    // A closed job's phase is its generation's, marked closed ("running,closed"; "closed" before any).
    std::string phase = job.generation() == 0 && job.closed() ? "" : PhaseName(job.phase());
    if (job.closed()) phase = phase.empty() ? "closed" : absl::StrCat(phase, ",closed");
    std::cout << absl::StrFormat("%-32s %-10d %-16s %-6d %s\n", job.job_id(), job.generation(), phase,
                                 job.world_size(), job.tp_init_recorded() ? DescribeArgs(job.tp_init()) : "-");
  }
  return 0;
}

int Create(CoordinatorClient& client, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl create ID [--job-token-file F]");
  std::string job_token;
  if (const std::string path = absl::GetFlag(FLAGS_job_token_file); !path.empty()) {
    absl::StatusOr<std::string> read = tpcoord::ReadSecretFile(path);
    if (!read.ok()) return UsageError(absl::StrCat("--job-token-file: ", read.status().message()));
    job_token = *read;
  }
  if (absl::Status s = client.CreateJob(job_id, job_token); !s.ok()) return Failed(s);
  std::cout << "created job " << job_id << std::endl;
  return 0;
}

int Delete(CoordinatorClient& client, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl delete ID [--force]");
  if (absl::Status s = client.DeleteJob(job_id, absl::GetFlag(FLAGS_force)); !s.ok()) return Failed(s);
  std::cout << "deleted job " << job_id << std::endl;
  return 0;
}

int Close(CoordinatorClient& client, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl close ID [--reason TEXT]");
  if (absl::Status s = client.CloseJob(job_id, absl::GetFlag(FLAGS_reason)); !s.ok()) return Failed(s);
  std::cout << "closed job " << job_id << std::endl;
  return 0;
}

int Job(CoordinatorClient& client, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl job ID");
  absl::StatusOr<v1::JobStatus> job = client.GetJob(job_id);
  if (!job.ok()) return Failed(job.status());
  PrintJob(*job, true);
  return 0;
}

// One line per job, redrawn in place on a terminal (printed again when it changes otherwise), until every
// job watched has completed (exit 0), one is gone (exit 1), or --count refreshes.
int Watch(CoordinatorClient& client, std::vector<std::string> job_ids) {
  const bool terminal = isatty(STDOUT_FILENO);
  const int count = absl::GetFlag(FLAGS_count);
  std::map<std::string, std::string> shown;  // what each job's line said last
  size_t lines_drawn = 0;
  for (int i = 1;; ++i) {
    std::vector<v1::JobStatus> jobs;
    if (job_ids.empty()) {
      absl::StatusOr<std::vector<v1::JobStatus>> all = client.ListJobs();
      if (!all.ok()) return Failed(all.status());
      jobs = *std::move(all);
    } else {
      for (const std::string& id : job_ids) {
        absl::StatusOr<v1::JobStatus> job = client.GetJob(id);
        if (!job.ok()) return Failed(job.status());
        jobs.push_back(*std::move(job));
      }
    }
    bool all_completed = !jobs.empty();
    if (terminal && lines_drawn > 0) std::cout << "\33[" << lines_drawn << "A";
    for (const v1::JobStatus& job : jobs) {
      all_completed = all_completed && job.phase() == v1::PHASE_COMPLETED;
      const std::string line = WatchLine(job);
      if (terminal) {
        std::cout << "\r\33[2K" << line << "\n";
      } else if (shown[job.job_id()] != line) {
        std::cout << absl::FormatTime("%H:%M:%S ", absl::Now(), absl::LocalTimeZone()) << line << "\n";
      }
      shown[job.job_id()] = line;
    }
    lines_drawn = jobs.size();
    std::cout.flush();
    if ((count > 0 && i >= count) || (count == 0 && all_completed)) return 0;
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_interval)));
  }
}

std::string UnixTime(int64_t ms) {
  if (ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(ms), absl::LocalTimeZone());
}

// The job's generations, oldest first: when each started, how long it lasted, how it ended and why.
int Events(CoordinatorClient& client, const std::string& job_id) {
  if (job_id.empty()) return UsageError("give the job id: tpctl events ID");
  absl::StatusOr<v1::JobStatus> job = client.GetJob(job_id);
  if (!job.ok()) return Failed(job.status());
  std::cout << absl::StrFormat("%-10s %-19s %-10s %-10s %-5s %-15s %-4s %s\n", "GENERATION", "STARTED", "DURATION",
                               "OUTCOME", "WORLD", "CAUSE", "RANK", "REASON");
  const int64_t now = absl::ToUnixMillis(absl::Now());
  for (const v1::GenerationEvent& e : job->history()) {
    const int64_t end = e.ended_unix_ms() > 0 ? e.ended_unix_ms() : now;
    const std::string duration = e.started_unix_ms() > 0 ? Millis(end - e.started_unix_ms()) : "-";
    const std::string row =
        absl::StrFormat("%-10d %-19s %-10s %-10s %-5d %-15s %-4s %s", e.generation(), UnixTime(e.started_unix_ms()),
                        duration, PhaseName(e.phase()), e.world_size(), e.end_cause().empty() ? "-" : e.end_cause(),
                        e.end_rank() < 0 ? "-" : std::to_string(e.end_rank()), e.end_reason());
    std::cout << absl::StripTrailingAsciiWhitespace(row) << "\n";
  }
  return 0;
}

int Health(CoordinatorClient& client) {
  absl::StatusOr<bool> serving = client.Serving();
  if (!serving.ok()) return Failed(serving.status());
  std::cout << (*serving ? "SERVING" : "NOT_SERVING") << std::endl;
  return *serving ? 0 : kExitFailure;
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
      "  tpctl [--coordinator HOST:PORT] watch [ID...] [--interval 1s] [--count N]\n"
      "  tpctl [--coordinator HOST:PORT] events ID\n"
      "  tpctl [--coordinator HOST:PORT] delete ID [--force]\n"
      "  tpctl [--coordinator HOST:PORT] close ID [--reason TEXT]\n"
      "  tpctl [--coordinator HOST:PORT] health");
  if (const char* env = std::getenv("TPCOORD_COORDINATOR"); env && *env) absl::SetFlag(&FLAGS_coordinator, env);
  std::vector<char*> args = tpcoord::InitProcess(argc, argv);
  if (args.size() < 2) return UsageError("no command given");
  const std::string command = args[1];

  absl::StatusOr<tpcoord::ClientCredentials> credentials = tpcoord::ClientCredentialsFromFlags();
  if (!credentials.ok()) return UsageError(std::string(credentials.status().message()));
  // One attempt per call, within --timeout: a person at a terminal wants the answer, or the reason there
  // is none, at once.
  tpcoord::ClientOptions options;
  options.address = absl::GetFlag(FLAGS_coordinator);
  options.credentials = *credentials;
  options.call_timeout = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_timeout));
  options.retry_budget = tpcoord::Millis(0);
  options.wait_for_ready = false;
  // A watch outlives blips: each refresh is retried within --timeout, and follows a new HA leader.
  if (command == "watch") options.retry_budget = options.call_timeout;
  CoordinatorClient client(options);
  if (command == "create") return Create(client, JobArg(args));
  if (command == "record") return Record(client);
  if (command == "merge") return Merge(client);
  if (command == "jobs") return Jobs(client);
  if (command == "job") return Job(client, JobArg(args));
  if (command == "watch") {
    std::vector<std::string> ids(args.begin() + 2, args.end());
    if (ids.empty() && !absl::GetFlag(FLAGS_job).empty()) ids.push_back(absl::GetFlag(FLAGS_job));
    return Watch(client, ids);
  }
  if (command == "events") return Events(client, JobArg(args));
  if (command == "delete") return Delete(client, JobArg(args));
  if (command == "close") return Close(client, JobArg(args));
  if (command == "health") return Health(client);
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
