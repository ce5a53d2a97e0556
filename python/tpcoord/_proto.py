"""The wire contract's generated modules (proto/tpcoord/v1/coordinator.proto). They are generated when the
package is built (python/setup.py, run by pip), never committed: the installed package holds them as
tpcoord/v1/."""
try:
    from tpcoord.v1 import coordinator_pb2 as pb
    from tpcoord.v1 import coordinator_pb2_grpc as pb_grpc
except ImportError as e:  # the source tree itself (python/tpcoord) has no stubs
    raise ImportError("tpcoord's gRPC stubs are missing (%s): install the package (python3 -m pip install "
                      "--no-build-isolation ./python; README \"Using tpcoord from PyTorch\") rather than "
                      "importing python/tpcoord from the source tree" % e) from e

__all__ = ["pb", "pb_grpc"]
