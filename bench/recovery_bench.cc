// recovery_bench: how long a TP=2 x DP=2 job of real tp-worker processes takes to train again after one of
// its workers dies (kill -9), crashes (kill -9 of its trainer) or hangs (SIGSTOP), split into the parts a user waits for, and how many steps
// it loses; next to what torchrun does on any failure (every worker stopped and started again), measured in
// the same run.
//
//   build/bench/recovery_bench [--lease 3s] [--preset tiny]
//
// Each scenario is a real job: a tp-coordinator and four tp-workers (--max-restarts 3, a checkpoint every
// 10 steps) training the --preset model. At step 25 the bench injects the failure; for a death, the same
// command is started again at once (what compose or Kubernetes do); for a hang, the frozen worker is
// killed and replaced once the survivors were told. Times come from watching the processes' output (5 ms
// polls) and rank 0's printed start-up phases:
//   detect      the failure -> the coordinator ends the generation naming the failed rank
//   rejoin      -> the next generation's world is complete (survivors restarted, the replacement joined)
//   comm        merge + communicator set-up + sharding, as rank 0 prints them
//   state load  the checkpoint read, as rank 0 prints it
//   training    the failure -> rank 0 prints the first step of the new generation
//   lost        steps done before the failure that are trained again (since the newest checkpoint)
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/process_init.h"
#include "tests/support/coordinator_process.h"

ABSL_FLAG(absl::Duration, lease, absl::Seconds(3), "the coordinator's heartbeat lease");
ABSL_FLAG(std::string, preset, "tiny", "Llama preset of the job");

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;
using testing::Subprocess;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The first moment `text()` holds `needle` after `from` (polled every 5 ms), or nullopt after `timeout`.
std::optional<Clock::time_point> Await(const std::function<std::string()>& text, const std::string& needle,
                                       size_t from = 0, std::chrono::seconds timeout = std::chrono::seconds(120)) {
  const Clock::time_point deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    const std::string t = text();
    if (t.size() > from && t.find(needle, from) != std::string::npos) return Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

// The seconds rank 0 printed for start-up `phase` in the line after `from` ("startup: join 0.2s, ...").
double Phase(const std::string& out, size_t from, const std::string& phase) {
  const size_t line = out.find("startup: ", from);
  if (line == std::string::npos) return 0;
  const std::string startup = out.substr(line, out.find('\n', line) - line);
  for (absl::string_view part : absl::StrSplit(startup.substr(9), ", ")) {
    std::vector<std::string> f = absl::StrSplit(part, ' ');
    double seconds = 0;
    if (f.size() == 2 && f[0] == phase && absl::SimpleAtod(absl::StripSuffix(f[1], "s"), &seconds)) return seconds;
  }
  return 0;
}

// The highest "step N/" rank 0 printed before byte `end`.
int64_t LastStep(const std::string& out, size_t end) {
  int64_t last = 0;
  for (absl::string_view line : absl::StrSplit(out.substr(0, end), '\n')) {
    int64_t step = 0;
    if (absl::ConsumePrefix(&line, "step ") && absl::SimpleAtoi(line.substr(0, line.find('/')), &step)) last = step;
  }
  return last;
}

struct Recovery {
  double detect = 0, rejoin = 0, comm = 0, load = 0, training = 0;
  int64_t lost = 0;
  std::string error;
};

Recovery Failed(std::string why) {
  Recovery r;
  r.error = std::move(why);
  return r;
}

enum class Fault { kTrainer, kDeath, kHang, kEveryWorker };

// The trainer process that tp-worker `supervisor` forked.
pid_t TrainerOf(pid_t supervisor) {
  std::ifstream children(absl::StrCat("/proc/", supervisor, "/task/", supervisor, "/children"));
  pid_t pid = -1;
  children >> pid;
  return pid;
}

Recovery Measure(const std::string& dir, const std::string& name, Fault fault) {
  const std::string config = absl::StrCat(dir, "/config.json");
  std::ofstream(config) << R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "steps_per_print": 1,)"
                           R"( "optimizer": {"type": "AdamW", "params": {"lr": 0.001}},)"
                           R"( "tpcoord": {"steps": 400, "seq_len": 32, "eval_windows": 8, "checkpoint_interval": 10}})";
  auto coordinator = testing::CoordinatorProcess::Start(
      absl::StrCat(dir, "/state-", name), {"--lease", absl::FormatDuration(absl::GetFlag(FLAGS_lease))});
  if (!coordinator.ok()) return Failed(std::string(coordinator.status().message()));
  auto worker = [&](int rank) {
    return *Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", (*coordinator)->address(), "--job", name,
         "--world-size", "4", "--rank", std::to_string(rank), "--tp-size", "2", "--host", "127.0.0.1", "--config",
         config, "--random-init", absl::GetFlag(FLAGS_preset), "--data",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--output-dir",
         absl::StrCat(dir, "/out-", name), "--max-restarts", "3", "--timeout", "60s"},
        testing::TokenEnv());
  };
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int rank = 0; rank < 4; ++rank) workers.push_back(worker(rank));
  auto rank0 = [&] { return workers[0]->Stdout(); };
  auto log = [&] { return (*coordinator)->process().Stdout() + (*coordinator)->process().Stderr(); };
  if (!Await(rank0, "\nstep 25/")) return Failed("the job never reached step 25:\n" + workers[0]->Stderr());

  const pid_t trainer = TrainerOf(workers[1]->pid());
  const Clock::time_point failed = Clock::now();
  if (fault == Fault::kTrainer) {
    kill(trainer, SIGKILL);
  } else {
    for (int rank = 0; rank < 4; ++rank) {
      if (fault == Fault::kEveryWorker || rank == 1) workers[rank]->SignalGroup(fault == Fault::kHang ? SIGSTOP : SIGKILL);
    }
  }
  std::optional<Clock::time_point> detected = Await(log, "generation 1: ended: ");
  if (!detected) return Failed("the coordinator never ended generation 1");
  const int64_t last = LastStep(rank0(), std::string::npos);
  const size_t before = fault == Fault::kEveryWorker ? 0 : rank0().size();
  if (fault == Fault::kHang) workers[1]->SignalGroup(SIGKILL);
  for (int rank = 0; rank < 4; ++rank) {
    if (fault == Fault::kEveryWorker || (rank == 1 && fault != Fault::kTrainer)) {
      (void)workers[rank]->Wait(std::chrono::seconds(10));
      workers[rank] = worker(rank);  // the same command, started again
    }
  }
  std::optional<Clock::time_point> running = Await(log, "generation 2: running: ");
  if (!running) return Failed("generation 2 never ran:\n" + workers[0]->Stderr());
  if (!Await(rank0, "generation 2: world", before)) return Failed("rank 0 never started generation 2:\n" + rank0());
  const size_t generation2 = rank0().find("generation 2: world", before);
  std::optional<Clock::time_point> trained = Await(rank0, "\nstep ", generation2);
  if (!trained) return Failed("no step in generation 2:\n" + rank0());
  const std::string out = rank0();
  int64_t resumed = 0;
  if (const size_t at = out.find(" at step ", before); at != std::string::npos) {
    (void)absl::SimpleAtoi(out.substr(at + 9, out.find('\n', at) - at - 9), &resumed);
  }
  Recovery r;
  r.detect = Seconds(*detected - failed);
  r.rejoin = Seconds(*running - *detected);
  r.comm = Phase(out, generation2, "merge") + Phase(out, generation2, "comm_init") + Phase(out, generation2, "shard");
  r.load = Phase(out, generation2, "resume");
  r.training = Seconds(*trained - failed);
  r.lost = last - resumed;
  for (auto& w : workers) w->SignalGroup(SIGKILL);
  return r;
}

int Main() {
  const std::string dir = testing::MakeTempDir("recovery-bench");
  const double lease = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_lease));
  std::printf("recovery_bench: tp 2 x dp 2 tp-worker processes, preset %s, lease %.1f s, a checkpoint every 10 steps, "
              "failure at step 25, %u cores\n\n",
              absl::GetFlag(FLAGS_preset).c_str(), lease, std::thread::hardware_concurrency());
  std::printf("%-40s %8s %8s %8s %10s %10s %6s\n", "failure", "detect", "rejoin", "comm", "state load", "training",
              "lost");
  std::map<Fault, Recovery> results;
  for (const auto& [fault, name, label] :
       {std::tuple{Fault::kTrainer, "crash", "kill -9 of one trainer (a crash)"},
        std::tuple{Fault::kDeath, "death", "kill -9 of one worker (+ replacement)"},
        std::tuple{Fault::kHang, "hang", "SIGSTOP of one worker (+ replacement)"},
        std::tuple{Fault::kEveryWorker, "torchrun", "baseline: every worker killed, restarted"}}) {
    const Recovery r = Measure(dir, name, fault);
    if (!r.error.empty()) {
      std::printf("%-40s failed: %s\n", label, r.error.c_str());
      return 1;
    }
    results[fault] = r;
    std::printf("%-40s %7.2fs %7.2fs %7.3fs %9.3fs %9.2fs %6lld\n", label, r.detect, r.rejoin, r.comm, r.load,
                r.training, static_cast<long long>(r.lost));
  }
  std::printf("\ndeath back to training: %.2f s (goal <= 3 s); hang: %.2f s (goal <= lease + 3 s = %.1f s)\n",
              results[Fault::kDeath].training, results[Fault::kHang].training, lease + 3);
  std::printf("a crash that the worker's supervisor restarts, no replacement needed: %.2f s\n",
              results[Fault::kTrainer].training);
  std::printf("baseline (torchrun's restart of every worker) / death: %.2fx\n",
              results[Fault::kEveryWorker].training / results[Fault::kDeath].training);
  return 0;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::InitProcess(argc, argv);
  return tpcoord::Main();
}
