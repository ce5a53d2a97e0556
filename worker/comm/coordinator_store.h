// A c10d::Store whose keys live in the coordinator, scoped to one job generation: what lets
// c10d::ProcessGroupGloo rendezvous through tpcoord instead of a TCPStore that some rank must host. Its calls
// are a member's: only the generation's members can read or write its keys.
//
// c10d stores report failure by throwing; this one throws c10::Error carrying the coordinator's message
// (a get that times out names the missing key; a generation that ended names the rank and host that failed).
#ifndef TPCOORD_WORKER_COMM_COORDINATOR_STORE_H_
#define TPCOORD_WORKER_COMM_COORDINATOR_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/version.h>

#include "client/coordinator_client.h"

namespace tpcoord {

class CoordinatorStore : public c10d::Store {
 public:
  // `client` must outlive the store. `timeout` bounds get and wait (c10d's default is 300 s).
  CoordinatorStore(CoordinatorClient* client, Membership member, std::chrono::milliseconds timeout = kDefaultTimeout);

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                  const std::vector<uint8_t>& desired) override;
  std::vector<uint8_t> get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
  // LibTorch 2.8 made clone() part of c10d::Store (PrefixStore and Gloo's split call it): another handle on
  // the same keys, through the same (thread-safe) client.
  c10::intrusive_ptr<c10d::Store> clone() override;
#endif

 private:
  CoordinatorClient* const client_;
  const Membership member_;
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COMM_COORDINATOR_STORE_H_
