// What tp-agent keeps of its host's NCCL unique IDs, for the generation its workers are in, so that most of
// the unique-ID exchange stays on the host:
//
// - A group whose ranks are all this host's workers (a TP group that fits on the host) is brokered here: its
//   root's publish and its members' gets are answered by the agent, and nothing goes up.
// - A group that spans hosts is published upstream by its root, as it would be without an agent, and fetched
//   upstream once for all its members on the host: a second member asking while the first fetch is out waits
//   for it, and later ones are answered from what it brought.
//
// A group's place is decided the first time a call names it and kept for the generation, so that a root's
// publish and its members' gets always meet in the same place. The coordinator's Join answers reach the
// host's workers one after the other, so a call that would decide a group before every worker the agent
// started has its answer (is seated) waits for them, at most a second (a worker that missed the generation). A call the agent would answer differently from the coordinator (a root that
// is not the caller's, a group it is not a member of, anything malformed) is not taken: it goes up as it is
// and the coordinator answers it, so every check and error text stays the coordinator's. The agent answers
// two errors itself, with the coordinator's texts: a root publishing other bytes for a brokered group, and a
// wait for a brokered group that runs out.
//
// Only calls made of publish_unique_id and get_unique_id steps (tp-worker's one exchange call) are taken.
// Kept across the agent's upstream sessions (a coordinator restart mid-exchange loses nothing brokered);
// forgotten when a worker answers the Join of a newer generation. Thread-safe.
#ifndef TPCOORD_AGENT_HOST_UNIQUE_IDS_H_
#define TPCOORD_AGENT_HOST_UNIQUE_IDS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/mesh.h"
#include "common/mutex.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {

class HostUniqueIds {
 public:
  using Clock = std::chrono::steady_clock;
  // Delivers the answer of a taken call to its worker.
  using Answer = std::function<void(v1::SessionEvent)>;
  // Sends a call upstream (as the taker's member slot); `done` gets its answer, or an error event.
  using Forward = std::function<void(v1::SessionRequest, std::function<void(const v1::SessionEvent&)> done)>;

  // `host`: its name, for what the errors say; `workers`: how many workers the agent started.
  HostUniqueIds(std::string host, int workers) : host_(std::move(host)), workers_(workers) {}

  // A worker of this host answered its Join: rank `rank` of `generation` of `job` in `mesh`.
  void Seat(const std::string& job, uint64_t generation, int rank, const Mesh& mesh);

  // Takes `call`, an exchange of member `rank` of `generation`: true once it is answered here or on its way
  // (through `answer`, once); false when the agent does not take it (send it on as it is).
  bool Exchange(uint64_t generation, int rank, const v1::SessionRequest& call, Answer answer, Forward forward);

  // Answers DEADLINE_EXCEEDED to every wait for a brokered group whose time ran out, and goes on with the
  // calls that waited a second for workers that are not seated.
  void Expire(Clock::time_point now);

  struct Counts {
    int64_t brokered_groups = 0;  // groups decided local
    int64_t spanning_groups = 0;  // groups decided spanning
    int64_t answered_here = 0;    // exchange calls answered without an upstream call
    int64_t fetches = 0;          // spanning groups fetched from the coordinator
    int64_t fetches_saved = 0;    // spanning groups a member got from another member's fetch
  };
  Counts counts();

 private:
  struct Wait {
    uint64_t call_id = 0;
    int rank = 0;
    std::vector<GroupId> groups;  // in the order asked
    bool upstream = false;        // its own upstream call is out
    std::optional<Clock::time_point> deadline;
    uint32_t wait_ms = 0;
    Answer answer;
  };
  using Ready = std::vector<std::pair<Answer, v1::SessionEvent>>;
  // A call that waits for the host's workers to be seated before it decides a group's place.
  struct Deferred {
    uint64_t generation = 0;
    int rank = 0;
    v1::SessionRequest call;
    Answer answer;
    Forward forward;
    Clock::time_point since;
  };

  bool Take(uint64_t generation, int rank, const v1::SessionRequest& call, Answer& answer, Forward& forward,
            bool may_defer);
  // Goes on with deferred calls, deciding with the workers seated by now; a call not taken goes up as it is.
  void Resume(std::vector<Deferred> calls);

  void SeatLocked(const std::string& job, uint64_t generation, int rank, const Mesh& mesh)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool LocalLocked(const GroupId& group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CompleteLocked(const GroupId& group) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers every wait that has all it needs.
  void ResolveLocked(Ready& ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Fetched(uint64_t wait, std::vector<GroupId> groups, uint64_t generation, const v1::SessionEvent& event);
  // Answers `ready` (outside the lock); true.
  static bool Deliver(Ready& ready);
  v1::SessionEvent ErrorEvent(uint64_t call_id, const absl::Status& status) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string host_;
  const int workers_;
  Mutex mu_;
  std::string job_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<Mesh> mesh_ ABSL_GUARDED_BY(mu_);
  std::set<int> seated_ ABSL_GUARDED_BY(mu_);
  std::map<GroupId, bool> local_ ABSL_GUARDED_BY(mu_);           // decided: brokered here (true) or spanning
  std::map<UniqueIdSlot, std::string> ids_ ABSL_GUARDED_BY(mu_);  // brokered and fetched IDs
  std::set<GroupId> fetched_ ABSL_GUARDED_BY(mu_);                // spanning groups whose IDs are here
  std::set<GroupId> fetching_ ABSL_GUARDED_BY(mu_);               // spanning groups being fetched
  std::map<uint64_t, Wait> waits_ ABSL_GUARDED_BY(mu_);           // by a number of the agent's own
  std::vector<Deferred> deferred_ ABSL_GUARDED_BY(mu_);
  uint64_t next_wait_ ABSL_GUARDED_BY(mu_) = 1;
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tpcoord

#endif  // TPCOORD_AGENT_HOST_UNIQUE_IDS_H_
