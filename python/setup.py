"""Builds the tpcoord package (pyproject.toml holds its metadata): the sources of python/tpcoord plus the gRPC
stubs of proto/tpcoord/v1/coordinator.proto, generated here into the build as tpcoord/v1/ (never committed).

The stubs come from protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc; the
same tools that build the C++ side), else from pip's grpcio-tools. Debian's python3-grpc-tools is no use:
its bundled protoc (3.6) predates proto3 `optional`.
"""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "tpcoord/v1/coordinator.proto"


def proto_root():
    """The proto/ directory: beside the package sources (an sdist), or the repository's (python/..)."""
    for root in (os.path.join(HERE, "proto"), os.path.join(HERE, os.pardir, "proto")):
        if os.path.isfile(os.path.join(root, PROTO)):
            return os.path.normpath(root)
    sys.exit("tpcoord: %s is missing: build the package from a checkout of the repository (pip install ./python)"
             % PROTO)


def protoc(root, out):
    """The command that writes the stubs of PROTO under `out`."""
    compiler, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if compiler and plugin:
        return [compiler, "--proto_path=" + root, "--python_out=" + out, "--grpc_out=" + out,
                "--plugin=protoc-gen-grpc=" + plugin, PROTO]
    try:
        import grpc_tools
    except ImportError:
        sys.exit("tpcoord: generating the gRPC stubs needs protoc and grpc_python_plugin (Debian: apt-get install "
                 "protobuf-compiler protobuf-compiler-grpc, or deploy/install-deps.sh --python), or pip's "
                 "grpcio-tools")
    includes = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    return [sys.executable, "-m", "grpc_tools.protoc", "--proto_path=" + root, "--proto_path=" + includes,
            "--python_out=" + out, "--grpc_python_out=" + out, PROTO]


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        stubs = os.path.join(self.build_lib, "tpcoord", "v1")
        shutil.rmtree(stubs, ignore_errors=True)
        os.makedirs(stubs)
        subprocess.run(protoc(proto_root(), self.build_lib), check=True)
        open(os.path.join(stubs, "__init__.py"), "w").close()


setup(cmdclass={"build_py": BuildPyWithStubs})
