# Unit tests of worker/ (LibTorch). Included from tests/unit/CMakeLists.txt when TPCOORD_BUILD_WORKER.
# Multi-rank tests run each rank as a thread of one process with a real Gloo process group over a shared
# c10d::HashStore, bounded by Gloo timeouts.

# common/shard_sizes is pure, but it exists for the worker's AutoTP sharding.
tpcoord_test(shard_sizes_test SOURCES shard_sizes_test.cc LIBS tpcoord_common TIMEOUT 60)

tpcoord_test(gloo_communicator_test SOURCES gloo_communicator_test.cc LIBS tpcoord_gloo_communicator TIMEOUT 60)
tpcoord_test(safetensors_test SOURCES safetensors_test.cc LIBS tpcoord_safetensors TIMEOUT 60)
tpcoord_test(llama_model_test SOURCES llama_model_test.cc LIBS tpcoord_llama_model TIMEOUT 60)
tpcoord_test(tp_layers_test SOURCES tp_layers_test.cc LIBS tpcoord_tp_layers tpcoord_gloo_communicator TIMEOUT 120)
tpcoord_test(autotp_test SOURCES autotp_test.cc LIBS tpcoord_autotp tpcoord_gloo_communicator TIMEOUT 120)

tpcoord_test(optimizer_test SOURCES optimizer_test.cc LIBS tpcoord_worker TIMEOUT 60)
# The training step: on the meta device (every tensor follows the model's device), and the DP buckets.
tpcoord_test(grad_buckets_test SOURCES grad_buckets_test.cc ${CMAKE_SOURCE_DIR}/worker/training/grad_buckets.cc
  TIMEOUT 60)
tpcoord_test(train_step_test SOURCES train_step_test.cc LIBS tpcoord_train_step TIMEOUT 120)
tpcoord_test(device_test SOURCES device_test.cc LIBS tpcoord_worker TIMEOUT 60)
