// A Communicator over LibTorch's c10d::ProcessGroupGloo: CPU collectives over TCP, what CI runs.
//
// Rendezvous: every member of a group calls MakeGlooCommunicator with the same store, the same group name
// and the same size, each with its own rank; the calls return once all `size` members have connected to
// each other, or fail after `timeout`. The group's keys live under the prefix `group_name` in the store
// (a c10d::PrefixStore), so any number of groups (TP, DP, world) share one store. A group name must be
// used for one rendezvous only in a given store: put the generation in it ("g3/tp/0").
//
// Errors: MakeGlooCommunicator returns a Status (INVALID_ARGUMENT for bad arguments, DEADLINE_EXCEEDED when
// a member did not arrive in time, UNAVAILABLE for other connection failures), naming the group and rank.
// The collectives themselves keep Communicator's void signatures and throw std::runtime_error when Gloo
// fails at run time (a peer died, or a peer did not join the collective within `timeout`). The message
// names the group, this rank and the operation: "gloo tp/0 (rank 1 of 2): all_reduce failed: ...". They
// run inside autograd (the tensor-parallel layers' forward and backward), which propagates the exception
// out of forward()/backward(); the trainer catches it at its boundary. Misuse (a non-contiguous or non-CPU
// tensor, a root out of range) throws std::invalid_argument.
//
// Precision: fp16 and bf16 tensors are summed in fp32 (converted, reduced, rounded back into the same
// buffer): LibTorch 1.13's Gloo cannot reduce bf16. Gathers and broadcasts move the raw bytes of any dtype.
//
// Collectives are not recorded by autograd. One thread at a time may use a communicator.
//
// Compiled where the LibTorch ships Gloo's headers (Debian's, with libgloo-dev); elsewhere
// MakeGlooCommunicator answers CheckGlooUsable()'s UNIMPLEMENTED.
#ifndef TPCOORD_WORKER_COMM_GLOO_COMMUNICATOR_H_
#define TPCOORD_WORKER_COMM_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace tpcoord {

// OK when this build has Gloo: UNIMPLEMENTED naming --backend nccl otherwise (a LibTorch that ships no Gloo
// headers, as pip's wheels).
absl::Status CheckGlooUsable();

// Joins the Gloo group `group_name` as `rank` of `size`. `interface_host` is the address (or host name) of
// the local interface to listen on and to advertise to peers, e.g. "127.0.0.1" on loopback. `timeout`
// bounds the rendezvous and every later collective. `store` must stay usable for the communicator's life.
absl::StatusOr<std::unique_ptr<Communicator>> MakeGlooCommunicator(c10::intrusive_ptr<c10d::Store> store,
                                                                   std::string group_name, int rank, int size,
                                                                   std::string interface_host,
                                                                   std::chrono::milliseconds timeout);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COMM_GLOO_COMMUNICATOR_H_
