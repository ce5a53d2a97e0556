"""The wire contract's generated modules (proto/tpcoord/v1/coordinator.proto). They are generated when the
package is built (python/build.sh, run by CMake and `make python`), never committed: the package under
build/python holds them as tpcoord/v1/."""
try:
    from tpcoord.v1 import coordinator_pb2 as pb
    from tpcoord.v1 import coordinator_pb2_grpc as pb_grpc
except ImportError as e:  # the source tree itself (python/tpcoord) has no stubs
    raise ImportError("tpcoord's gRPC stubs are missing (%s): import the built package, `make python` and "
                      "PYTHONPATH=build/python (README \"Python client\")" % e) from e

__all__ = ["pb", "pb_grpc"]
