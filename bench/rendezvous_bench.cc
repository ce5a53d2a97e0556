// rendezvous_bench: how fast N workers get through a job's whole start-up protocol, against a real
// tp-coordinator process, compared with the same protocol shape over LibTorch's c10d::TCPStore (the store
// torchrun uses), both with the same number of client connections, in the same run.
//
//   build/bench/rendezvous_bench [--workers 1000,10000,100000] [--tp-size 8] [--connections 16] [--tls]
//                                [--against OLD/tp-coordinator [--against-rounds 3]]
//
// Protocol per simulated worker (tpcoord): record the TP init args -> Join -> merge the config -> publish
// the IDs of the roots it is and get the rest of its TP, DP and world groups' ID arrays (one root per 256
// ranks: the world of 10,000 starts from 40 IDs) -> barrier. tp-worker runs it as three calls on its member
// session (SessionRun); --unary also runs it as one unary RPC per step (UnaryRun), for comparison. Workers are
// asynchronous gRPC callback clients multiplexed over --connections channels; IDs are 128 random bytes
// (the coordinator cannot tell them from ncclGetUniqueId output, and 10,000 NCCL bootstrap sockets would
// measure the kernel, not the rendezvous).
//
// Every call carries the job's token and each simulated worker its own member key, as real workers do;
// with --tls (the default) the same protocol runs a second time over mutual TLS (certificates made by
// deploy/make-secrets.sh), and the cost of TLS is printed against plaintext, measured in the same run.
//
// The TCPStore baseline runs the same steps as torchrun-style store operations: compareSet of the TP init
// args, add + wait to join (rank = add order), set + get to compare configs with rank 0's, one set or get per
// group's IDs, add + wait for the barrier. TCPStore clients are synchronous, so each connection's thread
// walks its share of the workers through one step at a time (a blocking wait only after every worker
// has issued the step's writes); its server runs in a separate process, as the coordinator does.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/mesh.h"
#include "common/process_init.h"
#include "common/secrets.h"
#include "common/wire.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/subprocess.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"
#include "tpcoord/v1/relay.pb.h"

ABSL_FLAG(std::string, workers, "1000,10000", "comma-separated numbers of simulated workers");
ABSL_FLAG(int, tp_size, 8, "tensor-parallel size");
ABSL_FLAG(int, connections, 16, "client connections (gRPC channels / TCPStore clients)");
ABSL_FLAG(bool, baseline, true, "also run the c10d::TCPStore baseline");
ABSL_FLAG(bool, unary, true, "also run tpcoord's rendezvous as unary calls (without member sessions)");
ABSL_FLAG(bool, tls, true, "also run tpcoord over mutual TLS");
ABSL_FLAG(bool, metrics, true, "also run tpcoord serving its metrics port (every call counted and timed)");
ABSL_FLAG(bool, etcd, true, "also run tpcoord with its state in a 3-member etcd cluster (HA), if etcd-server is installed");
ABSL_FLAG(int, ranks_per_node, 8,
          "also run tpcoord as tp-agents do: one session per node carrying its ranks (0: not)");
ABSL_FLAG(int, per_rank_up_to, 20000,
          "above this many workers only the tp-agent run (and the baseline): one session per rank needs about 100 KB "
          "of coordinator memory per rank");
ABSL_FLAG(std::string, against, "",
          "also compare with another tp-coordinator binary (an older build): --against-rounds rounds, each running "
          "this build's and that one's on member sessions back to back, and the ratio of their medians");
ABSL_FLAG(int, against_rounds, 3, "rounds of the --against comparison");
ABSL_FLAG(int, tcpstore_server, 0, "internal: host a TCPStore server on this port and wait for stdin to close");

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = tpcoord::v1;

constexpr const char* kConfig =
    R"({"train_batch_size": 1024, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
        "bf16": {"enabled": true}, "optimizer": {"type": "AdamW", "params": {"lr": 0.0003}},
        "tensor_parallel": {"autotp_size": 8}, "steps_per_print": 10})";
constexpr int kPhases = 5;
constexpr const char* kPhaseNames[kPhases] = {"record", "join", "merge", "unique_ids", "barrier"};

constexpr const char* kToken = "rendezvous-bench-job-token-0123456789abcdef";

// Files of mutual TLS: a server certificate and key, a client certificate and key, their CA. Empty: none.
struct TlsFiles {
  std::string dir;
  bool enabled() const { return !dir.empty(); }
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string RandomId(std::mt19937_64& rng) {
  std::string id(128, '\0');
  for (char& c : id) c = static_cast<char>(rng());
  return id;
}

// Peak resident set of a process, in MiB.
double PeakRssMiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    int64_t kib;
    if (absl::StartsWith(line, "VmHWM:") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(line.substr(6), "kB")), &kib)) {
      return kib / 1024.0;
    }
  }
  return -1;
}

// User + system CPU seconds a process has used so far.
double CpuSeconds(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::vector<std::string> fields = absl::StrSplit(text.substr(text.rfind(')') + 2), ' ');
  int64_t utime = 0, stime = 0;
  if (fields.size() > 12 && absl::SimpleAtoi(fields[11], &utime) && absl::SimpleAtoi(fields[12], &stime)) {
    return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
  }
  return -1;
}

struct Result {
  double phase_end[kPhases] = {};  // seconds from the start until the last worker finished the phase
  double total = 0;
  double calls_per_worker = 0;
  int max_calls = 0;
  double server_rss_mib = 0;
  double server_cpu_s = 0;
  int failures = 0;
  std::string first_error;
  bool session = false;  // record, join and merge were one call: one phase
  int ranks_per_node = 0;  // > 0: one session per node (tp-agent's), messages counted per node
};

// --- tpcoord: asynchronous simulated workers ------------------------------------------------------------

// What the two ways of talking to the coordinator share: N simulated workers started at once, each
// reporting its phases and its messages, until all are done.
class Simulation {
 public:
  Simulation(int workers, int tp_size, std::vector<std::unique_ptr<v1::Coordinator::Stub>>* stubs,
             int ranks_per_node = 8)
      : n_(workers),
        tp_size_(tp_size),
        ranks_per_node_(ranks_per_node),
        mesh_(*Mesh::Create(workers, tp_size)),
        stubs_(stubs),
        messages_(workers) {}
  virtual ~Simulation() = default;

  Result Run() {
    start_ = Clock::now();
    for (int i = 0; i < n_; ++i) Begin(i);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return finished_ == n_; });
    Result r;
    for (int p = 0; p < kPhases; ++p) r.phase_end[p] = Seconds(phase_end_[p] - start_);
    r.total = r.phase_end[kPhases - 1];
    int64_t messages = 0, senders = 0;
    for (int m : messages_) {
      messages += m;
      senders += m > 0;
      r.max_calls = std::max(r.max_calls, m);
    }
    r.calls_per_worker = static_cast<double>(messages) / std::max<int64_t>(senders, 1);
    r.failures = failures_;
    r.first_error = first_error_;
    return r;
  }

 protected:
  virtual void Begin(int i) = 0;

  v1::Coordinator::Stub* StubFor(int i) { return (*stubs_)[i % stubs_->size()].get(); }
  static std::string MemberKey(int i) { return absl::StrCat("bench-member-key-of-worker-", i); }
  static void AddCredentials(grpc::ClientContext* ctx, int i) {
    ctx->AddMetadata(std::string(kAuthorizationMetadata), absl::StrCat("Bearer ", kToken));
    ctx->AddMetadata(std::string(kMemberKeyMetadata), MemberKey(i));
  }
  v1::JoinRequest JoinOf(int i) const {
    v1::JoinRequest req;
    req.set_job_id(kJob);
    req.set_worker_id(absl::StrCat("worker-", i));
    req.set_host(absl::StrCat("node-", i / ranks_per_node_));
    req.set_world_size(n_);
    req.set_wait_timeout_ms(100000);
    return req;
  }
  // The IDs of the roots `rank` is, and the groups it needs the IDs of.
  void UniqueIdsOf(int rank, v1::PublishUniqueIdRequest* publish, v1::GetUniqueIdRequest* get) const {
    thread_local std::mt19937_64 rng(std::random_device{}());
    for (const UniqueIdSlot& slot : mesh_.RootSlotsOf(rank)) {
      v1::UniqueId* id = publish->add_ids();
      *id->mutable_group() = GroupIdToProto(slot.group);
      id->set_root(slot.root);
      id->set_id(RandomId(rng));
    }
    for (const GroupId& group : {mesh_.tp_group_of(rank), mesh_.dp_group_of(rank), GroupId{GroupKind::kWorld, 0}}) {
      if (mesh_.UniqueIdRoots(group) > 1 || mesh_.Leader(group) != rank) *get->add_groups() = GroupIdToProto(group);
    }
    get->set_wait_timeout_ms(100000);
  }

  void PhaseDone(int phase) {
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    phase_end_[phase] = std::max(phase_end_[phase], now);
    if (phase == kPhases - 1 && ++finished_ == n_) done_cv_.notify_all();
  }

  void Fail(int i, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failures_++ == 0) first_error_ = absl::StrCat("worker ", i, ": ", why);
    if (++finished_ == n_) done_cv_.notify_all();
  }

  static constexpr const char* kJob = "bench";
  const int n_;
  const int tp_size_;
  const int ranks_per_node_;
  const Mesh mesh_;
  std::vector<std::unique_ptr<v1::Coordinator::Stub>>* stubs_;
  std::vector<int> messages_;  // per worker: calls (unary) or messages up (session)

 private:
  Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  Clock::time_point phase_end_[kPhases] = {};
  int finished_ = 0;
  int failures_ = 0;
  std::string first_error_;
};

// The whole rendezvous on one member session per worker: three calls up its stream, three answers down.
//   1: record + join + merge_config   2: publish_unique_id (roots) + get_unique_id   3: barrier
// (between 2 and 3 a real worker builds its communicators). Streams stay open until the run is over, as a
// member's session does for its membership.
class SessionRun final : public Simulation {
 public:
  using Simulation::Simulation;
  ~SessionRun() override {
    for (auto& w : workers_) w->ctx.TryCancel();
    std::unique_lock<std::mutex> lock(streams_mu_);
    streams_cv_.wait(lock, [&] { return open_streams_ == 0; });
  }

 private:
  class Worker final : public grpc::ClientBidiReactor<v1::SessionRequest, v1::SessionEvent> {
   public:
    Worker(SessionRun* run, int i) : run_(run), i_(i) {}

    void Start() {
      AddCredentials(&ctx, i_);
      run_->StubFor(i_)->async()->Session(&ctx, this);
      v1::SessionRequest first;
      first.set_call_id(1);
      v1::RecordTpInitArgsRequest* record = first.mutable_record();
      record->set_job_id(kJob);
      record->set_tp_size(run_->tp_size_);
      record->set_dtype(v1::DTYPE_BF16);
      *first.mutable_join() = run_->JoinOf(i_);
      first.mutable_merge_config()->set_config_json(kConfig);
      StartRead(&event_);
      Write(std::move(first));
      StartCall();
    }

    void OnReadDone(bool ok) override {
      if (!ok) return;  // the stream ended: OnDone tells how
      if (event_.status_code() != 0) {
        run_->Fail(i_, absl::StrCat("call ", event_.call_id(), ": ", event_.status_message()));
        return;
      }
      v1::SessionRequest next;
      next.set_call_id(event_.call_id() + 1);
      switch (event_.call_id()) {
        case 1: {
          run_->PhaseDone(0);
          run_->PhaseDone(1);
          run_->PhaseDone(2);
          v1::PublishUniqueIdRequest publish;
          v1::GetUniqueIdRequest get;
          run_->UniqueIdsOf(event_.join().rank(), &publish, &get);
          if (publish.ids_size() > 0) *next.mutable_publish_unique_id() = std::move(publish);
          if (get.groups_size() > 0) *next.mutable_get_unique_id() = std::move(get);
          break;
        }
        case 2:
          run_->PhaseDone(3);
          next.mutable_barrier()->set_name("ready");
          next.mutable_barrier()->set_wait_timeout_ms(100000);
          break;
        case 3:
          run_->PhaseDone(4);
          return;  // no more reads: the stream stays open until the run is over
      }
      StartRead(&event_);
      Write(std::move(next));
    }

    void OnWriteDone(bool ok) override {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (ok && pending_) {
        out_ = *std::move(pending_);
        pending_.reset();
        writing_ = true;
        StartWrite(&out_);
      }
    }

    void OnDone(const grpc::Status& s) override {
      if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) run_->Fail(i_, s.error_message());
      run_->StreamClosed();
    }

    grpc::ClientContext ctx;

   private:
    // One write at a time: an answer may arrive before the write it answers reports done.
    void Write(v1::SessionRequest message) {
      run_->messages_[i_]++;
      std::lock_guard<std::mutex> lock(mu_);
      if (writing_) {
        pending_ = std::move(message);
        return;
      }
      out_ = std::move(message);
      writing_ = true;
      StartWrite(&out_);
    }

    SessionRun* const run_;
    const int i_;
    v1::SessionEvent event_;
    std::mutex mu_;
    v1::SessionRequest out_;
    std::optional<v1::SessionRequest> pending_;
    bool writing_ = false;
  };

  void Begin(int i) override {
    {
      std::lock_guard<std::mutex> lock(streams_mu_);
      ++open_streams_;
    }
    workers_.push_back(std::make_unique<Worker>(this, i));
    workers_.back()->Start();
  }

  void StreamClosed() {
    std::lock_guard<std::mutex> lock(streams_mu_);
    if (--open_streams_ == 0) streams_cv_.notify_all();
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex streams_mu_;
  std::condition_variable streams_cv_;
  int open_streams_ = 0;
};

// The rendezvous as tp-agents run it: one session per node, its ranks in the session's slots, every step
// of the node's ranks up in one message (a batch) and the answers down in batches:
//   1: record + join + merge_config of each rank
//   2: the unique IDs: a group whose ranks are all on the node is brokered by its agent (nothing goes up);
//      a group spanning nodes costs one publish per root on the node, and one get, by one of its ranks here,
//      whose answer (shared by the coordinator, never copied per receiver) the agent gives all of them
//   3: the barrier arrival of each rank
class AgentRun final : public Simulation {
 public:
  using Simulation::Simulation;
  using RelayStub = grpc::TemplatedGenericStub<v1::SessionRequest, v1::RelayedEvent>;
  ~AgentRun() override {
    for (auto& a : agents_) a->ctx.TryCancel();
    std::unique_lock<std::mutex> lock(streams_mu_);
    streams_cv_.wait(lock, [&] { return open_streams_ == 0; });
  }

 private:
  class Agent final : public grpc::ClientBidiReactor<v1::SessionRequest, v1::RelayedEvent> {
   public:
    Agent(AgentRun* run, int node, int first, int count)
        : run_(run), node_(node), first_(first), count_(count), ranks_(count, -1) {}

    void Start() {
      ctx.AddMetadata(std::string(kAuthorizationMetadata), absl::StrCat("Bearer ", kToken));
      ctx.AddMetadata(std::string(kMemberKeyMetadata), absl::StrCat("bench-member-key-of-agent-", node_));
      run_->relays_[node_ % run_->relays_.size()]->PrepareBidiStreamingCall(
          &ctx, "/tpcoord.v1.Coordinator/Session", grpc::StubOptions(), this);
      v1::SessionRequest joins;
      for (int slot = 0; slot < count_; ++slot) {
        v1::SessionRequest* call = joins.add_batch();
        call->set_member(slot);
        call->set_call_id(1 + slot);
        if (slot == 0) {  // the agent records its workers' identical tp_model_init arguments once
          v1::RecordTpInitArgsRequest* record = call->mutable_record();
          record->set_job_id(kJob);
          record->set_tp_size(run_->tp_size_);
          record->set_dtype(v1::DTYPE_BF16);
        }
        *call->mutable_join() = run_->JoinOf(first_ + slot);
        call->mutable_merge_config()->set_config_json(kConfig);
      }
      waiting_ = count_;
      StartRead(&event_);
      Write(std::move(joins));
      StartCall();
    }

    void OnReadDone(bool ok) override {
      if (!ok) return;  // the stream ended: OnDone tells how
      bool next_phase = false;
      for (const v1::RelayedEvent& e : event_.batch()) {
        if (e.call_id() == 0) continue;
        if (e.status_code() != 0) {
          run_->Fail(first_ + static_cast<int>(e.member()), absl::StrCat("call ", e.call_id(), ": ", e.status_message()));
          return;
        }
        if (e.call_id() <= static_cast<uint64_t>(count_)) {
          v1::JoinResponse join;  // the agent reads its members' ranks; the unique IDs it passes on undecoded
          join.ParseFromString(e.join());
          ranks_[e.member()] = join.rank();
        }
        next_phase |= --waiting_ == 0;
      }
      if (next_phase && !Next()) return;
      StartRead(&event_);
    }

    void OnWriteDone(bool) override {}

    void OnDone(const grpc::Status& s) override {
      if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) run_->Fail(first_, s.error_message());
      run_->StreamClosed();
    }

    grpc::ClientContext ctx;

   private:
    // The calls of the next phase; false once the node is done.
    bool Next() {
      ++phase_;
      for (int slot = 0; slot < count_; ++slot) {
        for (int p : phase_ == 1 ? std::vector<int>{0, 1, 2} : std::vector<int>{phase_ + 1}) run_->PhaseDone(p);
      }
      if (phase_ == 3) return false;
      v1::SessionRequest batch;
      if (phase_ == 1) UniqueIdCalls(&batch);
      for (int slot = 0; phase_ == 2 && slot < count_; ++slot) {
        v1::SessionRequest* call = batch.add_batch();
        call->set_member(slot);
        call->set_call_id(200 + slot);
        call->mutable_barrier()->set_name("ready");
        call->mutable_barrier()->set_wait_timeout_ms(100000);
      }
      waiting_ = batch.batch_size();
      if (waiting_ == 0) return Next();  // every group local: nothing to ask
      Write(std::move(batch));
      return true;
    }

    void UniqueIdCalls(v1::SessionRequest* batch) {
      thread_local std::mt19937_64 rng(std::random_device{}());
      const Mesh& mesh = run_->mesh_;
      std::set<int> here(ranks_.begin(), ranks_.end());
      std::set<GroupId> asked;
      for (int slot = 0; slot < count_; ++slot) {
        const int rank = ranks_[slot];
        v1::SessionRequest call;
        for (const GroupId& group : {mesh.tp_group_of(rank), mesh.dp_group_of(rank), GroupId{GroupKind::kWorld, 0}}) {
          if (mesh.GroupSize(group) <= count_) {
            const std::vector<int> ranks = mesh.Ranks(group);
            if (std::all_of(ranks.begin(), ranks.end(), [&](int r) { return here.count(r) > 0; })) continue;
          }
          for (const UniqueIdSlot& root : mesh.RootSlotsOf(rank)) {
            if (!(root.group == group)) continue;
            v1::UniqueId* id = call.mutable_publish_unique_id()->add_ids();
            *id->mutable_group() = GroupIdToProto(group);
            id->set_root(root.root);
            id->set_id(RandomId(rng));
          }
          if (asked.insert(group).second) *call.mutable_get_unique_id()->add_groups() = GroupIdToProto(group);
        }
        if (!call.has_publish_unique_id() && !call.has_get_unique_id()) continue;
        if (call.has_get_unique_id()) call.mutable_get_unique_id()->set_wait_timeout_ms(100000);
        call.set_member(slot);
        call.set_call_id(100 + slot);
        *batch->add_batch() = std::move(call);
      }
    }

    // Each phase sends one message, after the previous phase's answers: one write at a time.
    void Write(v1::SessionRequest message) {
      run_->messages_[first_]++;
      out_ = std::move(message);
      StartWrite(&out_);
    }

    AgentRun* const run_;
    const int node_;
    const int first_;  // the node's workers are first_ .. first_ + count_ - 1
    const int count_;
    std::vector<int> ranks_;  // by slot
    int phase_ = 0;
    int waiting_ = 0;  // answers the current phase still waits for
    v1::RelayedEvent event_;
    v1::SessionRequest out_;
  };

  void Begin(int i) override {
    if (i % ranks_per_node_ != 0) return;
    {
      std::lock_guard<std::mutex> lock(streams_mu_);
      ++open_streams_;
    }
    agents_.push_back(std::make_unique<Agent>(this, i / ranks_per_node_, i, std::min(ranks_per_node_, n_ - i)));
    agents_.back()->Start();
  }

  void StreamClosed() {
    std::lock_guard<std::mutex> lock(streams_mu_);
    if (--open_streams_ == 0) streams_cv_.notify_all();
  }

  std::vector<std::unique_ptr<Agent>> agents_;
 public:
  std::vector<std::unique_ptr<RelayStub>> relays_;  // one per connection

 private:
  std::mutex streams_mu_;
  std::condition_variable streams_cv_;
  int open_streams_ = 0;
};

// The same rendezvous as unary calls, one per step and worker (what a client without a session does).
class UnaryRun final : public Simulation {
 public:
  using Simulation::Simulation;

 private:
  void Begin(int i) override { Record(i); }

  // Sends one asynchronous call; `next` runs on a gRPC thread with the response.
  template <typename Req, typename Resp, typename Invoke, typename Next>
  void Send(int i, Req req, Invoke invoke, Next next) {
    struct Call {
      grpc::ClientContext ctx;
      Req req;
      Resp resp;
    };
    auto* call = new Call;
    call->req = std::move(req);
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    AddCredentials(&call->ctx, i);
    messages_[i]++;
    invoke(StubFor(i)->async(), &call->ctx, &call->req, &call->resp, [this, i, call, next](grpc::Status s) {
      if (s.ok()) {
        next(call->resp);
      } else {
        Fail(i, s.error_message());
      }
      delete call;
    });
  }

  void Record(int i) {
    v1::RecordTpInitArgsRequest req;
    req.set_job_id(kJob);
    req.set_tp_size(tp_size_);
    req.set_dtype(v1::DTYPE_BF16);
    Send<v1::RecordTpInitArgsRequest, v1::RecordTpInitArgsResponse>(
        i, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) { a->RecordTpInitArgs(c, q, r, cb); },
        [this, i](const v1::RecordTpInitArgsResponse&) {
          PhaseDone(0);
          Join(i);
        });
  }

  void Join(int i) {
    Send<v1::JoinRequest, v1::JoinResponse>(
        i, JoinOf(i), [](auto* a, auto* c, auto* q, auto* r, auto cb) { a->Join(c, q, r, cb); },
        [this, i](const v1::JoinResponse& resp) {
          state_[i].generation = resp.generation();
          state_[i].rank = resp.rank();
          PhaseDone(1);
          Merge(i);
        });
  }

  void Merge(int i) {
    v1::MergeConfigRequest req;
    req.set_job_id(kJob);
    req.set_config_json(kConfig);
    req.set_generation(state_[i].generation);
    req.set_rank(state_[i].rank);
    Send<v1::MergeConfigRequest, v1::MergeConfigResponse>(
        i, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) { a->MergeConfig(c, q, r, cb); },
        [this, i](const v1::MergeConfigResponse&) {
          PhaseDone(2);
          UniqueIds(i);
        });
  }

  void UniqueIds(int i) {
    Worker& w = state_[i];
    v1::PublishUniqueIdRequest publish;
    v1::GetUniqueIdRequest get;
    UniqueIdsOf(w.rank, &publish, &get);
    w.pending_ids = (publish.ids_size() > 0) + (get.groups_size() > 0);
    auto one_done = [this, i] {
      if (--state_[i].pending_ids == 0) {
        PhaseDone(3);
        Barrier(i);
      }
    };
    if (publish.ids_size() > 0) {
      publish.set_job_id(kJob);
      publish.set_generation(w.generation);
      publish.set_rank(w.rank);
      Send<v1::PublishUniqueIdRequest, v1::PublishUniqueIdResponse>(
          i, publish, [](auto* a, auto* c, auto* q, auto* r, auto cb) { a->PublishUniqueId(c, q, r, cb); },
          [one_done](const v1::PublishUniqueIdResponse&) { one_done(); });
    }
    if (get.groups_size() > 0) {
      get.set_job_id(kJob);
      get.set_generation(w.generation);
      get.set_rank(w.rank);
      Send<v1::GetUniqueIdRequest, v1::GetUniqueIdResponse>(
          i, get, [](auto* a, auto* c, auto* q, auto* r, auto cb) { a->GetUniqueId(c, q, r, cb); },
          [one_done](const v1::GetUniqueIdResponse&) { one_done(); });
    }
  }

  void Barrier(int i) {
    v1::BarrierRequest req;
    req.set_job_id(kJob);
    req.set_generation(state_[i].generation);
    req.set_rank(state_[i].rank);
    req.set_name("ready");
    req.set_wait_timeout_ms(100000);
    Send<v1::BarrierRequest, v1::BarrierResponse>(
        i, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) { a->Barrier(c, q, r, cb); },
        [this](const v1::BarrierResponse&) { PhaseDone(4); });
  }

  struct Worker {
    uint64_t generation = 0;
    int rank = -1;
    std::atomic<int> pending_ids{0};
  };
  std::vector<Worker> state_{static_cast<size_t>(n_)};
};

// `state_store`: --state-store of the coordinator ("": SQLite in a fresh state directory).
// `session`: the whole rendezvous on member sessions (else unary calls).
// `metrics`: with --metrics-listen, which counts and times every call.
// `binary`: the tp-coordinator to run ("": this build's). `ranks_per_node` > 0: as tp-agents (AgentRun).
Result RunTpcoord(bool session, int workers, int tp_size, int connections, const TlsFiles& tls,
                  const std::string& state_store = "", bool metrics = false, const std::string& binary = "",
                  int ranks_per_node = 0) {
  std::vector<std::string> argv = {binary.empty() ? testing::BinPath("coordinator/tp-coordinator") : binary,
                                   "--listen", "127.0.0.1:0",
                                   "--state-dir", testing::MakeTempDir("bench-state"), "--lease", "300s"};
  if (metrics) argv.insert(argv.end(), {"--metrics-listen", "127.0.0.1:0"});
  if (!state_store.empty()) argv.insert(argv.end(), {"--state-store", state_store});
  if (tls.enabled()) {
    argv.insert(argv.end(), {"--tls-cert", tls.dir + "/server/tls.crt", "--tls-key", tls.dir + "/server/tls.key",
                             "--tls-client-ca", tls.dir + "/server/ca.crt"});
  }
  auto coordinator = testing::Subprocess::Start(argv);
  if (!coordinator.ok()) {
    Result r;
    r.failures = workers;
    r.first_error = std::string(coordinator.status().message());
    return r;
  }
  const std::string line = *(*coordinator)->WaitForLine("tp-coordinator listening on ", std::chrono::seconds(30));
  const std::string address = line.substr(line.rfind(' ') + 1);
  // On etcd it listens as a standby first: start once it leads.
  for (int i = 0; i < 3000 && !state_store.empty() &&
                  (*coordinator)->Stderr().find("serving on") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The channels outlive the run on purpose: gRPC 1.51 frees the process-wide completion queue behind
  // its callback API when the last channel that used it goes away, racing with the thread that polls it
  // (a heap corruption seen here about one run in ten). Channels are cheap; the process ends soon.
  static auto* retained = new std::vector<std::shared_ptr<grpc::Channel>>;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (tls.enabled()) {
    // An unreadable file leaves its PEM empty: the handshake fails and every call counts as failed.
    auto pem = [&](const char* name) { return ReadCredentialFile(tls.dir + "/client/" + name).value_or(""); };
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem("ca.crt");
    ssl.pem_cert_chain = pem("tls.crt");
    ssl.pem_private_key = pem("tls.key");
    credentials = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> stubs;
  for (int c = 0; c < connections; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // one TCP connection per channel
    auto channel = grpc::CreateCustomChannel(address, credentials, args);
    channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
    retained->push_back(channel);
    stubs.push_back(v1::Coordinator::NewStub(channel));
  }
  std::unique_ptr<Simulation> run;
  if (ranks_per_node > 0) {
    auto agents = std::make_unique<AgentRun>(workers, tp_size, &stubs, ranks_per_node);
    for (size_t c = retained->size() - connections; c < retained->size(); ++c) {
      agents->relays_.push_back(std::make_unique<AgentRun::RelayStub>((*retained)[c]));
    }
    run = std::move(agents);
  } else if (session) {
    run = std::make_unique<SessionRun>(workers, tp_size, &stubs);
  } else {
    run = std::make_unique<UnaryRun>(workers, tp_size, &stubs);
  }
  const double cpu_before = CpuSeconds((*coordinator)->pid());
  Result result = run->Run();
  result.session = session;
  result.ranks_per_node = ranks_per_node;
  result.server_cpu_s = CpuSeconds((*coordinator)->pid()) - cpu_before;
  result.server_rss_mib = PeakRssMiB((*coordinator)->pid());
  return result;
}

// --- baseline: the same protocol over c10d::TCPStore ----------------------------------------------------

Result RunTcpStore(int workers, int tp_size, int connections) {
  // The server in a process of its own, like the coordinator.
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  auto server = testing::Subprocess::Start({"/proc/self/exe", "--tcpstore-server", std::to_string(port)});
  Result result;
  if (!server.ok() || !(*server)->WaitForLine("ready", std::chrono::seconds(30)).ok()) {
    result.failures = workers;
    result.first_error = "the TCPStore server did not start";
    return result;
  }
  const Mesh mesh = *Mesh::Create(workers, tp_size);
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = false;
  options.waitWorkers = false;
  options.timeout = std::chrono::seconds(120);
  std::vector<std::unique_ptr<c10d::TCPStore>> stores;
  for (int c = 0; c < connections; ++c) stores.push_back(std::make_unique<c10d::TCPStore>("127.0.0.1", options));

  // Each connection's thread owns workers c, c + C, c + 2C, ...; all threads step through the phases
  // together (a thread barrier between phases keeps waits from blocking a connection forever).
  std::vector<int> rank(workers, -1);
  std::atomic<int64_t> ops{0};
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0, round = 0;
  auto sync_threads = [&] {
    std::unique_lock<std::mutex> lock(mu);
    const int my_round = round;
    if (++arrived == connections) {
      arrived = 0;
      ++round;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return round != my_round; });
    }
  };
  auto to_bytes = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };
  const std::string args = "tp_size=8 dtype=bf16";
  Clock::time_point phase_end[kPhases];
  const Clock::time_point start = Clock::now();
  auto mark = [&](int phase) {
    std::lock_guard<std::mutex> lock(mu);
    phase_end[phase] = std::max(phase_end[phase], Clock::now());
  };
  for (auto& p : phase_end) p = start;

  auto worker_thread = [&](int c) {
    c10d::TCPStore& store = *stores[c];
    std::mt19937_64 rng(c);
    // record: the first compareSet records, later ones compare.
    for (int i = c; i < workers; i += connections) {
      store.compareSet("tp_init", {}, to_bytes(args));
      ops++;
    }
    mark(0);
    sync_threads();
    // join: rank = arrival order; the last to arrive announces the complete world.
    for (int i = c; i < workers; i += connections) {
      rank[i] = static_cast<int>(store.add("joined", 1)) - 1;
      ops++;
      if (rank[i] == workers - 1) store.set("world_complete", to_bytes("1"));
    }
    for (int i = c; i < workers; i += connections) {
      store.wait({"world_complete"});
      ops++;
    }
    mark(1);
    sync_threads();
    // merge: publish the config, compare with rank 0's.
    for (int i = c; i < workers; i += connections) {
      store.set(absl::StrCat("config/", rank[i]), to_bytes(kConfig));
      ops++;
    }
    for (int i = c; i < workers; i += connections) {
      (void)store.get("config/0");
      ops++;
    }
    mark(2);
    sync_threads();
    // unique IDs, in the fewest round trips a store allows: each group's leader sets one key holding all of
    // the group's IDs (as if one rank could make them all), and every other member gets that key once.
    // The multi-root protocol needs more: each root sets its own ID, and TCPStore 1.13 has no multiGet, so a
    // member would get each root's key; this baseline is the cheaper, conservative one.
    for (int i = c; i < workers; i += connections) {
      for (const UniqueIdSlot& slot : mesh.RootSlotsOf(rank[i])) {
        if (slot.root != 0) continue;
        std::string ids;
        for (int root = 0; root < mesh.UniqueIdRoots(slot.group); ++root) ids += RandomId(rng);
        store.set(absl::StrCat("uid/", GroupName(slot.group)), to_bytes(ids));
        ops++;
      }
    }
    for (int i = c; i < workers; i += connections) {
      for (const GroupId& g : {mesh.tp_group_of(rank[i]), mesh.dp_group_of(rank[i]), GroupId{GroupKind::kWorld, 0}}) {
        if (mesh.Leader(g) == rank[i]) continue;
        (void)store.get(absl::StrCat("uid/", GroupName(g)));
        ops++;
      }
    }
    mark(3);
    sync_threads();
    // barrier
    for (int i = c; i < workers; i += connections) {
      if (store.add("barrier", 1) == workers) store.set("barrier_done", to_bytes("1"));
      ops++;
    }
    for (int i = c; i < workers; i += connections) {
      store.wait({"barrier_done"});
      ops++;
    }
    mark(4);
  };
  const double cpu_before = CpuSeconds((*server)->pid());
  std::vector<std::thread> threads;
  for (int c = 0; c < connections; ++c) threads.emplace_back(worker_thread, c);
  for (auto& t : threads) t.join();
  result.server_cpu_s = CpuSeconds((*server)->pid()) - cpu_before;
  for (int p = 0; p < kPhases; ++p) result.phase_end[p] = Seconds(phase_end[p] - start);
  result.total = result.phase_end[kPhases - 1];
  result.calls_per_worker = static_cast<double>(ops.load()) / workers;
  result.max_calls = 10;  // per worker: 1 record, 2 join, 2 merge, 3 unique ids, 2 barrier (+1 set for two of them)
  result.server_rss_mib = PeakRssMiB((*server)->pid());
  return result;
}

int HostTcpStoreServer(int port) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = true;
  options.waitWorkers = false;
  options.timeout = std::chrono::seconds(300);
  c10d::TCPStore server("127.0.0.1", options);
  std::printf("ready\n");
  std::fflush(stdout);
  pause();  // until the bench kills us
  return 0;
}

void Print(const char* name, const Result& r) {
  std::printf("  %-9s total %7.3f s |", name, r.total);
  double previous = 0;
  for (int p = r.session ? 2 : 0; p < kPhases; ++p) {
    std::printf(" %s %.3f", r.session && p == 2 ? "record+join+merge" : kPhaseNames[p], r.phase_end[p] - previous);
    previous = r.phase_end[p];
  }
  std::printf(" | %.2f %s (max %d) | server CPU %.2f s, peak RSS %.0f MiB", r.calls_per_worker,
              r.ranks_per_node > 0 ? "messages up/node"
              : r.session          ? "messages up/worker"
                                   : "calls/worker",
              r.max_calls, r.server_cpu_s, r.server_rss_mib);
  if (r.failures) std::printf(" | %d FAILED, first: %s", r.failures, r.first_error.c_str());
  std::printf("\n");
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::InitProcess(argc, argv);
  if (const int port = absl::GetFlag(FLAGS_tcpstore_server); port > 0) return tpcoord::HostTcpStoreServer(port);
  const int tp_size = absl::GetFlag(FLAGS_tp_size);
  const int connections = absl::GetFlag(FLAGS_connections);
  std::printf("rendezvous_bench: tp_size %d, %d client connections, %u cores\n", tp_size, connections,
              std::thread::hardware_concurrency());
  tpcoord::TlsFiles tls;
  if (absl::GetFlag(FLAGS_tls)) {
    tls.dir = tpcoord::testing::MakeTempDir("bench-tls");
    auto made = tpcoord::testing::Run(
        {"/bin/bash", TPCOORD_SOURCE_DIR "/deploy/make-secrets.sh", tls.dir, "localhost", "127.0.0.1"},
        std::chrono::seconds(60), {});
    if (!made.ok() || made->exit_code != 0) {
      std::fprintf(stderr, "deploy/make-secrets.sh failed: %s\n", made.ok() ? made->err.c_str() : "did not run");
      return 1;
    }
  }
  int failures = 0;
  for (absl::string_view n : absl::StrSplit(absl::GetFlag(FLAGS_workers), ',')) {
    int workers = 0;
    if (!absl::SimpleAtoi(n, &workers) || workers % tp_size != 0) {
      std::fprintf(stderr, "--workers: %s is not a multiple of --tp-size\n", std::string(n).c_str());
      return 2;
    }
    std::printf("N = %d workers (phase times are the extra time until the last worker finished the phase)\n",
                workers);
    if (workers > absl::GetFlag(FLAGS_per_rank_up_to) && absl::GetFlag(FLAGS_ranks_per_node) > 0) {
      const tpcoord::Result agents = tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {}, "",
                                                         false, "", absl::GetFlag(FLAGS_ranks_per_node));
      tpcoord::Print("agents", agents);
      failures += agents.failures;
      if (absl::GetFlag(FLAGS_baseline)) {
        const tpcoord::Result base = tpcoord::RunTcpStore(workers, tp_size, connections);
        tpcoord::Print("TCPStore", base);
        failures += base.failures;
        std::printf("  ratio     TCPStore / tpcoord with agents = %.2fx\n", base.total / agents.total);
      }
      std::printf("  per rank with agents: %.1f us of coordinator CPU, %.1f KiB of coordinator peak RSS "
                  "(one session per rank: not run above --per-rank-up-to)\n",
                  agents.server_cpu_s * 1e6 / workers, agents.server_rss_mib * 1024 / workers);
      continue;
    }
    const tpcoord::Result ours = tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {});
    tpcoord::Print("tpcoord", ours);
    failures += ours.failures;
    std::optional<tpcoord::Result> agents;
    if (const int k = absl::GetFlag(FLAGS_ranks_per_node); k > 0) {
      agents = tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {}, "", false, "", k);
      tpcoord::Print("agents", *agents);
      failures += agents->failures;
      std::printf("  ratio     one session per rank / one per node of %d = %.2fx\n", k, ours.total / agents->total);
    }
    if (absl::GetFlag(FLAGS_unary)) {
      const tpcoord::Result unary = tpcoord::RunTpcoord(/*session=*/false, workers, tp_size, connections, {});
      tpcoord::Print("unary", unary);
      failures += unary.failures;
      std::printf("  ratio     tpcoord with unary calls / on member sessions = %.2fx\n", unary.total / ours.total);
    }
    if (absl::GetFlag(FLAGS_metrics)) {
      const tpcoord::Result counted =
          tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {}, "", /*metrics=*/true);
      tpcoord::Print("+metrics", counted);
      failures += counted.failures;
      std::printf("  ratio     tpcoord serving /metrics / without = %.2fx\n", counted.total / ours.total);
    }
    if (tls.enabled()) {
      const tpcoord::Result secure = tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, tls);
      tpcoord::Print("+mTLS", secure);
      failures += secure.failures;
      std::printf("  ratio     tpcoord over mutual TLS / plaintext = %.2fx (both with token and member keys)\n",
                  secure.total / ours.total);
    }
    if (absl::GetFlag(FLAGS_etcd) && tpcoord::testing::HaveEtcd()) {
      auto cluster = tpcoord::testing::EtcdCluster::Start(tpcoord::testing::MakeTempDir("bench-etcd"));
      if (cluster.ok()) {
        const tpcoord::Result on_etcd =
            tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {}, (*cluster)->url());
        tpcoord::Print("on etcd", on_etcd);
        failures += on_etcd.failures;
        std::printf("  ratio     tpcoord on etcd (3 members) / on SQLite = %.2fx\n", on_etcd.total / ours.total);
      } else {
        std::fprintf(stderr, "etcd cluster: %s\n", std::string(cluster.status().message()).c_str());
      }
    }
    if (const std::string other = absl::GetFlag(FLAGS_against); !other.empty()) {
      // Interleaved, so that the machine's drift (caches, other load) falls on both alike.
      std::vector<double> mine, theirs;
      for (int round = 0; round < std::max(1, absl::GetFlag(FLAGS_against_rounds)); ++round) {
        const tpcoord::Result a = tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {});
        const tpcoord::Result b =
            tpcoord::RunTpcoord(/*session=*/true, workers, tp_size, connections, {}, "", false, other);
        tpcoord::Print("this", a);
        tpcoord::Print("against", b);
        failures += a.failures + b.failures;
        mine.push_back(a.total);
        theirs.push_back(b.total);
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      std::printf("  ratio     this build / %s = %.2fx (medians of %zu interleaved rounds: %.3f s vs %.3f s)\n",
                  other.c_str(), median(mine) / median(theirs), mine.size(), median(mine), median(theirs));
    }
    if (absl::GetFlag(FLAGS_baseline)) {
      const tpcoord::Result base = tpcoord::RunTcpStore(workers, tp_size, connections);
      tpcoord::Print("TCPStore", base);
      failures += base.failures;
      std::printf("  ratio     TCPStore / tpcoord = %.2fx\n", base.total / ours.total);
      if (agents) std::printf("  ratio     TCPStore / tpcoord with agents = %.2fx\n", base.total / agents->total);
    }
    std::printf("  per worker: %.1f us of coordinator CPU, %.1f KiB of coordinator peak RSS\n",
                ours.server_cpu_s * 1e6 / workers, ours.server_rss_mib * 1024 / workers);
    if (agents) {
      std::printf("  per rank with agents: %.1f us of coordinator CPU, %.1f KiB of coordinator peak RSS\n",
                  agents->server_cpu_s * 1e6 / workers, agents->server_rss_mib * 1024 / workers);
    }
  }
  return failures == 0 ? 0 : 1;
}
