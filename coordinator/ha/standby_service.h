// What a coordinator that does not lead serves (HA, --state-store etcd://...): every call is answered
// UNAVAILABLE naming the leader, with its address in the trailing metadata `tpcoord-leader`, so that
// clients go there; health reports NOT_SERVING, so that load balancers and Kubernetes Services route to the
// leader only.
#ifndef TPCOORD_COORDINATOR_HA_STANDBY_SERVICE_H_
#define TPCOORD_COORDINATOR_HA_STANDBY_SERVICE_H_

#include <mutex>
#include <string>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

namespace tpcoord {

inline constexpr char kLeaderMetadata[] = "tpcoord-leader";

class StandbyService : public grpc::CallbackGenericService {
 public:
  // The leader's address ("" while none leads).
  void SetLeader(const std::string& address);

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;

 private:
  std::mutex mu_;
  std::string leader_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_HA_STANDBY_SERVICE_H_
